#define _GNU_SOURCE
#include "CBatonSys.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* The child runs on the parent's memory (vfork semantics: no page-table copy, so starting
 * a stage costs the same whatever Baton's size). It only makes system calls and reports a
 * failure through `*err`, which the parent reads once the child has exec'd or exited. All
 * signals are blocked across the fork so that no handler of ours can run in the child;
 * the child puts every disposition back to the default and unblocks.
 *
 * Where the kernel has clone3 (Linux 5.5+), one call does what took ~65: CLONE_CLEAR_SIGHAND
 * resets every handled signal in the child, so the child only resets the signals this
 * process ignores (usually SIGPIPE and SIGXFSZ), and CLONE_PIDFD returns the descriptor the
 * loop waits on. On a 2-core VM, where a system call costs 1-2 us, that halves the time the
 * runner is held in the fork for a short stage. */
static void child_main(const baton_spawn_opts *o, pid_t parent, volatile int *err,
                       const sigset_t *reset) __attribute__((noreturn));
static void child_main(const baton_spawn_opts *o, pid_t parent, volatile int *err,
                       const sigset_t *reset) {
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
        if (reset && !sigismember(reset, s)) continue;
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

/* The signals this process ignores (SIG_IGN survives CLONE_CLEAR_SIGHAND and exec): asked
 * of the kernel once, again after baton_signals_install changes them. Handled signals need
 * no list: CLONE_CLEAR_SIGHAND resets every one of them, whoever installed it. */
static sigset_t ignored_signals;
static volatile int ignored_known = 0;
static const sigset_t *signals_to_reset(void) {
    if (!ignored_known) {
        sigemptyset(&ignored_signals);
        for (int s = 1; s < NSIG; s++) {
            struct sigaction sa;
            if (s == SIGKILL || s == SIGSTOP) continue;
            if (sigaction(s, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_IGN)
                sigaddset(&ignored_signals, s);
        }
        ignored_known = 1;
    }
    return &ignored_signals;
}

#if defined(__x86_64__) && defined(__linux__)
struct baton_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    uint64_t set_tid, set_tid_size, cgroup;   /* CLONE_ARGS_SIZE_VER2 (Linux 5.7): cgroup */
};
#define BATON_CLONE_ARGS_VER0 64
#define BATON_CLONE_INTO_CGROUP 0x200000000ULL
#define BATON_CLONE_CLEAR_SIGHAND 0x100000000ULL
#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
/* clone3 with vfork semantics, written as glibc writes vfork: the return address is popped
 * into a register the kernel preserves before the call and pushed back after, because the
 * child runs on this same stack and overwrites that slot while the parent is suspended.
 * Returns the child's pid (0 in the child) or -errno. */
long baton_clone3_vfork(struct baton_clone_args *args, size_t size) __attribute__((returns_twice));
__asm__(
    ".text\n"
    ".globl baton_clone3_vfork\n"
    ".hidden baton_clone3_vfork\n"
    ".type baton_clone3_vfork,@function\n"
    "baton_clone3_vfork:\n"
    "    popq %rdx\n"
    "    movl $435, %eax\n"      /* SYS_clone3 */
    "    syscall\n"
    "    pushq %rdx\n"
    "    ret\n"
    ".size baton_clone3_vfork, .-baton_clone3_vfork\n");
static volatile int clone3_works = 1;
#endif

void baton_crash_guard_track(pid_t pgid);

int baton_spawn(const baton_spawn_opts *o, pid_t *out_pid, int *out_pidfd) {
    volatile int child_err = 0;
    pid_t parent = getpid();
    if (out_pidfd) *out_pidfd = -1;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = -1;
    int fork_errno = 0;
    int pidfd = -1;
    int forked = 0;
#if defined(__x86_64__) && defined(__linux__)
    if (clone3_works) {
        const sigset_t *reset = signals_to_reset();
        struct baton_clone_args a;
        memset(&a, 0, sizeof a);
        a.flags = CLONE_VM | CLONE_VFORK | BATON_CLONE_CLEAR_SIGHAND | (out_pidfd ? CLONE_PIDFD : 0);
        a.pidfd = (uint64_t)(uintptr_t)&pidfd;
        a.exit_signal = SIGCHLD;
        long r = baton_clone3_vfork(&a, BATON_CLONE_ARGS_VER0);
        if (r == 0) child_main(o, parent, &child_err, reset);
        if (r > 0) { pid = (pid_t)r; forked = 1; }
        /* old kernel or a seccomp filter: vfork */
        else if (r == -ENOSYS || r == -EINVAL || r == -E2BIG || r == -EPERM) clone3_works = 0;
        else { fork_errno = (int)-r; forked = 1; }
    }
#endif
    if (!forked) {
        pid = vfork();
        if (pid == 0) child_main(o, parent, &child_err, NULL);
        fork_errno = errno;
    }
    /* Known to the crash guard before any signal can reach this thread again. */
    if (pid > 0 && !child_err && !o->new_session) baton_crash_guard_track(pid);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) return fork_errno;
    if (child_err) {
        int st;
        if (pidfd >= 0) close(pidfd);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
        return child_err;
    }
    /* The child made its own group before exec, and the parent was suspended until then. */
    *out_pid = pid;
    if (out_pidfd) *out_pidfd = pidfd >= 0 ? pidfd : (int)syscall(SYS_pidfd_open, pid, 0);
    return 0;
}

