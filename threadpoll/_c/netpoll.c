/* The C core's runtime: Go's runtime/netpoll.go for OS threads, without the GIL.
 *
 * This is threadpoll/_runtime/netpoll.py in C, function for function; read the two side by
 * side. What differs from the Python runtime, besides the language:
 *   - The poller is a pthread that never touches a Python object or the GIL; it readies a
 *     parked thread by posting a semaphore, so a wake-up is one kernel hand-off, not two GIL
 *     hand-offs.
 *   - A parked thread sleeps with the GIL released on its mode's semaphore (tp_sema), the
 *     way PyThread_acquire_lock_timed sleeps: a signal handler running in the thread ends
 *     the wait with EINTR, the thread takes the GIL, runs PyErr_CheckSignals() and parks
 *     again or raises, leaving the pollDesc as netpoll.py's _park leaves it. The main
 *     thread also does so after each MAIN_SLICE of sleep, for a signal that came just
 *     before its sleep began.
 *   - DIVERGENCE(go): as in netpoll.py, no deadline timers: a deadline is an absolute
 *     monotonic time, a parked thread's wait is timed to it, and the thread that times out
 *     runs netpolldeadlineimpl itself. A deadline moved earlier posts the semaphore so the
 *     waiter re-times its wait.
 *   - DIVERGENCE(go): epoll_event.data holds (fdseq << 32 | slot) instead of a tagged
 *     pointer: the slot indexes rt->pds, which owns every pollDesc for the runtime's life, so
 *     the poller never follows a freed pointer, and the sequence tag drops stale events.
 *   - DIVERGENCE(go), and from netpoll.py: leader polling ("the poll leader" below). A
 *     thread about to park, when nobody is polling, runs netpoll itself, timed to its own
 *     deadline, readying the others it finds ready, until its own pollDesc is readied,
 *     closed, expired or a signal arrives: Go's findRunnable, where the M about to stop
 *     blocks in netpoll(delay) and there is no poller thread. Only a thread parking while
 *     nobody polls and at most one other thread follows leads: the kernel wakes it directly
 *     (one hand-off instead of the poller's two) and it readies the other. Threads parking
 *     otherwise follow on their semaphores; with two or more of them the poller pthread
 *     polls, as before leader polling (a leader hands over at once), and a single follower
 *     left uncovered is polled for by the next thread to park or by the poller after
 *     LEAD_TICK (Go's sysmon). The Python runtime keeps its dedicated poller (the reference).
 *   - The hook points (Hooks) and tracing exist only in the Python runtime; tests that
 *     drive them run there (DESIGN: "The C core and the tests").
 *
 * Go: runtime/netpoll.go
 */
#include "netpoll.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <structmember.h>
#include <time.h>

#if defined(TP_FUTEX)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

static PyObject *InternalError; /* netpoll.InternalError, set once by _init (tp_set_static) */
static int life_lock(tp_runtime *rt);
static void life_unlock(tp_runtime *rt);

/* The poll leader's timing: how long one follower may stay uncovered (its leader left, nobody
 * else polls) before the poller polls for it (Go's sysmon polls the network when it was not
 * polled for 10 ms), and how long the poller keeps ticking after it was last needed (then it
 * waits for a signal, and the next leader to leave a follower behind signals it). Two or more
 * followers never wait for the tick: the leader hands over to the poller at once. */
#define LEAD_TICK 0.001
/* DIVERGENCE(go), as netpoll.py's _MAIN_SLICE: the longest the main thread (the one that runs
 * Python signal handlers) sleeps in one go while parked. A signal that reaches it after it
 * published PD_PARKED and before its sleep began only marks itself for Python (CPython's C
 * handler), and the sleep, begun after it, does not end with EINTR for it: such a signal is
 * handled this late at worst, instead of at the next wake-up. Other threads never run
 * Python signal handlers and sleep until their deadline. */
#define MAIN_SLICE 0.1
#define LEAD_LINGER 0.05

/* 1 while this thread is in netpoll as the poll leader (its own pollDesc's wake-ups need
 * no break). */
static _Thread_local int tp_i_lead;
static PyTypeObject PollDescType;
static PyTypeObject RuntimeType;
static uint64_t pd_ids; /* atomic: the last pollDesc id handed out */

/* ---- time and the parking primitive ------------------------------------------------- */

