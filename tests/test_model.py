"""The state model on synthetic advert streams: time enters only as an argument, so every
expectation below is an exact moment derived from the protocol timers (docs: vrrp.md §1.2-1.3)."""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ka_exporter.decode import Advert, Carp, Checksum
from ka_exporter.model import (
    GAP_BUCKETS,
    Event,
    EventType,
    Model,
    ModelConfig,
    Segment,
    VridKey,
    VridView,
)
from tests import frames, segments

ETH0 = Segment("eth0")
A, B, C = "192.0.2.11", "192.0.2.12", "192.0.2.13"


def advert(
    t: float,
    src: str = A,
    prio: int = 100,
    *,
    vrid: int = 1,
    interval_cs: int = 100,
    version: int = 3,
    vips: tuple[str, ...] = ("192.0.2.1",),
    family: str = "ipv4",
    auth_type: int = 0,
    auth_fingerprint: str = "",
    ah: bool = False,
    checksum: Checksum | None = None,
) -> Advert:
    """An advert as the decoder would return it; v2 defaults to the v2 checksum."""
    if checksum is None:
        checksum = Checksum.MESSAGE if version == 2 else Checksum.PSEUDO_HEADER
    dst = "ff02::12" if family == "ipv6" else "224.0.0.18"
    return Advert(
        t,
        family,
        src,
        dst,
        version,
        vrid,
        prio,
        interval_cs,
        vips,
        auth_type,
        auth_fingerprint,
        ah,
        checksum,
        0,
        255,
    )


def every(src: str, start: float, stop: float, **kw: Any) -> list[Advert]:
    """Adverts from `src` every interval from `start` up to (excluding) `stop`."""
    interval = kw.get("interval_cs", 100) / 100
    out: list[Advert] = []
    while (t := start + len(out) * interval) < stop:
        out.append(advert(t, src, **kw))
    return out


def merged(*streams: Iterable[Advert]) -> list[Advert]:
    return list(heapq.merge(*streams, key=lambda a: a.time))


def feed(model: Model, adverts: Iterable[Advert], segment: Segment = ETH0) -> Model:
    last = 0.0
    for a in adverts:
        assert a.time >= last, "a test stream must not go back in time"
        model.observe(segment, a)
        last = a.time
    return model


class Replay:
    """Plays a stream into a model up to a moment, the way a live capture would reach it."""

    def __init__(self, adverts: Iterable[Advert], config: ModelConfig | None = None) -> None:
        self.model = Model(config)
        self._pending = deque(adverts)

    def to(self, now: float, vrid: int = 1) -> VridView:
        while self._pending and self._pending[0].time <= now:
            self.model.observe(ETH0, self._pending.popleft())
        return view(self.model, now, vrid)

    def events(self) -> list[Event]:
        return self.model.pop_events()


def settle(model: Model, now: float) -> list[Event]:
    model.advance(now)
    return model.pop_events()


def kinds(events: Iterable[Event], *only: EventType) -> list[EventType]:
    return [e.type for e in events if not only or e.type in only]


def of(events: Iterable[Event], kind: EventType) -> list[Event]:
    return [e for e in events if e.type == kind]


def view(model: Model, now: float, vrid: int = 1) -> VridView:
    (v,) = [v for v in model.snapshot(now) if v.key.vrid == vrid]
    return v


def mdi(version: int, interval: float, prio: int) -> float:
    """Master_Down_Interval, RFC 3768/5798 §6.1."""
    skew = (256 - prio) / 256
    return 3 * interval + (skew * interval if version == 3 else skew)


TIMERS = pytest.mark.parametrize(
    ("version", "interval_cs"), [(2, 100), (3, 100), (3, 50)], ids=["v2@1s", "v3@1s", "v3@0.5s"]
)


# --- mastership -------------------------------------------------------------------------------


def test_first_master_is_elected_without_a_transition() -> None:
    model = feed(Model(), every(A, 10.0, 15.0))
    events = model.pop_events()
    assert kinds(events) == [EventType.ROUTER_APPEARED, EventType.MASTER_ELECTED]
    assert all(e.time == 10.0 and e.addresses == (A,) for e in events)
    v = view(model, 14.5)
    assert (v.masters, v.master, v.transitions, v.last_transition) == ((A,), A, 0, None)
    assert v.key == VridKey(ETH0, "ipv4", 1)


@TIMERS
@pytest.mark.parametrize("tolerance", [1.5, 2.5])
def test_acting_master_while_younger_than_tolerance(
    version: int, interval_cs: int, tolerance: float
) -> None:
    model = feed(
        Model(ModelConfig(master_tolerance=tolerance)),
        [advert(7.0, A, 150, version=version, interval_cs=interval_cs)],
    )
    edge = 7.0 + tolerance * interval_cs / 100
    assert view(model, edge - 1e-6).masters == (A,)
    assert view(model, edge).masters == ()


