/* The C core's fdMutex: Go's internal/poll/fd_mutex.go, with Go's compare-and-swap loops.
 *
 * fd_mutex.py is the reference (and documents the state word); this is the same type for
 * the C core's FDs, API for API, so fd_unix.py drives either. Waiting for a busy read or
 * write lock parks on the Python Sema (park.py), so a waiter stays interruptible; the fast
 * paths in fd_unix.c never wait.
 *
 * Go: internal/poll/fd_mutex.go
 */
#include "netpoll.h"

#include <stddef.h>

/* Set once by _init_fd (tp_set_static), read with tp_load_static. */
static PyObject *FDMutexError; /* fd_mutex.FDMutexError */
static PyObject *SemaType;     /* park.Sema */
static PyObject *DummyLock;    /* what ``_lock`` gives (see fdmu_get_lock) */
static PyObject *ReentryCheck; /* fd_unix's check(fdmu, read), for a reentry_check of None */

static const char OVERFLOW_MSG[] =
    "too many concurrent operations on a single file or socket (max 1048575)";
static const char INCONSISTENT_MSG[] = "inconsistent poll.fdMutex";

static inline uint64_t
load(uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static inline int
cas(uint64_t *p, uint64_t old, uint64_t new)
{
    return __atomic_compare_exchange_n(p, &old, new, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static PyObject *
fdmu_error(const char *msg)
{
    PyErr_SetString(tp_load_static(&FDMutexError), msg);
    return NULL;
}

/* mu's rare state, or NULL while it has none. Go: none */
static inline tp_fdmu_rare *
rare_of(FDMutexObject *mu)
{
    return __atomic_load_n(&mu->rare, __ATOMIC_ACQUIRE);
}

/* mu's rare state, made if it has none (all fields zero); NULL with MemoryError. Two threads
 * making it at once keep the first one published. Go: none */
static tp_fdmu_rare *
rare_make(FDMutexObject *mu)
{
    tp_fdmu_rare *r = rare_of(mu);
    if (r != NULL) {
        return r;
    }
    tp_fdmu_rare *n = PyMem_RawCalloc(1, sizeof(tp_fdmu_rare)); /* seen by tracemalloc */
    if (n == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    if (__atomic_compare_exchange_n(&mu->rare, &r, n, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        return n;
    }
    PyMem_RawFree(n); /* another thread published one first: r */
    return r;
}

/* The lock bits a fork left held (0 without rare state). Go: none */
static inline uint64_t
poisoned_of(FDMutexObject *mu)
{
    tp_fdmu_rare *r = rare_of(mu);
    return r == NULL ? 0 : load(&r->poisoned);
}

#define RARE_FIELD(name) offsetof(tp_fdmu_rare, name)

/* The object field at offset off of the rare state (RARE_FIELD). Go: none */
static inline PyObject **
rare_slot(tp_fdmu_rare *r, size_t off)
{
    return (PyObject **)((char *)r + off);
}

/* A new reference to one of mu's object fields (RARE_FIELD of rsema, wsema, reentry_check,
 * csema), or NULL for none, read in mu's critical section, where the setters write them: a
 * caller never uses an object that a concurrent setter has just released. Go: none */
static PyObject *
fdmu_field(FDMutexObject *mu, size_t off)
{
    PyObject *v = NULL;
    Py_BEGIN_CRITICAL_SECTION(mu);
    tp_fdmu_rare *r = rare_of(mu);
    if (r != NULL) {
        v = *rare_slot(r, off);
        Py_XINCREF(v);
    }
    Py_END_CRITICAL_SECTION();
    return v;
}

/* Store v (a new reference taken; NULL for none) in one of mu's object fields, in mu's
 * critical section; the old value is released outside it, since its destructor may run
 * Python. Storing none where mu has no rare state makes none. 0, or -1 with an exception.
 * Go: none */
static int
fdmu_store(FDMutexObject *mu, size_t off, PyObject *v)
{
    tp_fdmu_rare *r = v == NULL ? rare_of(mu) : rare_make(mu);
    if (r == NULL) {
        return v == NULL ? 0 : -1;
    }
    PyObject *old;
    Py_XINCREF(v);
    Py_BEGIN_CRITICAL_SECTION(mu);
    old = *rare_slot(r, off);
    *rare_slot(r, off) = v;
    Py_END_CRITICAL_SECTION();
    Py_XDECREF(old);
    return 0;
}

static PyObject *str_acquire, *str_release; /* interned: tp_fdmutex_init_names */

/* Go: none */
int
tp_fdmutex_init_names(void)
{
    str_acquire = PyUnicode_InternFromString("acquire");
    str_release = PyUnicode_InternFromString("release");
    return str_acquire == NULL || str_release == NULL ? -1 : 0;
}

/* Go: runtime/sema.go semrelease (through park.Sema) */
static int
sema_release(PyObject *sema)
{
    PyObject *r = PyObject_CallMethodNoArgs(sema, str_release);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The read (write) waiters' Sema, made on first use (most descriptors never wait for a
 * lock: the memory per descriptor is smaller without them). A new reference, or NULL.
 * Two threads making it at once keep the first one stored (the slot is set in mu's
 * critical section, where the setters write it).
 * A waiter gets it before it publishes its wait count, so a signaller that sees the count
 * finds it made. Go: none (Go's semaphores are addresses, free until used) */
static PyObject *
get_sema(FDMutexObject *mu, int read)
{
    size_t off = read ? RARE_FIELD(rsema) : RARE_FIELD(wsema);
    PyObject *s = fdmu_field(mu, off);
    if (s != NULL) {
        return s;
    }
    tp_fdmu_rare *r = rare_make(mu);
    if (r == NULL) {
        return NULL;
    }
    PyObject *n = PyObject_CallNoArgs(tp_load_static(&SemaType));
    if (n == NULL) {
        return NULL;
    }
    int stored = 0;
    PyObject **slot = rare_slot(r, off);
    Py_BEGIN_CRITICAL_SECTION(mu);
    if (*slot == NULL) {
        *slot = n; /* the slot takes n's reference */
        stored = 1;
    }
    s = *slot;
    Py_INCREF(s);
    Py_END_CRITICAL_SECTION();
    if (!stored) {
        Py_DECREF(n); /* another thread made it first */
    }
    return s;
}

/* Release the read (write) waiters' Sema once. Go: runtime/sema.go semrelease */
static int
release_waiter(FDMutexObject *mu, int read)
{
    PyObject *s = get_sema(mu, read);
    if (s == NULL) {
        return -1;
    }
    int r = sema_release(s);
    Py_DECREF(s);
    return r;
}

/* After a reference was dropped, leaving state new: 1 if the caller must destroy the FD (the
 * last reference after close), 0 if not, -1 with an exception. When a closer waits to
 * destroy it (MUTEX_CLOSER_WAITS), release its csema instead and return 0.
 * Go: internal/poll/fd_mutex.go fdMutex.decref (its return value) */
static int
last_ref(FDMutexObject *mu, uint64_t new)
{
    if ((new & (MUTEX_CLOSED | MUTEX_REF_MASK)) != MUTEX_CLOSED) {
        return 0;
    }
    if (!(new & MUTEX_CLOSER_WAITS)) {
        return 1;
    }
    PyObject *cs = fdmu_field(mu, RARE_FIELD(csema)); /* a new reference: the call runs Python */
    if (cs == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FDMutex has no close semaphore");
        return -1;
    }
    int r = sema_release(cs);
    Py_DECREF(cs);
    return r;
}

/* Go: internal/poll/fd_mutex.go fdMutex (its zero value) */
static PyObject *
fdmu_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    PyObject *sema_type = tp_load_static(&SemaType);
    if (sema_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "threadpoll._cpoll._init_fd was not called");
        return NULL;
    }
    FDMutexObject *mu = (FDMutexObject *)type->tp_alloc(type, 0);
    if (mu == NULL) {
        return NULL;
    }
    mu->state = 0;
    mu->rare = NULL; /* made on first need: rare_make */
    mu->rowner = mu->wowner = 0;
    mu->pd = NULL; /* set by runtime_ctx or _set_fast */
    mu->pd_cleared = 0;
    mu->fast_sysfd = -1;
    mu->fast_stream = 0;
    mu->fast = 0;
    return (PyObject *)mu;
}

static int
fdmu_traverse(FDMutexObject *mu, visitproc visit, void *arg)
{
    tp_fdmu_rare *r = rare_of(mu);
    if (r != NULL) {
        Py_VISIT(r->rsema);
        Py_VISIT(r->wsema);
        Py_VISIT(r->reentry_check);
        Py_VISIT(r->csema);
    }
    Py_VISIT(mu->pd);
    return 0;
}

static int
fdmu_clear(FDMutexObject *mu)
{
    tp_fdmu_rare *r = rare_of(mu);
    if (r != NULL) {
        Py_CLEAR(r->rsema);
        Py_CLEAR(r->wsema);
        Py_CLEAR(r->reentry_check);
        Py_CLEAR(r->csema);
    }
    __atomic_store_n(&mu->fast, 0, __ATOMIC_SEQ_CST);
    Py_CLEAR(mu->pd);
    return 0;
}

static void
fdmu_dealloc(FDMutexObject *mu)
{
    PyObject_GC_UnTrack(mu);
    fdmu_clear(mu);
    PyMem_RawFree(mu->rare);
    Py_TYPE(mu)->tp_free((PyObject *)mu);
}

/* Go: internal/poll/fd_mutex.go fdMutex.incref */
static PyObject *
fdmu_incref(FDMutexObject *mu, PyObject *Py_UNUSED(ignored))
{
    for (;;) {
        uint64_t old = load(&mu->state);
        if (old & MUTEX_CLOSED) {
            Py_RETURN_FALSE;
        }
        uint64_t new = old + MUTEX_REF;
        if ((new & MUTEX_REF_MASK) == 0) {
            return fdmu_error(OVERFLOW_MSG);
        }
        if (cas(&mu->state, old, new)) {
            Py_RETURN_TRUE;
        }
    }
}

/* Go: internal/poll/fd_mutex.go fdMutex.increfAndClose */
static PyObject *
fdmu_incref_and_close(FDMutexObject *mu, PyObject *Py_UNUSED(ignored))
{
    for (;;) {
        uint64_t old = load(&mu->state);
        if (old & MUTEX_CLOSED) {
            Py_RETURN_FALSE;
        }
        /* Mark as closed and acquire a reference. */
        uint64_t new = (old | MUTEX_CLOSED) + MUTEX_REF;
        if ((new & MUTEX_REF_MASK) == 0) {
            return fdmu_error(OVERFLOW_MSG);
        }
        /* Remove all read and write waiters. */
        new &= ~(MUTEX_RMASK | MUTEX_WMASK);
        if (cas(&mu->state, old, new)) {
            /* Wake all read and write waiters, they will observe closed flag after
             * wakeup. */
            for (uint64_t i = (old & MUTEX_RMASK) / MUTEX_RWAIT; i > 0; i--) {
                if (release_waiter(mu, 1) < 0) {
                    return NULL;
                }
            }
            for (uint64_t i = (old & MUTEX_WMASK) / MUTEX_WWAIT; i > 0; i--) {
                if (release_waiter(mu, 0) < 0) {
                    return NULL;
                }
            }
            Py_RETURN_TRUE;
        }
    }
}

/* Go: internal/poll/fd_mutex.go fdMutex.decref */
static PyObject *
fdmu_decref(FDMutexObject *mu, PyObject *Py_UNUSED(ignored))
{
    for (;;) {
        uint64_t old = load(&mu->state);
        if ((old & MUTEX_REF_MASK) == 0) {
            return fdmu_error(INCONSISTENT_MSG);
        }
        uint64_t new = old - MUTEX_REF;
        if (cas(&mu->state, old, new)) {
            int r = last_ref(mu, new);
            return r < 0 ? NULL : PyBool_FromLong(r);
        }
    }
}

/* The closer's decref: True if it dropped the last reference (the caller destroys the FD
 * now); else False, and the operation that drops the last one releases the csema instead of
 * destroying (MUTEX_CLOSER_WAITS): the caller waits on csema, then take_handoff() and
 * destroys. Go: internal/poll/fd_mutex.go fdMutex.decref (as FD.Close calls it) */
static PyObject *
fdmu_decref_for_close(FDMutexObject *mu, PyObject *Py_UNUSED(ignored))
{
    for (;;) {
        uint64_t old = load(&mu->state);
        if ((old & MUTEX_REF_MASK) == 0) {
            return fdmu_error(INCONSISTENT_MSG);
        }
        uint64_t new = old - MUTEX_REF;
        int last = (new & MUTEX_REF_MASK) == 0;
        if (!last) {
            new |= MUTEX_CLOSER_WAITS;
        }
        if (cas(&mu->state, old, new)) {
            return PyBool_FromLong(last);
        }
    }
}

/* After decref_for_close gave False, once csema was acquired (or the wait for it was
 * interrupted): clear the closer's mark and say whether the FD is the caller's to destroy,
 * True when the last operation has left and handed it over. After an interrupted wait,
 * False means an operation is still in flight and, the mark gone, destroys the FD itself.
 * Go: none */
static PyObject *
fdmu_take_handoff(FDMutexObject *mu, PyObject *Py_UNUSED(ignored))
{
    uint64_t old = __atomic_fetch_and(&mu->state, ~MUTEX_CLOSER_WAITS, __ATOMIC_SEQ_CST);
    return PyBool_FromLong((old & MUTEX_CLOSER_WAITS) && (old & MUTEX_REF_MASK) == 0);
}

/* In a forked child, close() of a poisoned FD: drop the references (refs, in state units)
 * and the lock bits (poisoned) that parent threads held, unless already closed, and clear
 * poisoned; one compare-and-swap, so an operation of the child's own running meanwhile
 * (a signal handler's) is never lost. Go: none (Go does not fork a multi-threaded runtime) */
static PyObject *
fdmu_clear_poison(FDMutexObject *mu, PyObject *arg)
{
    unsigned long long refs = PyLong_AsUnsignedLongLong(arg);
    if (refs == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    uint64_t bits = poisoned_of(mu);
    for (;;) {
        uint64_t old = load(&mu->state);
        if (old & MUTEX_CLOSED) {
            break;
        }
        if ((old & MUTEX_REF_MASK) < refs) {
            return fdmu_error(INCONSISTENT_MSG);
        }
        if (cas(&mu->state, old, (old - refs) & ~bits)) {
            break;
        }
    }
    if (bits & MUTEX_RLOCK) {
        __atomic_store_n(&mu->rowner, 0, __ATOMIC_RELAXED); /* a parent thread's */
    }
    if (bits & MUTEX_WLOCK) {
        __atomic_store_n(&mu->wowner, 0, __ATOMIC_RELAXED);
    }
    tp_fdmu_rare *r = rare_of(mu);
    if (r != NULL) {
        __atomic_store_n(&r->poisoned, 0, __ATOMIC_SEQ_CST);
    }
    Py_RETURN_NONE;
}

/* fdmu_rwlock's loop; *semap holds the waiters' Sema once made (the caller drops it).
 * Go: internal/poll/fd_mutex.go fdMutex.rwlock */
static PyObject *
rwlock_impl(FDMutexObject *mu, int read, int wait, PyObject **semap)
{
    uint64_t bit = read ? MUTEX_RLOCK : MUTEX_WLOCK;
    uint64_t wbit = read ? MUTEX_RWAIT : MUTEX_WWAIT;
    uint64_t mask = read ? MUTEX_RMASK : MUTEX_WMASK;
    int checked = 0;
    for (;;) {
        uint64_t old = load(&mu->state);
        if ((old & bit) && (poisoned_of(mu) & bit)) {
            Py_RETURN_FALSE; /* held by a thread that is gone (fork): never released */
        }
        if (old & MUTEX_CLOSED) {
            Py_RETURN_FALSE;
        }
        uint64_t new;
        if ((old & bit) == 0) {
            /* Lock is free, acquire it. */
            new = (old | bit) + MUTEX_REF;
            if ((new & MUTEX_REF_MASK) == 0) {
                return fdmu_error(OVERFLOW_MSG);
            }
        }
        else {
            if (!wait) {
                Py_RETURN_FALSE;
            }
            if (__atomic_load_n(read ? &mu->rowner : &mu->wowner, __ATOMIC_RELAXED) ==
                PyThread_get_thread_ident()) {
                /* This thread holds the lock itself, further down its stack (a signal
                 * handler on top of its own operation, which may be a call straight into
                 * C with no frame for the check below to find): it would wait for itself.
                 * fd_unix.py's _reentered, word for word. */
                const char *what = read ? "read" : "write";
                PyErr_Format(PyExc_RuntimeError,
                             "reentrant call: a %s on this descriptor from a signal handler "
                             "while its own thread is in a %s on it (it would wait for itself)",
                             what, what);
                return NULL;
            }
            PyObject *check = NULL;
            int shared = 0;
            if (!checked) {
                check = fdmu_field(mu, RARE_FIELD(reentry_check)); /* NULL: none */
                if (check == NULL && (check = tp_load_static(&ReentryCheck)) != NULL) {
                    Py_INCREF(check);
                    shared = 1;
                }
            }
            if (check != NULL) {
                /* As fd_mutex.py: a signal handler on top of its own thread's operation in
                 * this direction would wait for itself; the check raises instead. Runs
                 * Python, so the state is loaded again after it. Without a check of its
                 * own, fd_unix's shared one finds the FD by this fdMutex. */
                checked = 1;
                PyObject *r =
                    shared ? PyObject_CallFunctionObjArgs(check, (PyObject *)mu,
                                                          read ? Py_True : Py_False, NULL)
                           : PyObject_CallFunctionObjArgs(check, read ? Py_True : Py_False,
                                                          NULL);
                Py_DECREF(check);
                if (r == NULL) {
                    return NULL;
                }
                Py_DECREF(r);
                continue;
            }
            /* Wait for lock: the Sema made before the count says a waiter sleeps there. */
            if (*semap == NULL && (*semap = get_sema(mu, read)) == NULL) {
                return NULL;
            }
            new = old + wbit;
            if ((new & mask) == 0) {
                return fdmu_error(OVERFLOW_MSG);
            }
        }
        if (cas(&mu->state, old, new)) {
            if ((old & bit) == 0) {
                tp_fdmutex_set_owner(mu, read);
                Py_RETURN_TRUE;
            }
            /* An exception out of acquire() (KeyboardInterrupt) leaves our count behind,
             * harmlessly, as in fd_mutex.py. */
            PyObject *r = PyObject_CallMethodNoArgs(*semap, str_acquire);
            if (r == NULL) {
                return NULL;
            }
            Py_DECREF(r);
            /* The signaller has subtracted mutexWait. */
        }
    }
}

/* Go: internal/poll/fd_mutex.go fdMutex.rwlock */
static PyObject *
fdmu_rwlock(FDMutexObject *mu, PyObject *args)
{
    int read, wait = 1;
    if (!PyArg_ParseTuple(args, "p|p:rwlock", &read, &wait)) {
        return NULL;
    }
    PyObject *sema = NULL; /* the waiters' Sema, once this thread is to wait */
    PyObject *r = rwlock_impl(mu, read, wait, &sema);
    Py_XDECREF(sema);
    return r;
}

/* Returns 1 if the caller must destroy the FD, 0 if not, -1 with an exception set.
 * Go: internal/poll/fd_mutex.go fdMutex.rwunlock */
int
tp_fdmutex_rwunlock(FDMutexObject *mu, int read)
{
    uint64_t bit = read ? MUTEX_RLOCK : MUTEX_WLOCK;
    uint64_t wbit = read ? MUTEX_RWAIT : MUTEX_WWAIT;
    uint64_t mask = read ? MUTEX_RMASK : MUTEX_WMASK;
    __atomic_store_n(read ? &mu->rowner : &mu->wowner, 0, __ATOMIC_RELAXED);
    for (;;) {
        uint64_t old = load(&mu->state);
        if ((old & bit) == 0 || (old & MUTEX_REF_MASK) == 0) {
            fdmu_error(INCONSISTENT_MSG);
            return -1;
        }
        /* Drop lock, drop reference and wake read waiter if present. */
        uint64_t new = (old & ~bit) - MUTEX_REF;
        if (old & mask) {
            new -= wbit;
        }
        if (cas(&mu->state, old, new)) {
            if ((old & mask) && release_waiter(mu, read) < 0) {
                return -1;
            }
            return last_ref(mu, new);
        }
    }
}

/* Go: internal/poll/fd_mutex.go fdMutex.rwunlock */
static PyObject *
fdmu_rwunlock(FDMutexObject *mu, PyObject *arg)
{
    int read = PyObject_IsTrue(arg);
    if (read < 0) {
        return NULL;
    }
    int r = tp_fdmutex_rwunlock(mu, read);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

/* Go: internal/poll/fd_mutex.go FD.closing */
static PyObject *
fdmu_closing(FDMutexObject *mu, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong((load(&mu->state) & MUTEX_CLOSED) != 0);
}

static PyObject *
fdmu_get_state(FDMutexObject *mu, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(load(&mu->state));
}

/* A plain store, for fd_unix.py's fork handling (the child has only the forking thread). */
static int
fdmu_set_state(FDMutexObject *mu, PyObject *v, void *Py_UNUSED(c))
{
    unsigned long long x = v == NULL ? (unsigned long long)-1 : PyLong_AsUnsignedLongLong(v);
    if (x == (unsigned long long)-1 && (v == NULL || PyErr_Occurred())) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "cannot delete state");
        }
        return -1;
    }
    __atomic_store_n(&mu->state, (uint64_t)x, __ATOMIC_SEQ_CST);
    return 0;
}

static PyObject *
fdmu_get_poisoned(FDMutexObject *mu, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(poisoned_of(mu));
}

static int
fdmu_set_poisoned(FDMutexObject *mu, PyObject *v, void *Py_UNUSED(c))
{
    unsigned long long x = v == NULL ? (unsigned long long)-1 : PyLong_AsUnsignedLongLong(v);
    if (x == (unsigned long long)-1 && (v == NULL || PyErr_Occurred())) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "cannot delete poisoned");
        }
        return -1;
    }
    tp_fdmu_rare *r = x == 0 ? rare_of(mu) : rare_make(mu);
    if (r == NULL) {
        return x == 0 ? 0 : -1;
    }
    __atomic_store_n(&r->poisoned, (uint64_t)x, __ATOMIC_SEQ_CST);
    return 0;
}