/* The clock time.monotonic() reads on this platform, in seconds. Go: runtime nanotime */
static double
tp_now(void)
{
    struct timespec ts;
#if defined(__APPLE__)
    clock_gettime(CLOCK_UPTIME_RAW, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#if defined(TP_FUTEX)
/* A futex on a word private to this process (no other process maps a pollDesc). */
static long
tp_futex(uint32_t *word, int op, uint32_t val, const struct timespec *abs_timeout)
{
    return syscall(SYS_futex, word, op | FUTEX_PRIVATE_FLAG, val, abs_timeout, NULL,
                   FUTEX_BITSET_MATCH_ANY);
}

#define TP_SEMA_SLEEPING 0x80000000u
#define TP_SEMA_COUNT 0x7fffffffu
#endif

/* ---- the pollDesc lock (tp_lock, netpoll.h) ---- */

/* Go: none (runtime/lock_futex.go lock2, without its spinning) */
static void
tp_lock_init(tp_lock *l)
{
#if defined(TP_FUTEX)
    __atomic_store_n(&l->word, 0, __ATOMIC_RELAXED);
#else
    pthread_mutex_init(&l->mu, NULL);
#endif
}

/* Go: runtime/lock_futex.go lock2 */
static inline void
tp_lock_acquire(tp_lock *l)
{
#if defined(TP_FUTEX)
    uint32_t c = 0;
    if (__atomic_compare_exchange_n(&l->word, &c, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        return;
    }
    /* Held: mark it contended (2) and sleep until a release finds it free. Whoever takes
     * it here keeps the 2, so its release wakes the next sleeper, if any. */
    if (c != 2) {
        c = __atomic_exchange_n(&l->word, 2, __ATOMIC_ACQUIRE);
    }
    while (c != 0) {
        tp_futex(&l->word, FUTEX_WAIT_BITSET, 2, NULL);
        c = __atomic_exchange_n(&l->word, 2, __ATOMIC_ACQUIRE);
    }
#else
    pthread_mutex_lock(&l->mu);
#endif
}

/* Go: runtime/lock_futex.go unlock2 */
static inline void
tp_lock_release(tp_lock *l)
{
#if defined(TP_FUTEX)
    if (__atomic_exchange_n(&l->word, 0, __ATOMIC_RELEASE) == 2) {
        tp_futex(&l->word, FUTEX_WAKE_BITSET, 1, NULL);
    }
#else
    pthread_mutex_unlock(&l->mu);
#endif
}

/* Go: none */
static void
tp_lock_destroy(tp_lock *l)
{
#if defined(TP_FUTEX)
    (void)l;
#else
    pthread_mutex_destroy(&l->mu);
#endif
}

/* ---- the parked thread's wake-up (tp_sema, netpoll.h) ---- */

/* Go: none */
static int
tp_sema_init(tp_sema *s)
{
#if defined(__APPLE__)
    s->sem = dispatch_semaphore_create(0);
    return s->sem == NULL ? ENOMEM : 0;
#elif defined(TP_FUTEX)
    __atomic_store_n(&s->word, 0, __ATOMIC_RELAXED);
    return 0;
#else
    return sem_init(&s->sem, 0, 0) == 0 ? 0 : errno;
#endif
}

/* Go: runtime/proc.go goready (the wake-up half). Must be called while holding pd->lock. */
static void
tp_sema_post(tp_sema *s)
{
#if defined(__APPLE__)
    dispatch_semaphore_signal(s->sem);
#elif defined(TP_FUTEX)
    uint32_t old = __atomic_fetch_add(&s->word, 1, __ATOMIC_RELEASE);
    if (old & TP_SEMA_SLEEPING) {
        /* The waiter sleeps, or is about to: its FUTEX_WAIT expects the word as it was
         * before our add, so it either sees the new count or is woken here. */
        __atomic_fetch_and(&s->word, ~TP_SEMA_SLEEPING, __ATOMIC_RELAXED);
        tp_futex(&s->word, FUTEX_WAKE_BITSET, 1, NULL);
    }
#else
    sem_post(&s->sem);
#endif
}

#if defined(TP_FUTEX)
/* Take one post if there is one: 1, else 0. Go: none */
static inline int
tp_sema_trytake(tp_sema *s)
{
    uint32_t v = __atomic_load_n(&s->word, __ATOMIC_ACQUIRE);
    while (v & TP_SEMA_COUNT) {
        if (__atomic_compare_exchange_n(&s->word, &v, v - 1, 1, __ATOMIC_ACQUIRE,
                                        __ATOMIC_ACQUIRE)) {
            return 1;
        }
    }
    return 0;
}

/* The wait itself: until a post, the absolute CLOCK_MONOTONIC time *abs (NULL: none), or a
 * signal handler. Returns 0, ETIMEDOUT or EINTR. Go: runtime/lock_futex.go notetsleep */
static int
tp_sema_futex_wait(tp_sema *s, const struct timespec *abs)
{
    for (;;) {
        if (tp_sema_trytake(s)) {
            return 0;
        }
        uint32_t v = 0;
        /* Announce the sleep; a post between our look and this fails the exchange. The
         * flag may already be set (a post that has not cleared it yet, or our own earlier
         * round): sleep on it as it is. */
        if (!__atomic_compare_exchange_n(&s->word, &v, TP_SEMA_SLEEPING, 0, __ATOMIC_ACQUIRE,
                                         __ATOMIC_ACQUIRE) &&
            v != TP_SEMA_SLEEPING) {
            continue;
        }
        /* FUTEX_WAIT_BITSET: the timeout is absolute, on CLOCK_MONOTONIC. */
        if (tp_futex(&s->word, FUTEX_WAIT_BITSET, TP_SEMA_SLEEPING, abs) != 0 &&
            (errno == ETIMEDOUT || errno == EINTR)) {
            int e = errno;
            /* No longer sleeping. A post that came meanwhile stays in the count, as in a
             * semaphore, for the caller's accounting (posts) to take. */
            __atomic_fetch_and(&s->word, ~TP_SEMA_SLEEPING, __ATOMIC_RELAXED);
            return e;
        }
        /* Woken, or the word changed before we slept (EAGAIN): look again. No other error
         * can come from these arguments (an aligned word of ours, a normalised timespec);
         * were one to (ENOSYS under a sandbox), this loops as tp_park's loop did on the
         * semaphore's errors before. */
    }
}
#endif

/* An absolute time in seconds (a finite, non-negative double) as a normalised timespec.
 * Go: none */
static struct timespec
tp_timespec(double t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_nsec = 999999999L;
    }
    if (ts.tv_nsec < 0) {
        ts.tv_nsec = 0;
    }
    return ts;
}

/* Wait for a post until deadline (absolute tp_now() seconds; INFINITY for none). Returns 0
 * for a post, ETIMEDOUT, or EINTR when a signal handler ran in this thread (the caller
 * checks signals). Must be called without pd->lock and without the GIL.
 * Go: runtime/proc.go gopark (the sleeping half) */
static int
tp_sema_wait(tp_sema *s, double deadline)
{
    /* Every wait is capped (1e6 s, as netpoll.py's _WAIT_MAX): the caller loops. */
    double now = tp_now();
    double until = deadline;
    if (until > now + 1e6) {
        until = now + 1e6;
    }
#if defined(__APPLE__)
    /* No EINTR from a dispatch semaphore: wake every 50 ms so a signal for the main thread
     * is seen (the caller runs PyErr_CheckSignals on EINTR). */
    if (until > now + 0.05) {
        until = now + 0.05;
        if (dispatch_semaphore_wait(s->sem, dispatch_time(DISPATCH_TIME_NOW, 50000000)) == 0) {
            return 0;
        }
        return until >= deadline ? ETIMEDOUT : EINTR;
    }
    int64_t ns = (int64_t)((until - now) * 1e9);
    if (ns < 0) {
        ns = 0;
    }
    return dispatch_semaphore_wait(s->sem, dispatch_time(DISPATCH_TIME_NOW, ns)) == 0
               ? 0
               : ETIMEDOUT;
#elif defined(TP_FUTEX)
    if (isinf(deadline)) {
        return tp_sema_futex_wait(s, NULL);
    }
    struct timespec ts = tp_timespec(until);
    return tp_sema_futex_wait(s, &ts);
#else
    int r;
    if (isinf(deadline)) {
        r = sem_wait(&s->sem);
        return r == 0 ? 0 : errno;
    }
    struct timespec ts;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
    ts = tp_timespec(until);
    r = sem_clockwait(&s->sem, CLOCK_MONOTONIC, &ts);
#else
    /* sem_timedwait takes a CLOCK_REALTIME deadline: convert the time left. */
    double left = until - now;
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    ts = tp_timespec((double)rt.tv_sec + (double)rt.tv_nsec * 1e-9 + (left > 0 ? left : 0));
    r = sem_timedwait(&s->sem, &ts);
#endif
    return r == 0 ? 0 : errno;
#endif
}

/* Take a post that is known to have been made (count > 0). Go: none */
static void
tp_sema_consume(tp_sema *s)
{
#if defined(__APPLE__)
    dispatch_semaphore_wait(s->sem, DISPATCH_TIME_FOREVER);
#elif defined(TP_FUTEX)
    while (!tp_sema_trytake(s)) {
        /* Not reached: the caller holds pd->lock, under which every post is counted in
         * posts together with its add, and only this waiter takes from the count, so the
         * count is never below posts here. */
    }
#else
    while (sem_wait(&s->sem) != 0 && errno == EINTR) {
    }
#endif
}

/* Go: none */
static void
tp_sema_destroy(tp_sema *s)
{
#if defined(__APPLE__)
    dispatch_release(s->sem);
#elif defined(TP_FUTEX)
    (void)s;
#else
    sem_destroy(&s->sem);
#endif
}

/* ---- pollDesc state helpers (all: must be called while holding pd->lock) ------------ */

static inline uint8_t *
gpp(PollDescObject *pd, int mode)
{
    return mode == MODE_R ? &pd->rg : &pd->wg;
}

static inline double *
dpp(PollDescObject *pd, int mode)
{
    return mode == MODE_R ? &pd->rd : &pd->wd;
}

/* Wake the thread parked on mode. Must be called while holding pd->lock.
 * Go: runtime/proc.go goready */
static void
tp_notify(PollDescObject *pd, int mode)
{
    if (mode == MODE_R) {
        pd->rposts++;
        tp_sema_post(&pd->rsema);
    }
    else {
        pd->wposts++;
        tp_sema_post(&pd->wsema);
    }
    if ((pd->follow & mode) && *gpp(pd, mode) != PD_PARKED) {
        /* A follower readied: it no longer needs anyone's netpoll (see "the poll leader").
         * One only re-timing its wait (a deadline moved earlier) still does. */
        pd->follow &= ~mode;
        __atomic_fetch_sub(&tp_pd_runtime(pd)->nfollowers, 1, __ATOMIC_SEQ_CST);
    }
    if ((pd->lead & mode) && !tp_i_lead) {
        /* The parked thread leads: it sleeps in netpoll, not on the semaphore. A try-lock:
         * a shutdown holding rt->life has already broken every poll and stopped leading. */
        tp_runtime *rt = tp_pd_runtime(pd);
        if (pthread_rwlock_tryrdlock(&rt->life) == 0) {
            if (rt->pollfd >= 0) {
                tp_netpoll_break(rt);
            }
            pthread_rwlock_unlock(&rt->life);
        }
    }
}

/* Whether mode's deadline has passed; marks it expired the first time it is seen.
 * Must be called while holding pd->lock.
 * Go: none (Go's deadline timer stores rd = -1 and publishInfo sets the expired bit) */
static int
tp_expired(PollDescObject *pd, int mode)
{
    double *d = dpp(pd, mode);
    if (isinf(*d)) {
        return *d < 0;
    }
    if (*d > tp_now()) {
        return 0;
    }
    *d = -INFINITY; /* the timer firing: netpolldeadlineimpl */
    __atomic_fetch_add(&tp_pd_runtime(pd)->deadline_expiries, 1, __ATOMIC_RELAXED);
    return 1;
}

/* The poll error code for mode: closing, deadline, event error (reads only).
 * Must be called while holding pd->lock.
 * Go: runtime/netpoll.go netpollcheckerr */
static int
netpollcheckerr(PollDescObject *pd, int mode)
{
    if (pd->closing) {
        return POLL_ERR_CLOSING;
    }
    if (tp_expired(pd, mode)) {
        return POLL_ERR_TIMEOUT;
    }
    if (mode == MODE_R && pd->event_err) {
        return POLL_ERR_NOT_POLLABLE;
    }
    return POLL_NO_ERROR;
}

/* Move mode's state for a wake-up; return 1 if a thread is parked there and the caller
 * must tp_notify it. Only I/O readiness creates PD_READY. Must be called while holding
 * pd->lock. Go: runtime/netpoll.go netpollunblock */
static int
netpollunblock(PollDescObject *pd, int mode, int ioready)
{
    uint8_t *g = gpp(pd, mode);
    int old = *g;
    if (old == PD_READY) {
        return 0;
    }
    if (old == PD_NIL && !ioready) {
        return 0;
    }
    *g = ioready ? PD_READY : PD_NIL;
    return old == PD_PARKED;
}

/* ---- the poll leader ------------------------------------------------------------------
 *
 * rt->leading is the right to poll, held by at most one thread at a time (edge-triggered
 * events would be split between concurrent pollers, and a break could wake the wrong one):
 * either a parked thread (the leader) or the poller pthread.
 *   - A thread about to park leads only when nobody polls (the CAS on rt->leading) and at
 *     most one other thread follows (rt->nfollowers <= 1). With one or two threads parked at
 *     a time (ping-pong, a lone reader) the kernel wakes the leader directly and the leader
 *     readies the other: no poller hand-off.
 *   - Any other park follows: counted in rt->nfollowers (and pd->follow), it sleeps on its
 *     semaphore. Whoever readies it uncounts it (tp_notify), so nfollowers is the number of
 *     parked threads still waiting for someone's netpoll.
 *   - A leader covers the followers while it is in netpoll (it readies what it finds). When
 *     its netpoll returns with two or more followers waiting, it steps down (follows), and a
 *     leader that leaves with two or more waiting signals the poller, which polls at once:
 *     many followers use the poller, as they did before leader polling (echo with many
 *     connections). A leader that leaves one follower behind leaves it uncovered: the next
 *     thread to park leads (in ping-pong, the leader itself, microseconds later), else the
 *     poller polls after LEAD_TICK.
 *   - The poller polls while two or more followers wait, or one has been uncovered for
 *     LEAD_TICK; it gives the right back when at most one waits.
 * A leader's own wake-ups (close, deadline moved, readiness found by the poller) post its
 * semaphore and break netpoll (tp_notify: pd->lead). */

/* Wake the poller if it waits on poller_cond (idle or ticking), to look at the followers.
 * Go: runtime/proc.go wakeNetPoller */
static void
tp_poke_poller(tp_runtime *rt)
{
    pthread_mutex_lock(&rt->lock);
    pthread_cond_signal(&rt->poller_cond);
    pthread_mutex_unlock(&rt->lock);
}

/* Count mode's parked thread as a follower; if nobody holds the right to poll, make sure
 * the poller takes it. Sequentially consistent with tp_lead_end and the poller: a follower
 * counts itself before it looks at rt->leading, a leaver clears rt->leading before it looks
 * at the count, so one of them signals the poller. Must be called while holding pd->lock.
 * Go: runtime/proc.go stopm (with wakeNetPoller) */
static void
tp_follow(PollDescObject *pd, int mode)
{
    tp_runtime *rt = tp_pd_runtime(pd);
    pd->follow |= mode;
    __atomic_fetch_add(&rt->nfollowers, 1, __ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&rt->leading, __ATOMIC_SEQ_CST)) {
        tp_poke_poller(rt);
    }
}

/* Uncount mode's follower, if it is one (readied, or leaving on its own). Must be called
 * while holding pd->lock. Go: none */
static void
tp_unfollow(PollDescObject *pd, int mode)
{
    if (pd->follow & mode) {
        pd->follow &= ~mode;
        __atomic_fetch_sub(&tp_pd_runtime(pd)->nfollowers, 1, __ATOMIC_SEQ_CST);
    }
}

/* Take the right to poll if at most one thread follows and nobody polls (returns 1), else 0
 * (the caller follows). Must be called while holding pd->lock. Go: runtime/proc.go
 * findRunnable (the netpollinited && netpollAnyWaiters && sched.lastpoll != 0 test) */
static int
tp_lead_begin(tp_runtime *rt)
{
    if (__atomic_load_n(&rt->stopping, __ATOMIC_SEQ_CST) ||
        __atomic_load_n(&rt->nfollowers, __ATOMIC_SEQ_CST) > 1) {
        return 0;
    }
    int zero = 0;
    return __atomic_compare_exchange_n(&rt->leading, &zero, 1, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST);
}

/* Give up the right to poll; if two or more followers wait the poller takes it now, if one
 * does it is uncovered from now (the poller takes it after LEAD_TICK unless a thread leads).
 * Go: runtime/proc.go findRunnable (sched.lastpoll store after netpoll, then wakeNetPoller) */
static void
tp_lead_end(tp_runtime *rt)
{
    __atomic_store_n(&rt->leading, 0, __ATOMIC_SEQ_CST);
    uint32_t n = __atomic_load_n(&rt->nfollowers, __ATOMIC_SEQ_CST);
    if (n > 0) {
        pthread_mutex_lock(&rt->lock);
        if (n == 1) {
            rt->uncovered_since = tp_now();
        }
        /* Two or more: now, even if it is ticking. One: only to start it ticking (a
         * signal each time would cost ping-pong a poller wake-up per round trip). */
        if (n > 1 || rt->poller_idle) {
            pthread_cond_signal(&rt->poller_cond);
        }
        pthread_mutex_unlock(&rt->lock);
    }
}

/* One netpoll by the leader, bounded by deadline d (absolute; INFINITY for none). Returns 0,
 * EINTR (a signal handler ran in this thread) or ESHUTDOWN (stop leading). Must be called
 * without pd->lock and without the GIL. Go: runtime/proc.go findRunnable (netpoll(delay)) */
static int
tp_lead_poll(tp_runtime *rt, double d)
{
    int ms = -1;
    if (!isinf(d)) {
        double left = (d - tp_now()) * 1000.0;
        ms = left <= 0 ? 0 : left >= 1e6 ? 1000000 : (int)ceil(left);
    }
    if (!life_lock(rt)) {
        return ESHUTDOWN;
    }
    /* A shutdown that began after tp_lead_begin looked at stopping may have broken the poll
     * already (whoever held the right to poll then drained its break): do not start a wait
     * nothing would end. Shutdown stores stopping before its break, and takes rt->life for
     * writing only after; seen as 0 here, its break is still to come. */
    if (__atomic_load_n(&rt->stopping, __ATOMIC_SEQ_CST)) {
        life_unlock(rt);
        return ESHUTDOWN;
    }
    tp_i_lead = 1;
    int r = tp_netpoll(rt, ms);
    tp_i_lead = 0;
    life_unlock(rt);
    if (r < 0 && r != -EINTR) {
        /* Only a bug can get here (EBADF, EFAULT, EINVAL on our own descriptors). */
        fprintf(stderr, "threadpoll: C leader: netpoll failed: %s\n", strerror(-r));
        abort();
    }
    __atomic_fetch_add(&rt->poller_wakeups, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&rt->leader_polls, 1, __ATOMIC_RELAXED);
    if (r == -EINTR) {
        return EINTR;
    }
    return __atomic_load_n(&rt->stopping, __ATOMIC_ACQUIRE) ? ESHUTDOWN : 0;
}

/* Sleep while mode is PD_PARKED: as the poll leader in netpoll if nobody polls and at most
 * one thread follows (until two or more do), else on the mode's semaphore as a follower;
 * expire the deadline if the wait times out.
 * Returns 1 if a signal handler must run (EINTR, or the end of the main thread's
 * MAIN_SLICE: one may have to): the thread is then still PD_PARKED, as a
 * thread parked in the Python runtime is while its handler runs (dump() shows it; a wake-up
 * meanwhile is kept), and posts may be pending; tp_park again or tp_park_abort follows.
 * Else 0, with every post consumed. Either way it no longer leads or follows. Must be called
 * while holding pd->lock, without the GIL; returns holding pd->lock.
 * Go: runtime/proc.go gopark (and findRunnable's netpoll, when it leads), with the timer's
 * runtime/netpoll.go netpolldeadlineimpl */
static int
tp_park(PollDescObject *pd, int mode)
{
    uint8_t *g = gpp(pd, mode);
    tp_sema *s = mode == MODE_R ? &pd->rsema : &pd->wsema;
    int *posts = mode == MODE_R ? &pd->rposts : &pd->wposts;
    tp_runtime *rt = tp_pd_runtime(pd);
    int main = PyThread_get_thread_ident() == rt->main_ident;
    int intr = 0;
    int leading = 0, decided = 0;
    while (*g == PD_PARKED) {
        double d = *dpp(pd, mode);
        if (!isinf(d) || d < 0) {
            if (tp_expired(pd, mode)) {
                *g = PD_NIL; /* the deadline fired while we slept: netpolldeadlineimpl */
                break;
            }
            d = *dpp(pd, mode);
        }
        if (!decided) {
            decided = 1;
            if (tp_lead_begin(rt)) {
                leading = 1;
                pd->lead |= mode;
            }
            else {
                tp_follow(pd, mode);
            }
        }
        double until = d; /* the end of this sleep: the deadline, or the main thread's slice */
        if (main) {
            double slice_end = tp_now() + MAIN_SLICE;
            if (slice_end < until) {
                until = slice_end;
            }
        }
        tp_lock_release(&pd->lock);
        int r = leading ? tp_lead_poll(rt, until) : tp_sema_wait(s, until);
        tp_lock_acquire(&pd->lock);
        if (until < d && *g == PD_PARKED &&
            (leading ? r == 0 && tp_now() >= until : r == ETIMEDOUT)) {
            r = EINTR; /* the main thread's slice is over: check for signals, as after EINTR */
        }
        if (leading) {
            if (r == EINTR) {
                intr = 1;
                break;
            }
            if (r == ESHUTDOWN || (*g == PD_PARKED &&
                                   __atomic_load_n(&rt->nfollowers, __ATOMIC_SEQ_CST) > 1)) {
                /* Two or more followers wait (the poller takes over), or shutdown (nobody
                 * polls any more; close and deadlines still wake us): wait as a follower.
                 * Our own wake-ups so far posted the semaphore: taken by the waits below. */
                pd->lead &= ~mode;
                leading = 0;
                if (*g == PD_PARKED) {
                    tp_follow(pd, mode);
                }
                tp_lead_end(rt);
            }
            /* Else our own wake-ups posted the semaphore: taken below, after the loop. */
        }
        else if (r == 0) {
            (*posts)--;
        }
        else if (r == EINTR) {
            intr = 1;
            break;
        }
    }
    if (leading) {
        pd->lead &= ~mode;
        tp_lead_end(rt);
    }
    tp_unfollow(pd, mode);
    if (intr) {
        return 1;
    }
    /* Posts made meanwhile (a deadline moved earlier, a wake-up racing our own exit) are
     * already in the semaphore: take them, so the next park starts from zero. */
    while (*posts > 0) {
        tp_sema_consume(s);
        (*posts)--;
    }
    return intr;
}

#define BLOCK_INTR (-1)
#define BLOCK_DOUBLE_WAIT (-2)

/* After tp_park: the parked thread is done sleeping. Must be called while holding pd->lock;
 * releases it. Returns netpollblock's result.
 * Go: runtime/netpoll.go netpollblock (after gopark returns) */
static int
netpollblock_unpark(PollDescObject *pd, int mode, int intr)
{
    uint8_t *g = gpp(pd, mode);
    if (intr) {
        tp_lock_release(&pd->lock);
        return BLOCK_INTR;
    }
    if (mode == MODE_R) {
        pd->rparked_by = 0;
    }
    else {
        pd->wparked_by = 0;
    }
    /* Be careful to not lose a concurrent PD_READY notification. */
    int old = *g;
    *g = PD_NIL;
    tp_lock_release(&pd->lock);
    return old == PD_READY;
}

/* A signal handler returned: park again where netpollblock left off. Must be called
 * without pd->lock and without the GIL. Go: none */
static int
netpollblock_resume(PollDescObject *pd, int mode)
{
    tp_lock_acquire(&pd->lock);
    return netpollblock_unpark(pd, mode, tp_park(pd, mode));
}

/* A signal handler raised: leave no stale waiter (PD_PARKED -> PD_NIL; a pending PD_READY
 * is kept for the next wait, as netpoll.py keeps it) and consume pending posts. Go: none */
static void
netpollblock_abort(PollDescObject *pd, int mode)
{
    uint8_t *g = gpp(pd, mode);
    tp_sema *s = mode == MODE_R ? &pd->rsema : &pd->wsema;
    int *posts = mode == MODE_R ? &pd->rposts : &pd->wposts;
    tp_lock_acquire(&pd->lock);
    if (mode == MODE_R) {
        pd->rparked_by = 0;
    }
    else {
        pd->wparked_by = 0;
    }
    if (*g == PD_PARKED) {
        *g = PD_NIL;
    }
    while (*posts > 0) {
        tp_sema_consume(s);
        (*posts)--;
    }
    tp_lock_release(&pd->lock);
}

/* Park the calling thread until mode is ready, closed or timed out. Returns 1 if I/O is
 * ready, 0 if woken by close, a deadline or nothing at all, BLOCK_INTR if a signal handler
 * must run (a pending PD_READY is kept, as netpoll.py keeps it when Ctrl-C ends a park), or
 * BLOCK_DOUBLE_WAIT. Must be called without pd->lock and without the GIL.
 * Go: runtime/netpoll.go netpollblock */
static int
netpollblock(PollDescObject *pd, int mode, int waitio)
{
    uint8_t *g = gpp(pd, mode);
    tp_lock_acquire(&pd->lock);
    int old = *g;
    if (old == PD_READY) {
        *g = PD_NIL;
        tp_lock_release(&pd->lock);
        return 1;
    }
    if (old != PD_NIL) {
        tp_lock_release(&pd->lock);
        return BLOCK_DOUBLE_WAIT;
    }
    *g = PD_WAIT;
    /* Need to recheck error states after setting the state to PD_WAIT: unblockers store
     * closing/rd/wd first, then look at the state, both under pd->lock. */
    if (waitio || netpollcheckerr(pd, mode) == POLL_NO_ERROR) {
        /* netpollblockcommit: WAIT -> PARKED (nothing can change WAIT while we hold the
         * lock, so the commit follows at once; the Python runtime opens a hook window). */
        *g = PD_PARKED;
        unsigned long me = PyThread_get_thread_ident();
        if (mode == MODE_R) {
            pd->rparked_by = me;
            pd->rparked_at = tp_now();
        }
        else {
            pd->wparked_by = me;
            pd->wparked_at = tp_now();
        }
        return netpollblock_unpark(pd, mode, tp_park(pd, mode));
    }
    /* Be careful to not lose a concurrent PD_READY notification. */
    old = *g;
    *g = PD_NIL;
    tp_lock_release(&pd->lock);
    return old == PD_READY;
}

/* Declare I/O ready on pd for mode (MODE_R|MODE_W); returns how many parked threads it
 * readied. Must be called while holding pd->lock.
 * Go: runtime/netpoll.go netpollready */
static int
netpollready_locked(PollDescObject *pd, int mode)
{
    int n = 0;
    if ((mode & MODE_R) && netpollunblock(pd, MODE_R, 1)) {
        tp_notify(pd, MODE_R);
        n++;
    }
    if ((mode & MODE_W) && netpollunblock(pd, MODE_W, 1)) {
        tp_notify(pd, MODE_W);
        n++;
    }
    return n;
}

/* For a backend's netpoll: the event for slot index with tag seq. An event whose tag is not
 * the pollDesc's current fdseq belongs to an earlier incarnation: dropped (Go drops it the
 * same way, by the tag in its tagged pointer). Runs in the poller thread.
 * Go: runtime/netpoll_epoll.go netpoll (the per-event part) with pollDesc.setEventErr */
int
tp_netpollready_slot(tp_runtime *rt, uint32_t index, uint32_t seq, int mode, int err)
{
    PollDescObject *pd = NULL;
    pthread_mutex_lock(&rt->lock);
    if (index < rt->npds) {
        pd = rt->pds[index];
    }
    pthread_mutex_unlock(&rt->lock);
    if (pd == NULL) {
        __atomic_fetch_add(&rt->stale_events_dropped, 1, __ATOMIC_RELAXED);
        return 0;
    }
    int n = 0;
    tp_lock_acquire(&pd->lock);
    if (pd->fdseq != seq || !pd->registered) {
        tp_lock_release(&pd->lock);
        __atomic_fetch_add(&rt->stale_events_dropped, 1, __ATOMIC_RELAXED);
        return 0;
    }
    /* Counted before the wake-up: the woken thread may read the counter at once. */
    __atomic_fetch_add(&rt->events, 1, __ATOMIC_RELAXED);
    pd->event_err = err;
    n = netpollready_locked(pd, mode);
    tp_lock_release(&pd->lock);
    return n;
}

/* ---- the poller thread ----------------------------------------------------------------- */

static void tp_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *lock, double until);