@TIMERS
@pytest.mark.parametrize("phase", [0.01, 0.5, 0.99])
def test_preemption_is_a_master_change_not_split_brain(
    version: int, interval_cs: int, phase: float
) -> None:
    """Old master A advertises every interval; higher-priority B starts between two of A's adverts
    and A falls silent at once (keepalived backs off on hearing a higher priority)."""
    i = interval_cs / 100
    kw: dict[str, Any] = {"version": version, "interval_cs": interval_cs}
    old = every(A, 0.0, 10 * i + 1e-9, prio=100, **kw)
    takeover = old[-1].time + phase * i
    run = Replay(merged(old, every(B, takeover, takeover + 10 * i, prio=200, **kw)))
    assert run.to(takeover).masters == (A, B)  # both keep the rhythm for a moment
    v = run.to(takeover + 10 * i)
    events = run.events()
    assert EventType.SPLIT_BRAIN_START not in kinds(events)
    (change,) = of(events, EventType.MASTER_CHANGED)
    assert change.addresses == (B, A)
    assert change.time == pytest.approx(old[-1].time + 1.5 * i)
    assert (v.masters, v.master, v.split_brain_events, v.transitions) == ((B,), B, 0, 1)
    assert v.last_transition == change.time


@TIMERS
@pytest.mark.parametrize("phase", [0.05, 0.5, 0.95])
def test_partition_raises_split_brain_in_time_and_ends_after_heal(
    version: int, interval_cs: int, phase: float
) -> None:
    """Both keep advertising while partitioned; after the heal the lower priority falls silent."""
    i = interval_cs / 100
    kw: dict[str, Any] = {"version": version, "interval_cs": interval_cs}
    second = 10 * i + phase * i
    heal = second + 12 * i
    run = Replay(merged(every(A, 0.0, heal + 10 * i, prio=150, **kw), every(B, second, heal, **kw)))
    assert not run.to(second + 1.5 * i).split_brain  # not yet: debounce
    split = run.to(second + 3 * i)
    assert split.split_brain and split.masters == (A, B)
    v = run.to(heal + 10 * i)
    events = run.events()
    (start,) = of(events, EventType.SPLIT_BRAIN_START)
    (end,) = of(events, EventType.SPLIT_BRAIN_END)
    # acceptance bound: within 2 x master-down interval of the second master's first advert
    assert second < start.time <= second + 2 * min(mdi(version, i, 150), mdi(version, i, 100))
    assert start.time == pytest.approx(second + 2 * i)  # default debounce: 2 intervals
    assert start.detail["since"] == pytest.approx(second)
    assert set(start.addresses) == {A, B}
    assert heal < end.time <= heal + 3 * i
    assert end.addresses == (A,)
    assert EventType.MASTER_CHANGED not in kinds(events)
    assert (v.split_brain, v.split_brain_events, v.masters, v.transitions) == (False, 1, (A,), 0)


def test_split_brain_debounce_is_configurable() -> None:
    stream = merged(every(A, 0.0, 20.0), every(B, 5.5, 20.0))
    model = feed(Model(ModelConfig(split_brain_debounce=4)), stream)
    (start,) = of(settle(model, 20.0), EventType.SPLIT_BRAIN_START)
    assert start.time == pytest.approx(9.5)


def test_a_master_slowing_down_in_the_overlap_lengthens_the_debounce() -> None:
    """Two intervals of the slowest master in the overlap, also one that slowed down in it:
    B begins at 5.5 (due 7.5 with 1 s intervals); A goes to 3 s at 6.0, so 11.5."""
    stream = merged(every(A, 0.0, 6.0), every(A, 6.0, 20.0, interval_cs=300), every(B, 5.5, 20.0))
    model = feed(Model(), stream)
    (start,) = of(settle(model, 20.0), EventType.SPLIT_BRAIN_START)
    assert start.time == pytest.approx(11.5) and start.detail["since"] == pytest.approx(5.5)


def test_a_crowded_vrid_is_judged_as_a_pair_is() -> None:
    """A VRID of 2,000 sources (a spoofing flood under the router cap) with one master: its
    timers are kept without rescanning every router per advert; the events are those a pair's
    would be, at their exact moments."""
    spoofed = [f"198.51.{100 + n // 250}.{n % 250 + 1}" for n in range(2000)]
    stream = merged(
        every(A, 0.0, 30.0, prio=200),
        *(every(src, 1.0 + n / 2000, 4.0, prio=0 if n % 2 else 100) for n, src in
          enumerate(spoofed)),
    )  # fmt: skip
    model = feed(Model(), stream)
    events = settle(model, 30.0)
    starts = of(events, EventType.SPLIT_BRAIN_START)
    # the first source with priority 100 overlapped A from 1.0: confirmed 2 intervals later
    assert [(e.time, e.detail["since"]) for e in starts] == [(pytest.approx(3.0), 1.0)]
    (end,) = of(events, EventType.SPLIT_BRAIN_END)
    assert end.time == pytest.approx(1.999 + 2.0 + 1.5)  # the last of them past its tolerance
    silent = of(events, EventType.ROUTER_SILENT)
    assert len(silent) == 2000 and all(e.addresses[0] in spoofed for e in silent)
    v = view(model, 30.0)
    assert v.masters == (A,) and v.master == A and not v.mismatches
    # 10 master-down intervals of silence later they are forgotten, the budget given back
    settle(model, 50.0)
    assert model.router_count == 1


