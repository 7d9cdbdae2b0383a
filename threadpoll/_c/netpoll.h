/* The C core's shared declarations: Go's runtime/netpoll.go pollDesc and its runtime.
 *
 * Read beside threadpoll/_runtime/netpoll.py (the reference) and Go's runtime/netpoll.go.
 * Locking rules, for every file of the C core:
 *   - pd->lock guards every mutable field of a pollDesc marked "pd->lock" below; it is held
 *     only for short sections that make no syscall that can block and run no Python.
 *   - rt->lock guards the pollDesc table and the poller's lifecycle fields.
 *   - The poller pthread never touches a Python object or the GIL: it reaches pollDescs
 *     through rt->pds (C pointers) and their C fields only.
 *   - A thread holding the GIL may take pd->lock or rt->lock (nobody holding them waits
 *     for the GIL); a thread holding either never takes the GIL.
 *   - rt->life is read-held by every use of the backend's descriptors (pollfd, the
 *     wake-up) from a Python-called function, write-held by shutdown while it closes them:
 *     no thread uses a descriptor that has been closed (and its number perhaps reused).
 *     Held around non-blocking syscalls, and by the poll leader across its netpoll, which
 *     takes rt->lock and pd->lock (netpollready) meanwhile; a holder never takes the GIL,
 *     and nobody blocks on rt->life while holding pd->lock or rt->lock.
 *   - Nothing relies on the GIL: on a free-threaded build (Py_GIL_DISABLED) the module
 *     declares Py_MOD_GIL_NOT_USED. A Python object field that can change after creation
 *     is read and written under a lock (pd->lock) or in its object's critical section
 *     (Py_BEGIN_CRITICAL_SECTION, a no-op with the GIL); the module's class references
 *     are set once, by compare-and-swap.
 */
#ifndef THREADPOLL_NETPOLL_H
#define THREADPOLL_NETPOLL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <limits.h>
#include <stdint.h>

/* Futex words for the pollDesc's lock and wake-ups (tp_lock, tp_sema): 64-bit Linux. On
 * 32-bit Linux a 64-bit time_t needs futex_time64 and a 32-bit one the old call: the pthread
 * mutex and sem_t there, which choose for themselves. */
#if defined(__linux__) && defined(__LP64__)
#define TP_FUTEX 1
#endif

#if defined(__APPLE__)
#include <dispatch/dispatch.h>
#elif !defined(TP_FUTEX)
#include <semaphore.h>
#endif

/* Error codes of runtime_poll_reset / runtime_poll_wait (the values netpoll.py uses). */
#define POLL_NO_ERROR 0
#define POLL_ERR_CLOSING 1
#define POLL_ERR_TIMEOUT 2
#define POLL_ERR_NOT_POLLABLE 3

/* The per-mode states, as in netpoll.py (Go: pdNil, pdReady, pdWait, a *g):
 *
 *   PD_NIL     nobody waits, no notification pending
 *   PD_READY   an I/O notification is pending; the next netpollblock consumes it
 *   PD_WAIT    a thread has published that it is about to park
 *   PD_PARKED  a thread sleeps on the mode's semaphore
 *
 * reader  netpollblock   READY -> NIL (true); NIL -> WAIT, re-check, -> PARKED; on waking
 *                        PARKED/READY/NIL -> NIL, returning old == READY
 * poller  netpollready   NIL/WAIT -> READY; PARKED -> READY (+post); READY stays
 * closer, netpollunblock NIL stays; READY stays; WAIT -> NIL; PARKED -> NIL (+post)
 * deadline
 */
#define PD_NIL 0
#define PD_READY 1
#define PD_WAIT 2
#define PD_PARKED 3

/* The wake-up one parked thread sleeps on (a counting semaphore with a single waiter: the
 * fdMutex lets one reader and one writer park at a time). Its waits return EINTR when a
 * signal handler runs in the waiting thread, so a parked main thread sees Ctrl-C.
 * - 64-bit Linux (TP_FUTEX): a futex word, 4 bytes (memory per descriptor, issue 12;
 *   glibc's sem_t is 32): the count of posts not yet taken, and TP_SEMA_SLEEPING while the
 *   waiter is in (or on its way into) FUTEX_WAIT, so a post makes the wake-up syscall only
 *   when someone may sleep. A timed wait returns EINTR whenever a handler runs; an untimed
 *   one too, as Python installs its handlers without SA_RESTART.
 * - The BSDs and 32-bit Linux: a POSIX semaphore (its waits are never restarted,
 *   SA_RESTART or not).
 * - macOS has no unnamed POSIX semaphores: a dispatch semaphore, waited on in slices (see
 *   tp_sema_wait). */