/* The poller: while two or more parked threads follow, or one has been uncovered for
 * LEAD_TICK (see "the poll leader"), hold the right to poll, block in netpoll and ready
 * whoever became ready; else wait on poller_cond, ticking while it was recently needed.
 * Until stopping. Go: runtime/proc.go findRunnable (its netpoll(delay) call) and
 * runtime/proc.go sysmon (its netpoll when the network was not polled for 10 ms) */
static void *
tp_poller_main(void *arg)
{
    tp_runtime *rt = arg;
#if defined(__linux__)
    pthread_setname_np(pthread_self(), "threadpoll-cpol"); /* 15 characters at most */
#elif defined(__APPLE__)
    pthread_setname_np("threadpoll-cpoller");
#endif
    /* DIVERGENCE(go): the poller polls only for followers (see "the poll leader"). */
    double last_needed = -INFINITY;
    pthread_mutex_lock(&rt->lock);
    while (!rt->stopping) {
        double now = tp_now();
        uint32_t n = __atomic_load_n(&rt->nfollowers, __ATOMIC_SEQ_CST);
        if (n == 0 || __atomic_load_n(&rt->leading, __ATOMIC_SEQ_CST)) {
            /* Nobody to poll for, or a leader covers them and signals when it leaves. */
            if (now - fmax(last_needed, rt->uncovered_since) < LEAD_LINGER) {
                tp_cond_wait_until(&rt->poller_cond, &rt->lock, now + LEAD_TICK);
            }
            else {
                rt->poller_idle = 1;
                pthread_cond_wait(&rt->poller_cond, &rt->lock);
                rt->poller_idle = 0;
            }
            continue;
        }
        if (n == 1 && now < rt->uncovered_since + LEAD_TICK) {
            tp_cond_wait_until(&rt->poller_cond, &rt->lock, rt->uncovered_since + LEAD_TICK);
            continue;
        }
        int zero = 0;
        if (!__atomic_compare_exchange_n(&rt->leading, &zero, 1, 0, __ATOMIC_SEQ_CST,
                                         __ATOMIC_SEQ_CST)) {
            continue; /* a parking thread took the lead meanwhile */
        }
        rt->poller_leads = 1;
        last_needed = now;
        pthread_mutex_unlock(&rt->lock);
        __atomic_fetch_add(&rt->leader_handoffs, 1, __ATOMIC_RELAXED);
        do {
            int r = tp_netpoll(rt, -1);
            if (r < 0 && r != -EINTR) {
                /* Only a bug can get here (EBADF, EFAULT, EINVAL on our own descriptors). */
                fprintf(stderr, "threadpoll: C poller: netpoll failed: %s\n", strerror(-r));
                abort();
            }
            __atomic_fetch_add(&rt->poller_wakeups, 1, __ATOMIC_RELAXED);
        } while (__atomic_load_n(&rt->nfollowers, __ATOMIC_SEQ_CST) > 1 &&
                 !__atomic_load_n(&rt->stopping, __ATOMIC_ACQUIRE));
        pthread_mutex_lock(&rt->lock);
        rt->poller_leads = 0;
        /* A follower left (at most one) is uncovered from now; then the loop looks at
         * nfollowers again: a follower that counted itself while we held the right did not
         * signal us. */
        rt->uncovered_since = tp_now();
        __atomic_store_n(&rt->leading, 0, __ATOMIC_SEQ_CST);
    }
    pthread_mutex_unlock(&rt->lock);
    return NULL;
}

