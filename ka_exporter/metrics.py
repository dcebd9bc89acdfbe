"""The Prometheus view's contract: every metric's name, type and help, and what the collectors
(ka_exporter.collectors) are given of this host besides the model.

Metric names are a contract (dashboard, alert rules, users' queries); `METRICS` is their one
definition, which docs/metrics.md and the collectors are checked against, and its order is the
order of the exposition. Collectors only read memory: they run on the event loop and never block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from ka_exporter.exposition import Family, LabelSet, TextCache
from ka_exporter.model import Segment

GAUGE, COUNTER, INFO, HISTOGRAM = "gauge", "counter", "info", "histogram"

# name -> (type, help). Counters are named here without their _total suffix.
METRICS: dict[str, tuple[str, str]] = {
    "vrrp_masters": (
        GAUGE,
        "Routers acting as master of the VRID now (1 healthy, 0 none, 2+ split-brain).",
    ),
    "vrrp_master": (INFO, "The acting master of the VRID, by source address."),
    "vrrp_split_brain": (
        GAUGE,
        "1 while two or more routers have been acting as master past the debounce.",
    ),
    "vrrp_split_brain_events": (COUNTER, "Split-brain episodes seen for the VRID."),
    "vrrp_master_transitions": (
        COUNTER,
        "Changes of the VRID's master (a first master seen is not counted).",
    ),
    "vrrp_last_transition_timestamp_seconds": (
        GAUGE,
        "Unix time of the VRID's last master transition.",
    ),
    "vrrp_config_mismatch": (
        GAUGE,
        "1 when the VRID's routers disagree on the field: interval, vips, auth, version, checksum.",
    ),
    "vrrp_router_priority": (
        GAUGE,
        "Priority in the router's last advert (0: it resigned as master).",
    ),
    "vrrp_router_advertisements": (COUNTER, "Adverts received from the router."),
    "vrrp_router_advert_interval_seconds": (
        GAUGE,
        "Advertisement interval in the router's last advert.",
    ),
    "vrrp_router_last_advert_timestamp_seconds": (GAUGE, "Unix time of the router's last advert."),
    "vrrp_router_resignations": (
        COUNTER,
        "Priority-0 adverts from the router: a master giving up (stop, fault).",
    ),
    "vrrp_router_master": (GAUGE, "1 while the router acts as master of the VRID."),
    "vrrp_router_expected": (
        GAUGE,
        "1 when the router is an expected peer, 0 when unknown (only with --vrrp.expected-peer).",
    ),
    "vrrp_local_vip": (GAUGE, "1 when this host holds the VIP, 0 when it does not."),
    "vrrp_local_master": (
        GAUGE,
        "1 when one of this host's addresses is an acting master of the VRID.",
    ),
    "vrrp_duplicate_vip": (
        GAUGE,
        "1 when this host holds a VIP of the VRID while another router is its master.",
    ),
    "vrrp_orphan_vip": (
        GAUGE,
        "1 when this host holds a VIP of the VRID while nobody advertises it.",
    ),
    "vrrp_master_changes": (
        COUNTER,
        "Master changes and losses of the VRID by the reason the wire gives (preempted, "
        "priority_dropped, resigned, silent, split_brain_end, recovered).",
    ),
    "vrrp_failover_gap_seconds": (
        HISTOGRAM,
        "From the old master's last advert to the new master's first: how long the VIPs were "
        "unattended (0 for a preemption).",
    ),
    "vrrp_announce_delay_seconds": (
        GAUGE,
        "From the last takeover to the new master's first gratuitous ARP or unsolicited NA.",
    ),
    "vrrp_announce_missing": (
        COUNTER,
        "Takeovers no announcement of the VIPs followed within the claim window.",
    ),
    "vrrp_carp_collision": (
        GAUGE,
        "1 while a CARP group uses the VRID as its vhid on the segment: one virtual MAC, two "
        "protocols.",
    ),
    "carp_masters": (GAUGE, "CARP speakers advertising the vhid now (only a CARP master does)."),
    "carp_speaker_advertisements": (COUNTER, "CARP adverts received from the speaker."),
    "carp_speaker_advbase_seconds": (GAUGE, "advbase in the CARP speaker's last advert."),
    "carp_speaker_advskew": (
        GAUGE,
        "advskew in the CARP speaker's last advert (1/256 s; the lowest is master).",
    ),
    "carp_speaker_demote": (GAUGE, "Demotion counter in the CARP speaker's last advert."),
    "carp_speaker_last_advert_timestamp_seconds": (
        GAUGE,
        "Unix time of the CARP speaker's last advert.",
    ),
    "vrrp_vip_claimant": (
        INFO,
        "The MAC that announced the VIP last (gratuitous ARP, unsolicited NA).",
    ),
    "vrrp_vip_claims": (COUNTER, "Announcements of the VIP, by MAC."),
    "vrrp_vip_last_claim_timestamp_seconds": (GAUGE, "Unix time of the VIP's last announcement."),
    "vrrp_vip_conflict": (
        GAUGE,
        "1 while two MACs announce the VIP in turns within the claim window: split-brain at L2.",
    ),
    "vrrp_vip_conflicts": (COUNTER, "VIP conflict episodes."),
    "vrrp_untracked_claims": (
        COUNTER,
        "Announcements of new addresses ignored because the claim cap was reached.",
    ),
    "vrrp_tracked_claims": (GAUGE, "Addresses whose announcements are tracked."),
    "vrrp_tracked_claims_limit": (GAUGE, "The cap on tracked addresses (--vrrp.max-claims)."),
    "vrrp_packets_rejected": (COUNTER, "Captured frames dropped by the decoder, by reason."),
    "vrrp_untracked_advertisements": (
        COUNTER,
        "Adverts from new sources ignored because the router cap was reached.",
    ),
    "vrrp_tracked_routers": (GAUGE, "Routers currently tracked."),
    "vrrp_tracked_routers_limit": (GAUGE, "The cap on tracked routers (--vrrp.max-routers)."),
    "vrrp_capture_packets": (COUNTER, "Frames the kernel passed the VRRP filter on the interface."),
    "vrrp_capture_kernel_drops": (
        COUNTER,
        "Frames the kernel dropped on the interface because the capture ring was full.",
    ),
    "ka_exporter_build": (INFO, "Build information of the exporter."),
    "ka_exporter_capture_up": (GAUGE, "1 while the interface is being captured."),
    "ka_exporter_link_up": (
        GAUGE,
        "1 while the interface is up and running, 0 while its link is down (its VRIDs are held).",
    ),
    "ka_exporter_netlink_up": (
        GAUGE,
        "1 while the namespace's addresses and links are being watched.",
    ),
}


@dataclass(frozen=True, slots=True)
class LocalState:
    """What the collector needs to know of this host besides the model."""

    addresses: Mapping[str, frozenset[str]]  # netns ("" = ours) -> addresses held
    netlink_up: Mapping[str, bool]
    expected: frozenset[str] = frozenset()  # expected router addresses; empty: no allowlist
    links_up: Mapping[Segment, bool] = field(default_factory=dict)  # captured links, up or not


class Families:
    """Metric families by name, filled in any order, yielded in definition order."""

    def __init__(self, names: Iterable[str], cache: TextCache | None = None) -> None:
        self._families = {name: family(name, cache) for name in names}

    def add(self, name: str, labels: LabelSet, value: float) -> None:
        self._families[name].rows.append((labels, value))

    def appenders(self, *names: str) -> tuple[Callable[[tuple[LabelSet, float]], None], ...]:
        return tuple(self._families[name].rows.append for name in names)

    def extender(self, name: str) -> Callable[[Iterable[tuple[LabelSet, float]]], None]:
        return self._families[name].rows.extend

    def __iter__(self) -> Iterator[Family]:
        return iter(self._families.values())


def family(name: str, cache: TextCache | None = None) -> Family:
    kind, doc = METRICS[name]
    return Family(name, doc, kind, cache)


def segment_labels(segment: Segment) -> LabelSet:
    labels = {"interface": segment.interface}
    if segment.netns:
        labels["netns"] = segment.netns
    if segment.vlan:
        labels["vlan"] = segment.vlan
    return LabelSet(labels)
