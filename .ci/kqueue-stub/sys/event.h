/* A stand-in for the BSDs' <sys/event.h>, so netpoll_kqueue.c can be compiled (not linked,
 * not run) on Linux: .ci/check-kqueue-c. The layout and values are macOS's and FreeBSD's
 * (udata a pointer, as FreeBSD 12+, macOS and NetBSD 10 have it). Only what a kqueue
 * backend may name is here; anything else it names fails the check, as it should. */
#ifndef THREADPOLL_KQUEUE_STUB_EVENT_H
#define THREADPOLL_KQUEUE_STUB_EVENT_H

#include <stdint.h>
#include <time.h>

struct kevent {
    uintptr_t ident; /* identifier for this event */
    int16_t filter;  /* filter for event */
    uint16_t flags;  /* general flags */
    uint32_t fflags; /* filter-specific flags */
    intptr_t data;   /* filter-specific data */
    void *udata;     /* opaque user data identifier */
};

#define EV_SET(kevp, a, b, c, d, e, f)                                                     \
    do {                                                                                   \
        struct kevent *__kevp = (kevp);                                                    \
        __kevp->ident = (a);                                                               \
        __kevp->filter = (b);                                                              \
        __kevp->flags = (c);                                                               \
        __kevp->fflags = (d);                                                              \
        __kevp->data = (e);                                                                \
        __kevp->udata = (f);                                                               \
    } while (0)

#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#define EVFILT_USER (-10)

#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_ENABLE 0x0004
#define EV_DISABLE 0x0008
#define EV_ONESHOT 0x0010
#define EV_CLEAR 0x0020
#define EV_RECEIPT 0x0040
#define EV_ERROR 0x4000
#define EV_EOF 0x8000

#define NOTE_TRIGGER 0x01000000

int kqueue(void);
int kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist,
           int nevents, const struct timespec *timeout);

#endif