/* Wait on cond (with lock held) until the absolute tp_now() time until, or a signal.
 * Go: none */
static void
tp_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *lock, double until)
{
    double left = until - tp_now();
    if (left <= 0) {
        return;
    }
    struct timespec ts;
#if defined(__APPLE__)
    /* Relative, so the clock does not matter (tp_now reads CLOCK_UPTIME_RAW; the absolute
     * pthread_cond_timedwait would take CLOCK_REALTIME here). NOT COMPILED in this
     * project's checks: .ci/check-kqueue-c covers netpoll_kqueue.c only. */
    ts.tv_sec = (time_t)left;
    ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec > 999999999L) {
        ts.tv_nsec = 999999999L;
    }
    pthread_cond_timedwait_relative_np(cond, lock, &ts);
#else
    (void)left;
    ts.tv_sec = (time_t)until;
    ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec > 999999999L) {
        ts.tv_nsec = 999999999L;
    }
    if (ts.tv_nsec < 0) {
        ts.tv_nsec = 0;
    }
    pthread_cond_timedwait(cond, lock, &ts); /* poller_cond uses CLOCK_MONOTONIC */
#endif
}

/* poller_cond, on the clock tp_now reads (CLOCK_MONOTONIC; macOS waits relative).
 * Go: none */
static void
tp_poller_cond_init(tp_runtime *rt)
{
#if defined(__APPLE__)
    pthread_cond_init(&rt->poller_cond, NULL);
#else
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&rt->poller_cond, &a);
    pthread_condattr_destroy(&a);
#endif
}

/* Take rt->life for reading: 1 if the backend's descriptors are open (the caller may use
 * them until life_unlock), 0 once shutdown has closed them (the lock is then released).
 * Go: none */
static int
life_lock(tp_runtime *rt)
{
    pthread_rwlock_rdlock(&rt->life);
    if (rt->pollfd >= 0) {
        return 1;
    }
    pthread_rwlock_unlock(&rt->life);
    return 0;
}

/* Go: none */
static void
life_unlock(tp_runtime *rt)
{
    pthread_rwlock_unlock(&rt->life);
}

/* Start the poller pthread if it is not running (first open; first wait in a forked
 * child). Returns 0 or an errno. Go: none */
static int
tp_ensure_poller(tp_runtime *rt)
{
    int err = 0;
    pthread_mutex_lock(&rt->lock);
    if (!rt->poller_running && !rt->stopping) {
        /* Signals must reach the other threads, not the poller: start it with every signal
         * blocked (it inherits the mask, so there is no window). */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        err = pthread_create(&rt->poller, NULL, tp_poller_main, rt);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (err == 0) {
            __atomic_store_n(&rt->poller_running, 1, __ATOMIC_RELEASE);
        }
    }
    else if (rt->stopping) {
        err = ESHUTDOWN;
    }
    pthread_mutex_unlock(&rt->lock);
    return err;
}

/* ---- Python types: PollDesc ------------------------------------------------------------ */

static int
parse_mode(PyObject *m)
{
    if (!PyUnicode_Check(m)) {
        PyErr_SetString(PyExc_TypeError, "mode must be 'r', 'w' or 'rw'");
        return -1;
    }
    /* Read the characters (no PyUnicode_AsUTF8: it fills a cache inside the str, a write
     * to a possibly shared object for nothing). */
    Py_ssize_t n = PyUnicode_GetLength(m);
    Py_UCS4 c0 = n >= 1 ? PyUnicode_ReadChar(m, 0) : 0;
    Py_UCS4 c1 = n == 2 ? PyUnicode_ReadChar(m, 1) : 0;
    if (n == 1 && c0 == 'r') {
        return MODE_R;
    }
    if (n == 1 && c0 == 'w') {
        return MODE_W;
    }
    if (n == 2 && ((c0 == 'r' && c1 == 'w') || (c0 == 'w' && c1 == 'r'))) {
        return MODE_R | MODE_W;
    }
    PyErr_Format(PyExc_ValueError, "mode must be 'r', 'w' or 'rw', not %R", m);
    return -1;
}

static PyObject *
internal_error(const char *msg)
{
    PyErr_SetString(tp_load_static(&InternalError), msg);
    return NULL;
}

/* Go: runtime/netpoll.go pollCache.alloc (the allocation) */
static PollDescObject *
pd_new(RuntimeObject *rt_obj)
{
    PollDescObject *pd = PyObject_GC_New(PollDescObject, &PollDescType);
    if (pd == NULL) {
        return NULL;
    }
    tp_lock_init(&pd->lock);
    Py_INCREF(rt_obj);
    pd->rt = (PyObject *)rt_obj;
    pd->index = 0;
    pd->id = (uint32_t)__atomic_add_fetch(&pd_ids, 1, __ATOMIC_RELAXED);
    pd->fd = -1;
    pd->fdseq = 0;
    pd->rg = pd->wg = PD_NIL;
    pd->closing = 0;
    pd->event_err = 0;
    pd->rd = pd->wd = INFINITY;
    pd->rseq = pd->wseq = 0;
    pd->rposts = pd->wposts = 0;
    pd->rparked_by = pd->wparked_by = 0;
    pd->rparked_at = pd->wparked_at = 0.0;
    pd->registered = 0;
    pd->warmw = 0;
    pd->lead = pd->follow = 0;
    pd->kind = PyUnicode_FromString("");
    if (tp_sema_init(&pd->rsema) != 0 || tp_sema_init(&pd->wsema) != 0 || pd->kind == NULL) {
        Py_DECREF(pd);
        PyErr_NoMemory();
        return NULL;
    }
    PyObject_GC_Track(pd);
    return pd;
}

