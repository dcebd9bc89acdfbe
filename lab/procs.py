"""Every process a lab starts, tracked by PID so that teardown ends exactly those and no others."""

from __future__ import annotations

import contextlib
import ctypes
import enum
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import IO, Any

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)

File = int | IO[Any] | None

# What ends a lab's Python early; the lab turns SIGTERM and SIGHUP into SystemExit like Ctrl-C.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
_EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stage(enum.IntEnum):
    """Teardown order: daemons first, so captures and FIFO readers still record their goodbyes."""

    DAEMON = 0
    CAPTURE = 1
    READER = 2


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


class ExitSignals:
    """Turns SIGTERM and SIGHUP into SystemExit while labs are open, so `with Lab()` unwinds and
    cleans up instead of the process dying on the spot with its daemons still running."""

    def __init__(self) -> None:
        self._users = 0
        self._installed: list[signal.Signals] = []

    def acquire(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False  # only the main thread may install handlers
        if self._users == 0:
            # a signal the program already handles itself is left alone
            self._installed = [s for s in _EXIT_SIGNALS if signal.getsignal(s) is signal.SIG_DFL]
            for sig in self._installed:
                signal.signal(sig, _exit_on_signal)
        self._users += 1
        return True

    def release(self) -> None:
        self._users -= 1
        if self._users == 0 and threading.current_thread() is threading.main_thread():
            for sig in self._installed:
                signal.signal(sig, signal.SIG_DFL)
            self._installed = []


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while a resource is created and recorded, or during teardown:
    an interrupt in between would leak it, and half a teardown is worse than a late exit."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are delivered to the main thread only
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def child_setup() -> None:
    """Runs in the child between fork and exec. The signal mask is inherited from
    `signals_deferred`; the child must stay stoppable. PDEATHSIG survives the exec: if our
    Python is killed before it can clean up, the kernel still stops what it started."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start(argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen` of a child that only we stop: a session of its own keeps the
    terminal's Ctrl-C away from it, and the kernel sends it SIGTERM if we die first. Call it
    inside `signals_deferred`, with the PID recorded before the block ends."""
    return subprocess.Popen(
        list(argv),
        start_new_session=True,
        preexec_fn=child_setup,  # noqa: PLW1509 -- only sigprocmask(2) and prctl(2)
        **popen,
    )


def adopt_orphans() -> None:
    """Become the parent of orphaned descendants (keepalived's VRRP child after a simulated crash),
    so they are reaped by PID instead of lingering as zombies under an init that reaps lazily."""
    if _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _stat(pid: int) -> list[bytes] | None:
    """/proc/PID/stat fields after the command name, which may itself contain spaces."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return None


def _start_ticks(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def is_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie counts as dead."""
    fields = _stat(pid)
    return fields is not None and fields[0] != b"Z"


def parent_pid(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


def reap(pid: int, timeout: float = 5.0) -> None:
    """Wait for a signalled PID to die, collecting it if it is (or became) our child."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            if not is_alive(pid):
                return
        time.sleep(0.02)
    raise TimeoutError(f"PID {pid} still alive {timeout:g} s after it was killed")


class Processes:
    def __init__(self) -> None:
        self._procs: list[tuple[Stage, subprocess.Popen[bytes]]] = []
        # (PID, start time): a PID alone may have been reused by the time we check on it
        self._started: list[tuple[int, int | None]] = []

    @property
    def started(self) -> tuple[int, ...]:
        """Every PID the lab started or adopted, dead or alive."""
        return tuple(pid for pid, _ in self._started)

    def survivors(self) -> list[int]:
        """Started PIDs that still run (and are still the process we started)."""
        return [pid for pid, ticks in self._started if is_alive(pid) and _start_ticks(pid) == ticks]

    def spawn(
        self,
        argv: Sequence[str],
        stage: Stage = Stage.DAEMON,
        *,
        stdin: File = subprocess.DEVNULL,
        stdout: File = subprocess.DEVNULL,
        stderr: File = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        # Only the lab decides when and with which signal its children stop.
        with signals_deferred():
            proc: subprocess.Popen[bytes] = start(argv, stdin=stdin, stdout=stdout, stderr=stderr)
            self._procs.append((stage, proc))
            self.note(proc.pid)
        return proc

    def note(self, pid: int) -> None:
        """Record a PID started on our behalf (keepalived's own child) for the leak checks."""
        self._started.append((pid, _start_ticks(pid)))

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
        proc.send_signal(sig)  # a no-op once the process has been waited for
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self, grace: float = 5.0) -> None:
        """SIGTERM stage by stage, SIGKILL whatever outlives the grace period."""
        for stage in Stage:
            group = [proc for s, proc in self._procs if s is stage]
            for proc in group:
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for proc in group:
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()

    @staticmethod
    def kill_all(pids: Sequence[int]) -> None:
        """SIGKILL and reap stragglers found by namespace, e.g. scripts keepalived ran."""
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            reap(pid)
