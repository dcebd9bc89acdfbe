"""A VRID's state: its routers, who is master, why it changed and how long that took.

The model owns and changes these; readers get the immutable `VridView`.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from ka_exporter.decode import Checksum
from ka_exporter.wire import INFINITY, VridKey


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


_FIELD_INDEXES = {
    name: tuple(RouterConfig._fields.index(n) for n in names)
    for name, names in MISMATCH_FIELDS.items()
}


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
    mac: str = ""  # the source MAC of its last advert: keepalived's use_vmac sends 00:00:5e:...
    acting_since: float = INFINITY  # its first advert since it last became an acting master
    acting_priority: int = 0  # and that advert's priority
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
    announced_after: float | None = None  # the last takeover to its first announcement, s
    unannounced: int = 0  # takeovers no announcement followed
    last_transition: float | None = None
    split_since: float | None = None
    split_deadline: float = INFINITY  # set when the overlap begins; only ever extended
    split_brain: bool = False
    split_brain_events: int = 0
    mismatches: frozenset[str] = frozenset()
    lost_at: float = INFINITY
    next_deadline: float = INFINITY
    resumed_at: float = -INFINITY  # its link came back up: silence counts from here, not before
    # mismatch flag -> how many routers state each value: a tally, so that a router joining a
    # VRID of thousands (a spoofing flood) costs the same as one joining a pair
    settings: dict[str, Counter[tuple[object, ...]]] = field(
        default_factory=lambda: {name: Counter() for name in MISMATCH_FIELDS}
    )

    def tally(self, router: Router, delta: int) -> bool:
        """Counts a router's config in (1) or out (-1); True if the VIP lists stated changed."""
        config = router.config
        assert config is not None  # set as the router is made
        vips_before = len(self.settings["vips"])
        for name, indexes in _FIELD_INDEXES.items():
            counts, value = self.settings[name], tuple(config[i] for i in indexes)
            counts[value] += delta
            if not counts[value]:
                del counts[value]
        return len(self.settings["vips"]) != vips_before

    def mismatched(self) -> frozenset[str]:
        return frozenset(name for name, counts in self.settings.items() if len(counts) > 1)


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
