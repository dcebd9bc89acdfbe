"""The history the status page and the report draw: spans per VRID from the model's events, on
real captures (what keepalived did in the lab) and on made-up events (bounds, pruning)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from ka_exporter.history import (
    HELD_WRONGLY,
    NO_MASTER,
    SPLIT_BRAIN,
    Departure,
    History,
    Kind,
    PriorityChange,
    Span,
    moments,
)
from ka_exporter.model import Event, EventType, Segment, VridKey
from ka_exporter.pcap import read
from tests.states import DATA, model_at

KEY = VridKey(Segment("eth0"), "ipv4", 51)
A, B = "192.0.2.11", "192.0.2.12"


def folded(capture: str) -> tuple[History, list[Event]]:
    """The history of a whole capture, and the events it was fed."""
    with (DATA / capture).open("rb") as f:
        packets = list(read(f))
    model, now = model_at(capture, packets[-1].time - packets[0].time)
    history, events = History(), model.pop_events()
    history.feed(events, now)
    return history, events


def of(history: History, vrid: int) -> list[Span]:
    (track,) = [t for k, t in history.tracks.items() if k.vrid == vrid]
    return track.spans


def first(events: list[Event], vrid: int, kind: EventType) -> Event:
    return next(e for e in events if e.key.vrid == vrid and e.type is kind)


def test_partition_heal_and_stops_as_spans() -> None:
    """vrrp-all: node 1 master, a partition (split-brain), heal, node 1 stops (node 2 takes
    over after its skew time), node 2 stops."""
    history, events = folded("vrrp-all.pcap")
    spans = of(history, 51)
    assert [(s.kind, s.addresses, s.reason) for s in spans] == [
        (Kind.MASTER, (A,), "first"),
        (Kind.SPLIT, (A, B), ""),
        (Kind.MASTER, (A,), "split_brain_end"),
        (Kind.NONE, (), "resigned"),
        (Kind.MASTER, (B,), "resigned"),
        (Kind.NONE, (), "resigned"),
    ]
    assert all(s.end == n.start for s, n in pairwise(spans))  # no holes
    assert spans[-1].end is None  # nobody master when the capture ends
    start = first(events, 51, EventType.SPLIT_BRAIN_START)
    assert spans[1].start == start.detail["since"]  # from the overlap, not the debounce
    assert spans[1].end == first(events, 51, EventType.SPLIT_BRAIN_END).time
    change = first(events, 51, EventType.MASTER_CHANGED)
    gap = spans[3]
    assert gap.end == change.time
    assert gap.end - gap.start == pytest.approx(float(change.detail["gap_seconds"]))
    track = next(t for k, t in history.tracks.items() if k.vrid == 51)
    stops = [e.time for e in events if e.key.vrid == 51 and e.type is EventType.MASTER_RESIGNED]
    assert track.gone == {A: Departure(stops[0], "resigned"), B: Departure(stops[1], "resigned")}
    assert track.problems == {NO_MASTER: stops[1]}


def test_a_crashed_master_is_gone_from_its_last_advert() -> None:
    """lab-double-master: SIGKILL of node 1, master of VRID 10 only."""
    history, events = folded("lab-double-master.pcap")
    change = first(events, 10, EventType.MASTER_CHANGED)
    gap = float(change.detail["gap_seconds"])
    assert [(s.kind, s.reason) for s in of(history, 10)][:3] == [
        (Kind.MASTER, "first"),
        (Kind.NONE, "silent"),
        (Kind.MASTER, "silent"),
    ]
    none = of(history, 10)[1]
    assert (none.start, none.end) == (pytest.approx(change.time - gap), change.time)
    track = next(t for k, t in history.tracks.items() if k.vrid == 10)
    assert track.gone[A] == Departure(pytest.approx(change.time - gap), "silent")  # type: ignore[arg-type]


def test_a_preempted_master_is_a_quiet_backup_not_gone() -> None:
    """lab-preempt: node 1 stopped (node 2 takes over), restarted: it preempts node 2."""
    history, _ = folded("lab-preempt.pcap")
    spans = of(history, 57)
    assert [(s.kind, s.addresses, s.reason) for s in spans] == [
        (Kind.MASTER, (A,), "first"),
        (Kind.NONE, (), "resigned"),
        (Kind.MASTER, (B,), "resigned"),
        (Kind.MASTER, (A,), "preempted"),
    ]
    track = next(iter(history.tracks.values()))
    assert B in track.yielded and track.gone == {}  # B stopped advertising: it yielded
    silent = [
        ev(track.spans[-1].start + 5, EventType.ROUTER_SILENT, B, key=next(iter(history.tracks)))
    ]
    history.feed(silent, silent[0].time)
    assert track.gone == {}  # a backup is silent on the wire: only a master speaks


def test_a_router_silent_without_yielding_is_gone() -> None:
    history = History()
    history.feed(
        [
            ev(0, EventType.SPLIT_BRAIN_START, A, B, since=0.0),
            ev(4, EventType.SPLIT_BRAIN_END, A),
            ev(5, EventType.ROUTER_SILENT, B),
            ev(9, EventType.ROUTER_APPEARED, B, returning=1),
        ],
        9,
    )
    assert history.track(KEY).gone == {}  # back: it was not gone after all
    history.feed([ev(12, EventType.ROUTER_SILENT, B)], 12)
    assert history.track(KEY).gone == {B: Departure(12, "silent")}


def test_priority_history_per_router() -> None:
    history, events = folded("vrrp-prio-change.pcap")
    (track,) = history.tracks.values()
    changes = [e for e in events if e.type is EventType.PRIORITY_CHANGED]
    assert list(track.priorities) == [
        PriorityChange(changes[0].time, A, 200, 140),
        PriorityChange(changes[1].time, A, 140, 200),
    ]


def ev(t: float, kind: EventType, *addresses: str, key: VridKey = KEY, **detail: object) -> Event:
    return Event(t, kind, key, addresses, detail)  # type: ignore[arg-type]


def test_problems_and_their_start() -> None:
    history = History()
    history.feed(
        [
            ev(0, EventType.MASTER_ELECTED, A, reason="first"),
            ev(5, EventType.CONFIG_MISMATCH_START, A, B, field="vips"),
            ev(12, EventType.SPLIT_BRAIN_START, A, B, since=10.0),
        ],
        12,
    )
    assert history.track(KEY).problems == {"vips mismatch": 5, SPLIT_BRAIN: 10.0}
    history.feed(
        [
            ev(20, EventType.SPLIT_BRAIN_END, A),
            ev(21, EventType.CONFIG_MISMATCH_END, A, B, field="vips"),
            ev(30, EventType.MASTER_LOST, A, reason="silent"),
        ],
        30,
    )
    track = history.track(KEY)
    assert track.problems == {NO_MASTER: 30}
    assert [(s.kind, s.start, s.end) for s in track.spans] == [
        (Kind.MASTER, 0, 10.0),
        (Kind.SPLIT, 10.0, 20),
        (Kind.MASTER, 20, 30),
        (Kind.NONE, 30, None),
    ]
    # recovery measures the gap from A's last advert (26): the loss declared at 30 gives way
    history.feed([ev(31, EventType.MASTER_ELECTED, B, reason="recovered", gap_seconds=5.0)], 31)
    assert [(s.kind, s.start, s.end) for s in track.spans][2:] == [
        (Kind.MASTER, 20, 26.0),
        (Kind.NONE, 26.0, 31),
        (Kind.MASTER, 31, None),
    ]
    assert NO_MASTER not in track.problems
    assert track.gone == {A: Departure(30, "silent")}


def test_a_vip_held_wrongly_dates_from_when_it_was_first_seen() -> None:
    history, other = History(), VridKey(Segment("eth0"), "ipv4", 52)
    history.own({(KEY, "duplicate")}, 10)
    history.own({(KEY, "duplicate"), (other, "orphan")}, 11)
    assert history.track(KEY).problems == {HELD_WRONGLY["duplicate"]: 10}
    assert history.track(other).problems == {HELD_WRONGLY["orphan"]: 11}
    history.own({(KEY, "orphan")}, 12)  # the master we deferred to fell silent
    assert history.track(KEY).problems == {HELD_WRONGLY["orphan"]: 12}
    assert history.track(other).problems == {}
    history.own(set(), 13)
    assert history.track(KEY).problems == {}


def test_window_bounds_spans_and_departures() -> None:
    history = History(window=100)
    history.feed(
        [
            ev(0, EventType.MASTER_ELECTED, A, reason="first"),
            ev(10, EventType.MASTER_RESIGNED, A),
            ev(11, EventType.MASTER_CHANGED, B, A, reason="resigned", gap_seconds=1.0),
        ],
        11,
    )
    history.feed([], 110.5)  # the first master span ended at 10, before the window
    track = history.track(KEY)
    assert [s.kind for s in track.spans] == [Kind.NONE, Kind.MASTER]
    history.feed([], 1000)
    assert [s.kind for s in track.spans] == [Kind.MASTER]  # still master: kept however old
    assert track.gone == {}


def test_memory_is_bounded_however_it_flaps() -> None:
    history = History(max_events=50, max_spans=20, max_priorities=3, max_keys=10)
    events = []
    for i in range(1000):
        new, old = (A, B) if i % 2 else (B, A)
        events.append(ev(i, EventType.MASTER_CHANGED, new, old, reason="preempted"))
        events.append(ev(i + 0.5, EventType.PRIORITY_CHANGED, new, old=i, new=i + 1))
    keys = [VridKey(Segment("eth0"), "ipv4", vrid) for vrid in range(1, 30)]
    events += [ev(2000, EventType.MASTER_ELECTED, A, key=k, reason="first") for k in keys]
    history.feed(events, 2000)
    assert len(history.recent) == 50
    assert len(history.tracks) == 10 and KEY not in history.tracks
    history.feed(events[:2000], 2000)
    track = history.track(KEY)
    assert len(track.spans) == 20 and len(track.priorities) == 3


def test_moments_group_what_happened_at_once() -> None:
    other = VridKey(Segment("eth0"), "ipv4", 52)
    events = [
        ev(0.0, EventType.MASTER_RESIGNED, A),
        ev(0.01, EventType.MASTER_RESIGNED, A, key=other),
        ev(0.049, EventType.MASTER_CHANGED, B, A, reason="resigned", gap_seconds=0.04),
        ev(0.06, EventType.MASTER_CHANGED, B, A, key=other, reason="resigned", gap_seconds=0.05),
        ev(3.0, EventType.ROUTER_SILENT, A),
    ]
    assert [len(m) for m in moments(events)] == [3, 1, 1]  # anchored at each group's first
    assert moments([]) == []
