"""The cluster as the wire shows it: per segment, family and VRID, who speaks, who is master.

Pure: time enters only as an argument (advert timestamps and `advance(now)`), so live capture
and pcap replay yield the same events, and tests need no clock. Only a master sends adverts, so
"master" here means "keeps the advert rhythm": a router acts as master while its last non-zero
advert is younger than `master_tolerance` intervals, and stops the moment it falls silent.

A segment is an interface of a namespace and, on a trunk, a VLAN: the same VRID on two VLANs is
two virtual routers. CARP speakers are kept beside the VRIDs, never in them; a CARP vhid equal to
a VRID on one segment is a collision (one virtual MAC, two protocols). While the link of an
interface is down its VRIDs are held as they were, neither lost nor forgotten: silence there
says nothing of the routers.
"""

from __future__ import annotations

import copy
import enum
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from ka_exporter.decode import Advert, Carp, Checksum, DropReason, decode

INFINITY = float("inf")


class Segment(NamedTuple):
    interface: str
    netns: str = ""  # "" is the exporter's own namespace
    vlan: str = ""  # "" untagged; "100", or "100.200" for QinQ (outer first)

    @property
    def link(self) -> Segment:
        """The interface the segment is carried on, whatever the VLAN: what goes up and down."""
        return Segment(self.interface, self.netns) if self.vlan else self

    def tagged(self, vlan: str) -> Segment:
        """This segment with the tags a frame carried inside it appended (QinQ: outer first)."""
        return self._replace(vlan=f"{self.vlan}.{vlan}" if self.vlan else vlan)


class VridKey(NamedTuple):
    segment: Segment
    family: str
    vrid: int


class EventType(enum.StrEnum):
    MASTER_ELECTED = "master_elected"
    MASTER_CHANGED = "master_changed"
    MASTER_LOST = "master_lost"
    MASTER_RESIGNED = "master_resigned"
    SPLIT_BRAIN_START = "split_brain_start"
    SPLIT_BRAIN_END = "split_brain_end"
    PRIORITY_CHANGED = "priority_changed"
    ROUTER_APPEARED = "router_appeared"
    ROUTER_SILENT = "router_silent"
    CONFIG_MISMATCH_START = "config_mismatch_start"
    CONFIG_MISMATCH_END = "config_mismatch_end"
    COLLISION_START = "collision_start"  # a CARP vhid equals the VRID on the segment
    COLLISION_END = "collision_end"


class Reason(enum.StrEnum):
    """Why the master changed, as the wire shows it: the `reason` of master_* events."""

    FIRST = "first"  # the VRID's first master heard
    RECOVERED = "recovered"  # a master again after none (master_lost)
    PREEMPTED = "preempted"  # a higher priority took over while the old master advertised
    PRIORITY_DROPPED = "priority_dropped"  # preempted after the old master's priority fell
    RESIGNED = "resigned"  # the old master sent priority 0: keepalived stopping or in FAULT
    SILENT = "silent"  # the old master stopped advertising: crash, link, partition
    SPLIT_BRAIN_END = "split_brain_end"  # two masters, and the other one stayed


GAPPED = frozenset((Reason.RESIGNED, Reason.SILENT, Reason.RECOVERED))  # the VIP unattended
# Failover gap buckets, seconds: a preemption takes ~0, a resignation a skew time (~10 ms to
# 1 s), a silent master its master-down interval (3-4 intervals: ~0.3 s to ~15 s).
GAP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class Gaps:
    """The failover gaps of a VRID, as a histogram: counts per GAP_BUCKETS bound (+Inf last)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(GAP_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, gap: float) -> None:
        self.counts[next((i for i, b in enumerate(GAP_BUCKETS) if gap <= b), -1)] += 1
        self.total += gap


@dataclass(frozen=True, slots=True)
class Event:
    time: float
    type: EventType
    key: VridKey
    addresses: tuple[str, ...]  # the routers involved; for changes the new one first
    detail: dict[str, str | int | float] = field(default_factory=dict)


class RouterConfig(NamedTuple):
    """What a VRID's routers must agree on, as one advert states it."""

    interval_cs: int
    vips: tuple[str, ...]
    auth_type: int
    auth_fingerprint: str
    ah: bool
    version: int
    checksum: Checksum


