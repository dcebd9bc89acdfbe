"""The Prometheus view: a collector that renders a fresh snapshot of the model on each scrape.

Metric names are a contract (dashboard, alert rules, users' queries); `METRICS` is their one
definition, which docs/metrics.md is checked against. collect() only reads memory: it runs on
the event loop and never blocks.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.registry import Collector

from ka_exporter import __version__
from ka_exporter.capture import Capture
from ka_exporter.exposition import NO_LABELS, Family, LabelSet, TextCache
from ka_exporter.model import MISMATCH_FIELDS, CarpView, Model, Segment, VridKey, VridView
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

    def __init__(self, cache: TextCache | None = None) -> None:
        self._families = {
            name: Family(name, doc, kind, cache) for name, (kind, doc) in METRICS.items()
        }

    def add(self, name: str, labels: LabelSet, value: float) -> None:
        self._families[name].rows.append((labels, value))

    def appenders(self, *names: str) -> tuple[Callable[[tuple[LabelSet, float]], None], ...]:
        return tuple(self._families[name].rows.append for name in names)

    def extender(self, name: str) -> Callable[[Iterable[tuple[LabelSet, float]]], None]:
        return self._families[name].rows.extend

    def __iter__(self) -> Iterator[Family]:
        return iter(self._families.values())


def segment_labels(segment: Segment) -> LabelSet:
    labels = {"interface": segment.interface}
    if segment.netns:
        labels["netns"] = segment.netns
    if segment.vlan:
        labels["vlan"] = segment.vlan
    return LabelSet(labels)


class VridLabels:
    """The label sets of one VRID's series, kept across scrapes while its routers stay."""

    __slots__ = ("agreed", "base", "fields", "routers", "vips")

    def __init__(self, key: VridKey) -> None:
        self.base = segment_labels(key.segment).extend(family=key.family, vrid=str(key.vrid))
        self.fields = {name: self.base.extend(field=name) for name in MISMATCH_FIELDS}
        self.agreed = [(labels, 0) for labels in self.fields.values()]  # the usual rows
        self.routers: dict[str, LabelSet] = {}
        self.vips: dict[str, LabelSet] = {}

    def router(self, address: str) -> LabelSet:
        labels = self.routers.get(address)
        if labels is None:
            labels = self.routers[address] = self.base.extend(address=address)
        return labels

    def vip(self, vip: str) -> LabelSet:
        labels = self.vips.get(vip)
        if labels is None:
            labels = self.vips[vip] = self.base.extend(vip=vip)
        return labels


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
        self._labels: dict[VridKey, VridLabels] = {}
        self._texts: TextCache = {}

    def _vrid_labels(self, views: list[VridView]) -> list[VridLabels]:
        """Cached label sets per view; dropped with their VRID, rebuilt when routers or VIPs
        left it (so churn of spoofed sources cannot grow the cache)."""
        old, self._labels = self._labels, {}
        out = []
        for view in views:
            cached = old.get(view.key)
            if cached is None or len(cached.routers) > len(view.routers):
                cached = VridLabels(view.key)
            self._labels[view.key] = cached
            out.append(cached)
        return out

    def collect(self) -> Iterator[Family]:
        f = Families(self._texts)
        add = f.add
        local = self.local()
        expected = local.expected
        # Rows appended straight to the hot families' lists: one scrape of a large site adds
        # tens of thousands of them, and a method call each would cost most of the scrape.
        agreed = f.extender("vrrp_config_mismatch")
        (
            masters_, master, split, split_events, transitions, last_transition, mismatch,
            priority, adverts, interval, last_seen, resignations, is_master, is_expected,
        ) = f.appenders(
            "vrrp_masters", "vrrp_master", "vrrp_split_brain", "vrrp_split_brain_events",
            "vrrp_master_transitions", "vrrp_last_transition_timestamp_seconds",
            "vrrp_config_mismatch", "vrrp_router_priority", "vrrp_router_advertisements",
            "vrrp_router_advert_interval_seconds", "vrrp_router_last_advert_timestamp_seconds",
            "vrrp_router_resignations", "vrrp_router_master", "vrrp_router_expected",
        )  # fmt: skip
        views = self.model.snapshot(self.clock(), shared=True)
        for view, cache in zip(views, self._vrid_labels(views), strict=True):
            base = cache.base
            masters = view.masters
            masters_((base, len(masters)))
            for address in masters:
                master((cache.router(address), 1))
            split((base, view.split_brain))
            split_events((base, view.split_brain_events))
            transitions((base, view.transitions))
            if view.last_transition is not None:
                last_transition((base, view.last_transition))
            if view.mismatches:
                for name, labels in cache.fields.items():
                    mismatch((labels, name in view.mismatches))
            else:
                agreed(cache.agreed)
            routers = cache.routers
            for r in view.routers:
                labels = routers.get(r.address) or cache.router(r.address)
                priority((labels, r.priority))
                adverts((labels, r.adverts))
                interval((labels, r.interval))
                last_seen((labels, r.last_seen))
                resignations((labels, r.resignations))
                is_master((labels, r.address in masters))
                if expected:
                    is_expected((labels, r.address in expected))
            held = local.addresses.get(view.key.segment.netns)
            if held is not None:
                own = ownership(view, held)
                if len(cache.vips) > len(own.vips):
                    cache.vips.clear()
                for vip, here in own.vips.items():
                    add("vrrp_local_vip", cache.vip(vip), here)
                add("vrrp_local_master", base, own.local_master)
                add("vrrp_duplicate_vip", base, own.duplicate)
                add("vrrp_orphan_vip", base, own.orphan)
            if view.carp_collision:
                add("vrrp_carp_collision", base, 1)
        self._carp(f, self.model.carp_snapshot(self.clock()))
        for (segment, reason), count in self.model.rejects.items():
            add("vrrp_packets_rejected", segment_labels(segment).extend(reason=reason.value), count)
        for segment, count in self.model.untracked.items():
            add("vrrp_untracked_advertisements", segment_labels(segment), count)
        add("vrrp_tracked_routers", NO_LABELS, self.model.router_count)
        add("vrrp_tracked_routers_limit", NO_LABELS, self.model.config.max_routers)
        for tap in self.capture.statistics() if self.capture else []:
            labels = segment_labels(tap.segment.link)
            add("vrrp_capture_packets", labels, tap.packets)
            add("vrrp_capture_kernel_drops", labels, tap.drops)
            add("ka_exporter_capture_up", labels, 1)
        for segment in self.capture.failed if self.capture else ():
            add("ka_exporter_capture_up", segment_labels(segment), 0)
        for link, up in local.links_up.items():
            add("ka_exporter_link_up", segment_labels(link), up)
        for netns, up in local.netlink_up.items():
            add("ka_exporter_netlink_up", LabelSet({"netns": netns} if netns else {}), up)
        build = LabelSet({"version": __version__, "python": platform.python_version()})
        add("ka_exporter_build", build, 1)
        yield from f

    @staticmethod
    def _carp(f: Families, views: list[CarpView]) -> None:
        add = f.add
        for view in views:
            key = view.key
            base = segment_labels(key.segment).extend(family=key.family, vhid=str(key.vrid))
            add("carp_masters", base, len(view.masters))
            for s in view.speakers:
                labels = base.extend(address=s.address)
                add("carp_speaker_advertisements", labels, s.adverts)
                add("carp_speaker_advbase_seconds", labels, s.advbase)
                add("carp_speaker_advskew", labels, s.advskew)
                add("carp_speaker_demote", labels, s.demote)
                add("carp_speaker_last_advert_timestamp_seconds", labels, s.last_seen)