/* ---- Starting a stage without waiting for its exec ----------------------------------
 * baton_spawn waits (vfork semantics) until the child has exec'd: for a short command that
 * is most of the cost of starting it (~80 us of kernel exec work on this VM), and the runner
 * can do nothing else meanwhile. Here the child gets its own small stack and a private copy
 * of everything it reads (opts, argv, envp, cwd) in one malloc'd block, and the parent goes
 * on at once. The child shares the parent's memory until its exec, so it touches nothing
 * but that block: raw system calls only (no errno, no locks, no TLS writes). A failure
 * before exec is written to the child's stderr (the stage's log) and ends it with 127 (not
 * found) or 126, as a shell reports it. The block is freed once the child has been reaped
 * (baton_spawn_release), never before: until its exec the child runs on it. */
#if defined(__x86_64__) && defined(__linux__)
static inline long rsys(long n, long a, long b, long c, long d) {
    long r;
    register long r10 __asm__("r10") = d;
    __asm__ volatile ("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
    return r;
}

struct spawn_block {
    const char *path;
    char **argv, **envp;
    const char *cwd;
    int fds[3];
    int new_session, pdeathsig;
    pid_t parent;
    uint64_t reset;      /* signals 1..64 to put back to SIG_DFL (the ignored ones) */
};

static size_t c_len(const char *s) { size_t n = 0; while (s[n]) n++; return n; }

static void child_fail(const char *what, long err) __attribute__((noreturn));
static void child_fail(const char *what, long err) {
    const char *why;
    switch (err) {
    case ENOENT: why = "No such file or directory"; break;
    case EACCES: why = "Permission denied"; break;
    case ENOEXEC: why = "Exec format error"; break;
    case E2BIG: why = "Argument list too long"; break;
    case ETXTBSY: why = "Text file busy"; break;
    case ENOMEM: why = "Cannot allocate memory"; break;
    case ENOTDIR: why = "Not a directory"; break;
    case EISDIR: why = "Is a directory"; break;
    case ELOOP: why = "Too many levels of symbolic links"; break;
    default: why = "system error"; break;
    }
    const char *parts[] = { "baton: cannot start ", what, ": ", why, "\n" };
    for (int i = 0; i < 5; i++) rsys(SYS_write, 2, (long)parts[i], (long)c_len(parts[i]), 0);
    rsys(SYS_exit_group, err == ENOENT ? 127 : 126, 0, 0, 0);
    __builtin_unreachable();
}

static int async_child(void *arg) __attribute__((noreturn));
static int async_child(void *arg) {
    struct spawn_block *b = arg;
    long r = b->new_session ? rsys(SYS_setsid, 0, 0, 0, 0) : rsys(SYS_setpgid, 0, 0, 0, 0);
    if (r < 0 && !b->new_session && r != -EPERM) rsys(SYS_exit_group, 127, 0, 0, 0);
    if (b->pdeathsig) {
        rsys(SYS_prctl, PR_SET_PDEATHSIG, b->pdeathsig, 0, 0);
        if (rsys(SYS_getppid, 0, 0, 0, 0) != b->parent) rsys(SYS_exit_group, 127, 0, 0, 0);
    }
    /* Handled signals were reset by CLONE_CLEAR_SIGHAND; ignored ones are put back here
     * (kernel sigaction: handler, flags, restorer, mask). */
    for (int sig = 1; sig <= 64; sig++) {
        if (!(b->reset & (1ULL << (sig - 1)))) continue;
        unsigned long ka[4] = { 0 /* SIG_DFL */, 0, 0, 0 };
        rsys(SYS_rt_sigaction, sig, (long)ka, 0, 8);
    }
    int devnull = -1;
    for (int i = 0; i < 3; i++) {
        int fd = b->fds[i];
        if (fd < 0) {
            if (devnull < 0) devnull = (int)rsys(SYS_openat, AT_FDCWD, (long)"/dev/null", O_RDWR, 0);
            fd = devnull;
        }
        if (fd == i) {
            long fl = rsys(SYS_fcntl, fd, F_GETFD, 0, 0);
            if (fl >= 0) rsys(SYS_fcntl, fd, F_SETFD, fl & ~FD_CLOEXEC, 0);
        } else if (rsys(SYS_dup2, fd, i, 0, 0) < 0) rsys(SYS_exit_group, 127, 0, 0, 0);
    }
    rsys(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC, 0);
    if (b->cwd) {
        r = rsys(SYS_chdir, (long)b->cwd, 0, 0, 0);
        if (r < 0) child_fail(b->cwd, -r);
    }
    uint64_t none = 0;
    rsys(SYS_rt_sigprocmask, SIG_SETMASK, (long)&none, 0, 8);
    r = rsys(SYS_execve, (long)b->path, (long)b->argv, (long)b->envp, 0);
    child_fail(b->path, -r);
}

/* clone3 onto a new stack: in the child, calls fn(arg) there and exits with its result. */
long baton_clone3_call(struct baton_clone_args *args, size_t size, int (*fn)(void *), void *arg);
__asm__(
    ".text\n"
    ".globl baton_clone3_call\n"
    ".hidden baton_clone3_call\n"
    ".type baton_clone3_call,@function\n"
    "baton_clone3_call:\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    movq %rdx, %rbx\n"
    "    movq %rcx, %r12\n"
    "    movl $435, %eax\n"      /* SYS_clone3 */
    "    syscall\n"
    "    testq %rax, %rax\n"
    "    jnz 1f\n"
    "    xorl %ebp, %ebp\n"      /* the child, on its own stack */
    "    movq %r12, %rdi\n"
    "    callq *%rbx\n"
    "    movl %eax, %edi\n"
    "    movl $231, %eax\n"      /* SYS_exit_group */
    "    syscall\n"
    "    hlt\n"
    "1:  popq %r12\n"
    "    popq %rbx\n"
    "    ret\n"
    ".size baton_clone3_call, .-baton_clone3_call\n");

#define SPAWN_STACK (16 * 1024)

static int next_cgroup_fd = -1;
static volatile int cgroup_broken = 0;
void baton_spawn_into_cgroup(int dirfd) { next_cgroup_fd = dirfd; }
int baton_spawn_cgroup_broken(void) { return cgroup_broken || !clone3_works; }

int baton_spawn_async(const baton_spawn_opts *o, pid_t *out_pid, int *out_pidfd, void **out_block) {
    *out_block = NULL;
    if (!clone3_works) return baton_spawn(o, out_pid, out_pidfd);
    size_t argc = 0, envc = 0, strings = c_len(o->path) + 1 + (o->cwd ? c_len(o->cwd) + 1 : 0);
    for (; o->argv[argc]; argc++) strings += c_len(o->argv[argc]) + 1;
    for (; o->envp[envc]; envc++) strings += c_len(o->envp[envc]) + 1;
    size_t head = (sizeof(struct spawn_block) + 15) & ~(size_t)15;
    size_t arrays = ((argc + 1 + envc + 1) * sizeof(char *) + 15) & ~(size_t)15;
    size_t total = head + arrays + ((strings + 15) & ~(size_t)15) + SPAWN_STACK;
    char *mem = malloc(total);
    if (!mem) return ENOMEM;
    struct spawn_block *b = (struct spawn_block *)mem;
    char **av = (char **)(mem + head), **ev = av + argc + 1;
    char *str = (char *)(ev + envc + 1);
#define COPY(dst, src) do { size_t n_ = c_len(src) + 1; memcpy(str, src, n_); dst = str; str += n_; } while (0)
    COPY(b->path, o->path);
    if (o->cwd) { COPY(b->cwd, o->cwd); } else b->cwd = NULL;
    for (size_t i = 0; i < argc; i++) COPY(av[i], o->argv[i]);
    av[argc] = NULL;
    for (size_t i = 0; i < envc; i++) COPY(ev[i], o->envp[i]);
    ev[envc] = NULL;
#undef COPY
    b->argv = av; b->envp = ev;
    b->fds[0] = o->stdin_fd; b->fds[1] = o->stdout_fd; b->fds[2] = o->stderr_fd;
    b->new_session = o->new_session; b->pdeathsig = o->pdeathsig;
    b->parent = getpid();
    const sigset_t *reset = signals_to_reset();
    b->reset = 0;
    for (int sig = 1; sig <= 64 && sig < NSIG; sig++) if (sigismember(reset, sig)) b->reset |= 1ULL << (sig - 1);

    int pidfd = -1;
    struct baton_clone_args a;
    memset(&a, 0, sizeof a);
    a.flags = CLONE_VM | BATON_CLONE_CLEAR_SIGHAND | (out_pidfd ? CLONE_PIDFD : 0);
    a.pidfd = (uint64_t)(uintptr_t)&pidfd;
    a.exit_signal = SIGCHLD;
    a.stack = (uint64_t)(uintptr_t)(mem + total - SPAWN_STACK);
    a.stack_size = SPAWN_STACK & ~(size_t)15;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int cg = next_cgroup_fd;
    next_cgroup_fd = -1;
    size_t size = BATON_CLONE_ARGS_VER0;
    if (cg >= 0 && !cgroup_broken) {
        /* Born inside the stage's cgroup: nothing it starts can leave it (no race with a fork
         * before the move, and no cgroup.procs write, whose lock costs an RCU grace period). */
        a.flags |= BATON_CLONE_INTO_CGROUP;
        a.cgroup = (uint64_t)cg;
        size = sizeof a;
    }
    long r = baton_clone3_call(&a, size, async_child, b);
    if (r < 0 && size != BATON_CLONE_ARGS_VER0) {
        cgroup_broken = 1;   /* the kernel or a filter refuses CLONE_INTO_CGROUP: the caller falls back */
        a.flags &= ~BATON_CLONE_INTO_CGROUP;
        a.cgroup = 0;
        r = baton_clone3_call(&a, BATON_CLONE_ARGS_VER0, async_child, b);
    }
    if (r > 0 && !o->new_session) {
        /* The group exists before this returns, whether or not the child got there first:
         * a cancel right now reaches it. */
        setpgid((pid_t)r, (pid_t)r);
        baton_crash_guard_track((pid_t)r);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r < 0) {
        free(mem);
        if (r == -ENOSYS || r == -EINVAL || r == -E2BIG || r == -EPERM) {
            clone3_works = 0;
            return baton_spawn(o, out_pid, out_pidfd);
        }
        return (int)-r;
    }
    *out_pid = (pid_t)r;
    if (out_pidfd) *out_pidfd = pidfd >= 0 ? pidfd : (int)syscall(SYS_pidfd_open, (pid_t)r, 0);
    *out_block = mem;
    return 0;
}
#else
void baton_spawn_into_cgroup(int dirfd) { (void)dirfd; }
int baton_spawn_cgroup_broken(void) { return 1; }
int baton_spawn_async(const baton_spawn_opts *o, pid_t *out_pid, int *out_pidfd, void **out_block) {
    *out_block = NULL;
    return baton_spawn(o, out_pid, out_pidfd);
}
#endif

void baton_spawn_release(void *block) { free(block); }

int baton_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* ---- signals ---- */
static volatile sig_atomic_t first_signal = 0;
static volatile sig_atomic_t last_signal = 0;
static int sigpipe_fds[2] = { -1, -1 };
static void (*volatile signal_hook)(int) = 0;

static volatile sig_atomic_t budget_fired = 0;
/* Who sent the first signal: its pid (0: the kernel or the terminal, as a Ctrl-C is). */
static volatile sig_atomic_t first_sender = 0;
static void stuck_guard_wake(void);

/* The signals that end a run (each: a flag, the self-pipe, the hook; the run ends with
 * 128+n): every one whose default action would end the process, but the crash signals (the
 * crash guard's), SIGKILL/SIGSTOP and SIGPIPE (ignored: a closed pipe is an error code). */
static const int handled_signals[] = {
    SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGXCPU, SIGXFSZ,
    SIGVTALRM, SIGPROF,
};

static void on_signal_info(int sig, siginfo_t *info, void *uctx) {
    (void)uctx;
    int saved = errno;
    if (sig == SIGXFSZ && info && info->si_code == SI_USER && info->si_pid == getpid()) {
        /* The kernel's own SIGXFSZ for a write past RLIMIT_FSIZE (sent as from this
         * process): the write fails with EFBIG, which is reported; the run goes on. */
        errno = saved;
        return;
    }
    /* setitimer's SIGALRM comes from the kernel (SI_KERNEL), which no other process can
     * fake: that one is the run budget; a SIGALRM sent with kill(2) is a signal like any. */
    if (sig == SIGALRM && info && info->si_code == SI_KERNEL && !first_signal) budget_fired = 1;
    if (!first_signal) { first_signal = sig; first_sender = (info && info->si_code == SI_USER) ? info->si_pid : 0; }
    last_signal = sig;
    if (sigpipe_fds[1] >= 0) { char c = (char)sig; (void)!write(sigpipe_fds[1], &c, 1); }
    void (*h)(int) = signal_hook;
    if (h) h(sig);
    stuck_guard_wake();
    errno = saved;
}

static void on_signal(int sig) { on_signal_info(sig, NULL, NULL); }

void baton_signals_install(void) {
    if (sigpipe_fds[0] < 0) {
        if (pipe2(sigpipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) { sigpipe_fds[0] = sigpipe_fds[1] = -1; }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal_info;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO; /* no SA_RESTART: blocking calls return EINTR */
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof handled_signals / sizeof handled_signals[0]; i++) {
        sigaction(handled_signals[i], &sa, NULL);
        sigaddset(&set, handled_signals[i]);
    }
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ign, NULL);
    ignored_known = 0;   /* the spawn path's list of ignored signals is out of date */
    /* Unblock them: a parent (Foundation's Process) may have left them masked. */
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

int baton_budget_expired(void) { return budget_fired; }

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
int baton_signal_sender(void) { return first_sender; }
int baton_signal_last(void) { return last_signal; }
int baton_signal_fd(void) { return sigpipe_fds[0]; }
void baton_signal_clear(void) {
    first_signal = 0;
    first_sender = 0;
    last_signal = 0;
    budget_fired = 0;
    baton_signal_drain();
}
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
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) {
            if (errno == EINTR) continue;
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

static char *run_cgroup_kill = NULL;
void baton_containment_set(const char *cgroup_kill_path) {
    char *old = run_cgroup_kill;
    run_cgroup_kill = cgroup_kill_path ? strdup(cgroup_kill_path) : NULL;
    free(old);
}
/* cgroup.kill of the run's cgroup: every process of every stage, wherever it went. */
static void kill_run_cgroup(void) {
    const char *p = run_cgroup_kill;
    if (!p) return;
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) { (void)!write(fd, "1", 1); close(fd); }
}

int baton_tracked_groups(pid_t *out, int max) {
    int n = 0;
    for (int i = 0; i < CRASH_MAX_GROUPS && n < max; i++) { pid_t g = crash_groups[i]; if (g > 0) out[n++] = g; }
    return n;
}

static void on_crash(int sig, siginfo_t *info, void *uctx) {
    for (int i = 0; i < CRASH_MAX_GROUPS; i++) { pid_t g = crash_groups[i]; if (g > 0) kill(-g, SIGKILL); }
    kill_run_cgroup();
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

/* ---- the stuck guard ---- */
#include <semaphore.h>
#include <time.h>
#include <sys/stat.h>
static sem_t stuck_sem;
static volatile sig_atomic_t stuck_running = 0, stuck_armed = 0, stuck_acked = 0;
static pthread_mutex_t stuck_mu = PTHREAD_MUTEX_INITIALIZER;
static char *stuck_final = NULL, *stuck_head = NULL, *stuck_tail = NULL, *stuck_started_at = NULL;
static char *stuck_budget_reason = NULL;
static int stuck_budget_code = 124;
static double stuck_started = 0, stuck_ack_wait = 1, stuck_grace = 10;

static void stuck_guard_wake(void) { if (stuck_running) sem_post(&stuck_sem); }  /* async-signal-safe */

static void replace_str(char **slot, const char *v) { char *old = *slot; *slot = v ? strdup(v) : NULL; free(old); }

void baton_stuck_guard_prepare(const char *final_path, const char *json_head, const char *json_tail,
                               const char *started_at, double started) {
    pthread_mutex_lock(&stuck_mu);
    replace_str(&stuck_final, final_path);
    replace_str(&stuck_head, json_head);
    replace_str(&stuck_tail, json_tail);
    replace_str(&stuck_started_at, started_at);
    stuck_started = started;
    stuck_armed = 1;
    pthread_mutex_unlock(&stuck_mu);
}

void baton_stuck_guard_budget(const char *reason, int code) {
    pthread_mutex_lock(&stuck_mu);
    replace_str(&stuck_budget_reason, reason);
    stuck_budget_code = code;
    pthread_mutex_unlock(&stuck_mu);
}

void baton_stuck_guard_ack(void) { if (first_signal) stuck_acked = 1; }
void baton_stuck_guard_disarm(void) { stuck_armed = 0; }

static double mono_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}
static void nap_ms(int ms) {
    struct timespec t = { 0, ms * 1000000L };
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
}

const char *baton_signal_name(int sig) {
    switch (sig) {
    case SIGINT: return "SIGINT"; case SIGTERM: return "SIGTERM"; case SIGHUP: return "SIGHUP";
    case SIGKILL: return "SIGKILL";
    case SIGQUIT: return "SIGQUIT"; case SIGUSR1: return "SIGUSR1"; case SIGUSR2: return "SIGUSR2";
    case SIGALRM: return "SIGALRM"; case SIGXCPU: return "SIGXCPU"; case SIGXFSZ: return "SIGXFSZ";
    case SIGVTALRM: return "SIGVTALRM"; case SIGPROF: return "SIGPROF"; default: return NULL;
    }
}

static const char *stuck_signal_name(int sig) {
    const char *name = baton_signal_name(sig);
    return name ? name : "a signal";
}

static void rfc3339(double t, char *out, size_t n) {
    time_t secs = (time_t)t;
    int ms = (int)((t - (double)secs) * 1000);
    if (ms > 999) ms = 999;
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

/* Ends every tracked group: SIGTERM, up to `grace` for them to go (reaping what is ours:
 * the main thread is stuck and will never wait for them), SIGKILL. */
static void stuck_end_groups(double grace) {
    for (int i = 0; i < CRASH_MAX_GROUPS; i++) { pid_t g = crash_groups[i]; if (g > 0) kill(-g, SIGTERM); }
    double until = mono_now() + grace;
    for (;;) {
        int alive = 0;
        for (int i = 0; i < CRASH_MAX_GROUPS; i++) {
            pid_t g = crash_groups[i];
            if (g <= 0) continue;
            int st;
            while (waitpid(-g, &st, WNOHANG) > 0) {}
            if (kill(-g, 0) == 0) alive = 1;
        }
        if (!alive || mono_now() >= until) break;
        nap_ms(20);
    }
    for (int i = 0; i < CRASH_MAX_GROUPS; i++) { pid_t g = crash_groups[i]; if (g > 0) kill(-g, SIGKILL); }
    kill_run_cgroup();
}

static void stuck_act(void) {
    pthread_mutex_lock(&stuck_mu);   /* held until _exit: nothing changes the document now */
    int sig = first_signal;
    int budget = budget_fired && stuck_budget_reason;
    int code = budget ? stuck_budget_code : 128 + sig;
    stuck_end_groups(stuck_grace);
    if (stuck_armed && stuck_final && stuck_head && stuck_tail) {
        size_t n = strlen(stuck_final);
        char *tmp = malloc(n + 16);
        if (tmp) {
            memcpy(tmp, stuck_final, n); memcpy(tmp + n, ".stuck.tmp", 11);
            int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
            if (fd >= 0) {
                struct timespec rt; clock_gettime(CLOCK_REALTIME, &rt);
                double now = (double)rt.tv_sec + rt.tv_nsec / 1e9;
                char ended[40]; rfc3339(now, ended, sizeof ended);
                char why[512];
                if (budget) snprintf(why, sizeof why, "%s", stuck_budget_reason);
                else snprintf(why, sizeof why, "interrupted by %s", stuck_signal_name(sig));
                char mid[1200];
                long long dur = (long long)((long long)(now * 1000) - (long long)(stuck_started * 1000));
                snprintf(mid, sizeof mid, "\"exit_code\": %d, \"reason\": \"%s (the recipe was inside a C function, "
                         "where Lua cannot be interrupted; the runner's guard ended its stages after %.0f s)\", "
                         "\"started_at\": \"%s\", \"ended_at\": \"%s\", \"duration_ms\": %lld",
                         code, why, stuck_ack_wait, stuck_started_at ? stuck_started_at : "", ended, dur < 0 ? 0 : dur);
                crash_write(fd, stuck_head);
                crash_write(fd, mid);
                crash_write(fd, stuck_tail);
                fsync(fd);
                close(fd);
                if (rename(tmp, stuck_final) == 0) {
                    char *dir = strdup(stuck_final);
                    char *slash = dir ? strrchr(dir, '/') : NULL;
                    if (slash) {
                        *slash = 0;
                        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                        if (dfd >= 0) { fsync(dfd); close(dfd); }
                    }
                    free(dir);
                }
            }
        }
        char line[700];
        snprintf(line, sizeof line,
                 "baton: the run was inside a C function and did not answer %s within %.0f s: "
                 "its stages were ended, final.json written (exit %d)\n",
                 budget ? "the budget" : stuck_signal_name(sig), stuck_ack_wait, code);
        crash_write(2, line);
    }
    _exit(code);
}

static void *stuck_main(void *arg) {
    (void)arg;
    for (;;) {
        while (sem_wait(&stuck_sem) != 0) {}
        if (!first_signal) continue;
        double until = mono_now() + stuck_ack_wait;
        while (!stuck_acked && mono_now() < until) nap_ms(20);
        if (stuck_acked) return NULL;   /* Lua or the loop has it: the run ends its own way */
        if (!stuck_armed) continue;     /* the run is over already */
        stuck_act();
    }
    return NULL;
}

int baton_stuck_guard_start(double ack_wait, double grace) {
    if (stuck_running) return 0;
    stuck_ack_wait = ack_wait;
    stuck_grace = grace;
    if (sem_init(&stuck_sem, 0, 0) != 0) return errno;
    /* The thread takes no signals: their handlers run on the threads doing the work. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 256 * 1024);
    int r = pthread_create(&t, &a, stuck_main, NULL);
    pthread_attr_destroy(&a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r == 0) {
        stuck_running = 1;
        if (first_signal) sem_post(&stuck_sem);   /* one that came before */
    }
    return r;
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

int baton_pipe_cloexec(int fds[2], int nonblocking) {
    return pipe2(fds, O_CLOEXEC | (nonblocking ? O_NONBLOCK : 0));
}
