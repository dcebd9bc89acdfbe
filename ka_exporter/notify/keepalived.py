"""What keepalived tells us about its own instances: notify hook arguments and FIFO lines.

Pure: parsing and alert building take everything (host, cluster, time, the previous state) as
arguments, so the hook, the FIFO reader and the tests share one code path. The formats are the
ones keepalived writes (vrrp_notify.c): the `notify` script gets its configured arguments plus
`TYPE NAME STATE PRIORITY`; the FIFO gets `TYPE "NAME" STATE PRIORITY`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from ka_exporter.alerting.alert import Alert, Severity, Source, Status
from ka_exporter.alerting.damping import Digest

ALERT_NAME = "KeepalivedStateChange"
FLAPPING = "KeepalivedFlapping"
TYPES = ("INSTANCE", "GROUP")
STATES = ("MASTER", "BACKUP", "FAULT", "STOP", "DELETED")
# FIFO-only events: they report a priority, not a change of state.
PRIORITY_EVENTS = ("MASTER_PRIORITY", "BACKUP_PRIORITY", "MASTER_RX_LOWER_PRI")
EVENTS = STATES + PRIORITY_EVENTS
# As the keepalived exporter numbers vrrp_state; STOP/DELETED leave no number (series dropped).
STATE_NUMBERS = {"INIT": 0, "BACKUP": 1, "MASTER": 2, "FAULT": 3}
EVENT_SECONDS = 300.0  # a state change is an event: it resolves itself after this long

_FIFO_LINE = re.compile(r'(INSTANCE|GROUP) "(.+)" ([A-Z_]+) (\d{1,10})')
# Control, format (bidi overrides, zero-width), surrogate (undecodable argv) and line or paragraph
# separator characters: keepalived's config tokens cannot hold them, and in a mail header, a
# webhook text or a log line they forge lines or hide text.
_FORBIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SEVERITY = {"FAULT": Severity.CRITICAL, "MASTER": Severity.WARNING, "BACKUP": Severity.WARNING}


class ParseError(ValueError):
    """Input keepalived would not have produced; the message says what was wrong."""


@dataclass(frozen=True, slots=True)
class Notification:
    type: str  # INSTANCE or GROUP
    name: str  # the vrrp_instance / vrrp_sync_group name
    state: str  # one of STATES or PRIORITY_EVENTS
    priority: int | None  # None when keepalived did not say (notify_master & co.)

    @property
    def is_state(self) -> bool:
        return self.state in STATES


def _priority(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 255:
        raise ParseError(f"priority must be 0..255: {text!r}")
    return int(text)


def parse_argv(args: Sequence[str]) -> Notification:
    """The last four `notify` arguments; anything before them is the admin's own."""
    if len(args) < 4:
        raise ParseError(f"expected TYPE NAME STATE PRIORITY, got {len(args)} arguments")
    kind, name, state, priority = args[-4:]
    return checked(kind, name, state, _priority(priority))


def from_flags(state: str, name: str, priority: int | None, kind: str = "INSTANCE") -> Notification:
    """`notify_master` & co. pass nothing, so the admin writes the state into the command."""
    return checked(kind, name, state.upper(), priority)


def checked(
    kind: str, name: str, state: str, priority: int | None, states: tuple[str, ...] = STATES
) -> Notification:
    """A notification only as keepalived can send it (the hook's states by default)."""
    if kind not in TYPES:
        raise ParseError(f"type must be INSTANCE or GROUP: {kind!r}")
    if state not in states:
        raise ParseError(f"state must be one of {' '.join(states)}: {state!r}")
    if priority is not None and (type(priority) is not int or not 0 <= priority <= 255):
        raise ParseError(f"priority must be 0..255: {priority}")
    return Notification(kind, _name(name), state, priority)