/* Each reads and writes its field in mu's critical section (fdmu_field, fdmu_store). The
 * getters give None for none; a setter stores None as none. */
#define SEMA_GETTER(name)                                                                  \
    static PyObject *fdmu_get_##name(FDMutexObject *mu, void *Py_UNUSED(c))               \
    {                                                                                      \
        PyObject *v = fdmu_field(mu, RARE_FIELD(name));                                    \
        return v == NULL ? tp_newref(Py_None) : v;                                         \
    }
#define SEMA_SETTER(name)                                                                  \
    static int fdmu_set_##name(FDMutexObject *mu, PyObject *v, void *Py_UNUSED(c))        \
    {                                                                                      \
        if (v == NULL) {                                                                   \
            PyErr_SetString(PyExc_TypeError, "cannot delete " #name);                      \
            return -1;                                                                     \
        }                                                                                  \
        return fdmu_store(mu, RARE_FIELD(name), v == Py_None ? NULL : v);                  \
    }
SEMA_SETTER(rsema)
SEMA_SETTER(wsema)
SEMA_GETTER(reentry_check)
SEMA_SETTER(reentry_check)
SEMA_GETTER(csema)
SEMA_SETTER(csema)

/* rsema / wsema as attributes: made on first look, as on first wait. */
static PyObject *
fdmu_get_rsema_lazy(FDMutexObject *mu, void *Py_UNUSED(c))
{
    return get_sema(mu, 1);
}

static PyObject *
fdmu_get_wsema_lazy(FDMutexObject *mu, void *Py_UNUSED(c))
{
    return get_sema(mu, 0);
}

/* mu's pollDesc becomes pd if it has none yet (a reference taken, kept until dealloc or a GC
 * clear). 1 if mu now holds pd, 0 if it holds another. Must be called in mu's critical
 * section. Go: none */
static int
pd_adopt(FDMutexObject *mu, PyObject *pd)
{
    PyObject *have = __atomic_load_n(&mu->pd, __ATOMIC_ACQUIRE);
    if (have == NULL) {
        Py_INCREF(pd);
        __atomic_store_n(&mu->pd, pd, __ATOMIC_RELEASE);
        return 1;
    }
    return have == pd;
}

/* runtime_ctx: the pollDesc of the pollDesc handle this object also is (fd_unix.py _CCore,
 * fd_poll_runtime.py PollHandle), or None. Set once; None lets go of it (pd_cleared), and
 * only the same pollDesc may be set again.
 * Go: internal/poll/fd_poll_runtime.go pollDesc.runtimeCtx */
static PyObject *
fdmu_get_runtime_ctx(FDMutexObject *mu, void *Py_UNUSED(c))
{
    PyObject *pd = __atomic_load_n(&mu->pd, __ATOMIC_ACQUIRE);
    if (pd == NULL || __atomic_load_n(&mu->pd_cleared, __ATOMIC_ACQUIRE)) {
        Py_RETURN_NONE;
    }
    return tp_newref(pd);
}

static int
fdmu_set_runtime_ctx(FDMutexObject *mu, PyObject *v, void *Py_UNUSED(c))
{
    if (v == NULL) {
        PyErr_SetString(PyExc_TypeError, "cannot delete runtime_ctx");
        return -1;
    }
    if (v == Py_None) {
        Py_BEGIN_CRITICAL_SECTION(mu);
        __atomic_store_n(&mu->pd_cleared, 1, __ATOMIC_RELEASE);
        Py_END_CRITICAL_SECTION();
        return 0;
    }
    if (!tp_is_polldesc(v)) {
        PyErr_SetString(PyExc_TypeError, "runtime_ctx: a pollDesc or None");
        return -1;
    }
    int ok;
    Py_BEGIN_CRITICAL_SECTION(mu);
    ok = pd_adopt(mu, v);
    if (ok) {
        /* In the section: a None stored meanwhile is not undone by this one. */
        __atomic_store_n(&mu->pd_cleared, 0, __ATOMIC_RELEASE);
    }
    Py_END_CRITICAL_SECTION();
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError,
                        "runtime_ctx: a pollDesc handle holds one pollDesc for its life");
        return -1;
    }
    return 0;
}

