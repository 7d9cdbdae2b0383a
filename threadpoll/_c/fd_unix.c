/* The C core's half of internal/poll/fd_unix.go: FD.Read, FD.Write, FD.Accept and the
 * socket calls recv, recv_into and send, whole, for pollable sockets; and the module glue for
 * the fdMutex type (fd_mutex.c).
 *
 * fd_unix.py stays the FD: its _*_c methods call these for a pollable socket on the C core
 * and do everything else themselves. Each call is Go's loop: readLock (one compare-and-swap;
 * the fdMutex's own rwlock, which may wait on its Sema, when that fails), prepareRead, the
 * syscall with MSG_DONTWAIT (so the descriptor's own blocking mode never matters and the
 * syscall never blocks), on EAGAIN waitRead (tp_poll_wait: parked with the GIL released, a
 * signal handler run between parks, exactly as the pollDesc's wait), again; readUnlock. The
 * errors are the Python path's: the FD's own closing error when the lock cannot be taken,
 * fd_poll_runtime.convert_err's for the poll error codes, OSError from the syscall.
 * Only sockets come here: a regular file is never pollable, and pipes keep fd_unix.py's path.
 * Conn.read, read_into and write reach the same loops with no Python frame at all
 * (conn_read, conn_read_into, conn_write: the fdMutex carries the pollDesc and descriptor,
 * _set_fast), and the drop-in's recv and send make a first try here that never waits
 * (try_recv, try_recv_into, try_send: a call that would wait takes the FD's call gate first, in Python).
 *
 * DIVERGENCE(go): send(2) and accept(2) release the GIL (the peer a send wakes should not
 * then wait for the GIL; accept4 takes no MSG_DONTWAIT, and a descriptor the drop-in left in
 * blocking mode could block there); recv(2) keeps it (the data is there or EAGAIN comes back
 * at once, and the GIL round costs more than the call) unless it asks for 128 KiB or more
 * (RECV_NOGIL_MIN), where the copy may cost more than the round.
 *
 * Free threading: every pollDesc field is read under pd->lock (tp_poll_reset,
 * tp_poll_wait), the fdMutex state word with atomics; the Python objects used across a wait
 * are the call's own arguments (the caller's references) or module constants.
 *
 * Go: internal/poll/fd_unix.go
 */
#include "netpoll.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: SO_NOSIGPIPE is not set; Python ignores SIGPIPE anyway */
#endif
#ifndef MSG_DONTWAIT
#define MSG_DONTWAIT 0 /* not reached: every platform we build for has it */
#endif

#define MAX_RW (1 << 30) /* fd_unix.py's MAX_RW */
#define STACK_READ 4096  /* reads up to this size go through a stack buffer */

/* fd_poll_runtime.convert_err, set once by _init_io (tp_set_static), and method names,
 * set at module init. */
static PyObject *ConvertErr;
static PyObject *str_rwlock, *str_closed_error, *str_destroy, *str_read_shut, *str_written;
static PyObject *str_read, *str_read_into, *str_write;

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
    if (!__atomic_compare_exchange_n(&mu->state, &old, new, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST)) {
        return 0;
    }
    tp_fdmutex_set_owner(mu, read);
    return 1;
}

/* Raise the FD's own error for a descriptor that cannot be used (closing, or poisoned by a
 * fork). Always -1. Go: internal/poll/fd.go errClosing */
static int
raise_closed(PyObject *fd)
{
    PyObject *e = PyObject_CallMethodObjArgs(fd, str_closed_error, NULL);
    if (e != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(e), e);
        Py_DECREF(e);
    }
    return -1;
}

/* readLock / writeLock: 0 with the lock held, or -1 with an exception (the closing error,
 * or whatever the fdMutex's wait raised: a signal handler's, the reentry check's).
 * Go: internal/poll/fd_mutex.go FD.readLock, FD.writeLock */
