"""What happened lately, per VRID: the model's events folded into spans an operator can read.

The model knows the present; the status page and the postmortem report also need the last hour:
who was master from when to when, when nobody was, when two were, and what the routers said
before it. Pure: time enters only as an argument, and memory is bounded (spans and priority
changes per VRID, VRIDs, recent events), however much the cluster flaps.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from ka_exporter.model import INFINITY, Event, EventType, Reason, VridKey

# Problems a VRID can have, as the status page names them.
SPLIT_BRAIN, NO_MASTER, COLLISION = "SPLIT-BRAIN", "NO MASTER", "CARP COLLISION"
VIP_CONFLICT = "VIP CONFLICT"  # named with its address: one problem per VIP
# this host's VIPs against the wire (ownership.py), by the kind alerter.owned names
HELD_WRONGLY = {"duplicate": "DUPLICATE VIP", "orphan": "ORPHAN VIP"}
YIELDING = frozenset((Reason.PREEMPTED, Reason.PRIORITY_DROPPED, Reason.SPLIT_BRAIN_END))


PRUNE_SECONDS = 1.0
MOMENT_SECONDS = 0.05  # events this close together happened at once: one partition, one stop


def moments(events: Iterable[Event], within: float = MOMENT_SECONDS) -> list[list[Event]]:
    """Events in time order, grouped with those within `within` of each group's first."""
    groups: list[list[Event]] = []
    for event in events:
        if groups and event.time - groups[-1][0].time <= within:
            groups[-1].append(event)
        else:
            groups.append([event])
    return groups


class Kind(enum.StrEnum):
    MASTER = "master"
    NONE = "none"  # nobody advertising: the VIPs unattended
    SPLIT = "split"  # two or more masters past the debounce


class Span(NamedTuple):
    kind: Kind
    start: float
    end: float | None  # None: still so
    addresses: tuple[str, ...] = ()  # the master, or the split's masters
    reason: str = ""  # how it began: the master change's reason, or why nobody was master

    def until(self, now: float) -> float:
        """Its end, or `now` while it lasts."""
        return now if self.end is None else self.end


class PriorityChange(NamedTuple):
    time: float
    address: str
    old: int
    new: int


class Departure(NamedTuple):
    """A router that stopped being heard without yielding to another: not a backup."""

    time: float
    reason: str  # "resigned" (priority 0) or "silent"


@dataclass(slots=True)
class Track:
    spans: list[Span] = field(default_factory=list)
    problems: dict[str, float] = field(default_factory=dict)  # name -> since
    gone: dict[str, Departure] = field(default_factory=dict)
    yielded: dict[str, float] = field(default_factory=dict)  # quiet: a better master took over
    priorities: deque[PriorityChange] = field(default_factory=deque)