# Mismatch flag -> the RouterConfig fields that must agree among a VRID's routers.
MISMATCH_FIELDS: dict[str, tuple[str, ...]] = {
    "interval": ("interval_cs",),
    "vips": ("vips",),
    "auth": ("auth_type", "auth_fingerprint", "ah"),
    "version": ("version",),
    "checksum": ("checksum",),
}


@dataclass(frozen=True, slots=True)
class ModelConfig:
    master_tolerance: float = 1.5  # acting master while the last advert is younger (intervals)
    split_brain_debounce: float = 2.0  # overlap of masters to call split-brain (intervals)
    expire_after: float = 10.0  # forget a silent router after this many master-down intervals
    max_routers: int = 4096  # beyond this, new sources are counted, not tracked

    def __post_init__(self) -> None:
        # A backup takes over after 3 silent intervals, so a longer tolerance would keep a dead
        # master "acting" beside its successor; expiring a router before it is even silent (or
        # before its loss is declared) would forget what the events still speak of.
        if not 0 < self.master_tolerance < 3:
            raise ValueError(
                f"master tolerance must be above 0 and below 3: {self.master_tolerance}"
            )
        if not 0 < self.split_brain_debounce < INFINITY:
            raise ValueError(f"split-brain debounce must be above 0: {self.split_brain_debounce}")
        if not 2 <= self.expire_after < INFINITY:
            raise ValueError(f"expire-after must be at least 2: {self.expire_after}")
        if self.max_routers < 1:
            raise ValueError(f"max routers must be at least 1: {self.max_routers}")


def master_down_interval(version: int, interval: float, priority: int) -> float:
    """RFC 3768/5798 §6.1: 3 x interval + skew; v2 skew is seconds, v3 scales with interval."""
    skew = (256 - priority) / 256
    return 3 * interval + (skew * interval if version == 3 else skew)


@dataclass(slots=True)
class Router:
    address: str
    priority: int
    interval_cs: int
    vips: tuple[str, ...]
    auth_type: int
    auth_fingerprint: str
    version: int
    checksum: Checksum
    ah: bool
    first_seen: float
    last_seen: float
    adverts: int = 0
    resignations: int = 0
    silent: bool = False
    acting_since: float = INFINITY  # its first advert since it last became an acting master
    config: RouterConfig | None = None
    interval: float = 0.0  # seconds
    master_down_interval: float = 0.0  # with its own priority: when it counts as silent
    backup_wait: float = 0.0  # the longest any backup waits for it: priority 1's interval

    def __post_init__(self) -> None:
        self.retime()

    def retime(self) -> None:
        self.config = RouterConfig(
            self.interval_cs,
            self.vips,
            self.auth_type,
            self.auth_fingerprint,
            self.ah,
            self.version,
            self.checksum,
        )
        self.interval = self.interval_cs / 100.0
        self.master_down_interval = master_down_interval(self.version, self.interval, self.priority)
        self.backup_wait = master_down_interval(self.version, self.interval, 1)


class Lost(NamedTuple):
    """A master as it was when it was lost: its last advert, not whatever it sends later."""

    address: str
    last_seen: float
    priority: int


@dataclass(slots=True)
class Vrid:
    key: VridKey
    routers: dict[str, Router] = field(default_factory=dict)
    acting: set[str] = field(default_factory=set)
    master: str | None = None  # last single master: transitions are changes of this
    master_priority: int = 0  # the master's priority when it became master
    lost: Lost | None = None  # the master lost, until the next one is elected
    had_master: bool = False
    transitions: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # master_* events by reason
    gaps: Gaps = field(default_factory=Gaps)
    last_transition: float | None = None
    split_since: float | None = None
    split_deadline: float = INFINITY  # set when the overlap begins; only ever extended
    split_brain: bool = False
    split_brain_events: int = 0
    mismatches: frozenset[str] = frozenset()
    lost_at: float = INFINITY
    next_deadline: float = INFINITY
    resumed_at: float = -INFINITY  # its link came back up: silence counts from here, not before


@dataclass(frozen=True, slots=True)
class VridView:
    """An immutable copy for readers (metrics, status page, analyze)."""

    key: VridKey
    masters: tuple[str, ...]
    master: str | None
    split_brain: bool
    split_brain_events: int
    transitions: int
    last_transition: float | None
    mismatches: frozenset[str]
    routers: tuple[Router, ...]
    link_down: bool = False  # held as it was when the interface went down
    carp_collision: bool = False
    reasons: Mapping[str, int] = field(default_factory=dict)
    gaps: Gaps = field(default_factory=Gaps)