static int
rwlock(PyObject *fd, FDMutexObject *mu, int read)
{
    if (try_rwlock(mu, read)) {
        return 0;
    }
    /* Busy, closed or poisoned: the fdMutex's own rwlock decides, and waits if it must. */
    PyObject *r = PyObject_CallMethodObjArgs((PyObject *)mu, str_rwlock,
                                             read ? Py_True : Py_False, NULL);
    if (r == NULL) {
        return -1;
    }
    int ok = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (ok < 0) {
        return -1;
    }
    return ok ? 0 : raise_closed(fd);
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
        PyObject *res = PyObject_CallMethodObjArgs(fd, str_destroy, NULL);
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

/* Raise the public exception for a poll error code. Always -1.
 * Go: internal/poll/fd_poll_runtime.go convertErr */
static int
raise_poll_err(PollDescObject *pd, int res)
{
    PyObject *e =
        PyObject_CallFunction(tp_load_static(&ConvertErr), "iOO", res, Py_False, (PyObject *)pd);
    if (e == NULL) {
        return -1;
    }
    if (e == Py_None) {
        PyErr_Format(PyExc_SystemError, "convert_err(%d) gave None", res);
    }
    else {
        PyErr_SetObject((PyObject *)Py_TYPE(e), e);
    }
    Py_DECREF(e);
    return -1;
}

/* readLock and prepareRead (writeLock and prepareWrite): 0 with the lock held and the
 * pollDesc ready for the syscall, or -1 with an exception and the lock not held.
 * Go: internal/poll/fd_unix.go FD.Read (its first lines) */
static int
enter(PyObject *fd, FDMutexObject *mu, PollDescObject *pd, int read)
{
    if (rwlock(fd, mu, read) < 0) {
        return -1;
    }
    int res = tp_poll_reset(pd, read ? MODE_R : MODE_W);
    if (res != POLL_NO_ERROR) {
        raise_poll_err(pd, res);
        unlock(fd, mu, read);
        return -1;
    }
    return 0;
}

/* waitRead / waitWrite: 0 when the descriptor may be ready, -1 with an exception.
 * Go: internal/poll/fd_poll_runtime.go pollDesc.wait */
static int
wait_io(PollDescObject *pd, int mode)
{
    int res = tp_poll_wait(pd, mode);
    if (res < 0) {
        return -1;
    }
    return res == POLL_NO_ERROR ? 0 : raise_poll_err(pd, res);
}

/* Whether the read side was shut down (fd.read_shut): a read that finds nothing then
 * returns the empty result instead of waiting. 1, 0 or -1. Go: none (see FD.shutdown) */
static int
read_shut(PyObject *fd)
{
    PyObject *v = PyObject_GetAttr(fd, str_read_shut);
    if (v == NULL) {
        return -1;
    }
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* After a syscall failed with errno e: 1 to wait (EAGAIN), 0 to retry at once (EINTR, its
 * signal handlers run), -1 with an exception. Go: internal/poll/fd_unix.go ignoringEINTRIO
 * with the EAGAIN test of its callers */
static int
after_error(int e)
{
    if (e == EAGAIN || e == EWOULDBLOCK) {
        return 1;
    }
    if (e == EINTR) {
        return PyErr_CheckSignals() < 0 ? -1 : 0;
    }
    errno = e;
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* Before a wait in a read: 1 to return the empty result now (read side shut down), 0 to
 * wait, -1 with an exception. Go: none */
static int
read_wait(PyObject *fd, PollDescObject *pd)
{
    int shut = read_shut(fd);
    if (shut != 0) {
        return shut;
    }
    return wait_io(pd, MODE_R);
}

/* A recv(2) asking for at least this many bytes releases the GIL: it may copy that much (a
 * TLS engine's 256 KiB read takes ~25 us), and another thread's Python should run meanwhile.
 * Smaller reads (the 64 KiB most callers ask for, which mostly find a few bytes) keep it. */
#define RECV_NOGIL_MIN 131072

/* Go's read loop, the read lock held and the pollDesc prepared: recv(2) of at most n bytes
 * into buf with flags until it does not say EAGAIN, parking between. The byte count (0 at
 * EOF, or once the read side is shut down and nothing is left), or -1 with an exception.
 * Go: internal/poll/fd_unix.go FD.Read (its loop) */
static Py_ssize_t
recv_loop(PyObject *fd, PollDescObject *pd, int sysfd, char *buf, Py_ssize_t n, int flags)
{
    for (;;) {
        ssize_t r;
        int e;
        if (n >= RECV_NOGIL_MIN) {
            Py_BEGIN_ALLOW_THREADS
            r = recv(sysfd, buf, (size_t)n, flags | MSG_DONTWAIT);
            e = errno;
            Py_END_ALLOW_THREADS
        } else {
            r = recv(sysfd, buf, (size_t)n, flags | MSG_DONTWAIT);
            e = errno;
        }
        if (r >= 0) {
            return r;
        }
        int w = after_error(e);
        if (w < 0) {
            return -1;
        }
        if (w == 0) {
            continue;
        }
        w = read_wait(fd, pd);
        if (w != 0) {
            return w < 0 ? -1 : 0;
        }
    }
}

/* The arguments every call starts with: (fd, fdmu, pd, sysfd, ...). */
typedef struct {
    PyObject *fd;          /* the FD (fd_unix.py): its _closed_error, _destroy, read_shut */
    FDMutexObject *mu;     /* its fdMutex */
    PollDescObject *pd;    /* its pollDesc */
    int sysfd;             /* its descriptor (constant while a lock is held) */
} io_call;

/* Check and unpack the first four arguments of a call that takes want of them. 0 or -1. */
static int
parse_call(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *name,
           io_call *c)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", name, want);
        return -1;
    }
    if (!PyObject_TypeCheck(args[1], &tp_FDMutexType) || !tp_is_polldesc(args[2])) {
        PyErr_Format(PyExc_TypeError, "%s needs the C core's FDMutex and PollDesc", name);
        return -1;
    }
    if (tp_load_static(&ConvertErr) == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "threadpoll._cpoll._init_io was not called");
        return -1;
    }
    c->fd = args[0];
    c->mu = (FDMutexObject *)args[1];
    c->pd = (PollDescObject *)args[2];
    c->sysfd = tp_as_int(args[3]);
    return c->sysfd == -1 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *read_call(io_call *cp, Py_ssize_t n, int flags);

/* fd_read(fd, fdmu, pd, sysfd, n, flags): one successful recv(2) of at most n bytes with
 * flags (MSG_DONTWAIT added): the bytes, b"" at EOF, for n == 0, or once the read side is
 * shut down and nothing is left. Go: internal/poll/fd_unix.go FD.Read */
PyObject *
tp_fd_read(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    io_call c;
    if (parse_call(args, nargs, 6, "fd_read", &c) < 0) {
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[4]);
    int flags = tp_as_int(args[5]);
    if ((n == -1 || flags == -1) && PyErr_Occurred()) {
        return NULL;
    }
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recv");
        return NULL;
    }
    return read_call(&c, n, flags);
}