def test_resignation_is_immediate_counted_per_advert_and_reported_once() -> None:
    """keepalived MASTER -> FAULT sends two priority-0 adverts back to back (vrrp.md §4.1)."""
    stream = [*every(A, 0.0, 3.0, prio=200), advert(3.2, A, 0), advert(3.2, A, 0)]
    model = feed(Model(), stream)
    assert view(model, 3.2).masters == ()  # not after tolerance: at once
    stream = [*every(B, 3.8, 8.0), *every(A, 8.5, 10.0, prio=200), advert(10.4, A, 0)]
    feed(model, stream)
    events = model.pop_events()
    resigned = of(events, EventType.MASTER_RESIGNED)
    assert [(e.time, e.addresses) for e in resigned] == [(3.2, (A,)), (10.4, (A,))]
    (router_a,) = [r for r in view(model, 10.4).routers if r.address == A]
    assert router_a.resignations == 3
    changes = [(e.time, e.addresses) for e in of(events, EventType.MASTER_CHANGED)]
    assert changes == [(3.8, (B, A)), (pytest.approx(7.8 + 1.5), (A, B))]  # B fell silent


@pytest.mark.parametrize(
    ("version", "interval_cs", "skew"),
    [(2, 100, 156 / 256), (3, 100, 156 / 256), (3, 50, 156 / 256 * 0.5)],
    ids=["v2@1s", "v3@1s", "v3@0.5s"],
)
def test_backup_taking_over_after_skew_is_master_changed(
    version: int, interval_cs: int, skew: float
) -> None:
    kw: dict[str, Any] = {"version": version, "interval_cs": interval_cs}
    stream = [*every(A, 0.0, 5.0, prio=150, **kw), advert(5.0, A, 0, **kw)]
    stream += every(B, 5.0 + skew, 9.0, **kw)
    model = feed(Model(), stream)
    events = settle(model, 9.0)
    assert kinds(
        events, EventType.MASTER_RESIGNED, EventType.MASTER_CHANGED, EventType.MASTER_LOST
    ) == [
        EventType.MASTER_RESIGNED,
        EventType.MASTER_CHANGED,
    ]
    v = view(model, 9.0)
    assert (v.master, v.transitions, v.last_transition) == (B, 1, 5.0 + skew)


@TIMERS
def test_master_lost_after_master_down_interval_then_election_counts(
    version: int, interval_cs: int
) -> None:
    i = interval_cs / 100
    kw: dict[str, Any] = {"version": version, "interval_cs": interval_cs}
    crashed = every(A, 0.0, 5.0, prio=150, **kw)
    last = crashed[-1].time
    model = feed(Model(), crashed)
    (lost,) = of(settle(model, last + 20 * i), EventType.MASTER_LOST)
    assert lost.addresses == (A,)
    # nobody is coming once the slowest possible backup (priority 1) would have taken over
    assert lost.time == pytest.approx(last + mdi(version, i, 1))
    assert view(model, last + 20 * i).master is None
    feed(model, every(B, last + 25 * i, last + 27 * i, **kw))
    (elected,) = of(model.pop_events(), EventType.MASTER_ELECTED)
    assert elected.addresses == (B,)
    v = view(model, last + 26 * i)
    assert (v.master, v.transitions, v.last_transition) == (B, 1, last + 25 * i)


def test_resignation_without_successor_ends_in_master_lost() -> None:
    model = feed(Model(), [*every(A, 0.0, 3.0), advert(3.0, A, 0)])
    (lost,) = of(settle(model, 20.0), EventType.MASTER_LOST)
    # 3 x interval + skew; the skew is at most one interval (v3)
    assert 3.0 + 3.0 < lost.time <= 3.0 + 4.0


def test_crash_failover_per_rfc_is_a_master_change() -> None:
    """Lab (vrrp.md §1.3): the prio-100 backup took over 3.6 s after the prio-150 master's last
    v2 advert - exactly its own Master_Down_Interval (3 + 156/256 s)."""
    crashed = every(A, 0.0, 10.0, prio=150, version=2)
    takeover = crashed[-1].time + mdi(2, 1.0, 100) + 0.001
    model = feed(Model(), [*crashed, *every(B, takeover, takeover + 5, version=2)])
    events = model.pop_events()
    assert EventType.MASTER_LOST not in kinds(events)
    assert [e.addresses for e in of(events, EventType.MASTER_CHANGED)] == [(B, A)]


# --- routers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [(200, 140, True), (140, 200, True), (100, 100, False), (100, 0, False), (0, 100, False)],
)
def test_priority_changed_only_between_nonzero_priorities(
    old: int, new: int, expected: bool
) -> None:
    model = feed(Model(), [advert(0.0, A, old), advert(1.0, A, new), advert(2.0, A, new)])
    changed = of(model.pop_events(), EventType.PRIORITY_CHANGED)
    assert [(e.time, e.detail) for e in changed] == (
        [(1.0, {"old": old, "new": new})] if expected else []
    )
    assert view(model, 2.0).routers[0].priority == new


