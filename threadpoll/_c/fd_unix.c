/* The C core's half of internal/poll/fd_unix.go: the first attempt of FD.Read and FD.Write
 * for sockets, and the module glue for the fdMutex type (fd_mutex.c).
 *
 * fd_unix.py stays the FD: it calls these for a pollable socket on the C core and does
 * everything else itself. The first attempt runs with the GIL held (no Python frame, one
 * compare-and-swap for the fdMutex, the pollDesc checked under its C lock, then one
 * non-blocking recv/send with MSG_DONTWAIT, so the descriptor's own blocking mode never
 * matters and nothing here can block). Only sockets come here: a regular file is never
 * pollable, and pipes keep fd_unix.py's path.
 *
 * DIVERGENCE(go): the write's send(2) releases the GIL (the peer it wakes should not then
 * wait for the GIL); the read's recv(2) keeps it (the data is there or EAGAIN comes back at
 * once, and the GIL round costs more than the call).
 *
 * Go: internal/poll/fd_unix.go
 */
#include "netpoll.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: SO_NOSIGPIPE is not set; Python ignores SIGPIPE anyway */
#endif

#define MAX_RW (1 << 30) /* fd_unix.py's MAX_RW */
#define STACK_READ 4096  /* reads up to this size go through a stack buffer */

/* The first attempt's rwlock: one compare-and-swap, never waits. 1 if taken.
 * Go: internal/poll/fd_mutex.go fdMutex.rwlock (its lock-is-free case) */
static int
try_rwlock(FDMutexObject *mu, int read)
{
    uint64_t bit = read ? MUTEX_RLOCK : MUTEX_WLOCK;
    uint64_t old = __atomic_load_n(&mu->state, __ATOMIC_SEQ_CST);
    if (old & (MUTEX_CLOSED | bit)) {
        return 0;
    }
    uint64_t new = (old | bit) + MUTEX_REF;
    if ((new & MUTEX_REF_MASK) == 0) {
        return 0; /* the slow path reports the overflow */
    }
    return __atomic_compare_exchange_n(&mu->state, &old, new, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST);
}

/* readUnlock / writeUnlock: unlock, and destroy the FD if that was the last reference
 * after close. Keeps a pending exception. 0 or -1.
 * Go: internal/poll/fd_mutex.go FD.readUnlock, FD.writeUnlock */
static int
unlock(PyObject *fd, FDMutexObject *mu, int read)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    int r = tp_fdmutex_rwunlock(mu, read);
    if (r == 1) {
        PyObject *res = PyObject_CallMethod(fd, "_destroy", NULL);
        Py_XDECREF(res);
        r = res == NULL ? -1 : 0;
    }
    if (et != NULL) {
        if (r < 0) {
            PyErr_Clear(); /* the first error wins */
        }
        PyErr_Restore(et, ev, tb);
        return -1;
    }
    return r;
}

/* One non-blocking recv of at most n bytes: bytes (b"" at EOF), or NULL with *eagain set,
 * or NULL with an exception. Go: internal/poll/fd_unix.go FD.Read (the ignoringEINTRIO
 * call) */
static PyObject *
do_recv(int sysfd, Py_ssize_t n, int *eagain)
{
    *eagain = 0;
    for (;;) {
        ssize_t r;
        if (n <= STACK_READ) {
            char buf[STACK_READ];
            r = recv(sysfd, buf, (size_t)n, MSG_DONTWAIT);
            if (r >= 0) {
                return PyBytes_FromStringAndSize(buf, r);
            }
        }
        else {
            PyObject *b = PyBytes_FromStringAndSize(NULL, n);
            if (b == NULL) {
                return NULL;
            }
            r = recv(sysfd, PyBytes_AS_STRING(b), (size_t)n, MSG_DONTWAIT);
            if (r >= 0) {
                /* _PyBytes_Resize is outside the stable ABI; this module does not use the
                 * limited API. */
                if (r != n && _PyBytes_Resize(&b, r) < 0) {
                    return NULL;
                }
                return b;
            }
            Py_DECREF(b);
        }
        if (errno == EINTR) {
            if (PyErr_CheckSignals() < 0) {
                return NULL;
            }
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            *eagain = 1;
            return NULL;
        }
        return PyErr_SetFromErrno(PyExc_OSError);
    }
}

static int
check_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *name)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", name, want);
        return -1;
    }
    if (!Py_IS_TYPE(args[1], &tp_FDMutexType) || !tp_is_polldesc(args[2])) {
        PyErr_Format(PyExc_TypeError, "%s needs the C core's FDMutex and PollDesc", name);
        return -1;
    }
    return 0;
}