/* fd_read's work once its arguments are checked (n >= 0).
 * Go: internal/poll/fd_unix.go FD.Read */
static PyObject *
read_call(io_call *cp, Py_ssize_t n, int flags)
{
    io_call c = *cp;
    if (enter(c.fd, c.mu, c.pd, 1) < 0) {
        return NULL;
    }
    PyObject *res = NULL;
    PyObject *big = NULL; /* the result buffer of a read larger than STACK_READ */
    char stack[STACK_READ];
    char *buf = stack;
    if (n > STACK_READ) {
        big = PyBytes_FromStringAndSize(NULL, n);
        if (big == NULL) {
            goto done;
        }
        buf = PyBytes_AS_STRING(big);
    }
    if (n == 0) {
        /* If the caller wanted a zero byte read, return immediately without trying (after
         * the lock: a zero read still queues behind a read in progress). */
        res = PyBytes_FromStringAndSize(NULL, 0);
        goto done;
    }
    Py_ssize_t r = recv_loop(c.fd, c.pd, c.sysfd, buf, n, flags);
    if (r < 0) {
        goto done;
    }
    if (big == NULL) {
        res = PyBytes_FromStringAndSize(buf, r);
    }
    else if (r == n || _PyBytes_Resize(&big, r) == 0) {
        /* _PyBytes_Resize is outside the stable ABI; this module does not use the limited
         * API. On failure it has freed big. */
        res = big;
        big = NULL;
    }
done:
    Py_XDECREF(big);
    if (unlock(c.fd, c.mu, 1) < 0) {
        Py_CLEAR(res);
    }
    return res;
}

static PyObject *read_into_call(io_call *cp, Py_buffer *viewp, Py_ssize_t n, int flags);

/* fd_read_into(fd, fdmu, pd, sysfd, buffer, nbytes, flags): socket.recv_into's arguments
 * (nbytes 0: the whole buffer); one successful recv(2); the byte count (0 at EOF, for an
 * empty request, or once the read side is shut down).
 * Go: internal/poll/fd_unix.go FD.Read */
PyObject *
tp_fd_read_into(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    io_call c;
    if (parse_call(args, nargs, 7, "fd_read_into", &c) < 0) {
        return NULL;
    }
    /* nbytes as the socket module's "n" takes it, with its errors (a float is refused, in
     * words that differ between Python versions). */
    Py_ssize_t n;
    if (!PyArg_Parse(args[5], "n", &n)) {
        return NULL;
    }
    int flags = tp_as_int(args[6]);
    if ((n == -1 || flags == -1) && PyErr_Occurred()) {
        return NULL;
    }
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recv_into");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[4], &view, PyBUF_WRITABLE) < 0) {
        /* The socket module's error for its "w*" argument, word for word. */
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "recv_into() argument 1 must be read-write bytes-like object, not %.50s",
                     args[4] == Py_None ? "None" : Py_TYPE(args[4])->tp_name);
        return NULL;
    }
    if (n == 0) {
        n = view.len;
    }
    else if (view.len < n) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "buffer too small for requested bytes");
        return NULL;
    }
    if (n > MAX_RW) {
        n = MAX_RW;
    }
    return read_into_call(&c, &view, n, flags);
}

/* fd_read_into's work once its arguments are checked (0 <= n <= view->len): releases view.
 * Go: internal/poll/fd_unix.go FD.Read */
static PyObject *
read_into_call(io_call *cp, Py_buffer *viewp, Py_ssize_t n, int flags)
{
    io_call c = *cp;
    PyObject *res = NULL;
    if (enter(c.fd, c.mu, c.pd, 1) < 0) {
        PyBuffer_Release(viewp);
        return NULL;
    }
    if (n == 0) {
        res = PyLong_FromLong(0);
        goto done;
    }
    Py_ssize_t r = recv_loop(c.fd, c.pd, c.sysfd, viewp->buf, n, flags);
    if (r >= 0) {
        res = PyLong_FromSsize_t(r);
    }
done:
    if (unlock(c.fd, c.mu, 1) < 0) {
        Py_CLEAR(res);
    }
    PyBuffer_Release(viewp);
    return res;
}

/* One send(2) with the GIL released: its result, errno in *err. Go: syscall.Write */
static ssize_t
send_nogil(int sysfd, const char *buf, size_t len, int flags, int *err)
{
    ssize_t r;
    Py_BEGIN_ALLOW_THREADS
    r = send(sysfd, buf, len, flags | MSG_DONTWAIT);
    *err = errno;
    Py_END_ALLOW_THREADS
    return r;
}

/* fd_send(fd, fdmu, pd, sysfd, data, flags): one successful send(2) of data with flags
 * (MSG_DONTWAIT added), waiting for room on EAGAIN; the byte count it took.
 * Go: internal/poll/fd_unix.go FD.Write (one round of its loop) */
