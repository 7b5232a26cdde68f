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

int baton_spawn(const baton_spawn_opts *o, pid_t *out_pid) {
    volatile int child_err = 0;
    pid_t parent = getpid();
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = vfork();
    if (pid == 0) child_main(o, parent, &child_err);
    int fork_errno = errno;
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
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ign, NULL);
    sigaction(SIGXFSZ, &ign, NULL);
    /* Unblock them: a parent (Foundation's Process) may have left them masked. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT); sigaddset(&set, SIGTERM); sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
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