/* ``_lock``: fd_mutex.py's state lock has no counterpart here (the state word is atomic).
 * Only fd_mutex.poison_after_fork sets it, in a forked child (one thread); readers get one
 * process-wide threading.Lock. */
static PyObject *
fdmu_get_lock(FDMutexObject *Py_UNUSED(mu), void *Py_UNUSED(c))
{
    return tp_newref(tp_load_static(&DummyLock));
}

static int
fdmu_set_lock(FDMutexObject *Py_UNUSED(mu), PyObject *Py_UNUSED(v), void *Py_UNUSED(c))
{
    return 0; /* fd_unix.py's fork handling replaces it: nothing to replace */
}

/* owned_by_me(): whether the calling thread holds the read or the write lock (a signal
 * handler running on top of its own operation, which may have no Python frame: FD.close
 * must not wait for it). Go: none */
static PyObject *
fdmu_owned_by_me(FDMutexObject *mu, PyObject *Py_UNUSED(ignored))
{
    unsigned long me = PyThread_get_thread_ident();
    return PyBool_FromLong(__atomic_load_n(&mu->rowner, __ATOMIC_RELAXED) == me ||
                           __atomic_load_n(&mu->wowner, __ATOMIC_RELAXED) == me);
}

/* _set_fast(pd, sysfd, is_stream) turns the fast path (fd_unix.c conn_*, try_*) on, once,
 * before the FD is shared; _set_fast(None) turns it off for good. Go: none */