PyObject *
tp_fd_send(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    io_call c;
    if (parse_call(args, nargs, 6, "fd_send", &c) < 0) {
        return NULL;
    }
    int flags = tp_as_int(args[5]);
    if (flags == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[4], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *res = NULL;
    if (enter(c.fd, c.mu, c.pd, 0) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    for (;;) {
        int e;
        ssize_t r = send_nogil(c.sysfd, view.buf, (size_t)view.len, flags, &e);
        if (r >= 0) {
            res = PyLong_FromSsize_t(r);
            break;
        }
        int w = after_error(e);
        if (w < 0 || (w == 1 && wait_io(c.pd, MODE_W) < 0)) {
            break;
        }
    }
    if (unlock(c.fd, c.mu, 0) < 0) {
        Py_CLEAR(res);
    }
    PyBuffer_Release(&view);
    return res;
}

/* Record on the pending exception that n bytes were written (errors.with_written). */
static void
set_written(Py_ssize_t n)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    PyObject *v = PyLong_FromSsize_t(n);
    if (v == NULL || ev == NULL || PyObject_SetAttr(ev, str_written, v) < 0) {
        PyErr_Clear(); /* the original error wins */
    }
    Py_XDECREF(v);
    PyErr_Restore(et, ev, tb);
}

/* OSError(EIO, msg). Go: io/io.go ErrUnexpectedEOF (and the like) */
static void
raise_eio(const char *msg)
{
    PyObject *v = Py_BuildValue("(is)", EIO, msg);
    if (v != NULL) {
        PyErr_SetObject(PyExc_OSError, v);
        Py_DECREF(v);
    }
}

static PyObject *write_call(io_call *cp, Py_buffer *viewp, int is_stream);

/* fd_write(fd, fdmu, pd, sysfd, data, is_stream): all of data, holding the write lock
 * throughout so writers never interleave; returns len(data). A failure part-way raises with
 * ``.written``. Go: internal/poll/fd_unix.go FD.Write */
PyObject *
tp_fd_write(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    io_call c;
    if (parse_call(args, nargs, 6, "fd_write", &c) < 0) {
        return NULL;
    }
    int is_stream = PyObject_IsTrue(args[5]);
    if (is_stream < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[4], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    return write_call(&c, &view, is_stream);
}

/* fd_write's work once its arguments are checked: releases view.
 * Go: internal/poll/fd_unix.go FD.Write */
static PyObject *
write_call(io_call *cp, Py_buffer *viewp, int is_stream)
{
    io_call c = *cp;
    Py_ssize_t total = viewp->len, nn = 0;
    PyObject *res = NULL;
    if (enter(c.fd, c.mu, c.pd, 0) < 0) {
        set_written(0);
        PyBuffer_Release(viewp);
        return NULL;
    }
    for (;;) {
        Py_ssize_t end = total;
        if (is_stream && total - nn > MAX_RW) {
            end = nn + MAX_RW;
        }
        int e = 0;
        ssize_t r = send_nogil(c.sysfd, (const char *)viewp->buf + nn, (size_t)(end - nn),
                               MSG_NOSIGNAL, &e);
        if (r > end - nn) {
            char msg[96];
            snprintf(msg, sizeof(msg), "invalid return from write: got %zd from a write of %zd",
                     (Py_ssize_t)r, end - nn);
            raise_eio(msg);
            break;
        }
        if (r > 0) {
            nn += r;
        }
        if (nn == total) {
            res = PyLong_FromSsize_t(nn);
            break;
        }
        if (r < 0) {
            int w = after_error(e);
            if (w < 0 || (w == 1 && wait_io(c.pd, MODE_W) < 0)) {
                break;
            }
            continue;
        }
        if (r == 0) {
            /* io.ErrUnexpectedEOF: a write that took nothing and reported no error */
            raise_eio("unexpected EOF");
            break;
        }
    }
    if (res == NULL) {
        set_written(nn);
    }
    if (unlock(c.fd, c.mu, 0) < 0) {
        if (res != NULL) {
            Py_CLEAR(res);
            set_written(nn);
        }
    }
    PyBuffer_Release(viewp);
    return res;
}

/* A socket address as the socket module gives it, for the families a listening stream
 * socket has here (IPv4, IPv6, Unix); None for another (the caller asks getpeername).
 * Go: syscall.anyToSockaddr */
static PyObject *
make_addr(const struct sockaddr_storage *ss, socklen_t len)
{
    char host[NI_MAXHOST];
    switch (ss->ss_family) {
    case AF_INET: {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host)) == NULL) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        return Py_BuildValue("(si)", host, (int)ntohs(a->sin_port));
    }
    case AF_INET6: {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        /* As the socket module: getnameinfo(NI_NUMERICHOST), which adds a scope name. */
        int e = getnameinfo((const struct sockaddr *)ss, len, host, sizeof(host), NULL, 0,
                            NI_NUMERICHOST);
        if (e != 0) {
            PyErr_Format(PyExc_OSError, "getnameinfo: %s", gai_strerror(e));
            return NULL;
        }
        return Py_BuildValue("(siII)", host, (int)ntohs(a->sin6_port),
                             (unsigned)ntohl(a->sin6_flowinfo), (unsigned)a->sin6_scope_id);
    }
    case AF_UNIX: {
        const struct sockaddr_un *a = (const struct sockaddr_un *)ss;
        size_t plen = len > offsetof(struct sockaddr_un, sun_path)
                          ? (size_t)len - offsetof(struct sockaddr_un, sun_path)
                          : 0;
#if defined(__linux__)
        if (plen > 0 && a->sun_path[0] == 0) {
            return PyBytes_FromStringAndSize(a->sun_path, (Py_ssize_t)plen); /* abstract */
        }
#endif
        return PyUnicode_DecodeFSDefaultAndSize(a->sun_path,
                                                (Py_ssize_t)strnlen(a->sun_path, plen));
    }
    default:
        Py_RETURN_NONE;
    }
}

