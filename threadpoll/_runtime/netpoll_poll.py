"""The portable poll(2) backend: the shape of Go's runtime/netpoll_aix.go.

For any POSIX system without epoll or kqueue, and as a second, independent implementation
the test suite runs everywhere.

Some facts about poll(2) this backend relies on:

- poll is level-triggered and stateless: interest is passed on every call. A descriptor
  that stays writable would be reported on every call, so interest is armed per wait
  (``netpollarm`` from runtime_poll_wait, as Go's AIX port does) and disarmed when the event
  is delivered. Each arm breaks the poller so its next poll(2) includes the new interest.
- POLLERR, POLLHUP and POLLNVAL are reported even when not asked for, so a descriptor
  without armed interest is left out of the poll set entirely.
- Regular files and directories always poll ready. Like epoll (EPERM) this backend refuses
  them, so they fall back to blocking mode the same way on every backend.

Only the poller thread touches the ``select.poll`` object; other threads change the
interest table under a lock, mark it dirty and break the poller.

Differences from Go:
- DIVERGENCE(go): Go's AIX port re-arms through a pipe to the poller and keeps its own pollfd
  array; here the table is a dict and ``select.poll`` keeps the array.
- DIVERGENCE(go): refuses regular files and directories with EPERM (see above); Go's AIX port
  leaves that to the os package.

Go: runtime/netpoll_aix.go
"""

from __future__ import annotations

import errno
import os
import select
import stat
import threading
from typing import TYPE_CHECKING

from typing_extensions import final

from threadpoll._runtime import trace
from threadpoll._runtime.netpoll import PollDesc, netpollready, throw

if TYPE_CHECKING:
    from threadpoll._runtime.proc import Runtime

__all__ = ["PollBackend"]

_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_POLLERR = select.POLLERR
_POLLHUP = select.POLLHUP
_POLLNVAL = select.POLLNVAL
_POLLRDHUP = getattr(select, "POLLRDHUP", 0)


@final
class _Entry:
    """One registered descriptor's interest.

    Go: runtime/netpoll_aix.go (pd.user and the pfds slot)
    """

    __slots__ = ("pd", "fdseq", "armed")

    def __init__(self, pd: PollDesc) -> None:
        """Go: none"""
        self.pd = pd
        self.fdseq = pd.fdseq
        self.armed = ""  # guarded by the backend's lock: "", "r", "w" or "rw"