static PyObject *
fdmu_set_fast(FDMutexObject *mu, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs == 1 && args[0] == Py_None) {
        __atomic_store_n(&mu->fast, 0, __ATOMIC_SEQ_CST);
        Py_RETURN_NONE;
    }
    if (nargs != 3 || !tp_is_polldesc(args[0])) {
        PyErr_SetString(PyExc_TypeError, "_set_fast(pd, sysfd, is_stream) or _set_fast(None)");
        return NULL;
    }
    int sysfd = tp_as_int(args[1]);
    int stream = PyObject_IsTrue(args[2]);
    if ((sysfd == -1 && PyErr_Occurred()) || stream < 0) {
        return NULL;
    }
    /* The pollDesc is the one runtime_ctx holds (set by PollHandle.init), or is stored
     * now (a bare fdMutex, in tests). */
    int set = 0;
    Py_BEGIN_CRITICAL_SECTION(mu);
    if (mu->fast_sysfd == -1 && pd_adopt(mu, args[0])) {
        mu->fast_sysfd = sysfd;
        mu->fast_stream = (uint8_t)stream;
        set = 1;
    }
    Py_END_CRITICAL_SECTION();
    if (!set) {
        PyErr_SetString(PyExc_RuntimeError,
                        "FDMutex._set_fast: set already, or for another pollDesc");
        return NULL;
    }
    __atomic_store_n(&mu->fast, 1, __ATOMIC_SEQ_CST); /* publishes the fields above */
    Py_RETURN_NONE;
}

