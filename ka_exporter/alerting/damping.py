"""Flap damping: a pair swapping MASTER/BACKUP twenty times a minute is one story, not twenty.

Pure (time is an argument). Per key (one keepalived instance on one host), a window opens with
the first message; the first `threshold` messages in it pass, the rest are only counted; when
the window closes, the counted ones become one digest (count, first and last state, window).
The next message after that opens a new window. See docs/alerting.md.

The state is a few numbers per key and round-trips through JSON, so separate hook processes
can share one damper kept in the spool.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True, slots=True)
class Digest:
    key: str
    count: int  # messages held back
    first_state: str
    last_state: str
    start: float  # the window
    end: float


@dataclass(slots=True)
class _Window:
    start: float
    passed: int = 0
    held: int = 0
    first_held: str = ""
    last_held: str = ""


@dataclass(slots=True)
class Damper:
    window: float = 60.0
    threshold: int = 1
    _open: dict[str, _Window] = field(default_factory=dict)

    def offer(self, key: str, state: str, now: float) -> tuple[bool, list[Digest]]:
        """Whether this message passes, and the digests of windows that closed before it."""
        digests = self.flush(now)
        win = self._open.get(key)
        if win is None:
            win = self._open[key] = _Window(now)
        if win.passed < self.threshold:
            win.passed += 1
            return True, digests
        if not win.held:
            win.first_held = state
        win.held += 1
        win.last_held = state
        return False, digests

    def flush(self, now: float) -> list[Digest]:
        """Closes windows that are over; the caller sends the digests (call it on a timer)."""
        digests = []
        for key, win in list(self._open.items()):
            end = win.start + self.window
            if end <= now:
                del self._open[key]
                if win.held:
                    digests.append(
                        Digest(key, win.held, win.first_held, win.last_held, win.start, end)
                    )
        return digests

    def next_deadline(self) -> float | None:
        """When the next digest is due (for the caller's timer)."""
        return min((w.start + self.window for w in self._open.values() if w.held), default=None)

    def dump(self) -> str:
        return json.dumps({key: asdict(win) for key, win in self._open.items()})

    def load(self, text: str) -> None:
        self._open = {key: _Window(**win) for key, win in json.loads(text).items()}