static int
pd_traverse(PollDescObject *pd, visitproc visit, void *arg)
{
    Py_VISIT(pd->rt);
    Py_VISIT(pd->kind);
    return 0;
}

static int
pd_clear(PollDescObject *pd)
{
    Py_CLEAR(pd->kind);
    return 0;
}

static void
pd_dealloc(PollDescObject *pd)
{
    PyObject_GC_UnTrack(pd);
    /* Only reached when its runtime is gone: no poller or waiter can reach it. */
    tp_sema_destroy(&pd->rsema);
    tp_sema_destroy(&pd->wsema);
    tp_lock_destroy(&pd->lock);
    Py_CLEAR(pd->rt);
    Py_CLEAR(pd->kind);
    PyObject_GC_Del(pd);
}

/* prepareRead / prepareWrite for internal/poll's C fast paths: the poll error code, and on
 * success the mode's state reset to PD_NIL (a stale readiness is dropped: the syscall comes
 * next anyway). Takes pd->lock; callable with or without the GIL.
 * Go: runtime/netpoll.go poll_runtime_pollReset */
int
tp_poll_reset(PollDescObject *pd, int mode)
{
    tp_lock_acquire(&pd->lock);
    int err = netpollcheckerr(pd, mode);
    if (err == POLL_NO_ERROR) {
        *gpp(pd, mode) = PD_NIL;
    }
    tp_lock_release(&pd->lock);
    return err;
}

int
tp_is_polldesc(PyObject *o)
{
    return Py_IS_TYPE(o, &PollDescType);
}

/* Go: runtime/netpoll.go poll_runtime_pollReset */
static PyObject *
pd_reset(PollDescObject *pd, PyObject *m)
{
    int mode = parse_mode(m);
    if (mode < 0) {
        return NULL;
    }
    tp_lock_acquire(&pd->lock);
    int err = netpollcheckerr(pd, mode);
    if (err == POLL_NO_ERROR) {
        *gpp(pd, mode) = PD_NIL;
    }
    tp_lock_release(&pd->lock);
    return PyLong_FromLong(err);
}

/* Wait until pd is ready for mode (MODE_R or MODE_W); returns a poll error code, or -1
 * with an exception (a signal handler's, or a failure to start the poller). The GIL is
 * released for the whole wait; a signal handler runs between parks, and its exception ends
 * the wait. Must be called holding the GIL, without pd->lock.
 * Go: runtime/netpoll.go poll_runtime_pollWait */
int
tp_poll_wait(PollDescObject *pd, int mode)
{
    int resume = 0; /* a signal handler ran and returned: park again */
    for (;;) {
        int err = POLL_NO_ERROR, r;
        if (!resume) {
            tp_lock_acquire(&pd->lock);
            err = netpollcheckerr(pd, mode);
            tp_lock_release(&pd->lock);
            if (err != POLL_NO_ERROR) {
                return err;
            }
        }
        if (mode == MODE_W && tp_pd_runtime(pd)->lazy_write) {
            /* Arm write interest before the first park (lazy_write; see the backend). */
            tp_lock_acquire(&pd->lock);
            int arm = !pd->warmw && pd->registered;
            int fd = pd->fd;
            uint32_t seq = pd->fdseq;
            pd->warmw = 1;
            tp_lock_release(&pd->lock);
            if (arm && life_lock(tp_pd_runtime(pd))) {
                tp_netpollarm_write(tp_pd_runtime(pd), pd, fd, seq);
                life_unlock(tp_pd_runtime(pd));
            }
        }
        if (!__atomic_load_n(&tp_pd_runtime(pd)->poller_running, __ATOMIC_ACQUIRE)) {
            int e = tp_ensure_poller(tp_pd_runtime(pd)); /* a forked child starts it lazily */
            if (e != 0) {
                errno = e;
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            }
        }
        Py_BEGIN_ALLOW_THREADS
        for (;;) {
            r = resume ? netpollblock_resume(pd, mode) : netpollblock(pd, mode, 0);
            resume = 0;
            if (r != 0) {
                break;
            }
            /* Can happen if a deadline fired and unblocked us, but before we had a chance
             * to run the deadline was reset: pretend it has not happened and retry. */
            tp_lock_acquire(&pd->lock);
            err = netpollcheckerr(pd, mode);
            tp_lock_release(&pd->lock);
            if (err != POLL_NO_ERROR) {
                break;
            }
        }
        Py_END_ALLOW_THREADS
        if (r == 1) {
            return POLL_NO_ERROR;
        }
        if (r == BLOCK_DOUBLE_WAIT) {
            internal_error("runtime: double wait");
            return -1;
        }
        if (r == BLOCK_INTR) {
            /* Still PD_PARKED while the handler runs, as in the Python runtime. */
            if (PyErr_CheckSignals() < 0) {
                netpollblock_abort(pd, mode);
                return -1;
            }
            resume = 1; /* the handler returned: park again */
            continue;
        }
        return err;
    }
}

/* Go: runtime/netpoll.go poll_runtime_pollWait */
static PyObject *
pd_wait(PollDescObject *pd, PyObject *m)
{
    int mode = parse_mode(m);
    if (mode < 0) {
        return NULL;
    }
    if (mode == (MODE_R | MODE_W)) {
        PyErr_SetString(PyExc_ValueError, "wait mode must be 'r' or 'w'");
        return NULL;
    }
    int err = tp_poll_wait(pd, mode);
    return err < 0 ? NULL : PyLong_FromLong(err);
}

/* Set mode's deadline to d (absolute monotonic seconds; inf for none, -inf or any past
 * time for expired). A parked thread sees the change at once.
 * Go: runtime/netpoll.go poll_runtime_pollSetDeadline */
static PyObject *
pd_set_deadline(PollDescObject *pd, PyObject *args)
{
    double d;
    PyObject *m;
    if (!PyArg_ParseTuple(args, "dO:set_deadline", &d, &m)) {
        return NULL;
    }
    int mode = parse_mode(m);
    if (mode < 0) {
        return NULL;
    }
    if (isnan(d)) {
        PyErr_SetString(PyExc_ValueError, "threadpoll: deadline is NaN");
        return NULL;
    }
    tp_lock_acquire(&pd->lock);
    if (!pd->closing) {
        if (!isinf(d) && d <= tp_now()) {
            d = -INFINITY; /* "don't confuse deadline right now with no deadline" */
        }
        for (int m1 = MODE_R; m1 <= MODE_W; m1 <<= 1) {
            if (!(mode & m1)) {
                continue;
            }
            double *dp = dpp(pd, m1);
            double old = *dp;
            if (old == d) {
                continue; /* the same value again: no seq bump */
            }
            *dp = d;
            if (m1 == MODE_R) {
                pd->rseq++;
            }
            else {
                pd->wseq++;
            }
            if (isinf(d) && d < 0) {
                if (netpollunblock(pd, m1, 0)) {
                    tp_notify(pd, m1);
                }
            }
            else if (d < old && *gpp(pd, m1) == PD_PARKED) {
                tp_notify(pd, m1); /* re-time the parked thread's wait */
            }
        }
    }
    tp_lock_release(&pd->lock);
    Py_RETURN_NONE;
}

/* Evict: mark pd closing and wake every thread parked on it.
 * Go: runtime/netpoll.go poll_runtime_pollUnblock */
static PyObject *
pd_unblock(PollDescObject *pd, PyObject *Py_UNUSED(ignored))
{
    tp_lock_acquire(&pd->lock);
    if (pd->closing) {
        tp_lock_release(&pd->lock);
        return internal_error("runtime: unblock on closing polldesc");
    }
    pd->closing = 1;
    pd->rseq++;
    pd->wseq++;
    if (netpollunblock(pd, MODE_R, 0)) {
        tp_notify(pd, MODE_R);
    }
    if (netpollunblock(pd, MODE_W, 0)) {
        tp_notify(pd, MODE_W);
    }
    tp_lock_release(&pd->lock);
    Py_RETURN_NONE;
}

/* Record whether the backend saw an error event; an event for an earlier incarnation (or
 * an untagged one, None) may clear but never set the bit.
 * Go: runtime/netpoll.go pollDesc.setEventErr */