/* One accept with the GIL released: the new descriptor, non-blocking and close-on-exec, or
 * -1 with errno in *err. Go: internal/poll/sock_cloexec.go accept */
static int
accept_nogil(int sysfd, struct sockaddr_storage *ss, socklen_t *len, int *err)
{
    int nfd;
    Py_BEGIN_ALLOW_THREADS
#if defined(__APPLE__)
    /* No accept4: accept, then the flags (Go's sys_cloexec.go does the same under the
     * fork lock; Python's subprocess closes inherited descriptors anyway). */
    nfd = accept(sysfd, (struct sockaddr *)ss, len);
    if (nfd >= 0 && (fcntl(nfd, F_SETFD, FD_CLOEXEC) < 0 ||
                     fcntl(nfd, F_SETFL, fcntl(nfd, F_GETFL) | O_NONBLOCK) < 0)) {
        int e = errno;
        close(nfd);
        errno = e;
        nfd = -1;
    }
#else
    nfd = accept4(sysfd, (struct sockaddr *)ss, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
#endif
    *err = errno;
    Py_END_ALLOW_THREADS
    return nfd;
}

/* fd_accept(fd, fdmu, pd, sysfd): accept a connection: (new descriptor, address), the
 * descriptor non-blocking and close-on-exec, as FD.accept's. ECONNABORTED (the peer gave up
 * while queued) is retried. Go: internal/poll/fd_unix.go FD.Accept */
PyObject *
tp_fd_accept(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    io_call c;
    if (parse_call(args, nargs, 4, "fd_accept", &c) < 0) {
        return NULL;
    }
    if (enter(c.fd, c.mu, c.pd, 1) < 0) {
        return NULL;
    }
    PyObject *res = NULL;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        memset(&ss, 0, sizeof(ss));
        int e;
        int nfd = accept_nogil(c.sysfd, &ss, &len, &e);
        if (nfd >= 0) {
            PyObject *addr = make_addr(&ss, len);
            if (addr == NULL) {
                close(nfd);
                break;
            }
            res = Py_BuildValue("(iN)", nfd, addr);
            if (res == NULL) {
                close(nfd);
            }
            break;
        }
        if (e == ECONNABORTED) {
            /* This means that a socket on the listen queue was closed before we Accept()ed
             * it; it's a silly error, so try again. */
            continue;
        }
        int w = after_error(e);
        if (w < 0 || (w == 1 && wait_io(c.pd, MODE_R) < 0)) {
            break;
        }
    }
    if (unlock(c.fd, c.mu, 1) < 0 && res != NULL) {
        /* The FD was destroyed under us and that failed: the new descriptor is ours. */
        PyObject *t = PyTuple_GET_ITEM(res, 0);
        close((int)PyLong_AsLong(t));
        Py_CLEAR(res);
    }
    return res;
}

/* --- The fast path of Conn and the drop-in socket: straight from their methods ------- */

/* Whether the fast path applies to fdmu (the C core's fdMutex of a pollable socket in
 * non-blocking mode, _set_fast): 1 with c filled in, else 0 (the caller takes the FD's own
 * method, which decides everything again). Go: none */
static int
fast_call(PyObject *fd, PyObject *fdmu, io_call *c)
{
    if (!PyObject_TypeCheck(fdmu, &tp_FDMutexType)) {
        return 0;
    }
    FDMutexObject *mu = (FDMutexObject *)fdmu;
    if (!__atomic_load_n(&mu->fast, __ATOMIC_ACQUIRE) || tp_load_static(&ConvertErr) == NULL) {
        return 0;
    }
    c->fd = fd;
    c->mu = mu;
    c->pd = (PollDescObject *)mu->pd; /* constant once fast is set */
    c->sysfd = mu->fast_sysfd;
    return 1;
}

/* A byte count n for a fast read: 0 < n <= MAX_RW from an exact int, else 0 (the FD's own
 * method checks it and reads 0 bytes, truncates or raises as it does). Go: none */
