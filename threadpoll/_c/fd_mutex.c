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

/* Set once by _init_fd (tp_set_static), read with tp_load_static. */
static PyObject *FDMutexError; /* fd_mutex.FDMutexError */
static PyObject *SemaType;     /* park.Sema */
static PyObject *DummyLock;    /* what ``_lock`` gives (see fdmu_get_lock) */

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

/* A new reference to one of mu's object fields (rsema, wsema, reentry_check), read in mu's
 * critical section, where the setters write them: a caller never uses an object that a
 * concurrent setter has just released. Go: none */
static PyObject *
fdmu_field(FDMutexObject *mu, PyObject **field)
{
    PyObject *v;
    (void)mu; /* unused where the critical section is a no-op (with the GIL) */
    Py_BEGIN_CRITICAL_SECTION(mu);
    v = *field;
    Py_XINCREF(v);
    Py_END_CRITICAL_SECTION();
    return v;
}

/* Go: runtime/sema.go semrelease (through park.Sema) */
static int
sema_release(FDMutexObject *mu, int read)
{
    PyObject *sema = fdmu_field(mu, read ? &mu->rsema : &mu->wsema);
    if (sema == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FDMutex has no semaphore");
        return -1;
    }
    PyObject *r = PyObject_CallMethod(sema, "release", NULL);
    Py_DECREF(sema);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
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
    mu->poisoned = 0;
    mu->reentry_check = Py_None;
    Py_INCREF(Py_None);
    mu->rsema = PyObject_CallNoArgs(sema_type);
    mu->wsema = mu->rsema == NULL ? NULL : PyObject_CallNoArgs(sema_type);
    if (mu->wsema == NULL) {
        Py_DECREF(mu);
        return NULL;
    }
    return (PyObject *)mu;
}

static int
fdmu_traverse(FDMutexObject *mu, visitproc visit, void *arg)
{
    Py_VISIT(mu->rsema);
    Py_VISIT(mu->wsema);
    Py_VISIT(mu->reentry_check);
    return 0;
}

static int
fdmu_clear(FDMutexObject *mu)
{
    Py_CLEAR(mu->rsema);
    Py_CLEAR(mu->wsema);
    Py_CLEAR(mu->reentry_check);
    return 0;
}

