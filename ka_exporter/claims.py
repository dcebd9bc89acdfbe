"""Who answers for each address, as the segment hears it: gratuitous ARP and unsolicited NA.

Every keepalived master announces its VIPs at takeover (and every `garp_master_refresh`), in any
VRRP mode, so two MACs announcing one VIP is split-brain as switches and clients live it, even
where unicast VRRP is never heard. A takeover is a new MAC announcing after the old one: the
old one is replaced. A conflict is the old one announcing again while the new one's claim is
fresh: claims that alternate between two MACs within `window` seconds. It ends once a single
MAC has been announcing for a window. A VRRP takeover heard on a segment where announcements
are heard at all is expected to be announced within a window: clients keep the old MAC until
it is. Pure, time an argument, bounded by a cap as the routers.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import NamedTuple

from ka_exporter.decode import Claim
from ka_exporter.wire import INFINITY, Budget, Segment, VridKey

MACS_PER_ADDRESS = 8  # beyond this the MAC longest silent is forgotten: spoofed MACs are cheap
RECENT = 16  # claims kept in order per address: a takeover is often announced before the model
# calls it one (the old master is only dropped from acting a tolerance after its last advert)


class ClaimKey(NamedTuple):
    segment: Segment
    family: str
    address: str


@dataclass(slots=True)
class MacClaim:
    mac: str
    first: float
    last: float
    count: int = 0


@dataclass(slots=True)
class AddressClaims:
    key: ClaimKey
    macs: dict[str, MacClaim] = field(default_factory=dict)
    last_mac: str = ""
    conflict_since: float | None = None
    conflicts: int = 0  # conflict episodes
    recent: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=RECENT))

    def rival_last(self) -> float:
        """The latest claim of any MAC but the last claimant's."""
        return max((c.last for m, c in self.macs.items() if m != self.last_mac), default=-INFINITY)


class Conflict(NamedTuple):
    """A conflict that began (`start`) or ended."""

    start: bool
    claims: AddressClaims
    time: float


class Takeover(NamedTuple):
    key: VridKey
    time: float  # the new master's first advert
    vips: frozenset[str]


class Announced(NamedTuple):
    takeover: Takeover
    time: float
    address: str
    mac: str


class Unannounced(NamedTuple):
    takeover: Takeover
    time: float


Outcome = Conflict | Announced | Unannounced


class ClaimTracker:
    def __init__(self, budget: Budget, window: float, expire_after: float) -> None:
        self.addresses: dict[ClaimKey, AddressClaims] = {}
        self.untracked: Counter[Segment] = Counter()  # claims of addresses beyond the cap
        self.takeovers: dict[VridKey, Takeover] = {}  # awaiting their announcement
        self.heard: set[Segment] = set()  # segments where announcements are heard at all
        self.out: list[Outcome] = []  # for the model to turn into events
        self.budget, self.window, self.expire_after = budget, window, expire_after
        self.deadline = INFINITY  # the earliest a conflict may end or an address expire

    def takeover(self, key: VridKey, time: float, vips: tuple[str, ...]) -> None:
        """A new master since `time`: its first announcement of a VIP from then on, already
        heard or still to come, is its announcement."""
        if not vips or key.segment not in self.heard:
            return
        pending = Takeover(key, time, frozenset(vips))
        heard = [
            (t, address, mac)
            for address in pending.vips
            if (entry := self.addresses.get(ClaimKey(key.segment, key.family, address)))
            for t, mac in entry.recent
            if t >= time
        ]
        if heard:
            t, address, mac = min(heard)
            self.out.append(Announced(pending, t, address, mac))
        else:
            self.takeovers[key] = pending
            self.deadline = min(self.deadline, time + self.window)

    def observe(self, segment: Segment, claim: Claim, watched: bool) -> None:
        """Records the claim. `watched`: the address may conflict (a known VIP, or any address
        where none is known)."""
        self.heard.add(segment)
        for vrid, pending in list(self.takeovers.items()):
            if (vrid.segment, vrid.family) == (segment, claim.family) and claim.address in (
                pending.vips
            ):
                del self.takeovers[vrid]
                self.out.append(Announced(pending, claim.time, claim.address, claim.mac))
        key = ClaimKey(segment, claim.family, claim.address)
        entry = self.addresses.get(key)
        if entry is None:
            if not self.budget.take():
                self.untracked[segment] += 1
                return
            entry = self.addresses[key] = AddressClaims(key)
        t, mac = claim.time, claim.mac
        mine = entry.macs.get(mac)
        rival = entry.macs.get(entry.last_mac) if entry.last_mac != mac else None
        if (
            watched
            and entry.conflict_since is None
            and rival is not None
            and mine is not None
            and t - rival.last <= self.window
            and rival.last - mine.last <= self.window
        ):
            entry.conflict_since = t
            entry.conflicts += 1
            self.out.append(Conflict(True, entry, t))
        if mine is None:
            if len(entry.macs) >= MACS_PER_ADDRESS:
                del entry.macs[min(entry.macs.values(), key=lambda c: c.last).mac]
            mine = entry.macs[mac] = MacClaim(mac, t, t)
        mine.last = t
        mine.count += 1
        entry.last_mac = mac
        entry.recent.append((t, mac))
        self.deadline = min(self.deadline, self._due(entry))

    def advance(self, now: float) -> None:
        """Ends the conflicts due (one MAC alone for a window), reports takeovers nobody
        announced, forgets addresses unclaimed for long."""
        if self.deadline > now:
            return
        deadline = INFINITY
        for vrid, pending in list(self.takeovers.items()):
            if pending.time + self.window <= now:
                del self.takeovers[vrid]
                self.out.append(Unannounced(pending, pending.time + self.window))
            else:
                deadline = min(deadline, pending.time + self.window)
        for key, entry in list(self.addresses.items()):
            if entry.conflict_since is not None and entry.rival_last() + self.window <= now:
                self.out.append(Conflict(False, entry, entry.rival_last() + self.window))
                entry.conflict_since = None
            if entry.conflict_since is None and self._last(entry) + self.expire_after <= now:
                del self.addresses[key]
                self.budget.give()
                continue
            deadline = min(deadline, self._due(entry))
        self.deadline = deadline

    def _due(self, entry: AddressClaims) -> float:
        if entry.conflict_since is not None:
            return entry.rival_last() + self.window
        return self._last(entry) + self.expire_after

    @staticmethod
    def _last(entry: AddressClaims) -> float:
        return max(c.last for c in entry.macs.values())