static PyObject *
fdmu_repr(FDMutexObject *mu)
{
    uint64_t s = load(&mu->state);
    return PyUnicode_FromFormat("<FDMutex state=%llu (C)>", (unsigned long long)s);
}

static PyMethodDef fdmu_methods[] = {
    {"incref", (PyCFunction)fdmu_incref, METH_NOARGS, "Go: internal/poll/fd_mutex.go fdMutex.incref"},
    {"incref_and_close", (PyCFunction)fdmu_incref_and_close, METH_NOARGS,
     "Go: internal/poll/fd_mutex.go fdMutex.increfAndClose"},
    {"decref", (PyCFunction)fdmu_decref, METH_NOARGS, "Go: internal/poll/fd_mutex.go fdMutex.decref"},
    {"rwlock", (PyCFunction)fdmu_rwlock, METH_VARARGS, "Go: internal/poll/fd_mutex.go fdMutex.rwlock"},
    {"rwunlock", (PyCFunction)fdmu_rwunlock, METH_O, "Go: internal/poll/fd_mutex.go fdMutex.rwunlock"},
    {"closing", (PyCFunction)fdmu_closing, METH_NOARGS, "Go: internal/poll/fd_mutex.go FD.closing"},
    {"decref_for_close", (PyCFunction)fdmu_decref_for_close, METH_NOARGS,
     "Go: internal/poll/fd_mutex.go fdMutex.decref (as FD.Close calls it)"},
    {"take_handoff", (PyCFunction)fdmu_take_handoff, METH_NOARGS, "Go: none"},
    {"clear_poison", (PyCFunction)fdmu_clear_poison, METH_O, "Go: none"},
    {"owned_by_me", (PyCFunction)fdmu_owned_by_me, METH_NOARGS, "Go: none"},
    {"_set_fast", (PyCFunction)(void (*)(void))fdmu_set_fast, METH_FASTCALL, "Go: none"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef fdmu_getset[] = {
    {"state", (getter)fdmu_get_state, (setter)fdmu_set_state, NULL, NULL},
    {"poisoned", (getter)fdmu_get_poisoned, (setter)fdmu_set_poisoned, NULL, NULL},
    {"rsema", (getter)fdmu_get_rsema_lazy, (setter)fdmu_set_rsema, NULL, NULL},
    {"wsema", (getter)fdmu_get_wsema_lazy, (setter)fdmu_set_wsema, NULL, NULL},
    {"_lock", (getter)fdmu_get_lock, (setter)fdmu_set_lock, NULL, NULL},
    {"reentry_check", (getter)fdmu_get_reentry_check, (setter)fdmu_set_reentry_check, NULL, NULL},
    {"csema", (getter)fdmu_get_csema, (setter)fdmu_set_csema, NULL, NULL},
    {"runtime_ctx", (getter)fdmu_get_runtime_ctx, (setter)fdmu_set_runtime_ctx, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject tp_FDMutexType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "threadpoll._cpoll.FDMutex",
    .tp_basicsize = sizeof(FDMutexObject),
    /* A base type: fd_unix.py's _CCore adds the pollDesc handle's methods (no fields). */
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The C core's fdMutex.\n\nGo: internal/poll/fd_mutex.go fdMutex",
    .tp_new = fdmu_new,
    .tp_dealloc = (destructor)fdmu_dealloc,
    .tp_traverse = (traverseproc)fdmu_traverse,
    .tp_clear = (inquiry)fdmu_clear,
    .tp_repr = (reprfunc)fdmu_repr,
    .tp_methods = fdmu_methods,
    .tp_getset = fdmu_getset,
};

/* _init_reentry(check): fd_unix's check(fdmu, read), run before a wait for the lock by an
 * fdMutex whose reentry_check is None; set once (tp_set_static). Go: none */
PyObject *
tp_mod_init_reentry(PyObject *Py_UNUSED(m), PyObject *arg)
{
    tp_set_static(&ReentryCheck, arg);
    Py_RETURN_NONE;
}

/* _init_fd(FDMutexError, Sema, lock): the classes fd_mutex.py defines; each is set once
 * (tp_set_static: a later call keeps the first). Go: none */
PyObject *
tp_mod_init_fd(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *err, *sema, *lock;
    if (!PyArg_ParseTuple(args, "OOO:_init_fd", &err, &sema, &lock)) {
        return NULL;
    }
    /* DummyLock and FDMutexError before SemaType: fdmu_new's check of SemaType then
     * implies the other two. */
    tp_set_static(&DummyLock, lock);
    tp_set_static(&FDMutexError, err);
    tp_set_static(&SemaType, sema);
    Py_RETURN_NONE;
}