static Py_ssize_t
fast_size(PyObject *o)
{
    if (!PyLong_CheckExact(o)) {
        return 0;
    }
    Py_ssize_t n = PyLong_AsSsize_t(o);
    if (n == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return n > 0 && n <= MAX_RW ? n : 0;
}

/* The buffer of o for a fast call, if o is a bytes, bytearray or one-dimensional byte
 * memoryview (writable ones only if writable): 1 with view held, else 0 (the FD's own
 * method converts o and raises its own errors). Go: none */
static int
fast_buffer(PyObject *o, Py_buffer *view, int writable)
{
    if (PyMemoryView_Check(o)) {
        Py_buffer *b = PyMemoryView_GET_BUFFER(o);
        if (b->ndim != 1 || (b->format != NULL && strcmp(b->format, "B") != 0) ||
            (b->strides != NULL && b->strides[0] != 1) || (writable && b->readonly)) {
            return 0;
        }
    }
    else if (!PyByteArray_CheckExact(o) && (writable || !PyBytes_CheckExact(o))) {
        return 0;
    }
    if (PyObject_GetBuffer(o, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) {
        PyErr_Clear(); /* a released memoryview, say: the FD's method raises */
        return 0;
    }
    if (view->len == 0) {
        PyBuffer_Release(view); /* an empty call: the FD's method (it still takes the lock) */
        return 0;
    }
    return 1;
}

/* Check a fast entry's argument count (3). 0 or -1. Go: none */
static int
fast_args(Py_ssize_t nargs, const char *name)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "%s takes 3 arguments", name);
        return -1;
    }
    return 0;
}

/* conn_read(fd, fdmu, n): fd.read(n), without its Python frames where the fast path applies:
 * Go's whole read loop here (read_call), parking included; the FD's own read otherwise.
 * Go: internal/poll/fd_unix.go FD.Read */
PyObject *
tp_conn_read(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    io_call c;
    if (fast_args(nargs, "conn_read") < 0) {
        return NULL;
    }
    Py_ssize_t n;
    if (fast_call(args[0], args[1], &c) && (n = fast_size(args[2])) > 0) {
        return read_call(&c, n, 0);
    }
    return PyObject_CallMethodOneArg(args[0], str_read, args[2]);
}

/* conn_read_into(fd, fdmu, buf): fd.read_into(buf), as conn_read does fd.read.
 * Go: internal/poll/fd_unix.go FD.Read */
PyObject *
tp_conn_read_into(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    io_call c;
    if (fast_args(nargs, "conn_read_into") < 0) {
        return NULL;
    }
    Py_buffer view;
    if (fast_call(args[0], args[1], &c) && fast_buffer(args[2], &view, 1)) {
        return read_into_call(&c, &view, view.len > MAX_RW ? MAX_RW : view.len, 0);
    }
    return PyObject_CallMethodOneArg(args[0], str_read_into, args[2]);
}

/* conn_write(fd, fdmu, data): fd.write(data), as conn_read does fd.read: Go's whole write
 * loop here (write_call), holding the write lock throughout.
 * Go: internal/poll/fd_unix.go FD.Write */
PyObject *
tp_conn_write(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    io_call c;
    if (fast_args(nargs, "conn_write") < 0) {
        return NULL;
    }
    Py_buffer view;
    if (fast_call(args[0], args[1], &c) && fast_buffer(args[2], &view, 0)) {
        return write_call(&c, &view, c.mu->fast_stream);
    }
    return PyObject_CallMethodOneArg(args[0], str_write, args[2]);
}

/* The first attempt of a drop-in call that must not wait here (a blocking call waits for
 * the FD's call gate first: FD._gated): the lock by one compare-and-swap, prepare, and the
 * caller's one syscall. 1 with the lock held, 0 if the attempt cannot be made (the caller
 * takes the gated path, which decides everything again). Go: none */
static int
try_enter(io_call *c, int read)
{
    if (!try_rwlock(c->mu, read)) {
        return 0;
    }
    if (tp_poll_reset(c->pd, read ? MODE_R : MODE_W) != POLL_NO_ERROR) {
        /* closing, a deadline passed, not pollable: the gated path raises it. The lock is
         * dropped first, so no error is made (Python run) while holding it. */
        return unlock(c->fd, c->mu, read) < 0 ? -1 : 0;
    }
    return 1;
}

/* After a fast attempt's syscall failed with errno e: -1 with OSError set, or 0 to give up
 * quietly (EAGAIN: the gated path waits; EINTR: it runs the signal handlers and retries).
 * Either way the lock is dropped. Go: none */
static int
try_failed(io_call *c, int read, int e)
{
    int quiet = e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
    if (!quiet) {
        errno = e;
        PyErr_SetFromErrno(PyExc_OSError);
    }
    int u = unlock(c->fd, c->mu, read);
    return quiet && u == 0 ? 0 : -1;
}

/* The end of a fast attempt whose syscall returned r (-1 with errno e): the byte count, None
 * for try_failed's quiet cases (the gated path takes over), or NULL with an exception set.
 * The lock is dropped in every case. Go: none */
