"""The Prometheus view: a collector that renders a fresh snapshot of the model on each scrape.

Metric names are a contract (dashboard, alert rules, users' queries); `METRICS` is their one
definition, which docs/metrics.md is checked against. collect() only reads memory: it runs on
the event loop and never blocks.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ka_exporter import __version__
from ka_exporter.capture import Capture
from ka_exporter.model import MISMATCH_FIELDS, Model, Segment, VridKey
from ka_exporter.ownership import ownership

GAUGE, COUNTER, INFO = "gauge", "counter", "info"

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
        "Frames the kernel dropped on the interface because the receive buffer was full.",
    ),
    "ka_exporter_build": (INFO, "Build information of the exporter."),
    "ka_exporter_capture_up": (GAUGE, "1 while the interface is being captured."),
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


class Families:
    """Metric families by name, filled in any order, yielded in definition order."""

    def __init__(self) -> None:
        self._metrics = {name: Metric(name, doc, kind) for name, (kind, doc) in METRICS.items()}

    def add(self, name: str, labels: dict[str, str], value: float) -> None:
        kind = METRICS[name][0]
        sample = name + ("_total" if kind == COUNTER else "_info" if kind == INFO else "")
        self._metrics[name].add_sample(sample, labels, value)

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._metrics.values())


def segment_labels(segment: Segment) -> dict[str, str]:
    labels = {"interface": segment.interface}
    if segment.netns:
        labels["netns"] = segment.netns
    return labels


def vrid_labels(key: VridKey) -> dict[str, str]:
    return {**segment_labels(key.segment), "family": key.family, "vrid": str(key.vrid)}


class ExporterCollector(Collector):
    def __init__(
        self,
        model: Model,
        capture: Capture | None,
        local: Callable[[], LocalState],
        clock: Callable[[], float],
    ) -> None:
        self.model = model
        self.capture = capture
        self.local = local
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        f = Families()
        local = self.local()
        for view in self.model.snapshot(self.clock()):
            base = vrid_labels(view.key)
            f.add("vrrp_masters", base, len(view.masters))
            for address in view.masters:
                f.add("vrrp_master", {**base, "address": address}, 1)
            f.add("vrrp_split_brain", base, int(view.split_brain))
            f.add("vrrp_split_brain_events", base, view.split_brain_events)
            f.add("vrrp_master_transitions", base, view.transitions)
            if view.last_transition is not None:
                f.add("vrrp_last_transition_timestamp_seconds", base, view.last_transition)
            for name in MISMATCH_FIELDS:
                f.add("vrrp_config_mismatch", {**base, "field": name}, int(name in view.mismatches))
            for r in view.routers:
                labels = {**base, "address": r.address}
                f.add("vrrp_router_priority", labels, r.priority)
                f.add("vrrp_router_advertisements", labels, r.adverts)
                f.add("vrrp_router_advert_interval_seconds", labels, r.interval)
                f.add("vrrp_router_last_advert_timestamp_seconds", labels, r.last_seen)
                f.add("vrrp_router_resignations", labels, r.resignations)
                f.add("vrrp_router_master", labels, int(r.address in view.masters))
                if local.expected:
                    f.add("vrrp_router_expected", labels, int(r.address in local.expected))
            held = local.addresses.get(view.key.segment.netns)
            if held is not None:
                own = ownership(view, held)
                for vip, here in own.vips.items():
                    f.add("vrrp_local_vip", {**base, "vip": vip}, int(here))
                f.add("vrrp_local_master", base, int(own.local_master))
                f.add("vrrp_duplicate_vip", base, int(own.duplicate))
                f.add("vrrp_orphan_vip", base, int(own.orphan))
        for (segment, reason), count in self.model.rejects.items():
            f.add(
                "vrrp_packets_rejected", {**segment_labels(segment), "reason": reason.value}, count
            )
        for segment, count in self.model.untracked.items():
            f.add("vrrp_untracked_advertisements", segment_labels(segment), count)
        f.add("vrrp_tracked_routers", {}, self.model.router_count)
        f.add("vrrp_tracked_routers_limit", {}, self.model.config.max_routers)
        for tap in self.capture.statistics() if self.capture else []:
            labels = segment_labels(tap.segment)
            f.add("vrrp_capture_packets", labels, tap.packets)
            f.add("vrrp_capture_kernel_drops", labels, tap.drops)
            f.add("ka_exporter_capture_up", labels, 1)
        for segment in self.capture.failed if self.capture else ():
            f.add("ka_exporter_capture_up", segment_labels(segment), 0)
        for netns, up in local.netlink_up.items():
            f.add("ka_exporter_netlink_up", {"netns": netns} if netns else {}, int(up))
        f.add("ka_exporter_build", {"version": __version__, "python": platform.python_version()}, 1)
        yield from f