static PyObject *
pd_set_event_err(PollDescObject *pd, PyObject *args)
{
    int b;
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "pO:set_event_err", &b, &seq)) {
        return NULL;
    }
    long s = -1;
    if (seq != Py_None) {
        s = PyLong_AsLong(seq);
        if (s == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    tp_lock_acquire(&pd->lock);
    if (s >= 0 && (uint32_t)s == pd->fdseq) {
        pd->event_err = b;
    }
    else if (!b) {
        pd->event_err = 0;
    }
    tp_lock_release(&pd->lock);
    Py_RETURN_NONE;
}

#define PD_INT_GETTER(name, field)                                                         \
    static PyObject *pd_get_##name(PollDescObject *pd, void *Py_UNUSED(c))               \
    {                                                                                      \
        tp_lock_acquire(&pd->lock);                                                     \
        long long v = (long long)pd->field;                                                \
        tp_lock_release(&pd->lock);                                                   \
        return PyLong_FromLongLong(v);                                                     \
    }
PD_INT_GETTER(fd, fd)
PD_INT_GETTER(fdseq, fdseq)
PD_INT_GETTER(rg, rg)
PD_INT_GETTER(wg, wg)
PD_INT_GETTER(rseq, rseq)
PD_INT_GETTER(wseq, wseq)
PD_INT_GETTER(lead, lead)
PD_INT_GETTER(follow, follow)

#define PD_BOOL_GETTER(name, field)                                                        \
    static PyObject *pd_get_##name(PollDescObject *pd, void *Py_UNUSED(c))               \
    {                                                                                      \
        tp_lock_acquire(&pd->lock);                                                     \
        int v = pd->field;                                                                 \
        tp_lock_release(&pd->lock);                                                   \
        return PyBool_FromLong(v);                                                         \
    }
PD_BOOL_GETTER(closing, closing)
PD_BOOL_GETTER(event_err, event_err)

#define PD_DOUBLE_GETTER(name, field)                                                      \
    static PyObject *pd_get_##name(PollDescObject *pd, void *Py_UNUSED(c))               \
    {                                                                                      \
        tp_lock_acquire(&pd->lock);                                                     \
        double v = pd->field;                                                              \
        tp_lock_release(&pd->lock);                                                   \
        return PyFloat_FromDouble(v);                                                      \
    }
PD_DOUBLE_GETTER(rd, rd)
PD_DOUBLE_GETTER(wd, wd)
PD_DOUBLE_GETTER(rparked_at, rparked_at)
PD_DOUBLE_GETTER(wparked_at, wparked_at)

/* A store of PD_NIL, as internal/poll's inline prepareRead/prepareWrite does (fd_unix.py's
 * and socket.py's first attempts); any other value is refused. */
static int
pd_set_g(PollDescObject *pd, PyObject *v, int mode)
{
    long x = v == NULL ? -1 : PyLong_AsLong(v);
    if (x == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (x != PD_NIL) {
        PyErr_SetString(PyExc_ValueError, "only PD_NIL may be stored into rg/wg");
        return -1;
    }
    tp_lock_acquire(&pd->lock);
    *gpp(pd, mode) = PD_NIL;
    tp_lock_release(&pd->lock);
    return 0;
}

static int
pd_set_rg(PollDescObject *pd, PyObject *v, void *Py_UNUSED(c))
{
    return pd_set_g(pd, v, MODE_R);
}

static int
pd_set_wg(PollDescObject *pd, PyObject *v, void *Py_UNUSED(c))
{
    return pd_set_g(pd, v, MODE_W);
}

/* The threading.Thread parked in mode, or None (for dump()). */
static PyObject *
parked_thread(unsigned long ident)
{
    if (ident == 0) {
        Py_RETURN_NONE;
    }
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL) {
        return NULL;
    }
    PyObject *active = PyObject_GetAttrString(threading, "_active");
    Py_DECREF(threading);
    if (active == NULL) {
        return NULL;
    }
    PyObject *key = PyLong_FromUnsignedLong(ident);
    if (key == NULL) {
        Py_DECREF(active);
        return NULL;
    }
    PyObject *t = PyObject_CallMethod(active, "get", "O", key);
    Py_DECREF(key);
    Py_DECREF(active);
    return t;
}

static PyObject *
pd_get_rparked_by(PollDescObject *pd, void *Py_UNUSED(c))
{
    tp_lock_acquire(&pd->lock);
    unsigned long ident = pd->rparked_by;
    tp_lock_release(&pd->lock);
    return parked_thread(ident);
}

static PyObject *
pd_get_wparked_by(PollDescObject *pd, void *Py_UNUSED(c))
{
    tp_lock_acquire(&pd->lock);
    unsigned long ident = pd->wparked_by;
    tp_lock_release(&pd->lock);
    return parked_thread(ident);
}

static PyObject *
pd_get_id(PollDescObject *pd, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(pd->id);
}

static PyObject *
pd_get_rt(PollDescObject *pd, void *Py_UNUSED(c))
{
    Py_INCREF(pd->rt);
    return pd->rt;
}

static PyObject *
pd_get_none(PollDescObject *Py_UNUSED(pd), void *Py_UNUSED(c))
{
    Py_RETURN_NONE; /* poller_err: the C poller cannot die (a failure aborts) */
}

/* pd.lock, for diagnostics that read several fields "under the lock": the runtime's
 * snapshot lock (a Python lock that excludes other diagnostic readers only; the fields
 * themselves are each read under the C lock). */
static PyObject *str_pd_lock; /* interned at import (see tp_fdmutex_init_names) */

static PyObject *
pd_get_lock(PollDescObject *pd, void *Py_UNUSED(c))
{
    return PyObject_GetAttr(pd->rt, str_pd_lock);
}

static PyObject *
pd_get_kind(PollDescObject *pd, void *Py_UNUSED(c))
{
    tp_lock_acquire(&pd->lock);
    PyObject *kind = tp_newref(pd->kind);
    tp_lock_release(&pd->lock);
    return kind;
}

/* Store kind (a new reference) under pd->lock; the old one is released after. Go: none */
static void
pd_store_kind(PollDescObject *pd, PyObject *kind)
{
    tp_lock_acquire(&pd->lock);
    PyObject *old = pd->kind;
    pd->kind = kind;
    tp_lock_release(&pd->lock);
    Py_XDECREF(old);
}

static int
pd_set_kind(PollDescObject *pd, PyObject *v, void *Py_UNUSED(c))
{
    if (v == NULL || !PyUnicode_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "kind must be a str");
        return -1;
    }
    pd_store_kind(pd, tp_newref(v));
    return 0;
}

static PyObject *
pd_repr(PollDescObject *pd)
{
    static const char *names[] = {"pdNil", "pdReady", "pdWait", "parked"};
    tp_lock_acquire(&pd->lock);
    int fd = pd->fd, rg = pd->rg, wg = pd->wg, closing = pd->closing;
    unsigned seq = pd->fdseq;
    tp_lock_release(&pd->lock);
    return PyUnicode_FromFormat("<PollDesc fd=%d seq=%u rg=%s wg=%s closing=%s (C)>", fd, seq,
                                names[rg & 3], names[wg & 3], closing ? "True" : "False");
}