def _name(name: str) -> str:
    if not name:
        raise ParseError("empty instance name")
    bad = next((c for c in name if unicodedata.category(c) in _FORBIDDEN), None)
    if bad is not None:
        raise ParseError(f"instance name with character U+{ord(bad):04X}: {name[:60]!r}")
    return name


def parse_fifo_line(line: str) -> Notification:
    match = _FIFO_LINE.fullmatch(line.rstrip("\n"))
    if match is None:
        raise ParseError(f"not a keepalived FIFO line: {line[:80]!r}")
    kind, name, state, priority = match.groups()
    return checked(kind, name, state, _priority(priority), EVENTS)


@dataclass(frozen=True, slots=True)
class Previous:
    """What the same instance reported last, as the spool (hook) or the reader (FIFO) kept it."""

    state: str
    since: float


def to_alerts(
    note: Notification,
    *,
    host: str,
    cluster: str,
    now: float,
    source: Source,
    previous: Previous | None = None,
) -> list[Alert]:
    """One alert for the notification, plus the resolution of a FAULT the instance has left.

    FAULT is a condition (firing until the instance leaves it); every other state change is an
    event that resolves itself after EVENT_SECONDS.
    """
    labels = {"iname": note.name, "type": note.type.lower(), "instance": host, "cluster": cluster}
    what = f"{note.type.lower()} {note.name} on {host}"
    prio = "" if note.priority is None else f" (priority {note.priority})"
    alerts = []
    if note.is_state:
        old = previous.state if previous is not None else None
        change = f"{old} -> {note.state}" if old and old != note.state else note.state
        alerts.append(
            Alert(
                name=ALERT_NAME,
                severity=_SEVERITY.get(note.state, Severity.WARNING),
                status=Status.FIRING,
                source=source,
                starts_at=now,
                ends_at=None if note.state == "FAULT" else now + EVENT_SECONDS,
                labels={**labels, "state": note.state},
                annotations={
                    "summary": f"{what} is {note.state}",
                    "description": f"keepalived {what}: {change}{prio}",
                    **({"old_state": old} if old else {}),
                },
            )
        )
        if previous is not None and previous.state == "FAULT" and note.state != "FAULT":
            alerts.append(
                Alert(
                    name=ALERT_NAME,
                    severity=Severity.CRITICAL,
                    status=Status.RESOLVED,
                    source=source,
                    starts_at=previous.since,
                    ends_at=now,
                    labels={**labels, "state": "FAULT"},
                    annotations={
                        "summary": f"{what} left FAULT",
                        "description": f"keepalived {what}: FAULT -> {note.state}{prio}",
                    },
                )
            )
    else:
        alerts.append(
            Alert(
                name=ALERT_NAME,
                severity=Severity.INFO,
                status=Status.FIRING,
                source=source,
                starts_at=now,
                ends_at=now + EVENT_SECONDS,
                labels={**labels, "state": note.state},
                annotations={
                    "summary": f"{what}: {note.state}{prio}",
                    "description": f"keepalived {what} reported {note.state}{prio}",
                },
            )
        )
    return alerts


def damping_key(note: Notification) -> str:
    return f"{note.type} {note.name}"


def digest_alert(digest: Digest, *, host: str, cluster: str, source: Source) -> Alert:
    """What flap damping held back for one instance, as one alert."""
    kind, _, name = digest.key.partition(" ")
    what = f"{kind.lower()} {name} on {host}"
    return Alert(
        name=FLAPPING,
        severity=Severity.WARNING,
        status=Status.FIRING,
        source=source,
        starts_at=digest.start,
        ends_at=digest.end + EVENT_SECONDS,
        labels={"iname": name, "type": kind.lower(), "instance": host, "cluster": cluster},
        annotations={
            "summary": f"{what} flapped: {digest.count} more changes",
            "description": f"{digest.count} state changes held back in "
            f"{digest.end - digest.start:.0f}s, first {digest.first_state}, "
            f"last {digest.last_state}",
        },
    )