typedef struct {
#if defined(__APPLE__)
    dispatch_semaphore_t sem;
#elif defined(TP_FUTEX)
    uint32_t word; /* atomic: posts not yet taken | TP_SEMA_SLEEPING */
#else
    sem_t sem;
#endif
} tp_sema;

/* A pollDesc's lock. 64-bit Linux (TP_FUTEX): a futex word, 4 bytes (pthread_mutex_t is
 * 40): 0 free, 1 held, 2 held and someone may sleep on it (the classic three-state futex
 * mutex: a release makes the wake-up syscall only from 2). Elsewhere: a pthread mutex.
 * Neither spins, as glibc's default mutex does not; every section under it is a few loads
 * and stores. */
typedef struct {
#if defined(TP_FUTEX)
    uint32_t word; /* atomic */
#else
    pthread_mutex_t mu;
#endif
} tp_lock;

struct tp_runtime;

/* Go: runtime/netpoll.go pollDesc
 * The fields are ordered for size (memory per descriptor, issue 12): the 4-byte ones
 * together, then the states and flags a byte each, no padding (144 bytes on 64-bit Linux,
 * which with the GC header is one of pymalloc's 160-byte blocks). */
typedef struct {
    PyObject_HEAD
    PyObject *rt;           /* constant: the Runtime, a RuntimeObject (tp_pd_runtime gives its
                               C part, for the poller) */
    tp_lock lock;
    uint32_t index;         /* constant: this pollDesc's slot in the runtime's pds */
    uint32_t id;            /* constant: a process-unique id (netpoll.py's pd.id); pollDescs
                               are never freed, so 2^32 of them would not fit in memory */
    int fd;                 /* pd->lock (the poller may still reach a freed slot) */
    uint32_t fdseq;         /* pd->lock: incarnation, bumped on free (stale-event guard) */
    int rposts, wposts;     /* pd->lock: posts made to rsema / wsema and not yet consumed */
    tp_sema rsema, wsema;   /* a parked reader / writer sleeps here */
    uint8_t rg, wg;         /* pd->lock: read / write state (table above) */
    uint8_t closing;        /* pd->lock: set by runtime_poll_unblock */
    uint8_t event_err;      /* pd->lock: the backend saw an error event */
    uint8_t registered;     /* pd->lock: open with the backend (between open and close) */
    uint8_t warmw;          /* pd->lock: write interest armed (always, unless lazy_write) */
    uint8_t lead;           /* pd->lock: MODE_R / MODE_W whose parked thread is the runtime's
                               poll leader, in netpoll instead of on its semaphore (a wake-up
                               for it must also break netpoll) */
    uint8_t follow;         /* pd->lock: MODE_R / MODE_W whose parked thread is counted in
                               rt->nfollowers (uncounted by whoever readies it) */
    double rd, wd;          /* pd->lock: deadlines, absolute monotonic seconds; INFINITY for
                               none, -INFINITY once expired */
    uint64_t rseq, wseq;    /* pd->lock: bumped when rd / wd change or the pd is reused */
    unsigned long rparked_by, wparked_by; /* pd->lock: thread ident of the parked thread */
    double rparked_at, wparked_at;        /* pd->lock: when it parked */
    PyObject *kind;         /* pd->lock: what the descriptor is ("tcp", "pipe", ...) */
} PollDescObject;

/* The backend: one C file per platform implements these (Go's netpoll_epoll.go and
 * netpoll_kqueue.go contract, the Python Backend protocol's C half). */
int tp_netpollinit(struct tp_runtime *rt);                 /* 0 or errno */
void tp_netpolldeinit(struct tp_runtime *rt);
int tp_netpollopen(struct tp_runtime *rt, PollDescObject *pd, int fd, uint32_t seq);
int tp_netpollclose(struct tp_runtime *rt, int fd);        /* 0 or errno */
/* timeout_ms: -1 blocks, 0 polls; returns the waiters readied, or -errno */
int tp_netpoll(struct tp_runtime *rt, int timeout_ms);
void tp_netpoll_break(struct tp_runtime *rt);
int tp_netpollarm_write(struct tp_runtime *rt, PollDescObject *pd, int fd, uint32_t seq);
int tp_netpoll_is_poll_descriptor(struct tp_runtime *rt, int fd);
extern const char tp_backend_name[];

