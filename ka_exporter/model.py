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
from collections import Counter
from dataclasses import dataclass

from ka_exporter.carp import CarpTracker, CarpView
from ka_exporter.claims import Announced, ClaimKey, ClaimTracker, Conflict, MacClaim
from ka_exporter.decode import Advert, Carp, Claim, DropReason, decode
from ka_exporter.vrid import (
    GAP_BUCKETS,
    GAPPED,
    MISMATCH_FIELDS,
    Gaps,
    Lost,
    Reason,
    Router,
    RouterConfig,
    Vrid,
    VridView,
)
from ka_exporter.wire import INFINITY, Budget, Event, EventType, Segment, VridKey

# The model's vocabulary, re-exported: readers import it from here.
__all__ = [
    "GAP_BUCKETS",
    "INFINITY",
    "MISMATCH_FIELDS",
    "CarpView",
    "ClaimView",
    "Event",
    "EventType",
    "Model",
    "ModelConfig",
    "Reason",
    "Router",
    "Segment",
    "Vrid",
    "VridKey",
    "VridView",
]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    master_tolerance: float = 1.5  # acting master while the last advert is younger (intervals)
    split_brain_debounce: float = 2.0  # overlap of masters to call split-brain (intervals)
    expire_after: float = 10.0  # forget a silent router after this many master-down intervals
    max_routers: int = 4096  # beyond this, new sources are counted, not tracked
    # keepalived announces a takeover 5 times, and 5 times more garp_master_delay (5 s) later
    claim_window: float = 10.0  # two MACs announcing one VIP in turns within this: a conflict
    max_claims: int = 4096  # addresses whose announcements are tracked at most
    vips: frozenset[str] = frozenset()  # VIPs configured (--vrrp.vip), beside those advertised

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
        if not 0 < self.claim_window < INFINITY:
            raise ValueError(f"claim window must be above 0: {self.claim_window}")
        if self.max_claims < 1:
            raise ValueError(f"max claims must be at least 1: {self.max_claims}")


CLAIM_MEMORY = 3600.0  # seconds an address's announcements are remembered after its last


@dataclass(frozen=True, slots=True)
class ClaimView:
    key: ClaimKey
    vrid: int  # the VRID advertising the address on the segment, 0 when none does
    macs: tuple[MacClaim, ...]
    last_mac: str
    conflict_since: float | None
    conflicts: int


