"""The epoll backend (Linux): Go's runtime/netpoll_epoll.go.

Some facts about epoll this backend relies on:

- A registration is keyed by (fd number, open file description). Registering the same fd
  twice in one epoll is EEXIST; closing the last descriptor of a file removes it; closing a
  descriptor whose file is still open through a dup does *not* (the dup keeps reporting).
  threadpoll therefore unregisters (EPOLL_CTL_DEL) in destroy, before close(2), always.
- ``EPOLLET`` reports a transition once. Registering once, for the fd's whole life, with
  ``EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET`` means one ``epoll_ctl`` per descriptor and no
  re-arming — but a missed edge is never re-reported, which is why netpollblock keeps an
  edge that arrives while nobody waits as PD_READY.
- ``epoll_ctl`` is safe while another thread blocks in ``epoll_wait`` on the same epoll; a
  new registration whose fd is already ready is reported by that wait. No break needed.
- Regular files and directories get EPERM: they are not pollable. That errno is how
  internal/poll learns it must fall back to blocking mode.
- Regular files aside, EPOLLERR and EPOLLHUP are always reported, whether asked for or not.

Why a stale event is harmless here. ``select.epoll`` has no per-event user data (Go stores
a tagged pollDesc pointer in ``epoll_event.data``), so this backend keeps ``fd → (pd,
fdseq, regseq)`` under a lock. The entry is added *before* EPOLL_CTL_ADD and removed
together with EPOLL_CTL_DEL, so a fd number is never in the table while it is closed. An
event fetched for a descriptor that was closed and whose number was reused before the
poller looked it up is attributed to the new pollDesc: a spurious wake-up, which internal/poll
absorbs (the thread retries its syscall and gets EAGAIN) — Go documents the same ("the
runtime poller can wake us up spuriously", issues 14548 and 19289). The event-error bit is
different, because a stale EPOLLERR would fail the new descriptor's reads (Go issue 59545):
it is only set for a registration older than the ``epoll_wait`` that returned the event.
Readiness is never dropped for a registration newer than the wait: its first edge may be
reported only once.

Differences from Go:
- DIVERGENCE(go): fd → pollDesc table instead of epoll user data (see above).
- DIVERGENCE(go): the wake-up is ``os.eventfd`` where Python has it (3.10+), else a
  non-blocking pipe; both level-triggered, drained only by a blocking poll.
- DIVERGENCE(go): EINTR is retried inside ``select.epoll.poll`` by Python (PEP 475) with
  the remaining time, instead of returning early to the scheduler.

Go: runtime/netpoll_epoll.go
"""

from __future__ import annotations

import errno
import os
import select
import sys
import threading
from typing import TYPE_CHECKING

from typing_extensions import final

from threadpoll._runtime import trace
from threadpoll._runtime.netpoll import PollDesc, netpollready, throw

if TYPE_CHECKING:
    from threadpoll._runtime.proc import Runtime

__all__ = ["EpollBackend"]

_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_EPOLLERR = select.EPOLLERR
_EPOLLHUP = select.EPOLLHUP
_EPOLLRDHUP = getattr(select, "EPOLLRDHUP", 0x2000)
_EPOLLET = select.EPOLLET
_READ_EVENTS = _EPOLLIN | _EPOLLRDHUP | _EPOLLHUP | _EPOLLERR
_WRITE_EVENTS = _EPOLLOUT | _EPOLLHUP | _EPOLLERR
_MAX_EVENTS = 128  # Go's events array size
_ONE = (1).to_bytes(8, sys.byteorder)