@TIMERS
def test_router_silent_returning_and_forgotten(version: int, interval_cs: int) -> None:
    i = interval_cs / 100
    kw: dict[str, Any] = {"version": version, "interval_cs": interval_cs}
    down = mdi(version, i, 100)
    model = feed(Model(), [advert(0.0, A, **kw), advert(0.0, B, 0, **kw), advert(i, A, **kw)])
    model.pop_events()
    # long after: the events still carry the exact moments
    silent = of(settle(model, i + 5 * down), EventType.ROUTER_SILENT)
    assert [e.addresses for e in silent] == [(B,), (A,)]
    assert [e.time for e in silent] == pytest.approx([mdi(version, i, 0), i + down])
    t = i + 6 * down
    model.observe(ETH0, advert(t, A, **kw))
    appeared = of(model.pop_events(), EventType.ROUTER_APPEARED)
    assert [(e.time, e.addresses, e.detail) for e in appeared] == [(t, (A,), {"returning": 1})]
    # forgotten after expire_after (10) x master-down interval: B first, then A and the VRID
    b_expiry = 10 * mdi(version, i, 0)
    assert {r.address for r in view(model, b_expiry - 1e-6).routers} == {A, B}
    assert [r.address for r in view(model, b_expiry).routers] == [A]
    assert model.router_count == 1
    assert model.snapshot(t + 10 * down - 1e-6) != []
    assert model.snapshot(t + 10 * down) == []
    assert (model.router_count, model.vrids) == (0, {})


def test_expire_after_is_configurable() -> None:
    model = feed(Model(ModelConfig(expire_after=2)), [advert(0.0, A, version=2)])
    assert model.snapshot(2 * mdi(2, 1.0, 100) - 1e-6) != []
    assert model.snapshot(2 * mdi(2, 1.0, 100)) == []


# --- configuration mismatches -----------------------------------------------------------------

V2: dict[str, Any] = {"version": 2}
PASS1: dict[str, Any] = {"version": 2, "auth_type": 1, "auth_fingerprint": "fp-one"}


@pytest.mark.parametrize(
    ("base", "odd", "field"),
    [
        (V2, {"version": 2, "interval_cs": 200}, "interval"),
        (V2, {"version": 2, "vips": ("192.0.2.1", "192.0.2.2")}, "vips"),
        (V2, PASS1, "auth"),
        (PASS1, {**PASS1, "auth_fingerprint": "fp-two"}, "auth"),
        (V2, {"version": 2, "auth_type": 2, "ah": True}, "auth"),
        (V2, {"version": 3, "checksum": Checksum.MESSAGE}, "version"),
        ({}, {"checksum": Checksum.LEGACY_UNICAST}, "checksum"),
    ],
    ids=["interval", "vips", "auth-type", "auth-password", "auth-ah", "version", "checksum"],
)
def test_config_mismatch_flags_each_field_alone(
    base: dict[str, Any], odd: dict[str, Any], field: str
) -> None:
    model = feed(Model(), [advert(0.0, A, 150, **base), advert(0.5, B, **odd)])
    assert view(model, 0.5).mismatches == {field}
    model.observe(ETH0, advert(1.0, A, 150, **base))
    model.observe(ETH0, advert(1.2, B, **base))  # B fixed its configuration
    events = model.pop_events()
    starts = of(events, EventType.CONFIG_MISMATCH_START)
    ends = of(events, EventType.CONFIG_MISMATCH_END)
    assert [(e.time, e.detail) for e in starts] == [(0.5, {"field": field})]
    assert [(e.time, e.detail) for e in ends] == [(1.2, {"field": field})]
    assert set(starts[0].addresses) == {A, B}
    assert view(model, 1.2).mismatches == frozenset()


def test_two_clusters_on_one_vrid_show_a_vips_mismatch_until_one_is_forgotten() -> None:
    ours = every(A, 0.0, 60.0, vips=("192.0.2.1",))
    theirs = every(C, 0.3, 5.0, vips=("198.51.100.7",))
    run = Replay(merged(ours, theirs))
    v = run.to(4.0)
    assert v.mismatches == {"vips"}
    assert v.split_brain
    assert run.to(60.0).mismatches == frozenset()
    (end,) = of(run.events(), EventType.CONFIG_MISMATCH_END)
    assert end.detail == {"field": "vips"}
    assert end.time == pytest.approx(theirs[-1].time + 10 * mdi(3, 1.0, 100))