/* fd_read(fd, fdmu, pd, sysfd, n): the first attempt of FD.read on a socket. Returns the
 * bytes (read lock taken and released); False if it did not try (lock busy, closed, or the
 * pollDesc reports an error: fd_unix.py's locked path decides); True on EAGAIN, with the
 * read lock held (the caller waits, retries with fd_recv, and read-unlocks); or raises
 * (lock released). Go: internal/poll/fd_unix.go FD.Read */
PyObject *
tp_fd_read(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(args, nargs, 5, "fd_read") < 0) {
        return NULL;
    }
    PyObject *fd = args[0];
    FDMutexObject *mu = (FDMutexObject *)args[1];
    PollDescObject *pd = (PollDescObject *)args[2];
    int sysfd = tp_as_int(args[3]);
    Py_ssize_t n = PyLong_AsSsize_t(args[4]);
    if ((sysfd == -1 || n == -1) && PyErr_Occurred()) {
        return NULL;
    }
    if (n <= 0 || !try_rwlock(mu, 1)) {
        Py_RETURN_FALSE;
    }
    if (tp_poll_reset(pd, MODE_R) != POLL_NO_ERROR) {
        return unlock(fd, mu, 1) < 0 ? NULL : tp_newref(Py_False);
    }
    int eagain;
    PyObject *res = do_recv(sysfd, n, &eagain);
    if (eagain) {
        Py_RETURN_TRUE; /* the read lock stays held: the caller parks */
    }
    if (unlock(fd, mu, 1) < 0) {
        Py_XDECREF(res);
        return NULL;
    }
    return res;
}

/* fd_recv(sysfd, n): one retry after a wait, the read lock held by the caller: bytes, or
 * None on EAGAIN. Go: internal/poll/fd_unix.go FD.Read (the loop) */
PyObject *
tp_fd_recv(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "fd_recv takes 2 arguments");
        return NULL;
    }
    int sysfd = tp_as_int(args[0]);
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if ((sysfd == -1 || n == -1) && PyErr_Occurred()) {
        return NULL;
    }
    int eagain;
    PyObject *res = do_recv(sysfd, n, &eagain);
    if (eagain) {
        Py_RETURN_NONE;
    }
    return res;
}

/* fd_write(fd, fdmu, pd, sysfd, data): the first attempt of FD.write on a socket. Returns
 * len(data) when all of it went (write lock taken and released); False if it did not try;
 * (n, eagain) with the write lock held when only n bytes went (the caller goes on with
 * Go's loop and write-unlocks); or raises (lock released, nothing written).
 * Go: internal/poll/fd_unix.go FD.Write */
PyObject *
tp_fd_write(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(args, nargs, 5, "fd_write") < 0) {
        return NULL;
    }
    PyObject *fd = args[0];
    FDMutexObject *mu = (FDMutexObject *)args[1];
    PollDescObject *pd = (PollDescObject *)args[2];
    int sysfd = tp_as_int(args[3]);
    if (sysfd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[4], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *res = NULL;
    if (view.len == 0 || !try_rwlock(mu, 0)) {
        res = tp_newref(Py_False);
        goto done;
    }
    if (tp_poll_reset(pd, MODE_W) != POLL_NO_ERROR) {
        res = unlock(fd, mu, 0) < 0 ? NULL : tp_newref(Py_False);
        goto done;
    }
    size_t end = view.len > MAX_RW ? MAX_RW : (size_t)view.len;
    ssize_t r;
    int err;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        r = send(sysfd, view.buf, end, MSG_DONTWAIT | MSG_NOSIGNAL);
        err = errno;
        Py_END_ALLOW_THREADS
        if (r >= 0 || err != EINTR) {
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            unlock(fd, mu, 0);
            goto done;
        }
    }
    if (r == view.len) {
        res = unlock(fd, mu, 0) < 0 ? NULL : PyLong_FromSsize_t(r);
    }
    else if (r >= 0) {
        res = Py_BuildValue("(nO)", (Py_ssize_t)r, Py_False); /* write lock held */
    }
    else if (err == EAGAIN || err == EWOULDBLOCK) {
        res = Py_BuildValue("(nO)", (Py_ssize_t)0, Py_True); /* write lock held */
    }
    else {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        unlock(fd, mu, 0);
    }
done:
    PyBuffer_Release(&view);
    return res;
}

/* Go: none */
int
tp_fd_ready(void)
{
    return PyType_Ready(&tp_FDMutexType);
}

/* Go: none */
int
tp_fd_init_module(PyObject *m)
{
    Py_INCREF(&tp_FDMutexType);
    if (PyModule_AddObject(m, "FDMutex", (PyObject *)&tp_FDMutexType) < 0) {
        Py_DECREF(&tp_FDMutexType);
        return -1;
    }
    return 0;
}
