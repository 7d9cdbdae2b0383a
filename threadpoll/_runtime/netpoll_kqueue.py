"""The kqueue backend (macOS, FreeBSD, the other BSDs): Go's runtime/netpoll_kqueue.go.

Some facts about kqueue this backend relies on (from the kqueue(2) manual pages of macOS and
FreeBSD, and Go's src/runtime/netpoll_kqueue.go):

- A knote is keyed by (ident, filter). This backend adds ``EVFILT_READ`` and
  ``EVFILT_WRITE`` with ``EV_ADD|EV_CLEAR`` once per descriptor: edge-triggered, like
  EPOLLET. After delivery an EV_CLEAR knote fires again only on new activity — unread data
  does not re-trigger it, so an edge that arrives while nobody waits is kept as PD_READY.
- ``close(fd)`` removes every knote with that ident, so netpollclose has nothing to do.
- ``udata`` is a pointer-sized unsigned int. It carries the pollDesc's tag (its id and
  fdseq), so an event for an earlier incarnation of the same fd number is recognised and
  dropped, as Go's tagged pointers do.
- ``kevent`` with ``max_events == 0`` only applies changes and returns at once; registration
  is done that way, so Python's EINTR retry (PEP 475) never re-submits a changelist.
- On some systems, when the read end of a pipe is closed, the write end gets no WRITE event
  but a READ event with ``EV_EOF``: so READ + EV_EOF readies writers too.
- ``EV_ERROR`` exactly (not ORed with others) marks an error event: the event-error bit.
- macOS rejects a timeout of more than 10**8 s (older) or INT32_MAX s with EINVAL: the wait
  is capped at 10**6 s, as Go does.
- Python's ``select`` has no ``EVFILT_USER``, so the wake-up is a non-blocking pipe whose
  read end is registered level-triggered (plain ``EV_ADD``); a blocking poll reads up to 16
  bytes from it (go1.22's form, still used by Go on NetBSD and OpenBSD).
- A kqueue is not inherited across fork.

The module takes its ``select`` module as a constructor argument, so the test suite can run
this exact code on Linux over an emulation of kqueue (tests/kqueue_emul.py).

Differences from Go:
- DIVERGENCE(go): udata holds ``id << 32 | fdseq`` looked up in an ident → pollDesc table,
  not a tagged pointer (Python objects have no stable address to pack).
- DIVERGENCE(go): Python retries EINTR inside ``kqueue.control`` (PEP 475); Go returns early
  when the delay was positive. The poller always blocks, so the difference never shows.

Go: runtime/netpoll_kqueue.go, runtime/netpoll_kqueue_pipe.go
"""

from __future__ import annotations

import errno
import os
import select
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

from typing_extensions import final

from threadpoll._runtime import trace
from threadpoll._runtime.netpoll import PollDesc, netpollready, throw

if TYPE_CHECKING:
    from threadpoll._runtime.proc import Runtime

__all__ = ["KqueueBackend"]

_MAX_EVENTS = 64  # Go's events array size
_MAX_WAIT = 1e6  # seconds: "Darwin returns EINVAL if the sleep time is too long"


def _tag(pd: PollDesc) -> int:
    """The udata tag of pd's current incarnation.

    Go: runtime/tagptr.go taggedPointerPack
    """
    return ((pd.id & 0xFFFFFFFF) << 32) | (pd.fdseq & 0xFFFFFFFF)


def _delay_to_timeout(delay: int) -> float | None:
    """Go: runtime/netpoll_kqueue.go netpoll (timespec computation)"""
    if delay < 0:
        return None
    if delay == 0:
        return 0
    return min(delay / 1e9, _MAX_WAIT)