# --- keys and bounded memory ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("other_segment", "other_family", "other_src"),
    [
        (Segment("eth1"), "ipv4", A),
        (Segment("eth0", "ns-blue"), "ipv4", A),
        (ETH0, "ipv6", "fe80::11"),
    ],
    ids=["interface", "netns", "family"],
)
def test_same_vrid_elsewhere_is_independent(
    other_segment: Segment, other_family: str, other_src: str
) -> None:
    model = Model()
    feed(model, every(A, 0.0, 10.0, prio=150))
    feed(model, every(other_src, 0.4, 10.0, family=other_family), other_segment)
    views = {v.key: v for v in model.snapshot(10.0)}
    assert set(views) == {VridKey(ETH0, "ipv4", 1), VridKey(other_segment, other_family, 1)}
    assert {v.masters for v in views.values()} == {(A,), (other_src,)}
    assert not any(v.split_brain or v.mismatches or v.transitions for v in views.values())
    assert model.router_count == 2


def test_flood_of_spoofed_sources_is_counted_not_tracked() -> None:
    cap = 200
    model = Model(ModelConfig(max_routers=cap))
    rng = random.Random(4242)
    legit = merged(every(A, 0.0, 25.0, prio=150, vrid=1), every(B, 0.0, 25.0, prio=150, vrid=2))
    feed(model, [a for a in legit if a.time < 1.0])
    before = {v.key.vrid: v for v in model.snapshot(1.0)}
    flood = []
    for k in range(50_000):
        t = 1.0 + k * 20.0 / 50_000  # 20 s: shorter than any expiry, nothing frees a slot
        src = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        # first fill the cap elsewhere, then aim at the tracked VRIDs too
        vrid = rng.randrange(3, 256) if k < 25_000 else rng.randrange(1, 256)
        flood.append(advert(t, src, rng.randrange(1, 256), vrid=vrid))
    feed(model, merged([a for a in legit if a.time >= 1.0], flood))
    views = model.snapshot(25.0)
    assert model.router_count == cap
    assert model.router_count == sum(len(v.routers) for v in views)
    assert len(model.vrids) <= cap
    tracked_flood = sum(r.adverts for v in views for r in v.routers if r.address not in (A, B))
    assert model.untracked[ETH0] == 50_000 - tracked_flood > 49_000
    after = {v.key.vrid: v for v in views}
    for vrid, address in ((1, A), (2, B)):
        assert [r.address for r in after[vrid].routers] == [address]
        assert after[vrid].masters == before[vrid].masters == (address,)
        assert not after[vrid].split_brain and after[vrid].transitions == 0


# --- time -------------------------------------------------------------------------------------


def test_events_are_in_time_order_at_their_exact_moments() -> None:
    stream = merged(
        every(A, 0.0, 6.0, prio=150, version=2),
        every(B, 2.5, 12.0, version=2),
        [advert(12.0, B, 0, version=2)],
    )
    model = feed(Model(), stream)
    events = settle(model, 1000.0)  # one late call settles everything
    times = [e.time for e in events]
    assert times == sorted(times)
    silent = {e.addresses: e.time for e in of(events, EventType.ROUTER_SILENT)}
    assert silent == {(A,): 5.0 + mdi(2, 1.0, 150), (B,): 12.0 + mdi(2, 1.0, 0)}
    (start,) = of(events, EventType.SPLIT_BRAIN_START)
    (end,) = of(events, EventType.SPLIT_BRAIN_END)
    assert (start.time, end.time) == (4.5, 6.5)
    assert model.snapshot(1000.0) == []


# --- random streams ---------------------------------------------------------------------------

ROUTERS = (A, B, C)


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[float, Advert | None]]:
    """Increasing times (repeats allowed); None = just let time pass to that moment. Intervals
    change between adverts, as on a reload."""
    n = draw(st.integers(1, 60))
    t, out = 0.0, list[tuple[float, Advert | None]]()
    for _ in range(n):
        t += draw(st.sampled_from([0.0, 0.05, 0.3, 0.5, 1.0, 1.6, 3.0, 7.0, 45.0]))
        if draw(st.integers(0, 9)) == 0:
            out.append((t, None))
            continue
        src = draw(st.sampled_from(ROUTERS))
        prio = draw(st.sampled_from([0, 1, 100, 150, 255]))
        vrid = draw(st.sampled_from([1, 2]))
        version = draw(st.sampled_from([2, 3]))
        interval = draw(st.sampled_from([50, 100, 300]))
        out.append((t, advert(t, src, prio, vrid=vrid, version=version, interval_cs=interval)))
    return out


# tolerance stays below 3 intervals, as ModelConfig requires
configs = st.builds(
    ModelConfig,
    master_tolerance=st.sampled_from([1.0, 1.5, 2.9]),
    split_brain_debounce=st.sampled_from([0.5, 2.0, 3.0]),
    expire_after=st.sampled_from([2.0, 2.5, 10.0]),
)


def check_invariants(model: Model, now: float) -> None:
    views = model.snapshot(now)
    assert model.router_count == sum(len(v.routers) for v in views)
    tolerance = model.config.master_tolerance
    for v in views:
        assert v.routers, "a VRID without routers must disappear"
        assert not v.split_brain or len(v.masters) >= 2
        heard = {
            r.address
            for r in v.routers
            if r.priority > 0 and now < r.last_seen + tolerance * r.interval
        }
        assert set(v.masters) == heard
        assert v.master is None or v.master in {r.address for r in v.routers}
        if len(v.masters) == 1:
            assert v.master == v.masters[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), configs)
