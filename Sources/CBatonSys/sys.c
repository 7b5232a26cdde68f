#define _GNU_SOURCE
#include "CBatonSys.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* The child runs on the parent's memory (vfork: no page-table copy, so starting a
 * stage costs the same whatever Baton's size). It only makes system calls and
 * reports a failure through `*err`, which the parent reads once the child has
 * exec'd or exited. All signals are blocked across the vfork so that no handler of
 * ours can run in the child; the child resets every disposition and unblocks. */
static void child_main(const baton_spawn_opts *o, pid_t parent, volatile int *err) __attribute__((noreturn));
static void child_main(const baton_spawn_opts *o, pid_t parent, volatile int *err) {
    if (o->new_session) { if (setsid() < 0) { *err = errno; _exit(127); } }
    else if (setpgid(0, 0) != 0) { *err = errno; _exit(127); }
    if (o->pdeathsig) {
        prctl(PR_SET_PDEATHSIG, o->pdeathsig);
        if (getppid() != parent) _exit(127); /* parent already gone */
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        sigaction(s, &dfl, NULL);
    }
    int fds[3] = { o->stdin_fd, o->stdout_fd, o->stderr_fd };
    int devnull = -1;
    for (int i = 0; i < 3; i++) {
        int fd = fds[i];
        if (fd < 0) {
            if (devnull < 0) devnull = open("/dev/null", O_RDWR);
            fd = devnull;
        }
        if (fd == i) {
            int fl = fcntl(fd, F_GETFD);
            if (fl >= 0) fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC);
        } else if (dup2(fd, i) < 0) { *err = errno; _exit(127); }
    }
    /* nothing else of ours leaks into the stage */
    syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
    if (o->cwd && chdir(o->cwd) != 0) { *err = errno; _exit(127); }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(o->path, o->argv, o->envp);
    *err = errno ? errno : ENOEXEC;
    _exit(127);
}

void baton_crash_guard_track(pid_t pgid);

int baton_spawn(const baton_spawn_opts *o, pid_t *out_pid) {
    volatile int child_err = 0;
    pid_t parent = getpid();
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = vfork();
    if (pid == 0) child_main(o, parent, &child_err);
    int fork_errno = errno;
    /* Known to the crash guard before any signal can reach this thread again. */
    if (pid > 0 && !child_err && !o->new_session) baton_crash_guard_track(pid);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) return fork_errno;
    if (child_err) {
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
        return child_err;
    }
    if (!o->new_session) setpgid(pid, pid); /* harmless if the child did it already */
    *out_pid = pid;
    return 0;
}

int baton_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* ---- signals ---- */
static volatile sig_atomic_t first_signal = 0;
static volatile sig_atomic_t last_signal = 0;
static int sigpipe_fds[2] = { -1, -1 };
static void (*volatile signal_hook)(int) = 0;

static void on_signal(int sig) {
    int saved = errno;
    if (!first_signal) first_signal = sig;
    last_signal = sig;
    if (sigpipe_fds[1] >= 0) { char c = (char)sig; (void)!write(sigpipe_fds[1], &c, 1); }
    void (*h)(int) = signal_hook;
    if (h) h(sig);
    errno = saved;
}

