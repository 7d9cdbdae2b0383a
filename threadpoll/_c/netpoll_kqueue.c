/* The C core's kqueue backend (macOS and the BSDs): Go's runtime/netpoll_kqueue.go.
 *
 * As netpoll_kqueue.py: EVFILT_READ and EVFILT_WRITE registered once with EV_CLEAR
 * (edge-triggered); the pollDesc's slot and fdseq tag travel in udata, so a stale event is
 * dropped by its tag; the wake-up is a non-blocking close-on-exec pipe whose read end is
 * drained (16 bytes) only by a blocking poll; at most 64 events per kevent call.
 * Not exercised on Linux: the GitHub workflow's macOS jobs run it.
 *
 * Go: runtime/netpoll_kqueue.go
 */
/* THREADPOLL_KQUEUE_STUB: compiled on Linux against .ci/kqueue-stub (.ci/check-kqueue-c). */
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
    defined(__OpenBSD__) || defined(__DragonFly__) || defined(THREADPOLL_KQUEUE_STUB)
#include "netpoll.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/event.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

const char tp_backend_name[] = "kqueue";

#define MAX_EVENTS 64 /* Go's events array size for kqueue */

/* Go: none */
static int
set_cloexec_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0) {
        return errno;
    }
    fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        return errno;
    }
    return 0;
}

/* Go: runtime/netpoll_kqueue.go netpollinit (and addWakeupEvent's pipe variant) */
int
tp_netpollinit(tp_runtime *rt)
{
    rt->pollfd = kqueue();
    if (rt->pollfd < 0) {
        return errno;
    }
    int p[2];
    int e = 0;
    if (pipe(p) != 0) {
        e = errno;
    }
    else if ((e = set_cloexec_nonblock(p[0])) == 0 && (e = set_cloexec_nonblock(p[1])) == 0 &&
             (e = set_cloexec_nonblock(rt->pollfd)) == 0) {
        struct kevent ev;
        EV_SET(&ev, p[0], EVFILT_READ, EV_ADD, 0, 0, (void *)UINTPTR_MAX);
        if (kevent(rt->pollfd, &ev, 1, NULL, 0, NULL) < 0) {
            e = errno;
        }
    }
    if (e != 0) {
        close(rt->pollfd);
        rt->pollfd = -1;
        return e;
    }
    rt->break_rd = p[0];
    rt->break_wr = p[1];
    return 0;
}

/* Go: none */
void
tp_netpolldeinit(tp_runtime *rt)
{
    if (rt->break_rd >= 0) {
        close(rt->break_rd);
    }
    if (rt->break_wr >= 0) {
        close(rt->break_wr);
    }
    if (rt->pollfd >= 0) {
        close(rt->pollfd);
    }
    rt->break_rd = rt->break_wr = rt->pollfd = -1;
}

/* Go: runtime/netpoll_kqueue.go netpollopen */
int
tp_netpollopen(tp_runtime *rt, PollDescObject *pd, int fd, uint32_t seq)
{
    /* Arm both EVFILT_READ and EVFILT_WRITE in edge-triggered mode (EV_CLEAR) for the
     * whole fd lifetime. The notifications are automatically unregistered when fd is
     * closed. */
    struct kevent ev[2];
    void *tag = (void *)(uintptr_t)(((uint64_t)seq << 32) | pd->index);
    EV_SET(&ev[0], fd, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, tag);
    EV_SET(&ev[1], fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, tag);
    return kevent(rt->pollfd, ev, 2, NULL, 0, NULL) < 0 ? errno : 0;
}

/* kqueue registers both filters in netpollopen: nothing to arm. Go: none */
int
tp_netpollarm_write(tp_runtime *rt, PollDescObject *pd, int fd, uint32_t seq)
{
    (void)rt;
    (void)pd;
    (void)fd;
    (void)seq;
    return 0;
}

/* Go: runtime/netpoll_kqueue.go netpollclose */
int
tp_netpollclose(tp_runtime *rt, int fd)
{
    /* DIVERGENCE(go): Go relies on close(2) to drop the registration; threadpoll closes
     * after the pollDesc is freed, so it deletes the filters first (errors ignored). */
    struct kevent ev[2];
    EV_SET(&ev[0], fd, EVFILT_READ, EV_DELETE, 0, 0, NULL);
    EV_SET(&ev[1], fd, EVFILT_WRITE, EV_DELETE, 0, 0, NULL);
    kevent(rt->pollfd, ev, 2, NULL, 0, NULL);
    return 0;
}

/* Go: runtime/netpoll_kqueue.go netpollBreak */
void
tp_netpoll_break(tp_runtime *rt)
{
    pthread_mutex_lock(&rt->lock);
    int pending = rt->wake_sig;
    rt->wake_sig = 1;
    pthread_mutex_unlock(&rt->lock);
    if (pending) {
        return;
    }
    __atomic_fetch_add(&rt->breaks, 1, __ATOMIC_RELAXED);
    char b = 0;
    for (;;) {
        ssize_t n = write(rt->break_wr, &b, 1);
        if (n == 1 || (n < 0 && errno != EINTR)) {
            return; /* EAGAIN: the pipe is full, a wake-up is pending anyway */
        }
    }
}

/* Go: runtime/netpoll_kqueue.go netpollIsPollDescriptor */
int
tp_netpoll_is_poll_descriptor(tp_runtime *rt, int fd)
{
    return fd == rt->pollfd || fd == rt->break_rd || fd == rt->break_wr;
}

/* Go: runtime/netpoll_kqueue.go netpoll */
int
tp_netpoll(tp_runtime *rt, int timeout_ms)
{
    struct kevent events[MAX_EVENTS];
    struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
    int block = timeout_ms != 0;
    int n = kevent(rt->pollfd, NULL, 0, events, MAX_EVENTS, timeout_ms < 0 ? NULL : &ts);
    if (n < 0) {
        return -errno;
    }
    int readied = 0;
    for (int i = 0; i < n; i++) {
        struct kevent *ev = &events[i];
        if ((uintptr_t)ev->udata == UINTPTR_MAX) {
            if (ev->filter != EVFILT_READ) {
                continue;
            }
            if (block) {
                /* netpollBreak could be picked up by a nonblocking poll; only a blocking
                 * one drains the pipe. */
                char buf[16];
                while (read(rt->break_rd, buf, sizeof(buf)) < 0 && errno == EINTR) {
                }
                pthread_mutex_lock(&rt->lock);
                rt->wake_sig = 0;
                pthread_mutex_unlock(&rt->lock);
            }
            continue;
        }
        int mode = 0, err = 0;
        if (ev->filter == EVFILT_READ) {
            mode |= MODE_R;
            /* On some systems when the read end of a pipe is closed the write end will not
             * get a EVFILT_WRITE event, but will get a EVFILT_READ event with EV_EOF set. */
            if (ev->flags & EV_EOF) {
                mode |= MODE_W;
            }
        }
        else if (ev->filter == EVFILT_WRITE) {
            mode |= MODE_W;
        }
        if (ev->flags & EV_ERROR) {
            err = 1;
        }
        if (mode == 0) {
            continue;
        }
        uint64_t tag = (uint64_t)(uintptr_t)ev->udata;
        readied += tp_netpollready_slot(rt, (uint32_t)(tag & 0xffffffffu),
                                        (uint32_t)(tag >> 32), mode, err);
    }
    return readied;
}
#endif