@dataclass(slots=True)
class CarpSpeaker:
    address: str
    advbase: int
    advskew: int
    demote: int
    first_seen: float
    last_seen: float
    adverts: int = 0

    @property
    def interval(self) -> float:
        return self.advbase + self.advskew / 256 or 1.0  # advbase 0, advskew 0: carp(4) says 1


@dataclass(slots=True)
class CarpGroup:
    key: VridKey  # the vhid in the place of a VRID: they share the virtual MAC
    speakers: dict[str, CarpSpeaker] = field(default_factory=dict)
    resumed_at: float = -INFINITY  # as Vrid.resumed_at


@dataclass(frozen=True, slots=True)
class CarpView:
    key: VridKey
    masters: tuple[str, ...]  # only a CARP master advertises: those heard within tolerance
    speakers: tuple[CarpSpeaker, ...]
    link_down: bool = False


class Model:
    def __init__(self, config: ModelConfig | None = None) -> None:
        self.config = config or ModelConfig()
        self.vrids: dict[VridKey, Vrid] = {}
        self.carp: dict[VridKey, CarpGroup] = {}
        self.collisions: set[VridKey] = set()
        self.router_count = 0  # VRRP routers and CARP speakers: one cap for both
        self.rejects: Counter[tuple[Segment, DropReason]] = Counter()
        self.untracked: Counter[Segment] = Counter()
        self.down: dict[Segment, float] = {}  # links down, by Segment.link -> since
        self.events: list[Event] = []
        self._carp_deadline = INFINITY

    # --- input -------------------------------------------------------------------------------

    def ingest(self, segment: Segment, time: float, frame: bytes, linktype: int) -> None:
        result = decode(frame, time, linktype)
        if type(result) is Advert:
            self.observe(segment.tagged(result.vlan) if result.vlan else segment, result)
        elif type(result) is Carp:
            self.observe_carp(segment.tagged(result.vlan) if result.vlan else segment, result)
        else:
            self.rejects[segment, result] += 1  # type: ignore[index]

    def link(self, link: Segment, up: bool, now: float) -> None:
        """The interface `link` went down or came back (netlink). Down: its VRIDs are held as
        they are now. Up: they resume, their routers given a full interval from `now` to be
        heard again before they count as silent."""
        if not up:
            if link not in self.down:
                self.advance(now)
                self.down[link] = now
            return
        if self.down.pop(link, None) is None:
            return
        for vrid in self.vrids.values():
            if vrid.key.segment.link == link:
                vrid.resumed_at = now
                if vrid.master is not None and not vrid.acting:
                    vrid.lost_at = now + vrid.routers[vrid.master].backup_wait
                vrid.next_deadline = self._next_deadline(vrid)
        for group in self.carp.values():
            if group.key.segment.link == link:
                group.resumed_at = now
        self._carp_deadline = min(self._carp_deadline, now)

    def observe_carp(self, segment: Segment, carp: Carp) -> None:
        key = (segment, carp.family, carp.vhid)
        group = self.carp.get(key)  # type: ignore[call-overload]
        speaker = group.speakers.get(carp.src) if group is not None else None
        if speaker is None:
            if self.router_count >= self.config.max_routers:
                self.untracked[segment] += 1
                return
            if group is None:
                group = CarpGroup(VridKey(*key))
                self.carp[group.key] = group
            speaker = group.speakers[carp.src] = CarpSpeaker(
                carp.src, carp.advbase, carp.advskew, carp.demote, carp.time, carp.time
            )
            self.router_count += 1
            self._check_collision(group.key, carp.time)
        speaker.advbase, speaker.advskew, speaker.demote = carp.advbase, carp.advskew, carp.demote
        speaker.last_seen = carp.time
        speaker.adverts += 1
        self._carp_deadline = min(self._carp_deadline, self._carp_expiry(group, speaker))

    def observe(self, segment: Segment, advert: Advert) -> None:
        key = (segment, advert.family, advert.vrid)  # equal to, and cheaper than, a VridKey
        t = advert.time
        vrid = self.vrids.get(key)  # type: ignore[call-overload]
        if vrid is not None and t >= vrid.next_deadline:
            self._settle(vrid, t)
            vrid = self.vrids.get(key)  # type: ignore[call-overload]  # settling may expire it
        router = vrid.routers.get(advert.src) if vrid is not None else None
        if router is None:
            if self.router_count >= self.config.max_routers:
                self.untracked[segment] += 1
                return
            if vrid is None:
                vrid = Vrid(VridKey(*key))
                self.vrids[vrid.key] = vrid
                if self.carp:
                    self._check_collision(vrid.key, t)
            router = self._add_router(vrid, advert)
        elif router.silent:
            router.silent = False
            self._emit(t, EventType.ROUTER_APPEARED, vrid.key, (router.address,), returning=1)
        self._update(vrid, router, advert)
        vrid.next_deadline = self._next_deadline(vrid)

    def advance(self, now: float) -> None:
        """Let time pass: silences, lost masters, debounced split-brain, expiry."""
        down = self.down
        for vrid in [v for v in self.vrids.values() if v.next_deadline <= now]:
            if not down or vrid.key.segment.link not in down:
                self._settle(vrid, now)
        if self._carp_deadline <= now:
            self._expire_carp(now)

    def pop_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    # --- output ------------------------------------------------------------------------------

    def snapshot(self, now: float, *, shared: bool = False) -> list[VridView]:
        """shared: the views hold the model's own routers, not copies; for a reader done before
        the model next changes, such as a scrape rendered on the event loop."""
        self.advance(now)
        down, collisions = self.down, self.collisions
        return [
            VridView(
                v.key,
                tuple(sorted(v.acting)),
                v.master,
                v.split_brain,
                v.split_brain_events,
                v.transitions,
                v.last_transition,
                v.mismatches,
                tuple(v.routers.values() if shared else map(copy.copy, v.routers.values())),
                bool(down) and v.key.segment.link in down,
                v.key in collisions,
                dict(v.reasons),
                Gaps(list(v.gaps.counts), v.gaps.total),
            )
            for v in self.vrids.values()
        ]

    def carp_snapshot(self, now: float) -> list[CarpView]:
        self.advance(now)
        tolerance, views = self.config.master_tolerance, []
        for group in self.carp.values():
            since = self.down.get(group.key.segment.link)
            at = now if since is None else since
            speakers = tuple(map(copy.copy, group.speakers.values()))
            heard = group.resumed_at
            masters = tuple(
                sorted(
                    s.address
                    for s in speakers
                    if at - max(s.last_seen, heard) < tolerance * s.interval
                )
            )
            views.append(CarpView(group.key, masters, speakers, since is not None))
        return views

    # --- internals ---------------------------------------------------------------------------

    def _emit(
        self, t: float, kind: EventType, key: VridKey, addrs: tuple[str, ...], **detail: str | float
    ) -> None:
        self.events.append(Event(t, kind, key, addrs, detail))

    def _check_collision(self, key: VridKey, t: float) -> None:
        colliding = key in self.vrids and key in self.carp
        if colliding == (key in self.collisions):
            return
        speakers = tuple(self.carp[key].speakers) if key in self.carp else ()
        if colliding:
            self.collisions.add(key)
            self._emit(t, EventType.COLLISION_START, key, speakers)
        else:
            self.collisions.discard(key)
            self._emit(t, EventType.COLLISION_END, key, speakers)

    def _carp_expiry(self, group: CarpGroup, speaker: CarpSpeaker) -> float:
        # as a silent VRRP router: a master-down interval (3 advert intervals) times expire_after
        seen = max(speaker.last_seen, group.resumed_at)
        return seen + self.config.expire_after * 3 * speaker.interval

    def _expire_carp(self, now: float) -> None:
        deadline = INFINITY
        for key, group in list(self.carp.items()):
            if self.down and key.segment.link in self.down:
                continue
            for address, speaker in list(group.speakers.items()):
                due = self._carp_expiry(group, speaker)
                if due <= now:
                    del group.speakers[address]
                    self.router_count -= 1
                else:
                    deadline = min(deadline, due)
            if not group.speakers:
                del self.carp[key]
                self._check_collision(key, now)
        self._carp_deadline = deadline

    def _add_router(self, vrid: Vrid, a: Advert) -> Router:
        router = Router(
            a.src,
            a.priority,
            a.interval_cs,
            a.vips,
            a.auth_type,
            a.auth_fingerprint,
            a.version,
            a.checksum,
            a.ah,
            a.time,
            a.time,
        )
        vrid.routers[a.src] = router
        self.router_count += 1
        self._emit(a.time, EventType.ROUTER_APPEARED, vrid.key, (a.src,))
        self._check_config(vrid, a.time)
        return router

    def _update(self, vrid: Vrid, r: Router, a: Advert) -> None:
        t = a.time
        r.adverts += 1
        r.last_seen = t
        old_priority = r.priority
        config = RouterConfig(
            a.interval_cs,
            a.vips,
            a.auth_type,
            a.auth_fingerprint,
            a.ah,
            a.version,
            a.checksum,
        )
        if config != r.config or old_priority != a.priority:
            r.priority = a.priority
            r.interval_cs, r.vips, r.version, r.checksum = (
                a.interval_cs,
                a.vips,
                a.version,
                a.checksum,
            )
            r.auth_type, r.auth_fingerprint, r.ah = a.auth_type, a.auth_fingerprint, a.ah
            if old_priority and a.priority and old_priority != a.priority:
                self._emit(
                    t,
                    EventType.PRIORITY_CHANGED,
                    vrid.key,
                    (r.address,),
                    old=old_priority,
                    new=a.priority,
                )
            if config != r.config:
                r.retime()
                self._check_config(vrid, t)
            else:
                r.retime()
        if a.priority:
            if r.address not in vrid.acting:
                vrid.acting.add(r.address)
                r.acting_since = t
                self._acting_changed(vrid, t)
        else:
            r.resignations += 1
            if r.address in vrid.acting:
                vrid.acting.discard(r.address)
                self._emit(t, EventType.MASTER_RESIGNED, vrid.key, (r.address,))
                self._acting_changed(vrid, t)

    def _acting_changed(self, vrid: Vrid, t: float) -> None:
        if len(vrid.acting) >= 2:
            if vrid.split_since is None:
                vrid.split_since = t
            slowest = max(vrid.routers[a].interval for a in vrid.acting)
            due = vrid.split_since + self.config.split_brain_debounce * slowest
            vrid.split_deadline = max(
                vrid.split_deadline if vrid.split_deadline < INFINITY else t, due
            )
            vrid.lost_at = INFINITY
            return
        split_ended = vrid.split_brain
        if vrid.split_since is not None:
            if vrid.split_brain:
                vrid.split_brain = False
                self._emit(t, EventType.SPLIT_BRAIN_END, vrid.key, tuple(sorted(vrid.acting)))
            vrid.split_since, vrid.split_deadline = None, INFINITY
        if vrid.acting:
            (new,) = vrid.acting
            vrid.lost_at = INFINITY
            if new != vrid.master:
                self._master_changed(vrid, vrid.routers[new], t, split_ended)
        elif vrid.master is not None and vrid.lost_at == INFINITY:
            # Every backup waits its own master-down interval before taking over; only after the
            # slowest possible one (priority 1) is nobody coming.
            last = max(vrid.resumed_at, *(r.last_seen for r in vrid.routers.values()))
            vrid.lost_at = last + vrid.routers[vrid.master].backup_wait

    def _master_changed(self, vrid: Vrid, new: Router, t: float, split_ended: bool) -> None:
        """Emits the change with the reason the wire gives and the failover gap: from the old
        master's last advert to the new one's first (0 when they overlapped)."""
        old = vrid.routers.get(vrid.master) if vrid.master is not None else None
        if old is None:
            before = vrid.lost
            reason = Reason.FIRST if before is None else Reason.RECOVERED
            detail: dict[str, str | float] = {"reason": reason.value}
            if before is not None:
                detail["gap_seconds"] = gap = round(
                    max(0.0, new.acting_since - before.last_seen), 6
                )
                detail["old_priority"] = before.priority
                vrid.gaps.observe(gap)
            self._emit(t, EventType.MASTER_ELECTED, vrid.key, (new.address,), **detail)
        else:
            # Still in its rhythm when the new master began: it yielded (a keepalived master
            # hearing a higher priority goes backup without another advert), nothing was left
            # unattended. Out of it: it had gone quiet, and the gap is real.
            quiet = new.acting_since - old.last_seen
            rhythm = quiet < self.config.master_tolerance * old.interval
            if split_ended:
                reason = Reason.SPLIT_BRAIN_END
            elif old.priority == 0:
                reason = Reason.RESIGNED
            elif not rhythm:
                reason = Reason.SILENT
            elif old.priority < vrid.master_priority:
                reason = Reason.PRIORITY_DROPPED
            else:
                reason = Reason.PREEMPTED
            gap = round(max(0.0, quiet), 6) if reason in GAPPED else 0.0
            vrid.gaps.observe(gap)
            self._emit(
                t,
                EventType.MASTER_CHANGED,
                vrid.key,
                (new.address, old.address),
                reason=reason.value,
                gap_seconds=gap,
                old_priority=old.priority,
                new_priority=new.priority,
            )
        vrid.reasons[reason] += 1
        if vrid.had_master:
            vrid.transitions += 1
            vrid.last_transition = t
        vrid.master, vrid.had_master, vrid.lost = new.address, True, None
        vrid.master_priority = new.priority

    def _check_config(self, vrid: Vrid, t: float) -> None:
        configs = [r.config for r in vrid.routers.values()]
        now = frozenset(
            name
            for name, names in MISMATCH_FIELDS.items()
            if len({tuple(getattr(c, n) for n in names) for c in configs}) > 1
        )
        for name in sorted(now - vrid.mismatches):
            self._emit(
                t, EventType.CONFIG_MISMATCH_START, vrid.key, tuple(vrid.routers), field=name
            )
        for name in sorted(vrid.mismatches - now):
            self._emit(t, EventType.CONFIG_MISMATCH_END, vrid.key, tuple(vrid.routers), field=name)
        vrid.mismatches = now

    def _next_deadline(self, vrid: Vrid) -> float:
        deadline = vrid.lost_at
        if not vrid.split_brain:
            deadline = min(deadline, vrid.split_deadline)
        tolerance, expire, acting, resumed = (
            self.config.master_tolerance,
            self.config.expire_after,
            vrid.acting,
            vrid.resumed_at,
        )
        for r in vrid.routers.values():
            seen = r.last_seen if r.last_seen > resumed else resumed
            if r.silent:
                due = seen + expire * r.master_down_interval
            else:
                due = seen + r.master_down_interval
            if r.address in acting:
                due = min(due, seen + tolerance * r.interval)
            deadline = min(deadline, due)
        return deadline

    def _settle(self, vrid: Vrid, now: float) -> None:
        """Apply, in time order, every timed change due by `now`."""
        while (t := vrid.next_deadline) <= now:
            self._fire(vrid, t)
            if not vrid.routers:
                del self.vrids[vrid.key]
                if vrid.key in self.collisions:
                    self._check_collision(vrid.key, t)
                return
            vrid.next_deadline = self._next_deadline(vrid)

    def _fire(self, vrid: Vrid, t: float) -> None:
        since = vrid.split_since
        if since is not None and not vrid.split_brain and vrid.split_deadline <= t:
            vrid.split_brain = True
            vrid.split_brain_events += 1
            masters = tuple(sorted(vrid.acting))
            self._emit(t, EventType.SPLIT_BRAIN_START, vrid.key, masters, since=since)
        tolerance, routers, resumed = self.config.master_tolerance, vrid.routers, vrid.resumed_at
        dropped = [
            a
            for a in vrid.acting
            if max(routers[a].last_seen, resumed) + tolerance * routers[a].interval <= t
        ]
        if dropped:
            vrid.acting.difference_update(dropped)
            self._acting_changed(vrid, t)
        if vrid.lost_at <= t and vrid.master is not None:
            lost = vrid.routers[vrid.master]
            reason = Reason.RESIGNED if lost.priority == 0 else Reason.SILENT
            vrid.reasons[reason] += 1
            self._emit(t, EventType.MASTER_LOST, vrid.key, (lost.address,), reason=reason.value)
            vrid.master, vrid.lost_at = None, INFINITY
            vrid.lost = Lost(lost.address, lost.last_seen, lost.priority)
        expired = []
        for r in vrid.routers.values():
            mdi = r.master_down_interval
            seen = max(r.last_seen, resumed)
            if not r.silent and seen + mdi <= t:
                r.silent = True
                self._emit(t, EventType.ROUTER_SILENT, vrid.key, (r.address,))
            elif r.silent and seen + self.config.expire_after * mdi <= t:
                expired.append(r.address)
        for address in expired:
            router = vrid.routers.pop(address)
            self.router_count -= 1
            if address == vrid.master:  # silent through a split among others: nothing to lose
                vrid.master, vrid.lost_at = None, INFINITY
                vrid.lost = Lost(address, router.last_seen, router.priority)
        if expired and vrid.routers:
            self._check_config(vrid, t)