def _delay_to_timeout(delay: int) -> float:
    """Convert netpoll's delay (ns) to epoll_wait's timeout, as Go does: block for < 0,
    poll for 0, round a sub-millisecond wait *up* to 1 ms (so we wait at least that long),
    and cap at 1e9 ms (~11.5 days; epoll takes at most 2**31-1 ms).

    Go: runtime/netpoll_epoll.go netpoll (waitms computation)
    """
    if delay < 0:
        return -1.0
    if delay == 0:
        return 0.0
    if delay < 1_000_000:
        return 0.001
    if delay < 1_000_000_000_000_000:
        return (delay // 1_000_000) / 1000.0
    return 1e6


@final
class EpollBackend:
    """The epoll poller.

    Go: runtime/netpoll_epoll.go (package state epfd, netpollEventFd, netpollWakeSig)
    """

    name = "epoll"
    arm_modes = ""  # Go's way: both directions registered once, in netpollopen

    def __init__(self, lazy_write: bool = False) -> None:
        """``lazy_write`` (opt-in; $THREADPOLL_EPOLL_LAZY_WRITE=1 for the default runtime):

        DIVERGENCE(go): arm write interest lazily. Go registers EPOLLOUT once with EPOLLIN;
        then every read by the peer that frees send-buffer space is an EPOLLOUT edge that
        wakes the poller for nothing (the pingpong benchmark counted 3.7 poller wake-ups per
        round trip instead of 2). With lazy_write a descriptor is registered for reading
        only, and EPOLLOUT is added (EPOLL_CTL_MOD, once, kept for the descriptor's life)
        the first time a writer has to wait. MOD re-evaluates readiness, so space that
        appeared between the writer's EAGAIN and the MOD is still reported: no wake-up is
        lost. Off by default, because the documented promise is Go's register-once; the
        benchmark shows what it buys.

        Go: none
        """
        self.lazy_write = lazy_write
        self.arm_modes = "w" if lazy_write else ""
        self.rt: Runtime | None = None
        self.ep: select.epoll | None = None
        self.break_rd = -1  # eventfd, or a pipe's read end
        self.break_wr = -1  # the same eventfd, or the pipe's write end
        self.lock = threading.Lock()  # guards table and regseq
        self.table: dict[int, tuple[PollDesc, int, int]] = {}  # fd → (pd, fdseq, regseq)
        self.wout: set[int] = set()  # guarded by lock: fds whose EPOLLOUT is armed
        self.regseq = 0  # counts registrations; a wait notes it before epoll_wait
        self.wake_lock = threading.Lock()
        self.wake_sig = False  # guarded by wake_lock: a break is in flight

    def netpollinit(self, rt: Runtime) -> None:
        """Create the close-on-exec epoll and the break eventfd (level-triggered EPOLLIN).

        Go: runtime/netpoll_epoll.go netpollinit
        """
        self.rt = rt
        self.ep = select.epoll()  # Python always passes EPOLL_CLOEXEC
        if sys.version_info >= (3, 10) and hasattr(os, "eventfd"):
            fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self.break_rd = self.break_wr = fd
        else:  # pragma: no cover - Python 3.9
            r, w = os.pipe()  # close-on-exec by default (PEP 446)
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            self.break_rd, self.break_wr = r, w
        self.ep.register(self.break_rd, _EPOLLIN)

    def netpolldeinit(self) -> None:
        """Go: none"""
        if self.ep is not None:
            self.ep.close()
        os.close(self.break_rd)
        if self.break_wr != self.break_rd:
            os.close(self.break_wr)
        self.break_rd = self.break_wr = -1

    def netpoll_after_fork(self, rt: Runtime) -> None:
        """Go: none"""
        # The child's epoll fd refers to the parent's epoll instance: closing our copy is
        # safe, unregistering anything through it would change the parent's interest set.
        self.lock = threading.Lock()
        self.wake_lock = threading.Lock()
        self.wake_sig = False
        self.table = {}
        self.wout = set()
        self.netpolldeinit()
        self.netpollinit(rt)

    def netpollopen(self, fd: int, pd: PollDesc) -> int:
        """Register fd once, edge-triggered, for both directions; 0 or an errno.

        Go: runtime/netpoll_epoll.go netpollopen
        """
        ep = self.ep
        if ep is None:
            raise throw("runtime: netpollopen before netpollinit")
        with self.lock:
            # The kernel is the judge of a second registration: EEXIST while the first is
            # live (the table is left alone), success if that descriptor was closed without
            # netpollclose (its table entry is stale and is replaced). The poller looks the
            # table up under this lock, so an event that arrives as soon as epoll_ctl
            # returns still finds the entry.
            events = _EPOLLIN | _EPOLLRDHUP | _EPOLLET
            if not self.lazy_write:
                events |= _EPOLLOUT
            try:
                ep.register(fd, events)
            except OSError as e:
                return e.errno or errno.EINVAL
            self.wout.discard(fd)
            self.regseq += 1
            self.table[fd] = (pd, pd.fdseq, self.regseq)
        return 0

    def netpollclose(self, fd: int) -> int:
        """Go: runtime/netpoll_epoll.go netpollclose"""
        ep = self.ep
        if ep is None:
            return 0
        with self.lock:
            self.table.pop(fd, None)
            self.wout.discard(fd)
            try:
                ep.unregister(fd)
            except OSError as e:
                return e.errno or 1
        return 0

    def netpoll_break(self) -> None:
        """Interrupt a blocked netpoll; de-duplicated while a wake-up is in flight.

        Go: runtime/netpoll_epoll.go netpollBreak
        """
        # The byte is written under wake_lock, before wake_sig is set: a signal handler that
        # raises in this thread (Ctrl-C) can land only at a call's return, so it may leave
        # a spare byte (drained with the rest) but never wake_sig set with no byte written,
        # which would make every later break a no-op and the poller deaf.
        with self.wake_lock:
            if self.wake_sig:
                return
            try:
                # Eight bytes: an eventfd takes exactly a native uint64; a pipe takes anything.
                os.write(self.break_wr, _ONE)
            except BlockingIOError:
                pass  # the counter or pipe is full: a wake-up is already pending
            self.wake_sig = True
        if self.rt is not None:
            self.rt.count_break()
        if trace.enabled:
            trace.emit("netpoll_break")

    def netpoll_is_poll_descriptor(self, fd: int) -> bool:
        """Go: runtime/netpoll_epoll.go netpollIsPollDescriptor"""
        return fd in (self.break_rd, self.break_wr) or (
            self.ep is not None and fd == self.ep.fileno()
        )

    def netpollarm(self, pd: PollDesc, mode: str) -> None:
        """Add EPOLLOUT to pd's registration the first time a writer waits (see arm_modes).

        Go: none (Go registers EPOLLOUT in netpollopen)
        """
        ep = self.ep
        if ep is None or mode != "w":
            return
        fd = pd.fd
        with self.lock:
            entry = self.table.get(fd)
            if entry is None or entry[0] is not pd or fd in self.wout:
                return
            try:
                ep.modify(fd, _EPOLLIN | _EPOLLOUT | _EPOLLRDHUP | _EPOLLET)
            except OSError:
                return  # closed under us: the waiter sees closing or a HUP
            self.wout.add(fd)

    def netpoll(self, delay: int) -> int:
        """Wait for events and ready the pollDescs they name; returns how many parked
        threads were readied.

        Go: runtime/netpoll_epoll.go netpoll
        """
        ep = self.ep
        rt = self.rt
        if ep is None or rt is None:
            raise throw("runtime: netpoll before netpollinit")
        with self.lock:
            gen = self.regseq
        events = ep.poll(_delay_to_timeout(delay), _MAX_EVENTS)
        if trace.enabled:
            trace.emit("netpoll", info=f"{len(events)} events")
        todo: list[tuple[PollDesc, str, int | None, bool]] = []
        with self.lock:
            for fd, ev in events:
                if ev == 0:
                    continue
                if fd == self.break_rd:
                    if ev != _EPOLLIN:
                        raise throw(f"runtime: netpoll: break fd ready for {ev:#x}")
                    if delay != 0:
                        # A blocking poll consumes the wake-up; a non-blocking one leaves
                        # it for the next blocking poll (level-triggered).
                        self._drain_break()
                    continue
                mode = ""
                if ev & _READ_EVENTS:
                    mode += "r"
                if ev & _WRITE_EVENTS:
                    mode += "w"
                if not mode:
                    continue
                entry = self.table.get(fd)
                if entry is None:
                    rt.stale_events_dropped += 1  # unregistered since epoll_wait returned
                    continue
                pd, seq, regseq = entry
                # Only a registration that predates this wait may get the error bit.
                tag = seq if regseq <= gen else None
                todo.append((pd, mode, tag, ev == _EPOLLERR))
        rt.events += len(todo)
        n = 0
        for pd, mode, tag, err in todo:
            pd.set_event_err(err, tag)
            n += netpollready(pd, mode)
        return n

    def _drain_break(self) -> None:
        """Go: runtime/netpoll_epoll.go netpoll (the netpollEventFd case)"""
        try:
            # A non-semaphore eventfd resets to 0 on one read; a pipe holds at most one
            # pending wake-up (wake_sig de-duplicates them) of eight bytes.
            os.read(self.break_rd, 64)
        except BlockingIOError:
            pass
        with self.wake_lock:
            self.wake_sig = False