def test_random_streams_keep_invariants_whenever_time_is_advanced(
    stream: list[tuple[float, Advert | None]], config: ModelConfig
) -> None:
    checked, lazy = Model(config), Model(config)
    for t, a in stream:
        if a is not None:
            checked.observe(ETH0, a)
            lazy.observe(ETH0, a)
        check_invariants(checked, t)
    end = stream[-1][0] + 1000.0
    check_invariants(checked, end)
    check_invariants(lazy, end)
    # the moment advance() is called changes nothing: same events at the same times, per VRID
    eager_events, lazy_events = checked.pop_events(), lazy.pop_events()
    for vrid in (1, 2):
        eager = [(e.time, e.type, e.addresses) for e in eager_events if e.key.vrid == vrid]
        late = [(e.time, e.type, e.addresses) for e in lazy_events if e.key.vrid == vrid]
        assert eager == late
        assert [x[0] for x in eager] == sorted(x[0] for x in eager)
    assert checked.snapshot(end) == []


# --- configuration bounds and timer ordering ----------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"master_tolerance": 3}, "master tolerance must be above 0 and below 3"),
        ({"master_tolerance": 4}, "master tolerance must be above 0 and below 3"),
        ({"master_tolerance": float("nan")}, "master tolerance"),
        ({"split_brain_debounce": 0}, "split-brain debounce must be above 0"),
        ({"split_brain_debounce": float("inf")}, "split-brain debounce"),
        ({"expire_after": 1}, "expire-after must be at least 2"),
        ({"expire_after": 0.5}, "expire-after must be at least 2"),
        ({"max_routers": 0}, "max routers must be at least 1"),
    ],
)
def test_config_bounds(config: dict[str, float], message: str) -> None:
    """Out-of-range timers would keep a dead master beside its successor or forget a router
    before its silence or loss is declared; they are refused instead."""
    with pytest.raises(ValueError, match=message):
        ModelConfig(**config)  # type: ignore[arg-type]


def test_smallest_expiry_keeps_events_in_time_order() -> None:
    stream = [advert(0.0, A, version=2), advert(0.0, B, version=2, interval_cs=200)]
    model = feed(Model(ModelConfig(expire_after=2)), stream)
    times = [e.time for e in settle(model, 100.0)]
    assert times == sorted(times)


def test_master_is_not_forgotten_before_it_is_lost() -> None:
    run = Replay(
        [advert(0.0, A, 1, interval_cs=50), advert(0.5, B, 0)], ModelConfig(expire_after=2)
    )
    for t in (2.1, 2.6, 3.0, 4.0):
        v = run.to(t)
        assert v.master is None or v.master in {r.address for r in v.routers}


SLOW: dict[str, Any] = {"interval_cs": 200}
FAST: dict[str, Any] = {"interval_cs": 50}


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(
            [
                *every(A, 0.0, 11.0, **SLOW),
                advert(10.5, B, **SLOW),
                advert(12.0, A, **FAST),
                advert(12.5, B, **FAST),
            ],
            id="reload-shortens-interval",
        ),
        pytest.param(
            merged(
                [advert(0.0, A, 200, **SLOW), advert(2.0, A, 0, **SLOW)],
                every(B, 0.1, 3.0, **FAST),
                every(C, 0.2, 3.0, **FAST),
            ),
            id="slowest-master-resigns",
        ),
    ],
)
def test_split_brain_start_keeps_events_in_time_order(stream: list[Advert]) -> None:
    stream = sorted(stream, key=lambda a: a.time)
    times = [e.time for e in settle(feed(Model(), stream), 20.0)]
    assert times == sorted(times)


def test_recorded_master_forgotten_during_a_split_among_others() -> None:
    """Found by the property test: A is elected, B and C then split-brain while A falls silent
    and is forgotten; the record of A as master must go with it."""
    config = ModelConfig(master_tolerance=2.9, split_brain_debounce=0.5, expire_after=2.0)
    stream = [
        advert(0.0, A, 1, version=2, interval_cs=50),
        advert(0.0, B, 1, version=2, interval_cs=300),
        advert(0.0, C, 1, version=2, interval_cs=300),
    ]
    model = feed(Model(config), stream)
    for t in (5.0, 7.0, 12.0):
        (v,) = model.snapshot(t)
        assert v.master is None or v.master in {r.address for r in v.routers}


# --- segments: VLANs, CARP, links ---------------------------------------------------------------


def carp(t: float, src: str = "192.0.2.31", vhid: int = 1, advskew: int = 0, **kw: Any) -> Carp:
    fields: dict[str, Any] = {"advbase": 1, "demote": 0, **kw}
    return Carp(
        t, "ipv4", src, "224.0.0.18", vhid, fields["advbase"], advskew, fields["demote"], 255
    )