class History:
    """Fed the model's events in order; read per VRID by the status page and the report."""

    def __init__(
        self,
        window: float = 3600.0,
        max_events: int = 200,
        max_spans: int = 40,  # a 240 px strip shows no more
        max_priorities: int = 10,
        max_keys: int = 4096,
    ) -> None:
        self.window = window
        self.max_spans = max_spans
        self.max_priorities = max_priorities
        self.max_keys = max_keys
        self.recent: deque[Event] = deque(maxlen=max_events)
        self.tracks: OrderedDict[VridKey, Track] = OrderedDict()  # least recently changed first
        self._pruned = -INFINITY
        self._held_wrongly: set[tuple[VridKey, str]] = set()

    def feed(self, events: Iterable[Event], now: float) -> None:
        for event in events:
            self.recent.append(event)
            self._fold(self._changing(event.key), event)
        self._prune(now)

    def own(self, held_wrongly: set[tuple[VridKey, str]], now: float) -> None:
        """This host's VIPs held wrongly now, as `alerter.owned` gives them: no event says when
        that began (netlink and the wire each change it), so the first time it is seen does."""
        for key, kind in held_wrongly - self._held_wrongly:
            self._changing(key).problems[HELD_WRONGLY[kind]] = now
        for key, kind in self._held_wrongly - held_wrongly:
            if (track := self.tracks.get(key)) is not None:
                track.problems.pop(HELD_WRONGLY[kind], None)
        self._held_wrongly = set(held_wrongly)

    def track(self, key: VridKey) -> Track:
        return self.tracks.get(key) or Track()

    # --- internals ---------------------------------------------------------------------------

    def _changing(self, key: VridKey) -> Track:
        """The VRID's track, made the most recently changed (the last a flood evicts)."""
        track = self.tracks.get(key)
        if track is None:
            track = self.tracks[key] = Track(priorities=deque(maxlen=self.max_priorities))
            if len(self.tracks) > self.max_keys:
                self.tracks.popitem(last=False)
        else:
            self.tracks.move_to_end(key)
        return track

    def _fold(self, track: Track, e: Event) -> None:
        t, kind, detail = e.time, e.type, e.detail
        reason = str(detail.get("reason", ""))
        if kind in (EventType.MASTER_ELECTED, EventType.MASTER_CHANGED):
            new = e.addresses[0]
            gap = float(detail.get("gap_seconds", 0.0))
            if gap > 0:
                self._unattended(track, t - gap, reason)
            if kind is EventType.MASTER_CHANGED:
                old = e.addresses[1]
                if reason in YIELDING:
                    track.yielded[old] = t
                else:  # resigned or silent: gone since its last advert
                    track.gone[old] = Departure(t - gap, reason)
            self._open(track, Span(Kind.MASTER, t, None, (new,), reason))
            track.problems.pop(NO_MASTER, None)
            track.gone.pop(new, None)
            track.yielded.pop(new, None)
        elif kind is EventType.MASTER_LOST:
            self._open(track, Span(Kind.NONE, t, None, (), reason))
            track.problems[NO_MASTER] = t
            track.gone.setdefault(e.addresses[0], Departure(t, reason))
        elif kind is EventType.MASTER_RESIGNED:
            address = e.addresses[0]
            track.gone[address] = Departure(t, Reason.RESIGNED.value)
            last = track.spans[-1] if track.spans else None
            if (
                last
                and last.end is None
                and last.kind is Kind.MASTER
                and last.addresses == (address,)
            ):
                self._open(track, Span(Kind.NONE, t, None, (), Reason.RESIGNED.value))
                track.problems[NO_MASTER] = t
        elif kind is EventType.SPLIT_BRAIN_START:
            since = float(detail.get("since", t))
            self._open(track, Span(Kind.SPLIT, since, None, e.addresses))
            track.problems[SPLIT_BRAIN] = since
        elif kind is EventType.SPLIT_BRAIN_END:
            track.problems.pop(SPLIT_BRAIN, None)
            if len(e.addresses) == 1:
                span = Span(Kind.MASTER, t, None, e.addresses, Reason.SPLIT_BRAIN_END.value)
            else:
                span = Span(Kind.NONE, t, None)
            self._open(track, span)
        elif kind is EventType.PRIORITY_CHANGED:
            change = PriorityChange(t, e.addresses[0], int(detail["old"]), int(detail["new"]))
            track.priorities.append(change)
        elif kind is EventType.ROUTER_APPEARED:
            track.gone.pop(e.addresses[0], None)
        elif kind is EventType.ROUTER_SILENT:
            address = e.addresses[0]
            if address not in track.yielded:
                track.gone.setdefault(address, Departure(t, Reason.SILENT.value))
        elif kind is EventType.COLLISION_START:
            track.problems[COLLISION] = t
        elif kind is EventType.COLLISION_END:
            track.problems.pop(COLLISION, None)
        elif kind is EventType.VIP_CONFLICT_START:
            track.problems[f"{VIP_CONFLICT} {detail['vip']}"] = t
        elif kind is EventType.VIP_CONFLICT_END:
            track.problems.pop(f"{VIP_CONFLICT} {detail['vip']}", None)
        elif kind is EventType.CONFIG_MISMATCH_START:
            track.problems[f"{detail['field']} mismatch"] = t
        elif kind is EventType.CONFIG_MISMATCH_END:
            track.problems.pop(f"{detail['field']} mismatch", None)

    def _open(self, track: Track, span: Span) -> None:
        """Ends what was so at the new span's start, trimming what outlived it."""
        spans = track.spans
        last = spans[-1] if spans else None
        if last and last.end is None and (last.kind, last.addresses) == (span.kind, span.addresses):
            return  # the same master, or the same masters: nothing began
        while spans and spans[-1].until(INFINITY) > span.start:
            if spans[-1].start >= span.start:
                spans.pop()  # it never held
            else:
                spans[-1] = spans[-1]._replace(end=span.start)
        spans.append(span)
        if len(spans) > self.max_spans:
            del spans[0]

    def _unattended(self, track: Track, since: float, reason: str) -> None:
        """Nobody was master from the old master's last advert: the measured gap replaces
        whatever the wire said meanwhile (a loss declared later)."""
        spans = track.spans
        while spans and spans[-1].kind is Kind.NONE and spans[-1].start >= since:
            spans.pop()
        if not (spans and spans[-1].kind is Kind.NONE):
            self._open(track, Span(Kind.NONE, since, None, (), reason))

    def _prune(self, now: float) -> None:
        if now - self._pruned < PRUNE_SECONDS:
            return  # fed ten times a second: the window's edge need not be exact
        self._pruned, horizon = now, now - self.window
        for track in self.tracks.values():
            spans = track.spans
            while spans and spans[0].end is not None and spans[0].end < horizon:
                del spans[0]
            for address in [a for a, d in track.gone.items() if d.time < horizon]:
                del track.gone[address]
            for address in [a for a, since in track.yielded.items() if since < horizon]:
                del track.yielded[address]