static void
fdmu_dealloc(FDMutexObject *mu)
{
    PyObject_GC_UnTrack(mu);
    fdmu_clear(mu);
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
                if (sema_release(mu, 1) < 0) {
                    return NULL;
                }
            }
            for (uint64_t i = (old & MUTEX_WMASK) / MUTEX_WWAIT; i > 0; i--) {
                if (sema_release(mu, 0) < 0) {
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
            return PyBool_FromLong((new & (MUTEX_CLOSED | MUTEX_REF_MASK)) == MUTEX_CLOSED);
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
    uint64_t bit = read ? MUTEX_RLOCK : MUTEX_WLOCK;
    uint64_t wbit = read ? MUTEX_RWAIT : MUTEX_WWAIT;
    uint64_t mask = read ? MUTEX_RMASK : MUTEX_WMASK;
    int checked = 0;
    for (;;) {
        uint64_t old = load(&mu->state);
        if (old & bit & load(&mu->poisoned)) {
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
            PyObject *check = checked ? NULL : fdmu_field(mu, &mu->reentry_check);
            if (check == Py_None) {
                Py_CLEAR(check);
            }
            if (check != NULL) {
                /* As fd_mutex.py: a signal handler on top of its own thread's operation in
                 * this direction would wait for itself; the check raises instead. Runs
                 * Python, so the state is loaded again after it. */
                checked = 1;
                PyObject *r =
                    PyObject_CallFunctionObjArgs(check, read ? Py_True : Py_False, NULL);
                Py_DECREF(check);
                if (r == NULL) {
                    return NULL;
                }
                Py_DECREF(r);
                continue;
            }
            /* Wait for lock. */
            new = old + wbit;
            if ((new & mask) == 0) {
                return fdmu_error(OVERFLOW_MSG);
            }
        }
        if (cas(&mu->state, old, new)) {
            if ((old & bit) == 0) {
                Py_RETURN_TRUE;
            }
            /* An exception out of acquire() (KeyboardInterrupt) leaves our count behind,
             * harmlessly, as in fd_mutex.py. */
            PyObject *sema = fdmu_field(mu, read ? &mu->rsema : &mu->wsema);
            if (sema == NULL) {
                PyErr_SetString(PyExc_RuntimeError, "FDMutex has no semaphore");
                return NULL;
            }
            PyObject *r = PyObject_CallMethod(sema, "acquire", NULL);
            Py_DECREF(sema);
            if (r == NULL) {
                return NULL;
            }
            Py_DECREF(r);
            /* The signaller has subtracted mutexWait. */
        }
    }
}

/* Returns 1 if the caller must destroy the FD, 0 if not, -1 with an exception set.
 * Go: internal/poll/fd_mutex.go fdMutex.rwunlock */
int
tp_fdmutex_rwunlock(FDMutexObject *mu, int read)
{
    uint64_t bit = read ? MUTEX_RLOCK : MUTEX_WLOCK;
    uint64_t wbit = read ? MUTEX_RWAIT : MUTEX_WWAIT;
    uint64_t mask = read ? MUTEX_RMASK : MUTEX_WMASK;
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
            if ((old & mask) && sema_release(mu, read) < 0) {
                return -1;
            }
            return (new & (MUTEX_CLOSED | MUTEX_REF_MASK)) == MUTEX_CLOSED;
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
    return PyLong_FromUnsignedLongLong(load(&mu->poisoned));
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
    __atomic_store_n(&mu->poisoned, (uint64_t)x, __ATOMIC_SEQ_CST);
    return 0;
}

/* Each reads and writes its field in mu's critical section (fdmu_field); the old value
 * is released outside it, since its destructor may run Python. */
#define SEMA_ACCESSORS(name)                                                               \
    static PyObject *fdmu_get_##name(FDMutexObject *mu, void *Py_UNUSED(c))               \
    {                                                                                      \
        PyObject *v = fdmu_field(mu, &mu->name);                                           \
        if (v == NULL) {                                                                   \
            PyErr_SetString(PyExc_AttributeError, #name);                                  \
        }                                                                                  \
        return v;                                                                          \
    }                                                                                      \
    static int fdmu_set_##name(FDMutexObject *mu, PyObject *v, void *Py_UNUSED(c))        \
    {                                                                                      \
        if (v == NULL) {                                                                   \
            PyErr_SetString(PyExc_TypeError, "cannot delete " #name);                      \
            return -1;                                                                     \
        }                                                                                  \
        PyObject *old;                                                                     \
        Py_INCREF(v);                                                                      \
        Py_BEGIN_CRITICAL_SECTION(mu);                                                     \
        old = mu->name;                                                                    \
        mu->name = v;                                                                      \
        Py_END_CRITICAL_SECTION();                                                         \
        Py_XDECREF(old);                                                                   \
        return 0;                                                                          \
    }
SEMA_ACCESSORS(rsema)
SEMA_ACCESSORS(wsema)
SEMA_ACCESSORS(reentry_check)

/* ``_lock``: fd_mutex.py's state lock has no counterpart here (the state word is atomic).
 * The few compound updates fd_unix.py makes under ``fdmu._lock`` run in a forked child
 * (one thread) or only test the lock; they get one process-wide threading.Lock. */
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
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef fdmu_getset[] = {
    {"state", (getter)fdmu_get_state, (setter)fdmu_set_state, NULL, NULL},
    {"poisoned", (getter)fdmu_get_poisoned, (setter)fdmu_set_poisoned, NULL, NULL},
    {"rsema", (getter)fdmu_get_rsema, (setter)fdmu_set_rsema, NULL, NULL},
    {"wsema", (getter)fdmu_get_wsema, (setter)fdmu_set_wsema, NULL, NULL},
    {"_lock", (getter)fdmu_get_lock, (setter)fdmu_set_lock, NULL, NULL},
    {"reentry_check", (getter)fdmu_get_reentry_check, (setter)fdmu_set_reentry_check, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject tp_FDMutexType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "threadpoll._cpoll.FDMutex",
    .tp_basicsize = sizeof(FDMutexObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The C core's fdMutex.\n\nGo: internal/poll/fd_mutex.go fdMutex",
    .tp_new = fdmu_new,
    .tp_dealloc = (destructor)fdmu_dealloc,
    .tp_traverse = (traverseproc)fdmu_traverse,
    .tp_clear = (inquiry)fdmu_clear,
    .tp_repr = (reprfunc)fdmu_repr,
    .tp_methods = fdmu_methods,
    .tp_getset = fdmu_getset,
};

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