static PyObject *
try_finish(io_call *c, int read, ssize_t r, int e)
{
    if (r < 0) {
        if (try_failed(c, read, e) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *res = PyLong_FromSsize_t(r);
    if (unlock(c->fd, c->mu, read) < 0) {
        Py_CLEAR(res);
    }
    return res;
}

/* try_recv(fd, fdmu, n): the drop-in's blocking recv(n) when it finds data at once: the
 * bytes (b"" at EOF), or None when it would wait (or the fast path does not apply): the
 * caller then makes the gated call. Go: internal/poll/fd_unix.go FD.Read (its first try) */
PyObject *
tp_try_recv(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    io_call c;
    if (fast_args(nargs, "try_recv") < 0) {
        return NULL;
    }
    Py_ssize_t n;
    if (!fast_call(args[0], args[1], &c) || (n = fast_size(args[2])) == 0) {
        Py_RETURN_NONE;
    }
    int in = try_enter(&c, 1);
    if (in <= 0) {
        if (in < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *big = NULL;
    char stack[STACK_READ];
    char *buf = stack;
    if (n > STACK_READ) {
        big = PyBytes_FromStringAndSize(NULL, n);
        if (big == NULL) {
            unlock(c.fd, c.mu, 1);
            return NULL;
        }
        buf = PyBytes_AS_STRING(big);
    }
    ssize_t r = recv(c.sysfd, buf, (size_t)n, MSG_DONTWAIT);
    if (r < 0) {
        int e = errno;
        Py_XDECREF(big);
        if (try_failed(&c, 1, e) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *res;
    if (big == NULL) {
        res = PyBytes_FromStringAndSize(buf, r);
    }
    else if (r == n || _PyBytes_Resize(&big, r) == 0) {
        res = big; /* on failure _PyBytes_Resize has freed big */
    }
    else {
        res = NULL;
    }
    if (unlock(c.fd, c.mu, 1) < 0) {
        Py_CLEAR(res);
    }
    return res;
}

/* try_recv_into(fd, fdmu, buffer, nbytes): the drop-in's blocking recv_into(buffer, nbytes)
 * when it finds data at once: the byte count (0 at EOF), or None when it would wait (or the
 * fast path does not apply, or an argument is one the gated call must check and refuse).
 * Go: internal/poll/fd_unix.go FD.Read (its first try) */
PyObject *
tp_try_recv_into(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    io_call c;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "try_recv_into takes 4 arguments");
        return NULL;
    }
    Py_buffer view;
    if (!fast_call(args[0], args[1], &c) || !PyLong_CheckExact(args[3]) ||
        !fast_buffer(args[2], &view, 1)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[3]);
    if (n == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        n = -1;
    }
    if (n == 0) {
        n = view.len;
    }
    if (n < 0 || n > view.len) {
        PyBuffer_Release(&view); /* the gated call raises the stdlib's error */
        Py_RETURN_NONE;
    }
    if (n > MAX_RW) {
        n = MAX_RW;
    }
    int in = try_enter(&c, 1);
    if (in <= 0) {
        PyBuffer_Release(&view);
        if (in < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    ssize_t r = recv(c.sysfd, view.buf, (size_t)n, MSG_DONTWAIT);
    int e = errno;
    PyBuffer_Release(&view);
    return try_finish(&c, 1, r, e);
}

/* try_send(fd, fdmu, data): the drop-in's blocking send(data) when the kernel takes some at
 * once: the byte count, or None when it would wait (or the fast path does not apply).
 * Go: internal/poll/fd_unix.go FD.Write (its first try) */
PyObject *
tp_try_send(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    io_call c;
    if (fast_args(nargs, "try_send") < 0) {
        return NULL;
    }
    Py_buffer view;
    if (!fast_call(args[0], args[1], &c) || !fast_buffer(args[2], &view, 0)) {
        Py_RETURN_NONE;
    }
    int in = try_enter(&c, 0);
    if (in <= 0) {
        PyBuffer_Release(&view);
        if (in < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    int e;
    ssize_t r = send_nogil(c.sysfd, view.buf, (size_t)view.len, 0, &e);
    PyBuffer_Release(&view);
    return try_finish(&c, 0, r, e);
}

/* The buffer fill_bytes lends: it exports its bytes object's memory, writable, and counts
 * the exports, so fill_bytes knows whether anything still reaches that memory (a memoryview
 * slice kept by fill shares the first export; a PickleBuffer makes its own). Go: none */
typedef struct {
    PyObject_HEAD
    PyObject *bytes; /* the object lent; NULL once fill_bytes has taken it back */
    Py_ssize_t exports; /* atomic: exports not yet released */
} FillBufObject;

/* Go: none */
static int
fillbuf_getbuffer(FillBufObject *self, Py_buffer *view, int flags)
{
    /* Counted before bytes is looked at: fill_bytes takes bytes first and looks at the
     * count second, so one of the two sees the other (free threading). */
    __atomic_fetch_add(&self->exports, 1, __ATOMIC_SEQ_CST);
    PyObject *b = __atomic_load_n(&self->bytes, __ATOMIC_SEQ_CST);
    if (b == NULL) {
        __atomic_fetch_sub(&self->exports, 1, __ATOMIC_SEQ_CST);
        PyErr_SetString(PyExc_BufferError, "fill_bytes: the buffer was handed out");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), 0,
                          flags) < 0) {
        __atomic_fetch_sub(&self->exports, 1, __ATOMIC_SEQ_CST);
        return -1;
    }
    return 0;
}

/* Go: none */
static void
fillbuf_releasebuffer(FillBufObject *self, Py_buffer *Py_UNUSED(view))
{
    __atomic_fetch_sub(&self->exports, 1, __ATOMIC_SEQ_CST);
}

/* Go: none */
static void
fillbuf_dealloc(FillBufObject *self)
{
    Py_XDECREF(self->bytes);
    PyObject_Free(self);
}

static PyBufferProcs fillbuf_as_buffer = {
    .bf_getbuffer = (getbufferproc)fillbuf_getbuffer,
    .bf_releasebuffer = (releasebufferproc)fillbuf_releasebuffer,
};

static PyTypeObject FillBufType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "threadpoll._cpoll._FillBuf",
    .tp_basicsize = sizeof(FillBufObject),
    .tp_dealloc = (destructor)fillbuf_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_as_buffer = &fillbuf_as_buffer,
    .tp_doc = "The writable buffer fill_bytes lends to its fill function.",
};

/* fill_bytes(n, fill): a new bytes object that fill writes in place. fill gets a writable
 * memoryview of n bytes and returns how many it wrote. When fill returns, the view is
 * released; if nothing else still reaches the memory (no slice of the view, no other
 * export), the bytes object itself is cut to the count and handed out, immutable from then
 * on; otherwise a copy of the count is, and the lent object lives on with the last export.
 * The TLS engine reads several records into one object this way, straight from OpenSSL,
 * instead of joining one bytes object per record.
 * Go: none (Go reads into the caller's []byte) */
PyObject *
tp_fill_bytes(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "fill_bytes(n, fill) takes 2 arguments");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[0]);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (n <= 0) {
        PyErr_SetString(PyExc_ValueError, "fill_bytes: n must be > 0");
        return NULL;
    }
    FillBufObject *lent = PyObject_New(FillBufObject, &FillBufType);
    if (lent == NULL) {
        return NULL;
    }
    lent->exports = 0;
    lent->bytes = PyBytes_FromStringAndSize(NULL, n);
    if (lent->bytes == NULL) {
        Py_DECREF(lent);
        return NULL;
    }
    PyObject *view = PyMemoryView_FromObject((PyObject *)lent);
    if (view == NULL) {
        Py_DECREF(lent);
        return NULL;
    }
    PyObject *got = PyObject_CallOneArg(args[1], view);
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb); /* fill's exception, if any, is the one to report */
    PyObject *released = PyObject_CallMethod(view, "release", NULL);
    if (released == NULL) {
        PyErr_Clear(); /* something holds an export of the view: counted below */
    }
    Py_XDECREF(released);
    Py_DECREF(view);
    if (got == NULL) {
        PyErr_Restore(et, ev, tb);
        Py_DECREF(lent);
        return NULL;
    }
    Py_ssize_t k = PyLong_AsSsize_t(got);
    Py_DECREF(got);
    if (k == -1 && PyErr_Occurred()) {
        Py_DECREF(lent);
        return NULL;
    }
    if (k < 0 || k > n) {
        Py_DECREF(lent);
        PyErr_Format(PyExc_ValueError, "fill_bytes: fill returned %zd, not 0 to %zd", k, n);
        return NULL;
    }
    PyObject *b = __atomic_exchange_n(&lent->bytes, NULL, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&lent->exports, __ATOMIC_SEQ_CST) == 0) {
        /* Nothing reaches the memory, and no export can be made now: ours alone. */
        Py_DECREF(lent);
        if (k < n && _PyBytes_Resize(&b, k) < 0) {
            return NULL; /* b was freed */
        }
        return b;
    }
    /* A slice or another export of it is alive: it keeps the lent object; hand out a copy. */
    __atomic_store_n(&lent->bytes, b, __ATOMIC_SEQ_CST);
    PyObject *copy = PyBytes_FromStringAndSize(PyBytes_AS_STRING(b), k);
    Py_DECREF(lent);
    return copy;
}

/* _init_io(convert_err): fd_poll_runtime.convert_err, which turns poll error codes into the
 * public exceptions; set once (tp_set_static). Go: none */
PyObject *
tp_mod_init_io(PyObject *Py_UNUSED(m), PyObject *arg)
{
    tp_set_static(&ConvertErr, arg);
    Py_RETURN_NONE;
}

/* Go: none */
int
tp_fd_ready(void)
{
    if (PyType_Ready(&FillBufType) < 0) {
        return -1;
    }
    return PyType_Ready(&tp_FDMutexType);
}

/* Go: none */
int
tp_fd_init_module(PyObject *m)
{
    str_rwlock = PyUnicode_InternFromString("rwlock");
    str_closed_error = PyUnicode_InternFromString("_closed_error");
    str_destroy = PyUnicode_InternFromString("_destroy");
    str_read_shut = PyUnicode_InternFromString("read_shut");
    str_written = PyUnicode_InternFromString("written");
    str_read = PyUnicode_InternFromString("read");
    str_read_into = PyUnicode_InternFromString("read_into");
    str_write = PyUnicode_InternFromString("write");
    if (str_rwlock == NULL || str_closed_error == NULL || str_destroy == NULL ||
        str_read_shut == NULL || str_written == NULL || str_read == NULL ||
        str_read_into == NULL || str_write == NULL || tp_fdmutex_init_names() < 0) {
        return -1;
    }
    Py_INCREF(&tp_FDMutexType);
    if (PyModule_AddObject(m, "FDMutex", (PyObject *)&tp_FDMutexType) < 0) {
        Py_DECREF(&tp_FDMutexType);
        return -1;
    }
    return 0;
}