/* The runtime: Go's package-level netpoll state, one per Runtime object. */
typedef struct tp_runtime {
    pthread_mutex_t lock;
    pthread_rwlock_t life;  /* the backend descriptors' life (see the top of this file) */
    PollDescObject **pds;   /* lock: slot -> pollDesc (owned references; never shrinks) */
    uint32_t npds, cap;     /* lock */
    uint32_t *free;         /* lock: the pollcache free list (slots) */
    uint32_t nfree;         /* lock */
    int poller_running;     /* lock (written; tp_poll_wait's first look is atomic) */
    int stopping;           /* lock (written; read atomically by the poll leader) */
    pthread_t poller;       /* lock */
    /* backend descriptors: constant between netpollinit and netpolldeinit (life) */
    int pollfd;             /* the epoll or kqueue descriptor; -1 once closed */
    int break_rd, break_wr; /* the wake-up: an eventfd (both the same) or a pipe */
    int wake_sig;           /* lock: a wake-up is pending (de-duplicates breaks) */
    int lazy_write;         /* constant: register for reading only; arm writes on demand */
    unsigned long main_ident; /* constant (rewritten in a fork child): the main thread */
    /* Leader polling (netpoll.c, "the poll leader"): */
    pthread_cond_t poller_cond; /* the poller waits here while it need not poll */
    int leading;            /* atomic: the right to poll is held (by a leader or the poller) */
    int poller_leads;       /* lock: ... by the poller */
    int poller_idle;        /* lock: the poller waits on poller_cond without a timeout */
    uint32_t nfollowers;    /* atomic: parked threads on their semaphores not yet readied
                               (each counted in its pd->follow) */
    double uncovered_since; /* lock: when a leader (or the poller) last left one follower */
    /* counters, each updated atomically, read by stats without a lock (a stale one is
       fine): poller_wakeups counts every return from netpoll, by the poller or a leader;
       leader_polls the returns in a parked thread that led; leader_handoffs the times the
       poller took the right to poll (for followers a leader left or stepped down from) */
    uint64_t poller_wakeups, events, stale_events_dropped, leader_polls, leader_handoffs;
    uint64_t breaks, deadline_expiries, closes_waited;
} tp_runtime;

/* The Python type Runtime: the runtime's C part inside a Python object. */
typedef struct {
    PyObject_HEAD
    tp_runtime rt;
    int inited;       /* rt.life: netpollinit succeeded and netpolldeinit has not run */
    PyObject *dict;   /* attributes the Python subclass adds (PyObject_GenericGetDict) */
} RuntimeObject;

/* A pollDesc's runtime (its C part). Go: none (Go has one netpoll per process) */
static inline tp_runtime *
tp_pd_runtime(PollDescObject *pd)
{
    return &((RuntimeObject *)pd->rt)->rt;
}

/* Called by a backend's tp_netpoll for an event on slot index with tag seq; takes rt->lock
 * and pd->lock itself. Returns how many parked threads it readied. */
int tp_netpollready_slot(tp_runtime *rt, uint32_t index, uint32_t seq, int mode, int err);

int tp_poll_reset(PollDescObject *pd, int mode); /* netpoll.c: prepareRead/prepareWrite */
int tp_poll_wait(PollDescObject *pd, int mode);  /* netpoll.c: waitRead/waitWrite; -1 raised */
int tp_is_polldesc(PyObject *o);

/* Small compatibility helpers (Python 3.9 to 3.13). */

/* Critical sections exist from 3.13 (no-ops unless the GIL is disabled); before that the
 * GIL serialises what they would. */
#ifndef Py_BEGIN_CRITICAL_SECTION
#define Py_BEGIN_CRITICAL_SECTION(op) {
#define Py_END_CRITICAL_SECTION() }
#endif

/* Publish a module-level object reference once: the first call stores a new reference, a
 * later one keeps the first (a reader may hold the stored object without a reference of
 * its own, so it is never replaced). Readers use tp_load_static. */
static inline void
tp_set_static(PyObject **slot, PyObject *o)
{
    PyObject *expected = NULL;
    Py_INCREF(o);
    if (!__atomic_compare_exchange_n(slot, &expected, o, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        Py_DECREF(o);
    }
}

static inline PyObject *
tp_load_static(PyObject **slot)
{
    return __atomic_load_n(slot, __ATOMIC_ACQUIRE);
}

static inline PyObject *
tp_newref(PyObject *o)
{
    Py_INCREF(o);
    return o;
}

/* An int argument as a C int: -1 with an exception on error. */
static inline int
tp_as_int(PyObject *o)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < INT_MIN || v > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C int");
        return -1;
    }
    return (int)v;
}

#define MODE_R 1
#define MODE_W 2

