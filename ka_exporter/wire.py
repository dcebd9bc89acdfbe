"""What the model speaks of: segments, the keys of virtual routers, events, and the cap on what
it tracks. Shared by the VRRP model and the trackers beside it (CARP, VIP claims)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

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
    VIP_CONFLICT_START = "vip_conflict_start"  # two MACs announce one address, in turns
    VIP_CONFLICT_END = "vip_conflict_end"
    VIP_ANNOUNCED = "vip_announced"  # the new master's first announcement after its takeover
    ANNOUNCE_MISSING = "announce_missing"  # a takeover no announcement followed


@dataclass(frozen=True, slots=True)
class Event:
    time: float
    type: EventType
    key: VridKey
    addresses: tuple[str, ...]  # the routers involved; for changes the new one first
    detail: dict[str, str | int | float] = field(default_factory=dict)


@dataclass(slots=True)
class Budget:
    """A cap on what is tracked, one entry per source: a flood of spoofed sources is counted,
    not kept, and cannot grow memory."""

    limit: int
    used: int = 0

    def take(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def give(self, n: int = 1) -> None:
        self.used -= n