def test_same_vrid_on_two_vlans_is_two_virtual_routers() -> None:
    """The trunk case: VRID 51 on VLAN 100 and on VLAN 200, other masters, other VIPs."""
    model = Model()
    v100, v200 = Segment("eth0", vlan="100"), Segment("eth0", vlan="200")
    feed(model, every(A, 0, 10, vrid=51, vips=("192.0.2.51",)), v100)
    feed(model, every(B, 0, 10, vrid=51, vips=("198.51.100.51",)), v200)
    views = {v.key.segment: v for v in model.snapshot(10)}
    assert set(views) == {v100, v200}
    for segment, master in ((v100, A), (v200, B)):
        assert views[segment].masters == (master,)
        assert not views[segment].split_brain
        assert views[segment].mismatches == frozenset()
    assert not kinds(model.pop_events(), EventType.SPLIT_BRAIN_START)


def test_ingest_puts_a_tagged_frame_on_its_vlan_under_the_tap_segment() -> None:
    """A live tap on a VLAN whose frames still carry the inner tag (QinQ): outer first."""
    model = Model()
    frame = segments.tagged(bytes(frames.advert(3, vrid=52)), 52)
    model.ingest(Segment("eth0", "", "300"), 1.0, frame, 1)
    (v,) = model.snapshot(1.0)
    assert v.key.segment == Segment("eth0", "", "300.52")


def test_carp_speakers_are_tracked_apart_from_vrrp() -> None:
    model = Model()
    for i in range(5):
        model.observe_carp(ETH0, carp(float(i), advskew=0))
        model.observe_carp(ETH0, carp(float(i), "192.0.2.32", vhid=2, advskew=50))
    groups = {g.key.vrid: g for g in model.carp_snapshot(4.5)}
    assert set(groups) == {1, 2}
    assert groups[1].masters == ("192.0.2.31",)
    (speaker,) = groups[2].speakers
    assert (speaker.advskew, speaker.adverts, speaker.first_seen) == (50, 5, 0.0)
    assert model.vrids == {}
    assert model.router_count == 2
    # a CARP master that falls silent stops being master at once, and is forgotten later
    assert model.carp_snapshot(7.0)[0].masters == ()
    assert len(model.carp_snapshot(4 + 3 * 10 + 0.01)) == 1  # advskew 0: 30 s of silence
    assert model.carp_snapshot(4 + 3 * 10 * (1 + 50 / 256) + 0.01) == []
    assert model.router_count == 0


def test_carp_vhid_equal_to_a_vrid_on_the_segment_is_a_collision() -> None:
    model = Model()
    feed(model, every(A, 0, 40, vrid=63))
    model.observe_carp(Segment("eth1"), carp(1.0, vhid=63))  # another segment: no collision
    model.observe_carp(ETH0, carp(2.0, vhid=62))  # another ID: no collision
    assert not [v for v in model.snapshot(2.0) if v.carp_collision]
    for t in range(3, 10):
        model.observe_carp(ETH0, carp(float(t), vhid=63))
    (v,) = [v for v in model.snapshot(10.0) if v.key.segment == ETH0]
    assert v.carp_collision
    (start,) = of(model.pop_events(), EventType.COLLISION_START)
    assert (start.time, start.key.vrid, start.addresses) == (3.0, 63, ("192.0.2.31",))
    model.advance(9 + 3 * 10 + 0.01)  # the CARP speaker is forgotten: the collision ends
    (end,) = of(model.pop_events(), EventType.COLLISION_END)
    assert end.key == start.key
    assert not any(v.carp_collision for v in model.snapshot(40))


def test_collision_ends_when_the_vrid_is_forgotten() -> None:
    model = Model()
    feed(model, every(A, 0, 3, vrid=7))
    for t in range(0, 60):
        model.observe_carp(ETH0, carp(float(t), vhid=7))
        model.advance(float(t))
    events = model.pop_events()
    assert kinds(events, EventType.COLLISION_START, EventType.COLLISION_END) == [
        EventType.COLLISION_START,
        EventType.COLLISION_END,
    ]
    assert model.collisions == set()


def test_a_flood_of_carp_sources_is_bounded_by_the_router_cap() -> None:
    model = Model(ModelConfig(max_routers=100))
    for i in range(5000):
        model.observe_carp(ETH0, carp(1.0, f"198.51.{i // 256}.{i % 256}", vhid=1 + i % 255))
    assert model.router_count == 100
    assert sum(len(g.speakers) for g in model.carp.values()) == 100
    assert model.untracked[ETH0] == 4900