static PyGetSetDef pd_getset[] = {
    {"id", (getter)pd_get_id, NULL, NULL, NULL},
    {"rt", (getter)pd_get_rt, NULL, NULL, NULL},
    {"fd", (getter)pd_get_fd, NULL, NULL, NULL},
    {"fdseq", (getter)pd_get_fdseq, NULL, NULL, NULL},
    {"rg", (getter)pd_get_rg, (setter)pd_set_rg, NULL, NULL},
    {"wg", (getter)pd_get_wg, (setter)pd_set_wg, NULL, NULL},
    {"closing", (getter)pd_get_closing, NULL, NULL, NULL},
    {"event_err", (getter)pd_get_event_err, NULL, NULL, NULL},
    {"rd", (getter)pd_get_rd, NULL, NULL, NULL},
    {"wd", (getter)pd_get_wd, NULL, NULL, NULL},
    {"rseq", (getter)pd_get_rseq, NULL, NULL, NULL},
    {"wseq", (getter)pd_get_wseq, NULL, NULL, NULL},
    {"lead", (getter)pd_get_lead, NULL, "1 (read) or 2 (write) while that mode's parked thread is the poll leader", NULL},
    {"follow", (getter)pd_get_follow, NULL, "1 (read) or 2 (write) while that mode's parked thread follows, not yet readied", NULL},
    {"rparked_at", (getter)pd_get_rparked_at, NULL, NULL, NULL},
    {"wparked_at", (getter)pd_get_wparked_at, NULL, NULL, NULL},
    {"rparked_by", (getter)pd_get_rparked_by, NULL, NULL, NULL},
    {"wparked_by", (getter)pd_get_wparked_by, NULL, NULL, NULL},
    {"poller_err", (getter)pd_get_none, NULL, NULL, NULL},
    {"lock", (getter)pd_get_lock, NULL, NULL, NULL},
    {"kind", (getter)pd_get_kind, (setter)pd_set_kind, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef pd_methods[] = {
    {"reset", (PyCFunction)pd_reset, METH_O, "Go: runtime/netpoll.go poll_runtime_pollReset"},
    {"wait", (PyCFunction)pd_wait, METH_O, "Go: runtime/netpoll.go poll_runtime_pollWait"},
    {"set_deadline", (PyCFunction)pd_set_deadline, METH_VARARGS,
     "Go: runtime/netpoll.go poll_runtime_pollSetDeadline"},
    {"unblock", (PyCFunction)pd_unblock, METH_NOARGS,
     "Go: runtime/netpoll.go poll_runtime_pollUnblock"},
    {"set_event_err", (PyCFunction)pd_set_event_err, METH_VARARGS,
     "Go: runtime/netpoll.go pollDesc.setEventErr"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PollDescType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "threadpoll._cpoll.PollDesc",
    .tp_basicsize = sizeof(PollDescObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The C core's pollDesc.\n\nGo: runtime/netpoll.go pollDesc",
    .tp_dealloc = (destructor)pd_dealloc,
    .tp_traverse = (traverseproc)pd_traverse,
    .tp_clear = (inquiry)pd_clear,
    .tp_repr = (reprfunc)pd_repr,
    .tp_getset = pd_getset,
    .tp_methods = pd_methods,
};

/* ---- Python types: Runtime ------------------------------------------------------------- */

/* RuntimeObject: netpoll.h */

/* Note which thread runs Python's signal handlers: threading.main_thread(). Go: none */
static int
tp_load_main_ident(tp_runtime *rt)
{
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL) {
        return -1;
    }
    PyObject *t = PyObject_CallMethod(threading, "main_thread", NULL);
    Py_DECREF(threading);
    if (t == NULL) {
        return -1;
    }
    PyObject *ident = PyObject_GetAttrString(t, "ident");
    Py_DECREF(t);
    if (ident == NULL) {
        return -1;
    }
    rt->main_ident = PyLong_AsUnsignedLong(ident);
    Py_DECREF(ident);
    return PyErr_Occurred() ? -1 : 0;
}

static int
rt_init(RuntimeObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"lazy_write", NULL};
    int lazy_write = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p:Runtime", kwlist, &lazy_write)) {
        return -1;
    }
    if (self->inited) {
        PyErr_SetString(PyExc_RuntimeError, "Runtime already initialised");
        return -1;
    }
    tp_runtime *rt = &self->rt;
    memset(rt, 0, sizeof(*rt));
    pthread_mutex_init(&rt->lock, NULL);
    pthread_rwlock_init(&rt->life, NULL);
    tp_poller_cond_init(rt);
    rt->uncovered_since = -INFINITY;
    rt->pollfd = rt->break_rd = rt->break_wr = -1;
    rt->lazy_write = lazy_write;
    if (tp_load_main_ident(rt) < 0) {
        return -1;
    }
    int err = tp_netpollinit(rt);
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->inited = 1;
    return 0;
}

static int
rt_traverse(RuntimeObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    /* The pollDescs refer back to this runtime; they are kept for the runtime's whole life
     * (their slots are the poller's event tags), so the table is not traversed: a runtime
     * is never collected while its poller may run. */
    return 0;
}

static int
rt_clear(RuntimeObject *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

/* A runtime is only freed when no pollDesc was ever opened on it (each pollDesc keeps it
 * alive): stop a poller that ensure_poller started, so it never outlives the runtime. */
static void
rt_dealloc(RuntimeObject *self)
{
    PyObject_GC_UnTrack(self);
    tp_runtime *rt = &self->rt;
    pthread_mutex_lock(&rt->lock);
    __atomic_store_n(&rt->stopping, 1, __ATOMIC_RELEASE);
    int running = rt->poller_running;
    rt->poller_running = 0;
    pthread_t t = rt->poller;
    pthread_cond_broadcast(&rt->poller_cond);
    pthread_mutex_unlock(&rt->lock);
    if (running) {
        tp_netpoll_break(rt);
        pthread_join(t, NULL); /* the poller never takes the GIL: safe with it held */
    }
    if (self->inited) {
        tp_netpolldeinit(rt);
        self->inited = 0;
    }
    free(rt->pds);
    free(rt->free);
    Py_CLEAR(self->dict);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Register fd with the poller; returns (pd, 0) or (None, errno).
 * Go: runtime/netpoll.go poll_runtime_pollOpen (with pollCache.alloc) */
static PyObject *
rt_open(RuntimeObject *self, PyObject *arg)
{
    tp_runtime *rt = &self->rt;
    int fd = tp_as_int(arg);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int e = tp_ensure_poller(rt);
    if (e != 0) {
        errno = e;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PollDescObject *pd = NULL;
    pthread_mutex_lock(&rt->lock);
    if (rt->nfree > 0) {
        pd = rt->pds[rt->free[--rt->nfree]];
    }
    pthread_mutex_unlock(&rt->lock);
    if (pd == NULL) {
        /* Allocated without rt->lock held: the allocation may run the garbage collector,
         * and with it Python code. */
        pd = pd_new(self);
        if (pd == NULL) {
            return NULL;
        }
        pthread_mutex_lock(&rt->lock);
        if (rt->npds == rt->cap) {
            uint32_t cap = rt->cap ? rt->cap * 2 : 64;
            PollDescObject **pds = realloc(rt->pds, cap * sizeof(*pds));
            uint32_t *fr = pds == NULL ? NULL : realloc(rt->free, cap * sizeof(*fr));
            if (pds != NULL) {
                rt->pds = pds;
            }
            if (fr == NULL) {
                pthread_mutex_unlock(&rt->lock);
                Py_DECREF(pd);
                return PyErr_NoMemory();
            }
            rt->free = fr;
            rt->cap = cap;
        }
        pd->index = rt->npds;
        rt->pds[rt->npds++] = pd; /* the table owns the reference */
        pthread_mutex_unlock(&rt->lock);
    }
    tp_lock_acquire(&pd->lock);
    if (pd->rg != PD_NIL && pd->rg != PD_READY) {
        tp_lock_release(&pd->lock);
        return internal_error("runtime: blocked read on free polldesc");
    }
    if (pd->wg != PD_NIL && pd->wg != PD_READY) {
        tp_lock_release(&pd->lock);
        return internal_error("runtime: blocked write on free polldesc");
    }
    pd->fd = fd;
    pd->closing = 0;
    pd->event_err = 0;
    pd->rseq++;
    pd->rg = PD_NIL;
    pd->rd = INFINITY;
    pd->wseq++;
    pd->wg = PD_NIL;
    pd->wd = INFINITY;
    pd->registered = 1;
    pd->warmw = !rt->lazy_write;
    uint32_t seq = pd->fdseq;
    tp_lock_release(&pd->lock);
    int err = ESHUTDOWN; /* the runtime was shut down after tp_ensure_poller */
    if (life_lock(&self->rt)) {
        err = tp_netpollopen(rt, pd, fd, seq);
        life_unlock(&self->rt);
    }
    if (err != 0) {
        tp_lock_acquire(&pd->lock);
        pd->registered = 0;
        pd->fdseq++;
        tp_lock_release(&pd->lock);
        pthread_mutex_lock(&rt->lock);
        rt->free[rt->nfree++] = pd->index;
        pthread_mutex_unlock(&rt->lock);
        if (err == ESHUTDOWN) {
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        return Py_BuildValue("(Oi)", Py_None, err);
    }
    return Py_BuildValue("(Oi)", (PyObject *)pd, 0);
}

/* Unregister pd's descriptor and free pd (it must have been evicted and have no waiters).
 * Go: runtime/netpoll.go poll_runtime_pollClose (with pollCache.free) */
static PyObject *
rt_close(RuntimeObject *self, PyObject *arg)
{
    tp_runtime *rt = &self->rt;
    if (!PyObject_TypeCheck(arg, &PollDescType)) {
        PyErr_SetString(PyExc_TypeError, "close needs a C PollDesc");
        return NULL;
    }
    PollDescObject *pd = (PollDescObject *)arg;
    tp_lock_acquire(&pd->lock);
    const char *bad = NULL;
    if (!pd->closing) {
        bad = "runtime: close polldesc w/o unblock";
    }
    else if (pd->wg == PD_WAIT || pd->wg == PD_PARKED) {
        bad = "runtime: blocked write on closing polldesc";
    }
    else if (pd->rg == PD_WAIT || pd->rg == PD_PARKED) {
        bad = "runtime: blocked read on closing polldesc";
    }
    else if (!pd->registered) {
        bad = "runtime: close of a free polldesc";
    }
    int fd = pd->fd;
    tp_lock_release(&pd->lock);
    if (bad != NULL) {
        return internal_error(bad);
    }
    if (life_lock(&self->rt)) {
        tp_netpollclose(rt, fd);
        life_unlock(&self->rt);
    }
    tp_lock_acquire(&pd->lock);
    pd->registered = 0;
    pd->fdseq++; /* events for the old incarnation are now recognisably stale */
    tp_lock_release(&pd->lock);
    PyObject *empty = PyUnicode_FromString("");
    if (empty == NULL) {
        return NULL;
    }
    pd_store_kind(pd, empty);
    pthread_mutex_lock(&rt->lock);
    rt->free[rt->nfree++] = pd->index;
    pthread_mutex_unlock(&rt->lock);
    Py_RETURN_NONE;
}

/* Declare I/O ready on pd for mode ("r", "w" or "rw"); returns how many parked threads
 * it readied. Go: runtime/netpoll.go netpollready */
static PyObject *
rt_netpollready(RuntimeObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *p, *m;
    if (!PyArg_ParseTuple(args, "O!O:netpollready", &PollDescType, &p, &m)) {
        return NULL;
    }
    int mode = parse_mode(m);
    if (mode < 0) {
        return NULL;
    }
    PollDescObject *pd = (PollDescObject *)p;
    tp_lock_acquire(&pd->lock);
    int n = netpollready_locked(pd, mode);
    tp_lock_release(&pd->lock);
    return PyLong_FromLong(n);
}

/* Go: none */
static PyObject *
rt_count_close_waited(RuntimeObject *self, PyObject *Py_UNUSED(ignored))
{
    __atomic_fetch_add(&self->rt.closes_waited, 1, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

/* Go: none (Go's scheduler polls the network itself) */
static PyObject *
rt_ensure_poller(RuntimeObject *self, PyObject *Py_UNUSED(ignored))
{
    int e = tp_ensure_poller(&self->rt);
    if (e != 0) {
        errno = e;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* Go: runtime/netpoll.go netpollBreak */
static PyObject *
rt_netpoll_break(RuntimeObject *self, PyObject *Py_UNUSED(ignored))
{
    if (life_lock(&self->rt)) {
        tp_netpoll_break(&self->rt);
        life_unlock(&self->rt);
    }
    Py_RETURN_NONE;
}

/* Stop the poller thread and release the backend (tests; process exit). The whole of it
 * holds rt.life for writing, without the GIL: no other thread is using the descriptors it
 * closes, a concurrent shutdown waits for this one, and the poller (which takes neither)
 * is joined before its epoll descriptor is closed. Go: none */
static PyObject *
rt_shutdown(RuntimeObject *self, PyObject *Py_UNUSED(ignored))
{
    tp_runtime *rt = &self->rt;
    Py_BEGIN_ALLOW_THREADS
    /* Stop leading first: a leader holds rt->life for reading in netpoll; the break ends
     * its poll, it sees stopping and parks as a follower, releasing rt->life. */
    pthread_mutex_lock(&rt->lock);
    __atomic_store_n(&rt->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&rt->poller_cond);
    pthread_mutex_unlock(&rt->lock);
    if (life_lock(rt)) {
        tp_netpoll_break(rt);
        life_unlock(rt);
    }
    pthread_rwlock_wrlock(&rt->life);
    pthread_mutex_lock(&rt->lock);
    int running = rt->poller_running;
    __atomic_store_n(&rt->poller_running, 0, __ATOMIC_RELEASE);
    pthread_t t = rt->poller;
    pthread_mutex_unlock(&rt->lock);
    if (running) {
        tp_netpoll_break(rt);
        pthread_join(t, NULL);
    }
    if (self->inited) {
        tp_netpolldeinit(rt);
        self->inited = 0;
    }
    pthread_rwlock_unlock(&rt->life);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* The pollDescs open with the backend now (between poll_open and poll_close), for the
 * diagnostics and tests (CRuntime.open_pds): the table is the registry, so opening a
 * descriptor makes no entry anywhere else (memory per descriptor, issue 12).
 * Go: none */
static PyObject *
rt_open_pds(RuntimeObject *self, PyObject *Py_UNUSED(ignored))
{
    tp_runtime *rt = &self->rt;
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    /* A slot's pollDesc never changes and lives as long as the runtime (the table owns
     * it): read the count under rt->lock, then each one without it, since appending may
     * allocate (and collect garbage, running Python) and so must hold no lock. */
    pthread_mutex_lock(&rt->lock);
    uint32_t n = rt->npds;
    pthread_mutex_unlock(&rt->lock);
    for (uint32_t i = 0; i < n; i++) {
        pthread_mutex_lock(&rt->lock);
        PollDescObject *pd = rt->pds[i]; /* the table may have been reallocated meanwhile */
        pthread_mutex_unlock(&rt->lock);
        tp_lock_acquire(&pd->lock);
        int open = pd->registered;
        tp_lock_release(&pd->lock);
        if (open && PyList_Append(out, (PyObject *)pd) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* Rebuild in a forked child: fresh locks and semaphores, a fresh backend with every open
 * descriptor re-registered, no waiters (they were parent threads); the poller starts at
 * the child's first open or wait. Go: none (Go does not fork a multi-threaded runtime) */
static PyObject *
rt_after_fork_in_child(RuntimeObject *self, PyObject *Py_UNUSED(ignored))
{
    tp_runtime *rt = &self->rt;
    rt->main_ident = PyThread_get_thread_ident(); /* the forking thread is the child's main */
    pthread_mutex_init(&rt->lock, NULL);
    pthread_rwlock_init(&rt->life, NULL); /* a parent thread may have held it */
    tp_poller_cond_init(rt);
    rt->poller_running = 0;
    rt->wake_sig = 0;
    rt->leading = rt->poller_leads = rt->poller_idle = 0;
    rt->nfollowers = 0;
    rt->uncovered_since = -INFINITY;
    if (!self->inited) {
        Py_RETURN_NONE;
    }
    /* Our references to the parent's epoll/kqueue and wake-up: close them only (the
     * parent's registrations live in the shared epoll instance and must stay). */
    tp_netpolldeinit(rt);
    self->inited = 0;
    int err = tp_netpollinit(rt);
    if (err != 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->inited = 1;
    for (uint32_t i = 0; i < rt->npds; i++) {
        PollDescObject *pd = rt->pds[i];
        tp_lock_init(&pd->lock);
        tp_sema_init(&pd->rsema);
        tp_sema_init(&pd->wsema);
        pd->rposts = pd->wposts = 0;
        pd->rg = pd->wg = PD_NIL;
        pd->rparked_by = pd->wparked_by = 0;
        pd->lead = pd->follow = 0;
        pd->warmw = !rt->lazy_write;
        if (pd->registered) {
            tp_netpollopen(rt, pd, pd->fd, pd->fdseq);
        }
    }
    Py_RETURN_NONE;
}

#define RT_COUNTER(name)                                                                   \
    static PyObject *rt_get_##name(RuntimeObject *self, void *Py_UNUSED(c))               \
    {                                                                                      \
        return PyLong_FromUnsignedLongLong(                                                \
            __atomic_load_n(&self->rt.name, __ATOMIC_RELAXED));                            \
    }
RT_COUNTER(poller_wakeups)
RT_COUNTER(events)
RT_COUNTER(stale_events_dropped)
RT_COUNTER(breaks)
RT_COUNTER(deadline_expiries)
RT_COUNTER(closes_waited)
RT_COUNTER(leader_polls)
RT_COUNTER(leader_handoffs)

/* Parked threads that follow, not yet readied (the poll leader; atomic, may be stale).
 * Go: none */
static PyObject *
rt_get_nfollowers(RuntimeObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(__atomic_load_n(&self->rt.nfollowers, __ATOMIC_SEQ_CST));
}

/* Whether the poller holds the right to poll (the poll leader). Go: none */
static PyObject *
rt_get_poller_leads(RuntimeObject *self, void *Py_UNUSED(c))
{
    pthread_mutex_lock(&self->rt.lock);
    int r = self->rt.poller_leads;
    pthread_mutex_unlock(&self->rt.lock);
    return PyBool_FromLong(r);
}

static PyObject *
rt_get_poller_running(RuntimeObject *self, void *Py_UNUSED(c))
{
    pthread_mutex_lock(&self->rt.lock);
    int r = self->rt.poller_running;
    pthread_mutex_unlock(&self->rt.lock);
    return PyBool_FromLong(r);
}

static PyObject *
rt_is_poll_descriptor(RuntimeObject *self, PyObject *arg)
{
    int fd = tp_as_int(arg);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int is = 0;
    if (life_lock(&self->rt)) {
        is = tp_netpoll_is_poll_descriptor(&self->rt, fd);
        life_unlock(&self->rt);
    }
    return PyBool_FromLong(is);
}

static PyGetSetDef rt_getset[] = {
    /* CPython's own getter makes the dict on first use, safely without the GIL too. */
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"poller_wakeups", (getter)rt_get_poller_wakeups, NULL, NULL, NULL},
    {"events", (getter)rt_get_events, NULL, NULL, NULL},
    {"stale_events_dropped", (getter)rt_get_stale_events_dropped, NULL, NULL, NULL},
    {"breaks", (getter)rt_get_breaks, NULL, NULL, NULL},
    {"deadline_expiries", (getter)rt_get_deadline_expiries, NULL, NULL, NULL},
    {"closes_waited", (getter)rt_get_closes_waited, NULL, NULL, NULL},
    {"leader_polls", (getter)rt_get_leader_polls, NULL, NULL, NULL},
    {"leader_handoffs", (getter)rt_get_leader_handoffs, NULL, NULL, NULL},
    {"nfollowers", (getter)rt_get_nfollowers, NULL, NULL, NULL},
    {"poller_leads", (getter)rt_get_poller_leads, NULL, NULL, NULL},
    {"poller_running", (getter)rt_get_poller_running, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef rt_methods[] = {
    {"poll_open", (PyCFunction)rt_open, METH_O, "Go: runtime/netpoll.go poll_runtime_pollOpen"},
    {"poll_close", (PyCFunction)rt_close, METH_O,
     "Go: runtime/netpoll.go poll_runtime_pollClose"},
    {"netpollready", (PyCFunction)rt_netpollready, METH_VARARGS,
     "Go: runtime/netpoll.go netpollready"},
    {"count_close_waited", (PyCFunction)rt_count_close_waited, METH_NOARGS, "Go: none"},
    {"ensure_poller", (PyCFunction)rt_ensure_poller, METH_NOARGS, "Go: none"},
    {"netpoll_break", (PyCFunction)rt_netpoll_break, METH_NOARGS,
     "Go: runtime/netpoll.go netpollBreak"},
    {"netpoll_is_poll_descriptor", (PyCFunction)rt_is_poll_descriptor, METH_O,
     "Go: runtime/netpoll.go netpollIsPollDescriptor"},
    {"shutdown", (PyCFunction)rt_shutdown, METH_NOARGS, "Go: none"},
    {"after_fork_in_child", (PyCFunction)rt_after_fork_in_child, METH_NOARGS, "Go: none"},
    {"open_pd_list", (PyCFunction)rt_open_pds, METH_NOARGS, "Go: none"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RuntimeType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "threadpoll._cpoll.Runtime",
    .tp_basicsize = sizeof(RuntimeObject),
    .tp_dictoffset = offsetof(RuntimeObject, dict),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The C core's runtime: one poller pthread and its pollDescs.\n\nGo: none",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)rt_init,
    .tp_dealloc = (destructor)rt_dealloc,
    .tp_traverse = (traverseproc)rt_traverse,
    .tp_clear = (inquiry)rt_clear,
    .tp_getset = rt_getset,
    .tp_methods = rt_methods,
};

/* ---- the module ------------------------------------------------------------------------ */

static PyObject *
mod_init(PyObject *Py_UNUSED(m), PyObject *arg)
{
    tp_set_static(&InternalError, arg);
    Py_RETURN_NONE;
}

int tp_fd_init_module(PyObject *m); /* fd_mutex.c / fd_unix.c */
int tp_fd_ready(void);
PyObject *tp_mod_init_fd(PyObject *m, PyObject *args);
PyObject *tp_fd_read(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *tp_fd_read_into(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *tp_fd_send(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *tp_fd_write(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *tp_fd_accept(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *tp_conn_read(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *tp_conn_read_into(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *tp_conn_write(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *tp_try_recv(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *tp_try_recv_into(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *tp_try_send(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *tp_fill_bytes(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *tp_mod_init_io(PyObject *m, PyObject *arg);
PyObject *tp_mod_init_reentry(PyObject *m, PyObject *arg);

static PyMethodDef mod_methods[] = {
    {"_init", (PyCFunction)mod_init, METH_O, "Set the InternalError class."},
    {"_init_fd", (PyCFunction)tp_mod_init_fd, METH_VARARGS,
     "Set the FDMutexError class and the Sema type (fd_mutex.py)."},
    {"_init_reentry", (PyCFunction)tp_mod_init_reentry, METH_O,
     "Set fd_unix's reentry check for fdMutexes without their own."},
    {"_init_io", (PyCFunction)tp_mod_init_io, METH_O,
     "Set the poll error converter (fd_poll_runtime.convert_err)."},
    {"fd_read", (PyCFunction)(void (*)(void))tp_fd_read, METH_FASTCALL,
     "Go: internal/poll/fd_unix.go FD.Read (recv with flags)"},
    {"fd_read_into", (PyCFunction)(void (*)(void))tp_fd_read_into, METH_FASTCALL,
     "Go: internal/poll/fd_unix.go FD.Read (recv_into with flags)"},
    {"fd_send", (PyCFunction)(void (*)(void))tp_fd_send, METH_FASTCALL,
     "Go: internal/poll/fd_unix.go FD.Write (one successful send with flags)"},
    {"fd_write", (PyCFunction)(void (*)(void))tp_fd_write, METH_FASTCALL,
     "Go: internal/poll/fd_unix.go FD.Write"},
    {"fd_accept", (PyCFunction)(void (*)(void))tp_fd_accept, METH_FASTCALL,
     "Go: internal/poll/fd_unix.go FD.Accept"},
    {"conn_read", (PyCFunction)(void (*)(void))tp_conn_read, METH_FASTCALL,
     "fd.read(n) straight from Conn.read. Go: internal/poll/fd_unix.go FD.Read"},
    {"conn_read_into", (PyCFunction)(void (*)(void))tp_conn_read_into, METH_FASTCALL,
     "fd.read_into(buf) straight from Conn.read_into. Go: internal/poll/fd_unix.go FD.Read"},
    {"conn_write", (PyCFunction)(void (*)(void))tp_conn_write, METH_FASTCALL,
     "fd.write(data) straight from Conn.write. Go: internal/poll/fd_unix.go FD.Write"},
    {"try_recv", (PyCFunction)(void (*)(void))tp_try_recv, METH_FASTCALL,
     "The drop-in recv's first try, or None. Go: internal/poll/fd_unix.go FD.Read"},
    {"try_recv_into", (PyCFunction)(void (*)(void))tp_try_recv_into, METH_FASTCALL,
     "The drop-in recv_into's first try, or None. Go: internal/poll/fd_unix.go FD.Read"},
    {"try_send", (PyCFunction)(void (*)(void))tp_try_send, METH_FASTCALL,
     "The drop-in send's first try, or None. Go: internal/poll/fd_unix.go FD.Write"},
    {"fill_bytes", (PyCFunction)(void (*)(void))tp_fill_bytes, METH_FASTCALL,
     "A bytes object of at most n bytes that fill(view) writes in place. Go: none"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cpoll_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "threadpoll._cpoll",
    .m_doc = "threadpoll's C core: Go's runtime netpoll and the hot half of internal/poll.",
    .m_size = -1,
    .m_methods = mod_methods,
};

PyMODINIT_FUNC
PyInit__cpoll(void)
{
    if (PyType_Ready(&PollDescType) < 0 || PyType_Ready(&RuntimeType) < 0) {
        return NULL;
    }
    if (tp_fd_ready() < 0) {
        return NULL;
    }
    str_pd_lock = PyUnicode_InternFromString("pd_lock");
    if (str_pd_lock == NULL) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&cpoll_module);
    if (m == NULL) {
        return NULL;
    }
#ifdef Py_GIL_DISABLED
    /* Every shared field is under a C lock, atomic, or in its object's critical section
     * (netpoll.h): importing the module keeps the GIL disabled. */
    if (PyUnstable_Module_SetGIL(m, Py_MOD_GIL_NOT_USED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#endif
    Py_INCREF(&PollDescType);
    Py_INCREF(&RuntimeType);
    if (PyModule_AddObject(m, "PollDesc", (PyObject *)&PollDescType) < 0 ||
        PyModule_AddObject(m, "Runtime", (PyObject *)&RuntimeType) < 0 ||
        PyModule_AddStringConstant(m, "backend", tp_backend_name) < 0 ||
        tp_fd_init_module(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