void baton_signals_install(void) {
    if (sigpipe_fds[0] < 0) {
        if (pipe2(sigpipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) { sigpipe_fds[0] = sigpipe_fds[1] = -1; }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: blocking calls return EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);   /* the run budget (baton_budget_arm) */
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ign, NULL);
    sigaction(SIGXFSZ, &ign, NULL);
    /* Unblock them: a parent (Foundation's Process) may have left them masked. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT); sigaddset(&set, SIGTERM); sigaddset(&set, SIGHUP); sigaddset(&set, SIGALRM);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

#include <sys/time.h>
int baton_budget_arm(double seconds) {
    struct itimerval it;
    memset(&it, 0, sizeof it);
    if (seconds > 0) {
        it.it_value.tv_sec = (time_t)seconds;
        it.it_value.tv_usec = (suseconds_t)((seconds - (double)it.it_value.tv_sec) * 1e6);
        if (it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0) it.it_value.tv_usec = 1;
    }
    return setitimer(ITIMER_REAL, &it, NULL);
}

int baton_signal_pending(void) { return first_signal; }
int baton_signal_last(void) { return last_signal; }
int baton_signal_fd(void) { return sigpipe_fds[0]; }
void baton_signal_clear(void) { first_signal = 0; last_signal = 0; baton_signal_drain(); }
void baton_signal_drain(void) {
    if (sigpipe_fds[0] < 0) return;
    char buf[64];
    while (read(sigpipe_fds[0], buf, sizeof buf) > 0) {}
}
void baton_signal_set_hook(void (*hook)(int)) { signal_hook = hook; }
void baton_signal_raise_flag(int sig) { on_signal(sig); }

int baton_set_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1); }

#include <sys/mman.h>
int baton_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

/* ---- the crash guard ---- */
#include <stdlib.h>
#include <stdio.h>
#define CRASH_MAX_GROUPS 1024
static char *crash_final = NULL, *crash_tmp = NULL, *crash_head = NULL, *crash_tail = NULL;
static volatile pid_t crash_groups[CRASH_MAX_GROUPS];
static volatile sig_atomic_t crash_armed = 0;
static struct sigaction crash_previous[NSIG]; /* e.g. Swift's backtracer: chained to */

static size_t c_strlen(const char *s) { size_t n = 0; while (s[n]) n++; return n; }

static void crash_write(int fd, const char *s) {
    size_t n = c_strlen(s);
    while (n > 0) { ssize_t w = write(fd, s, n); if (w <= 0) { if (errno == EINTR) continue; return; } s += w; n -= (size_t)w; }
}

static void on_crash(int sig, siginfo_t *info, void *uctx) {
    for (int i = 0; i < CRASH_MAX_GROUPS; i++) { pid_t g = crash_groups[i]; if (g > 0) kill(-g, SIGKILL); }
    if (crash_armed && crash_final && crash_tmp) {
        int fd = open(crash_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            char num[16]; int k = 15; num[k] = 0; int v = sig;
            do { num[--k] = (char)('0' + v % 10); v /= 10; } while (v && k > 0);
            char code[16]; int c = 15; code[c] = 0; v = 128 + sig;
            do { code[--c] = (char)('0' + v % 10); v /= 10; } while (v && c > 0);
            crash_write(fd, crash_head);
            crash_write(fd, "\"exit_code\": "); crash_write(fd, code + c);
            crash_write(fd, ", \"reason\": \"baton crashed (signal "); crash_write(fd, num + k);
            crash_write(fd, "); its stages were ended; the journal holds everything before the crash\"");
            crash_write(fd, crash_tail);
            fsync(fd);
            close(fd);
            rename(crash_tmp, crash_final);
        }
    }
    /* Chain to the previous handler (Swift's backtracer prints a backtrace), then end the
     * process by the signal's default action whatever that handler did: the backtracer
     * returns from a signal that was sent (kill -SEGV) rather than raised by a fault, and
     * the runner must not go on with its stages killed. */
    struct sigaction *prev = &crash_previous[sig];
    /* Run it under the mask it asked for, with the crash signals unblocked as with its own
     * SA_NODEFER: the backtracer's memory server is a thread it starts from here, which
     * inherits this mask and survives its own faults only if SIGSEGV/SIGBUS are not blocked
     * (a blocked synchronous fault kills the process at once). */
    sigset_t mask = prev->sa_mask;
    sigdelset(&mask, SIGSEGV); sigdelset(&mask, SIGBUS); sigdelset(&mask, SIGILL);
    sigdelset(&mask, SIGFPE); sigdelset(&mask, SIGABRT); sigdelset(&mask, SIGTRAP);
    pthread_sigmask(SIG_SETMASK, &mask, NULL);
    if (prev->sa_flags & SA_SIGINFO) {
        if (prev->sa_sigaction) prev->sa_sigaction(sig, info, uctx);
    } else if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN && prev->sa_handler != NULL) {
        prev->sa_handler(sig);
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    sigset_t only;
    sigemptyset(&only);
    sigaddset(&only, sig);
    pthread_sigmask(SIG_UNBLOCK, &only, NULL);
    raise(sig);
    _exit(128 + sig);   /* the last resort: never return into the code that crashed */
}

void baton_crash_guard_install(const char *final_path, const char *json_head, const char *json_tail) {
    size_t n = strlen(final_path);
    crash_final = strdup(final_path);
    crash_tmp = malloc(n + 16);
    if (crash_tmp) { memcpy(crash_tmp, final_path, n); memcpy(crash_tmp + n, ".crash.tmp", 11); }
    crash_head = strdup(json_head);
    crash_tail = strdup(json_tail);
    static char altstack[64 * 1024];   /* a stack overflow must still reach the handler */
    stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0 };
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_crash;
    sa.sa_flags = SA_ONSTACK | SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP };
    static int installed = 0;
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        if (!installed) sigaction(sigs[i], &sa, &crash_previous[sigs[i]]);
        else sigaction(sigs[i], &sa, NULL);
    }
    installed = 1;
    /* A parent (Foundation's Process) may have left some of them blocked. */
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&set, sigs[i]);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    crash_armed = 1;
}

void baton_crash_guard_disarm(void) { crash_armed = 0; }

void baton_crash_guard_track(pid_t pgid) {
    for (int i = 0; i < CRASH_MAX_GROUPS; i++) if (crash_groups[i] == 0) { crash_groups[i] = pgid; return; }
}

void baton_crash_guard_untrack(pid_t pgid) {
    for (int i = 0; i < CRASH_MAX_GROUPS; i++) if (crash_groups[i] == pgid) { crash_groups[i] = 0; return; }
}

/* ---- The control socket ---------------------------------------------------- */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

static int control_address(const char *path, struct sockaddr_un *a) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a->sun_path) return -ENAMETOOLONG;
    strcpy(a->sun_path, path);
    return 0;
}

int baton_control_listen(const char *path) {
    struct sockaddr_un a;
    int r = control_address(path, &a);
    if (r < 0) return r;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -errno;
    unlink(path);
    mode_t old = umask(0177);
    r = bind(fd, (struct sockaddr *)&a, sizeof a);
    int e = errno;
    umask(old);
    if (r == 0) r = chmod(path, 0600), e = errno;
    if (r == 0) r = listen(fd, 16), e = errno;
    if (r != 0) { close(fd); return -e; }
    return fd;
}

int baton_control_accept(int listen_fd, uid_t *uid, pid_t *pid) {
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return -errno;
    struct ucred c;
    socklen_t n = sizeof c;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &n) != 0) { int e = errno; close(fd); return -e; }
    *uid = c.uid;
    *pid = c.pid;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

int baton_control_connect(const char *path) {
    struct sockaddr_un a;
    int r = control_address(path, &a);
    if (r < 0) return r;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { int e = errno; close(fd); return -e; }
    return fd;
}