@final
class PollBackend:
    """The poll(2) poller.

    Go: runtime/netpoll_aix.go (package state pfds, pds, rdwake, wrwake)
    """

    name = "poll"
    arm_modes = "rw"  # the modes runtime_poll_wait arms with netpollarm

    def __init__(self) -> None:
        """Go: none"""
        self.rt: Runtime | None = None
        self.p: select.poll | None = None  # the poller thread's alone
        self.polled: dict[int, int] = {}  # the poller thread's alone: fd → events registered
        self.break_rd = -1
        self.break_wr = -1
        self.lock = threading.Lock()  # guards table
        self.table: dict[int, _Entry] = {}
        self.wake_lock = threading.Lock()
        self.wake_sig = False  # guarded by wake_lock

    def netpollinit(self, rt: Runtime) -> None:
        """Go: runtime/netpoll_aix.go netpollinit"""
        self.rt = rt
        self.p = select.poll()
        self.polled = {}
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self.break_rd, self.break_wr = r, w
        self.p.register(r, _POLLIN)

    def netpolldeinit(self) -> None:
        """Go: none"""
        for fd in (self.break_rd, self.break_wr):
            if fd >= 0:
                os.close(fd)
        self.break_rd = self.break_wr = -1
        self.p = None

    def netpoll_after_fork(self, rt: Runtime) -> None:
        """Go: none"""
        self.lock = threading.Lock()
        self.wake_lock = threading.Lock()
        self.wake_sig = False
        self.table = {}
        self.netpolldeinit()
        self.netpollinit(rt)

    def netpollopen(self, fd: int, pd: PollDesc) -> int:
        """Go: runtime/netpoll_aix.go netpollopen"""
        try:
            st = os.fstat(fd)
        except OSError as e:
            return e.errno or errno.EBADF
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
            return errno.EPERM
        with self.lock:
            if fd in self.table:
                return errno.EEXIST  # registered already: leave that registration alone
            self.table[fd] = _Entry(pd)
        return 0

    def netpollclose(self, fd: int) -> int:
        """Go: runtime/netpoll_aix.go netpollclose"""
        with self.lock:
            self.table.pop(fd, None)
        # No break: the poller drops the fd from its set at its next round; until then a
        # closed fd polls POLLNVAL and a reused number gets at worst a spurious wake-up.
        return 0

    def netpollarm(self, pd: PollDesc, mode: str) -> None:
        """Arm interest in mode for the coming wait and make the poller see it.

        Go: runtime/netpoll_aix.go netpollarm
        """
        with pd.lock:
            fd = pd.fd
        with self.lock:
            e = self.table.get(fd)
            if e is None or e.pd is not pd or mode in e.armed:
                return
            # Break first, then record the arm, both under lock (the poller's _sync reads
            # the table under it, so it sees the arm either way): an exception landing
            # between the two (Ctrl-C) then leaves an extra break, never a mode recorded as
            # armed with no break sent, which the next arm would trust and the poller never
            # see. Lock order: lock, then wake_lock; nothing takes them the other way round.
            self.netpoll_break()
            e.armed += mode

    def netpoll_break(self) -> None:
        """Go: runtime/netpoll_aix.go netpollBreak"""
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
        """Go: none (AIX's rdwake/wrwake)"""
        return fd in (self.break_rd, self.break_wr)

    def _sync(self) -> None:
        """Bring the poll object's interest set in line with the table (poller thread only).

        Go: none (netpoll_aix.go rebuilds pfds under mtxset)
        """
        p = self.p
        if p is None:
            return
        want: dict[int, int] = {}
        with self.lock:
            for fd, e in self.table.items():
                if e.armed:
                    ev = 0
                    if "r" in e.armed:
                        ev |= _POLLIN | _POLLRDHUP
                    if "w" in e.armed:
                        ev |= _POLLOUT
                    want[fd] = ev
        for fd in list(self.polled):
            if fd not in want:
                p.unregister(fd)
                del self.polled[fd]
        for fd, ev in want.items():
            if self.polled.get(fd) != ev:
                p.register(fd, ev)  # register() on a known fd modifies it
                self.polled[fd] = ev

    def netpoll(self, delay: int) -> int:
        """Go: runtime/netpoll_aix.go netpoll"""
        rt = self.rt
        p = self.p
        if p is None or rt is None:
            raise throw("runtime: netpoll before netpollinit")
        self._sync()
        if delay < 0:
            timeout: float | None = None
        elif delay == 0:
            timeout = 0
        else:
            timeout = max(1.0, delay / 1e6)  # ms, at least 1 so we wait at least delay
        events = p.poll(timeout)
        if trace.enabled:
            trace.emit("netpoll", info=f"{len(events)} events")
        todo: list[tuple[PollDesc, str, int, bool]] = []
        with self.lock:
            for fd, ev in events:
                if fd == self.break_rd:
                    if delay != 0:
                        self._drain_break()
                    continue
                e = self.table.get(fd)
                if e is None or ev & _POLLNVAL:
                    rt.stale_events_dropped += 1
                    continue
                mode = ""
                if "r" in e.armed and ev & (_POLLIN | _POLLRDHUP | _POLLHUP | _POLLERR):
                    mode += "r"
                if "w" in e.armed and ev & (_POLLOUT | _POLLHUP | _POLLERR):
                    mode += "w"
                if not mode:
                    continue
                # Disarm what is delivered: level-triggered interest lasts one wait.
                e.armed = "".join(m for m in e.armed if m not in mode)
                todo.append((e.pd, mode, e.fdseq, ev == _POLLERR))
        rt.events += len(todo)
        n = 0
        for pd, mode, seq, err in todo:
            pd.set_event_err(err, seq)
            n += netpollready(pd, mode)
        return n

    def _drain_break(self) -> None:
        """Go: runtime/netpoll_aix.go netpoll (the rdwake case)"""
        try:
            while os.read(self.break_rd, 64):
                pass
        except BlockingIOError:
            pass
        with self.wake_lock:
            self.wake_sig = False
