/* The C core's epoll backend (Linux): Go's runtime/netpoll_epoll.go.
 *
 * The facts it relies on are netpoll_epoll.py's (registration keyed by fd and open file
 * description; EPOLLET reports a transition once; epoll_ctl is safe beside a blocked
 * epoll_wait; regular files get EPERM). Unlike select.epoll, epoll_event.data is ours: it
 * holds the pollDesc's slot and fdseq tag, so no fd -> pollDesc table is needed and a stale
 * event is recognised by its tag, as Go does with its tagged pointer.
 *
 * Go: runtime/netpoll_epoll.go
 */
#if defined(__linux__)
#include "netpoll.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

const char tp_backend_name[] = "epoll";

/* The tag of the wake-up descriptor: no slot has it (slots stay below 2^32 - 1). */
#define BREAK_TAG UINT64_MAX
#define MAX_EVENTS 128 /* Go's events array size */

/* Go: runtime/netpoll_epoll.go netpollinit */
int
tp_netpollinit(tp_runtime *rt)
{
    rt->pollfd = epoll_create1(EPOLL_CLOEXEC);
    if (rt->pollfd < 0) {
        return errno;
    }
    /* A non-semaphore eventfd: level-triggered until read, so a break made before the
     * poller blocks is not lost; one read resets it. */
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) {
        int e = errno;
        close(rt->pollfd);
        rt->pollfd = -1;
        return e;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = BREAK_TAG};
    if (epoll_ctl(rt->pollfd, EPOLL_CTL_ADD, efd, &ev) != 0) {
        int e = errno;
        close(efd);
        close(rt->pollfd);
        rt->pollfd = -1;
        return e;
    }
    rt->break_rd = rt->break_wr = efd;
    return 0;
}

/* Go: none */
void
tp_netpolldeinit(tp_runtime *rt)
{
    if (rt->break_rd >= 0) {
        close(rt->break_rd);
    }
    if (rt->pollfd >= 0) {
        close(rt->pollfd);
    }
    rt->break_rd = rt->break_wr = rt->pollfd = -1;
}

/* Register once for the descriptor's life, edge-triggered, both directions and peer
 * shutdown. Go: runtime/netpoll_epoll.go netpollopen */
int
tp_netpollopen(tp_runtime *rt, PollDescObject *pd, int fd, uint32_t seq)
{
    struct epoll_event ev;
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    if (!rt->lazy_write) {
        ev.events |= EPOLLOUT;
    }
    ev.data.u64 = ((uint64_t)seq << 32) | pd->index;
    return epoll_ctl(rt->pollfd, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : errno;
}

/* DIVERGENCE(go): with lazy_write, add EPOLLOUT the first time a writer waits (once, kept
 * for the descriptor's life), so the peer's reads (ACKs, freed buffer space) stop waking
 * the poller. MOD re-evaluates readiness: room that appeared between the writer's EAGAIN
 * and this call is still reported. Go: none (Go registers EPOLLOUT in netpollopen) */
int
tp_netpollarm_write(tp_runtime *rt, PollDescObject *pd, int fd, uint32_t seq)
{
    struct epoll_event ev;
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = ((uint64_t)seq << 32) | pd->index;
    return epoll_ctl(rt->pollfd, EPOLL_CTL_MOD, fd, &ev) == 0 ? 0 : errno;
}

/* Go: runtime/netpoll_epoll.go netpollclose */
int
tp_netpollclose(tp_runtime *rt, int fd)
{
    struct epoll_event ev = {0};
    return epoll_ctl(rt->pollfd, EPOLL_CTL_DEL, fd, &ev) == 0 ? 0 : errno;
}

/* Wake the poller if it is blocked in netpoll; breaks made while one is pending are
 * folded into it. Go: runtime/netpoll_epoll.go netpollBreak */
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
    uint64_t one = 1;
    for (;;) {
        ssize_t n = write(rt->break_wr, &one, sizeof(one));
        if (n == sizeof(one) || (n < 0 && errno == EAGAIN)) {
            return; /* EAGAIN: the counter is full, a wake-up is pending anyway */
        }
        if (n < 0 && errno != EINTR) {
            return;
        }
    }
}

/* Go: runtime/netpoll_epoll.go netpollIsPollDescriptor */
int
tp_netpoll_is_poll_descriptor(tp_runtime *rt, int fd)
{
    return fd == rt->pollfd || fd == rt->break_rd;
}

/* Wait for events (timeout_ms: -1 for none, 0 for a non-blocking poll, else at most that
 * long) and ready the pollDescs they name; returns how many parked threads were readied, or
 * -errno. Called by the poller or by a parking thread that leads (netpoll.c tp_lead).
 * Go: runtime/netpoll_epoll.go netpoll */
int
tp_netpoll(tp_runtime *rt, int timeout_ms)
{
    struct epoll_event events[MAX_EVENTS];
    int block = timeout_ms != 0;
    int n = epoll_wait(rt->pollfd, events, MAX_EVENTS, timeout_ms);
    if (n < 0) {
        return -errno;
    }
    int readied = 0;
    for (int i = 0; i < n; i++) {
        struct epoll_event *ev = &events[i];
        if (ev->events == 0) {
            continue;
        }
        if (ev->data.u64 == BREAK_TAG) {
            if (block) {
                /* A blocking poll consumes the wake-up; a non-blocking one leaves it. */
                uint64_t buf;
                while (read(rt->break_rd, &buf, sizeof(buf)) < 0 && errno == EINTR) {
                }
                pthread_mutex_lock(&rt->lock);
                rt->wake_sig = 0;
                pthread_mutex_unlock(&rt->lock);
            }
            continue;
        }
        int mode = 0;
        if (ev->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            mode |= MODE_R;
        }
        if (ev->events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
            mode |= MODE_W;
        }
        if (mode == 0) {
            continue;
        }
        uint32_t index = (uint32_t)(ev->data.u64 & 0xffffffffu);
        uint32_t seq = (uint32_t)(ev->data.u64 >> 32);
        readied += tp_netpollready_slot(rt, index, seq, mode, ev->events == EPOLLERR);
    }
    return readied;
}
#endif