@final
class KqueueBackend:
    """The kqueue poller.

    Go: runtime/netpoll_kqueue.go (package state kq, netpollWakeSig) and
    runtime/netpoll_kqueue_pipe.go (netpollBreakRd, netpollBreakWr)
    """

    name = "kqueue"
    arm_modes = ""  # the modes runtime_poll_wait arms with netpollarm

    def __init__(self, select_module: Any = None) -> None:
        """Go: none"""
        self.sel: Any = select_module if select_module is not None else select
        if not hasattr(self.sel, "kqueue"):
            raise OSError("threadpoll: kqueue is not available on this platform")
        self.rt: Runtime | None = None
        self.kq: Any = None
        self.break_rd = -1
        self.break_wr = -1
        self.lock = threading.Lock()  # guards table
        self.table: dict[int, tuple[PollDesc, int, int]] = {}  # ident → (pd, udata tag, fdseq)
        self.wake_lock = threading.Lock()
        self.wake_sig = False  # guarded by wake_lock: a break is in flight

    @property
    def select_module(self) -> ModuleType:
        """Go: none"""
        return self.sel  # type: ignore[no-any-return]

    def netpollinit(self, rt: Runtime) -> None:
        """Create the kqueue (Python makes it close-on-exec) and the break pipe.

        Go: runtime/netpoll_kqueue.go netpollinit, netpoll_kqueue_pipe.go addWakeupEvent
        """
        sel = self.sel
        self.rt = rt
        self.kq = sel.kqueue()
        r, w = os.pipe()  # close-on-exec (PEP 446)
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self.break_rd, self.break_wr = r, w
        ev = sel.kevent(r, sel.KQ_FILTER_READ, sel.KQ_EV_ADD)
        self.kq.control([ev], 0)

    def netpolldeinit(self) -> None:
        """Go: none"""
        if self.kq is not None:
            self.kq.close()
        for fd in (self.break_rd, self.break_wr):
            if fd >= 0:
                os.close(fd)
        self.break_rd = self.break_wr = -1

    def netpoll_after_fork(self, rt: Runtime) -> None:
        """Go: none"""
        self.lock = threading.Lock()
        self.wake_lock = threading.Lock()
        self.wake_sig = False
        self.table = {}
        self.netpolldeinit()  # the kqueue itself was not inherited; the pipe was
        self.netpollinit(rt)

    def netpollopen(self, fd: int, pd: PollDesc) -> int:
        """Register READ and WRITE with EV_ADD|EV_CLEAR in one kevent call; 0 or an errno.

        Go: runtime/netpoll_kqueue.go netpollopen
        """
        sel = self.sel
        if self.kq is None:
            raise throw("runtime: netpollopen before netpollinit")
        tag = _tag(pd)
        flags = sel.KQ_EV_ADD | sel.KQ_EV_CLEAR
        evs = [
            sel.kevent(fd, sel.KQ_FILTER_READ, flags, 0, 0, tag),
            sel.kevent(fd, sel.KQ_FILTER_WRITE, flags, 0, 0, tag),
        ]
        with self.lock:
            if fd in self.table:
                return errno.EEXIST  # registered already: leave that registration alone
            self.table[fd] = (pd, tag, pd.fdseq)  # before kevent: an event may come at once
            try:
                self.kq.control(evs, 0)
            except OSError as e:
                del self.table[fd]
                return e.errno or 1
        return 0

    def netpollclose(self, fd: int) -> int:
        """Forget fd. "Don't need to unregister because calling close() on fd will remove
        any kevents that reference the descriptor."

        Go: runtime/netpoll_kqueue.go netpollclose
        """
        with self.lock:
            self.table.pop(fd, None)
        return 0

    def netpoll_break(self) -> None:
        """Go: runtime/netpoll_kqueue.go netpollBreak, netpoll_kqueue_pipe.go wakeNetpoll"""
        # The byte is written under wake_lock, before wake_sig is set: a signal handler that
        # raises in this thread (Ctrl-C) can land only at a call's return, so it may leave
        # a spare byte (drained with the rest) but never wake_sig set with no byte written,
        # which would make every later break a no-op and the poller deaf.
        with self.wake_lock:
            if self.wake_sig:
                return
            try:
                os.write(self.break_wr, b"\0")
            except BlockingIOError:
                pass  # the counter or pipe is full: a wake-up is already pending
            self.wake_sig = True
        if self.rt is not None:
            self.rt.count_break()
        if trace.enabled:
            trace.emit("netpoll_break")

    def netpoll_is_poll_descriptor(self, fd: int) -> bool:
        """Go: runtime/netpoll_kqueue.go netpollIsPollDescriptor"""
        return fd in (self.break_rd, self.break_wr) or (
            self.kq is not None and fd == self.kq.fileno()
        )

    def netpollarm(self, pd: PollDesc, mode: str) -> None:
        """Go: runtime/netpoll_kqueue.go (none: EV_CLEAR registration needs no arming)"""
        raise throw("runtime: netpollarm on an edge-triggered backend")

    def netpoll(self, delay: int) -> int:
        """Wait for kevents and ready the pollDescs they name.

        Go: runtime/netpoll_kqueue.go netpoll
        """
        sel = self.sel
        rt = self.rt
        if self.kq is None or rt is None:
            raise throw("runtime: netpoll before netpollinit")
        events = self.kq.control(None, _MAX_EVENTS, _delay_to_timeout(delay))
        if trace.enabled:
            trace.emit("netpoll", info=f"{len(events)} events")
        read_f, write_f = sel.KQ_FILTER_READ, sel.KQ_FILTER_WRITE
        ev_eof, ev_error = sel.KQ_EV_EOF, sel.KQ_EV_ERROR
        todo: list[tuple[PollDesc, str, int, bool]] = []
        with self.lock:
            for ev in events:
                if ev.ident == self.break_rd:
                    if ev.filter != read_f:
                        raise throw(f"runtime: netpoll: break fd ready for {ev.filter}")
                    if delay != 0:
                        self._drain_break()
                    continue
                if ev.filter == read_f:
                    mode = "r"
                    # On some systems when the read end of a pipe is closed the write end
                    # will not get a WRITE event, but will get a READ event with EV_EOF.
                    if ev.flags & ev_eof:
                        mode = "rw"
                elif ev.filter == write_f:
                    mode = "w"
                else:
                    continue
                entry = self.table.get(ev.ident)
                if entry is None or entry[1] != ev.udata:
                    rt.stale_events_dropped += 1  # an earlier incarnation's event
                    continue
                pd, _, seq = entry
                todo.append((pd, mode, seq, ev.flags == ev_error))
        rt.events += len(todo)
        n = 0
        for pd, mode, seq, err in todo:
            pd.set_event_err(err, seq)
            n += netpollready(pd, mode)
        return n

    def _drain_break(self) -> None:
        """Go: runtime/netpoll_kqueue_pipe.go drainWakeupEvent"""
        try:
            os.read(self.break_rd, 16)
        except BlockingIOError:
            pass
        with self.wake_lock:
            self.wake_sig = False
