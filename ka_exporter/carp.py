"""CARP neighbours, beside the VRRP routers and never among them.

carp(4), pfSense, OPNsense and ucarp share VRRP's protocol number and virtual MACs; a CARP master
is the one advertising, every advbase + advskew/256 s. Pure, time an argument, as the model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ka_exporter.decode import Carp
from ka_exporter.wire import INFINITY, Budget, Segment, VridKey


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


class CarpTracker:
    """The CARP groups per segment, family and vhid, under the model's router cap."""

    def __init__(self, budget: Budget, tolerance: float, expire_after: float) -> None:
        self.groups: dict[VridKey, CarpGroup] = {}
        self.budget, self.tolerance, self.expire_after = budget, tolerance, expire_after
        self.deadline = INFINITY  # the earliest a speaker may expire

    def observe(self, segment: Segment, carp: Carp) -> bool | None:
        """True when the advert made a new group, False when it joined one, None when the cap
        left it untracked."""
        key = (segment, carp.family, carp.vhid)
        group = self.groups.get(key)  # type: ignore[call-overload]
        speaker = group.speakers.get(carp.src) if group is not None else None
        new = False
        if speaker is None:
            if not self.budget.take():
                return None
            if group is None:
                group = self.groups[VridKey(*key)] = CarpGroup(VridKey(*key))
                new = True
            speaker = group.speakers[carp.src] = CarpSpeaker(
                carp.src, carp.advbase, carp.advskew, carp.demote, carp.time, carp.time
            )
        speaker.advbase, speaker.advskew, speaker.demote = carp.advbase, carp.advskew, carp.demote
        speaker.last_seen = carp.time
        speaker.adverts += 1
        self.deadline = min(self.deadline, self._expiry(group, speaker))
        return new

    def resume(self, link: Segment, now: float) -> None:
        for group in self.groups.values():
            if group.key.segment.link == link:
                group.resumed_at = now
        self.deadline = min(self.deadline, now)

    def expire(self, now: float, down: dict[Segment, float]) -> list[VridKey]:
        """Forgets the speakers silent too long (not on a link that is down); the groups gone."""
        if self.deadline > now:
            return []
        deadline, gone = INFINITY, []
        for key, group in list(self.groups.items()):
            if down and key.segment.link in down:
                continue
            for address, speaker in list(group.speakers.items()):
                due = self._expiry(group, speaker)
                if due <= now:
                    del group.speakers[address]
                    self.budget.give()
                else:
                    deadline = min(deadline, due)
            if not group.speakers:
                del self.groups[key]
                gone.append(key)
        self.deadline = deadline
        return gone

    def snapshot(self, now: float, down: dict[Segment, float]) -> list[CarpView]:
        views = []
        for group in self.groups.values():
            since = down.get(group.key.segment.link)
            at = now if since is None else since
            speakers = tuple(map(copy.copy, group.speakers.values()))
            heard = group.resumed_at
            masters = tuple(
                sorted(
                    s.address
                    for s in speakers
                    if at - max(s.last_seen, heard) < self.tolerance * s.interval
                )
            )
            views.append(CarpView(group.key, masters, speakers, since is not None))
        return views

    def _expiry(self, group: CarpGroup, speaker: CarpSpeaker) -> float:
        # as a silent VRRP router: a master-down interval (3 advert intervals) times expire_after
        return max(speaker.last_seen, group.resumed_at) + self.expire_after * 3 * speaker.interval