class Model:
    def __init__(self, config: ModelConfig | None = None) -> None:
        config = self.config = config or ModelConfig()
        self.vrids: dict[VridKey, Vrid] = {}
        self.budget = Budget(config.max_routers)  # VRRP routers and CARP speakers
        self._carp = CarpTracker(self.budget, config.master_tolerance, config.expire_after)
        self.carp = self._carp.groups
        self.collisions: set[VridKey] = set()
        self.claim_budget = Budget(config.max_claims)
        self._claims = ClaimTracker(self.claim_budget, config.claim_window, CLAIM_MEMORY)
        self.claims = self._claims.addresses
        self.untracked_claims = self._claims.untracked
        # (segment, family) -> VIP -> the VRID advertising it; rebuilt after a router's VIPs change
        self._vip_index: dict[tuple[Segment, str], dict[str, VridKey]] | None = None
        self.rejects: Counter[tuple[Segment, DropReason]] = Counter()
        self.untracked: Counter[Segment] = Counter()
        self.down: dict[Segment, float] = {}  # links down, by Segment.link -> since
        self.events: list[Event] = []

    @property
    def router_count(self) -> int:
        return self.budget.used

    # --- input -------------------------------------------------------------------------------

    def ingest(self, segment: Segment, time: float, frame: bytes, linktype: int) -> None:
        result = decode(frame, time, linktype)
        if type(result) is Advert:
            self.observe(segment.tagged(result.vlan) if result.vlan else segment, result)
        elif type(result) is Carp:
            self.observe_carp(segment.tagged(result.vlan) if result.vlan else segment, result)
        elif type(result) is Claim:
            self.observe_claim(segment.tagged(result.vlan) if result.vlan else segment, result)
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
        self._carp.resume(link, now)

    def observe_carp(self, segment: Segment, carp: Carp) -> None:
        new = self._carp.observe(segment, carp)
        if new is None:
            self.untracked[segment] += 1
        elif new:
            self._check_collision(VridKey(segment, carp.family, carp.vhid), carp.time)

    def observe_claim(self, segment: Segment, claim: Claim) -> None:
        """A claim the VRRP view explains starts no conflict: a new master's announcement, or
        the old one's back after a failback within the window, is what VRRP decided."""
        self._claims.advance(claim.time)
        advertised = self._vips(segment, claim.family)
        none_known = not self.config.vips and not advertised
        watched = none_known or claim.address in self.config.vips or claim.address in advertised
        vrid = self.vrids.get(advertised[claim.address]) if claim.address in advertised else None
        explained = vrid is not None and self._rightful_mac(vrid) == claim.mac
        self._claims.observe(segment, claim, watched and not explained)
        self._claimed()

    def observe(self, segment: Segment, advert: Advert) -> None:
        key = (segment, advert.family, advert.vrid)  # equal to, and cheaper than, a VridKey
        t = advert.time
        vrid = self.vrids.get(key)  # type: ignore[call-overload]
        if vrid is not None and t >= vrid.next_deadline:
            self._settle(vrid, t)
            vrid = self.vrids.get(key)  # type: ignore[call-overload]  # settling may expire it
        router = vrid.routers.get(advert.src) if vrid is not None else None
        if router is None:
            if not self.budget.take():
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
        # Only this router's timers and the VRID's own moved: the earlier deadline stays a lower
        # bound, so a VRID of many routers is rescanned once per interval, not once per advert.
        due = min(vrid.next_deadline, self._due(vrid, router), vrid.lost_at)
        vrid.next_deadline = due if vrid.split_brain else min(due, vrid.split_deadline)

    def advance(self, now: float) -> None:
        """Let time pass: silences, lost masters, debounced split-brain, expiry."""
        down = self.down
        for vrid in [v for v in self.vrids.values() if v.next_deadline <= now]:
            if not down or vrid.key.segment.link not in down:
                self._settle(vrid, now)
        for key in self._carp.expire(now, down):
            self._check_collision(key, now)
        self._claims.advance(now)
        self._claimed()

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
                v.reasons if shared else dict(v.reasons),
                v.gaps if shared else Gaps(list(v.gaps.counts), v.gaps.total),
            )
            for v in self.vrids.values()
        ]

    def carp_snapshot(self, now: float) -> list[CarpView]:
        self.advance(now)
        return self._carp.snapshot(now, self.down)

    def claims_snapshot(self, now: float) -> list[ClaimView]:
        """The announced addresses that matter: the VIPs (advertised on the segment, or
        configured) and any address two MACs announced; a host announcing its own address
        once at boot is not news."""
        self.advance(now)
        return [
            ClaimView(c.key, self._vrid_of(c.key), tuple(map(copy.copy, c.macs.values())),
                      c.last_mac, c.conflict_since, c.conflicts)
            for c in self.claims.values()
            if len(c.macs) > 1 or c.conflicts or self.is_vip(c.key)
        ]  # fmt: skip

    # --- internals ---------------------------------------------------------------------------

    def is_vip(self, key: ClaimKey) -> bool:
        """Configured, or advertised on the claim's segment."""
        return key.address in self.config.vips or key.address in self._vips(key.segment, key.family)

    def _vips(self, segment: Segment, family: str) -> dict[str, VridKey]:
        """The VIPs advertised on the segment, by the VRID advertising them."""
        if self._vip_index is None:
            index: dict[tuple[Segment, str], dict[str, VridKey]] = {}
            for v in self.vrids.values():
                vips = index.setdefault((v.key.segment, v.key.family), {})
                for r in v.routers.values():
                    vips.update(dict.fromkeys(r.vips, v.key))
            self._vip_index = index
        return self._vip_index.get((segment, family), {})

    def _vrid_of(self, key: ClaimKey) -> int:
        """The VRID advertising the address on the segment, 0 when none does."""
        vrid = self._vips(key.segment, key.family).get(key.address)
        return vrid.vrid if vrid is not None else 0

    @staticmethod
    def _rightful_mac(vrid: Vrid) -> str | None:
        """The MAC of the acting master VRRP would keep: the highest priority (then address)."""
        acting = [vrid.routers[a] for a in vrid.acting]
        return max(acting, key=lambda r: (r.priority, r.address)).mac if acting else None

    def _claimed(self) -> None:
        """Turns what the claim tracker found into events."""
        for out in self._claims.out:
            if isinstance(out, Conflict):
                c = out.claims
                kind = EventType.VIP_CONFLICT_START if out.start else EventType.VIP_CONFLICT_END
                macs = tuple(sorted(c.macs, key=lambda m: -c.macs[m].last))
                key = VridKey(c.key.segment, c.key.family, self._vrid_of(c.key))
                self._emit(out.time, kind, key, macs, vip=c.key.address)
            elif isinstance(out, Announced):
                after = round(out.time - out.takeover.time, 6)
                if (vrid := self.vrids.get(out.takeover.key)) is not None:
                    vrid.announced_after = after
                self._emit(out.time, EventType.VIP_ANNOUNCED, out.takeover.key, (out.mac,),
                           vip=out.address, after_seconds=after)  # fmt: skip
            else:
                if (vrid := self.vrids.get(out.takeover.key)) is not None:
                    vrid.unannounced += 1
                vips = ",".join(sorted(out.takeover.vips))
                self._emit(out.time, EventType.ANNOUNCE_MISSING, out.takeover.key, (), vips=vips)
        self._claims.out.clear()

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
        router.mac = a.mac
        self._emit(a.time, EventType.ROUTER_APPEARED, vrid.key, (a.src,))
        self._tally(vrid, router, 1)
        self._check_config(vrid, a.time)
        return router

    def _update(self, vrid: Vrid, r: Router, a: Advert) -> None:
        t = a.time
        r.adverts += 1
        r.last_seen = t
        r.mac = a.mac
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
                self._tally(vrid, r, -1)
                r.retime()
                self._tally(vrid, r, 1)
                self._check_config(vrid, t)
                if vrid.split_since is not None and r.address in vrid.acting:
                    self._acting_changed(vrid, t, r)  # a master of the overlap got slower
            else:
                r.retime()
        if a.priority:
            if r.address not in vrid.acting:
                vrid.acting.add(r.address)
                r.acting_since, r.acting_priority = t, a.priority
                self._acting_changed(vrid, t, r)
        else:
            r.resignations += 1
            if r.address in vrid.acting:
                vrid.acting.discard(r.address)
                self._emit(t, EventType.MASTER_RESIGNED, vrid.key, (r.address,))
                self._acting_changed(vrid, t)

    def _acting_changed(self, vrid: Vrid, t: float, joined: Router | None = None) -> None:
        """`joined`: the router that began acting or, acting, changed its interval."""
        if len(vrid.acting) >= 2:
            # The overlap is confirmed after `debounce` intervals of the slowest master in it:
            # the two that began it, then each that joins (a shorter one never shortens it).
            debounce = self.config.split_brain_debounce
            if vrid.split_since is None:
                vrid.split_since = t
                slowest = max(vrid.routers[a].interval for a in vrid.acting)
                vrid.split_deadline = t + debounce * slowest
            elif joined is not None:
                due = vrid.split_since + debounce * joined.interval
                vrid.split_deadline = max(vrid.split_deadline, due)
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
        vrid.master_priority = new.acting_priority  # as it took over, whatever it says since
        self._claims.takeover(vrid.key, new.acting_since, new.vips)

    def _tally(self, vrid: Vrid, r: Router, delta: int) -> None:
        if vrid.tally(r, delta):
            self._vip_index = None

    def _check_config(self, vrid: Vrid, t: float) -> None:
        now = vrid.mismatched()
        for name in sorted(now - vrid.mismatches):
            self._emit(
                t, EventType.CONFIG_MISMATCH_START, vrid.key, tuple(vrid.routers), field=name
            )
        for name in sorted(vrid.mismatches - now):
            self._emit(t, EventType.CONFIG_MISMATCH_END, vrid.key, tuple(vrid.routers), field=name)
        vrid.mismatches = now

    def _next_deadline(self, vrid: Vrid) -> float:
        """The exact next moment a timer of the VRID runs out; `_settle` relies on firing at
        a moment earlier than that changing nothing, so a lower bound may stand in for it."""
        deadline = vrid.lost_at
        if not vrid.split_brain:
            deadline = min(deadline, vrid.split_deadline)
        for r in vrid.routers.values():
            deadline = min(deadline, self._due(vrid, r))
        return deadline

    def _due(self, vrid: Vrid, r: Router) -> float:
        """When the router's next timer runs out: acting master, silence, or expiry."""
        resumed = vrid.resumed_at
        seen = r.last_seen if r.last_seen > resumed else resumed
        if r.silent:
            due = seen + self.config.expire_after * r.master_down_interval
        else:
            due = seen + r.master_down_interval
        if r.address in vrid.acting:
            due = min(due, seen + self.config.master_tolerance * r.interval)
        return due

    def _settle(self, vrid: Vrid, now: float) -> None:
        """Apply, in time order, every timed change due by `now`."""
        while (t := vrid.next_deadline) <= now:
            self._fire(vrid, t)
            if not vrid.routers:
                del self.vrids[vrid.key]
                self._vip_index = None
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
            self._tally(vrid, router, -1)
            self.budget.give()
            if address == vrid.master:  # silent through a split among others: nothing to lose
                vrid.master, vrid.lost_at = None, INFINITY
                vrid.lost = Lost(address, router.last_seen, router.priority)
        if expired and vrid.routers:
            self._check_config(vrid, t)