/* Go: internal/poll/fd_mutex.go fdMutex. The state word's layout is fd_mutex.py's (above
 * MUTEX_CLOSED); it is updated with compare-and-swap loops exactly as Go's, so no lock is
 * held anywhere a thread could wait for the GIL. */
/* What few fdMutexes need (fd_mutex.c rare_make): made on the first wait for a busy lock,
 * the close, a fork's poison or a re-entry check of its own, so a descriptor that never
 * needs them does without (memory per descriptor, issue 12: 32 bytes less). */
typedef struct {
    uint64_t poisoned; /* atomic: lock bits held by threads gone at a fork (fd_unix.py) */
    /* The object fields below: read and written in the FDMutex's critical section (a user
     * takes a new reference there, then calls it outside); NULL for none (the setters store
     * None as NULL). */
    PyObject *rsema;   /* a park.Sema for read waiters, made on first need (get_sema) */
    PyObject *wsema;   /* the same for write waiters */
    PyObject *reentry_check; /* NULL or fd_unix's callable(read), run before a wait */
    PyObject *csema;   /* NULL or the FD's close semaphore (see MUTEX_CLOSER_WAITS) */
} tp_fdmu_rare;

typedef struct {
    PyObject_HEAD
    uint64_t state;     /* atomic */
    tp_fdmu_rare *rare; /* atomic: NULL until first needed, then kept until dealloc */
    /* The thread (PyThread_get_thread_ident) holding the read / write lock, 0 for none:
     * atomic, stored by the holder right after it takes the lock and cleared before it
     * releases it, so only a thread that holds the lock ever finds its own ident there. The
     * reentry test of a thread about to wait for the lock, and FD.close's, read it. */
    unsigned long rowner, wowner;
    /* The FD's pollDesc: this object is also the FD's pollDesc handle (fd_unix.py _CCore;
     * Go's FD holds its fdMutex and its pollDesc as two value fields, and one object here
     * holds both). Its ``runtime_ctx``: written once, before the FD is shared (atomic store;
     * a reference kept until dealloc, so a fast path that read it never holds a freed
     * pointer; pollDescs are never freed anyway); ``pd_cleared`` (atomic) set when the
     * handle lets go of it (PollHandle.close: runtime_ctx reads None from then on). The
     * reference goes at dealloc, or at a GC clear (only of an unreachable object, which no
     * fast path is using). */
    PyObject *pd;
    /* The fast path of Conn and the drop-in (fd_unix.c conn_*, try_*): the descriptor,
     * written once by _set_fast before the FD is shared; ``fast`` (atomic) says whether pd
     * and it apply now: set with them, cleared for good when the FD stops being a pollable
     * socket in non-blocking mode. */
    int fast_sysfd;
    uint8_t fast_stream; /* 0 or 1; a byte each, with fast and pd_cleared: no padding */
    uint8_t fast;
    uint8_t pd_cleared;
} FDMutexObject;

#define MUTEX_CLOSED (1ull << 0)
#define MUTEX_RLOCK (1ull << 1)
#define MUTEX_WLOCK (1ull << 2)
#define MUTEX_REF (1ull << 3)
#define MUTEX_REF_MASK (((1ull << 20) - 1) << 3)
#define MUTEX_RWAIT (1ull << 23)
#define MUTEX_RMASK (((1ull << 20) - 1) << 23)
#define MUTEX_WWAIT (1ull << 43)
#define MUTEX_WMASK (((1ull << 20) - 1) << 43)
/* DIVERGENCE(go): a closer waits on the FD's csema and will destroy the FD itself: the
 * operation that drops the last reference only releases csema (a closed socket's woken
 * reader returns at once, without running close(2) and the poller's unregistration). Set by
 * decref_for_close, taken by take_handoff (fd_unix.py FD.close). */
#define MUTEX_CLOSER_WAITS (1ull << 63)

extern PyTypeObject tp_FDMutexType;
int tp_fdmutex_rwunlock(FDMutexObject *mu, int read); /* 1: destroy, 0, -1 error */
/* The method names fd_mutex.c calls, interned once at import (tp_fd_init_module). A name
 * made from a C string at each call costs an allocation, and on CPython 3.11 the type
 * attribute cache keeps one of every 16 or so alive (56 B each). */
int tp_fdmutex_init_names(void);

/* Record the calling thread as the holder of mu's read (write) lock, just taken. Go: none */
static inline void
tp_fdmutex_set_owner(FDMutexObject *mu, int read)
{
    __atomic_store_n(read ? &mu->rowner : &mu->wowner, PyThread_get_thread_ident(),
                     __ATOMIC_RELAXED);
}

#endif