def test_link_down_holds_its_vrids_and_link_up_resumes_them() -> None:
    """No master lost, no router silent, nothing forgotten while the interface is down; back
    up, the routers get their usual time to be heard, and are heard."""
    model = Model()
    other = Segment("eth1")
    feed(model, every(A, 0, 10, vrid=1))
    feed(model, every(B, 0, 10, vrid=2), other)
    model.pop_events()
    model.link(ETH0, False, 9.5)
    model.advance(300)  # far past expiry
    held = {v.key.vrid: v for v in model.snapshot(300)}
    assert held[1].masters == (A,) and held[1].link_down
    assert 2 not in held  # the other link's VRID was lost and forgotten as usual
    assert not [e for e in model.pop_events() if e.key.segment == ETH0]
    model.link(ETH0, True, 300)
    model.advance(300.5)
    assert view(model, 300.5).masters == (A,)
    feed(model, every(A, 300.6, 305, vrid=1))
    assert view(model, 305).masters == (A,)
    assert not model.pop_events()
    # and a master that really is gone after the link came back is lost as usual
    events = settle(model, 330)
    assert EventType.MASTER_LOST in kinds(events)


def test_link_down_holds_carp_groups_too() -> None:
    model = Model()
    for t in range(5):
        model.observe_carp(ETH0, carp(float(t)))
    model.link(ETH0, False, 4.5)
    (group,) = model.carp_snapshot(500)
    assert group.link_down and group.masters == ("192.0.2.31",)
    model.link(ETH0, True, 500)
    assert model.carp_snapshot(500.5)[0].masters == ("192.0.2.31",)
    assert model.carp_snapshot(540) == []


# --- why the master changed, and for how long the VIPs were unattended ------------------------


def changes(model: Model) -> list[tuple[str, tuple[str, ...], str, float | None]]:
    return [
        (e.type.value, e.addresses, str(e.detail["reason"]), e.detail.get("gap_seconds"))
        for e in model.pop_events()
        if e.type in (EventType.MASTER_ELECTED, EventType.MASTER_CHANGED, EventType.MASTER_LOST)
    ]


def test_reason_first_then_preempted_with_no_gap() -> None:
    """B (200) starts while A (100) advertises; A yields at once, as keepalived does."""
    model = Model()
    feed(model, merged(every(A, 0, 10.5, prio=100), every(B, 10.2, 20, prio=200)))
    model.advance(20)
    assert changes(model) == [
        ("master_elected", (A,), "first", None),
        ("master_changed", (B, A), "preempted", 0.0),
    ]


def test_reason_priority_dropped() -> None:
    """A's tracked script takes 60 off its priority, below B's: B preempts it."""
    model = Model()
    feed(model, merged(every(A, 0, 5, prio=150), every(A, 5, 5.5, prio=90), every(B, 5.2, 9)))
    model.advance(9)
    assert changes(model)[1:] == [("master_changed", (B, A), "priority_dropped", 0.0)]


def test_reason_resigned_with_the_skew_time_as_gap() -> None:
    model = Model()
    feed(model, [*every(A, 0, 5, prio=150), advert(5.0, A, 0), *every(B, 5.609, 9, prio=100)])
    model.advance(9)
    assert changes(model)[1:] == [("master_changed", (B, A), "resigned", 0.609)]


def test_reason_silent_with_the_master_down_interval_as_gap() -> None:
    """A crashes after its advert at 4 s; B (100) takes over after its master-down interval."""
    model = Model()
    down = mdi(3, 1.0, 100)
    feed(model, merged(every(A, 0, 5, prio=150), every(B, 4 + down, 9, prio=100)))
    model.advance(9)
    assert changes(model)[1:] == [("master_changed", (B, A), "silent", round(down, 6))]
    (v,) = model.snapshot(9)
    assert v.reasons == {"first": 1, "silent": 1}
    assert v.gaps.counts[GAP_BUCKETS.index(5.0)] == 1 and v.gaps.total == round(down, 6)


def test_reason_split_brain_end() -> None:
    """A partition: both master past the debounce; healed, the higher priority stays."""
    model = Model()
    feed(model, merged(every(A, 0, 20, prio=100), every(B, 5, 30, prio=200)))
    model.advance(30)
    assert changes(model)[1:] == [("master_changed", (B, A), "split_brain_end", 0.0)]


def test_lost_then_recovered_carries_the_whole_gap() -> None:
    model = Model()
    feed(model, every(A, 0, 5, prio=150))
    model.advance(20)
    feed(model, every(A, 30, 33, prio=150))
    assert changes(model) == [
        ("master_elected", (A,), "first", None),
        ("master_lost", (A,), "silent", None),
        ("master_elected", (A,), "recovered", 26.0),
    ]
    (v,) = model.snapshot(33)
    assert v.gaps.counts[-1] == 1  # beyond the 10 s bucket


def test_priority_dropped_is_judged_from_the_priority_the_master_took_over_with() -> None:
    """A takes over at 150 and its tracked priority falls to 90 before B (100) has aged out of
    acting, so the change to A is noted with 90; B preempting later is still a priority drop."""
    model = Model()
    feed(
        model,
        merged(
            every(B, 0, 5.5, prio=100),
            every(A, 5.2, 6.0, prio=150),
            every(A, 6.2, 8.5, prio=90),
            every(B, 8.2, 12, prio=100),
        ),
    )
    model.advance(12)
    reasons = [e.detail["reason"] for e in model.pop_events() if e.type is EventType.MASTER_CHANGED]
    assert reasons == ["preempted", "priority_dropped"]
