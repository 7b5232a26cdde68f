#ifndef CBATONSYS_H
#define CBATONSYS_H
#include <sys/types.h>
#include <stdint.h>

/* ---- Spawning a stage -------------------------------------------------
 * fork + exec in C because the child may only call async-signal-safe
 * functions: its own process group (or session), a parent-death signal,
 * default signal dispositions and an empty mask (Foundation's children
 * inherit SIGTERM blocked), the three standard descriptors, cwd, execve.
 * Returns 0 and the pid, or an errno (exec failures included: the child
 * reports them in memory it shares with the parent until it has exec'd).
 * out_pidfd (may be NULL): a pidfd for the child, -1 if none could be made. */
typedef struct {
    const char *path;          /* executable, already resolved */
    char *const *argv;
    char *const *envp;
    const char *cwd;           /* NULL: inherit */
    int stdin_fd, stdout_fd, stderr_fd; /* -1: /dev/null */
    int new_session;           /* setsid() instead of setpgid(0, 0) */
    int pdeathsig;             /* signal sent to the child when its parent dies, 0: none */
} baton_spawn_opts;

int baton_spawn(const baton_spawn_opts *opts, pid_t *out_pid, int *out_pidfd);

/* As baton_spawn, but returns as soon as the child exists, before its exec (where the
 * kernel has clone3; elsewhere it is baton_spawn). A failure before exec is written to the
 * child's stderr and ends it with 127 (not found) or 126, as a shell does. *out_block (may
 * be NULL) is memory the child runs on until its exec: pass it to baton_spawn_release once
 * the child has been reaped, not before. */
int baton_spawn_async(const baton_spawn_opts *opts, pid_t *out_pid, int *out_pidfd, void **out_block);
void baton_spawn_release(void *block);

/* Containment (a cgroup v2 per stage): the next baton_spawn_async's child is born in the
 * cgroup whose directory `dirfd` is (clone3's CLONE_INTO_CGROUP; -1: none). broken: the
 * kernel refused it (or has no clone3): the caller uses its fallback. */
void baton_spawn_into_cgroup(int dirfd);
int  baton_spawn_cgroup_broken(void);
/* The run cgroup's cgroup.kill, written by the crash and stuck guards (NULL: none). */
void baton_containment_set(const char *cgroup_kill_path);
/* The process groups of live stages and commands (the crash guard's list): up to max. */
int  baton_tracked_groups(pid_t *out, int max);

/* pidfd_open(2): a descriptor that polls readable when the process exits. */
int baton_pidfd_open(pid_t pid);

/* ---- Signals ------------------------------------------------------------
 * SIGINT, SIGTERM, SIGHUP and every other signal whose default action ends a
 * process (SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGXCPU, SIGXFSZ, SIGVTALRM,
 * SIGPROF; the crash signals are the crash guard's) set a flag, write one byte
 * to a self-pipe (so any poll() loop wakes at once) and call an optional hook
 * (the Lua layer sets one that makes running Lua code raise). SIGPIPE is
 * ignored so a closed pipe is an error code, not a death; the kernel's own
 * SIGXFSZ (a write past the file size limit) is dropped, so a full disk is
 * EFBIG, not a death, while a SIGXFSZ sent by another process ends the run. */
/* pipe2(fds, O_CLOEXEC [| O_NONBLOCK]): both ends close-on-exec from their creation, so a
 * process started meanwhile on another thread cannot inherit them (Glibc's Swift module does
 * not declare pipe2). Returns 0, or -1 with errno. */
int  baton_pipe_cloexec(int fds[2], int nonblocking);
void baton_signals_install(void);
int  baton_signal_pending(void);      /* the first signal received, 0 if none */
int  baton_signal_sender(void);       /* the pid that sent it (kill), 0 for the kernel or a terminal */
int  baton_signal_last(void);         /* the most recent one */
int  baton_signal_fd(void);           /* read end of the self-pipe */
void baton_signal_clear(void);        /* forget received signals (the shell after Ctrl-C) */
void baton_signal_drain(void);        /* empty the self-pipe */
void baton_signal_set_hook(void (*hook)(int));
void baton_signal_raise_flag(int sig); /* as if sig had arrived (tests, cancel paths) */

/* The run budget: SIGALRM (handled like SIGINT/SIGTERM: flag, self-pipe, hook) after
 * `seconds`; 0 disarms. baton_budget_expired: whether the first signal was the budget's
 * timer (a SIGALRM from the kernel, SI_KERNEL), not a SIGALRM sent with kill(2). */
int baton_budget_arm(double seconds);
int baton_budget_expired(void);

/* PR_SET_CHILD_SUBREAPER: orphaned grandchildren are re-parented to us. */
int baton_set_subreaper(void);

/* ---- The crash guard ----------------------------------------------------
 * If Baton itself crashes (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP:
 * a Swift trap), the handler ends every live stage's process group with
 * SIGKILL, writes a final.json (failed, "baton crashed (signal N)") with only
 * async-signal-safe calls, and re-raises the signal. The document is prepared
 * in advance: `json_head` and `json_tail` surround the reason text. */
void baton_crash_guard_install(const char *final_path, const char *json_head, const char *json_tail);
void baton_crash_guard_track(pid_t pgid);   /* a stage's group started */
void baton_crash_guard_untrack(pid_t pgid); /* it ended */
void baton_crash_guard_disarm(void);        /* the real final.json is written */

/* ---- The stuck guard -----------------------------------------------------
 * Lua's hook cannot fire inside a C function (`s:find(string.rep("a*", 12) .. "b")` runs
 * for hours in the pattern matcher), so a signal, the budget or `baton cancel` could not
 * end such a run. A thread (started by `baton run`/`resume`, not the shell) wakes at the
 * first ending signal; if neither the Lua hook nor the event loop acknowledges it within
 * `ack_wait` seconds, it ends every live stage's group (SIGTERM, SIGKILL after `grace`),
 * writes final.json from the prepared document (cancelled; the signal's or the budget's
 * reason and exit code) and _exits with that code.
 * prepare: the document cut around `"exit_code": N, "reason": "...", "started_at": ...,
 * "ended_at": ..., "duration_ms": N` (filled in when it acts); `started_at` as written
 * (RFC 3339) and `started` (epoch seconds). budget: the budget's reason and exit code. */
void baton_stuck_guard_prepare(const char *final_path, const char *json_head, const char *json_tail,
                               const char *started_at, double started);
void baton_stuck_guard_budget(const char *reason, int code);
int  baton_stuck_guard_start(double ack_wait, double grace);
void baton_stuck_guard_ack(void);      /* Lua or the loop saw the signal: the run ends its own way */
/* "SIGTERM", ... for the signals Baton handles (and SIGKILL); NULL for any other. */
const char *baton_signal_name(int sig);
void baton_stuck_guard_disarm(void);   /* the real final.json is written */

/* An anonymous in-memory file (close-on-exec): a stage's stdin text. */
int baton_memfd(const char *name);

/* ---- The control socket (a live run's `control.sock`) ---------------------
 * listen: a Unix stream socket at `path` (replacing a stale one), mode 0600 from the
 * start (umask around bind), close-on-exec and non-blocking; returns the fd or -errno.
 * accept: the next connection (blocking, close-on-exec) and its peer's credentials
 * (SO_PEERCRED); returns the fd or -errno. connect: returns the fd or -errno. */
int baton_control_listen(const char *path);
int baton_control_accept(int listen_fd, uid_t *uid, pid_t *pid);
int baton_control_connect(const char *path);

#endif
