"""What reaches the model and what does not: the capture's taps and their kernel counters, the
links under them, frames the decoder rejected, adverts past the router cap."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.registry import Collector

from ka_exporter.capture import Capture
from ka_exporter.exposition import NO_LABELS, Family, TextCache
from ka_exporter.metrics import Families, LocalState, segment_labels
from ka_exporter.model import Model


class CaptureCollector(Collector):
    names = (
        "vrrp_packets_rejected",
        "vrrp_untracked_advertisements",
        "vrrp_tracked_routers",
        "vrrp_tracked_routers_limit",
        "vrrp_capture_packets",
        "vrrp_capture_kernel_drops",
        "ka_exporter_capture_up",
        "ka_exporter_link_up",
    )

    def __init__(
        self, model: Model, capture: Capture | None, local: Callable[[], LocalState]
    ) -> None:
        self.model = model
        self.capture = capture
        self.local = local
        self._texts: TextCache = {}

    def collect(self) -> Iterator[Family]:
        f = Families(self.names, self._texts)
        add, model = f.add, self.model
        for (segment, reason), count in model.rejects.items():
            add("vrrp_packets_rejected", segment_labels(segment).extend(reason=reason.value), count)
        for segment, count in model.untracked.items():
            add("vrrp_untracked_advertisements", segment_labels(segment), count)
        add("vrrp_tracked_routers", NO_LABELS, model.router_count)
        add("vrrp_tracked_routers_limit", NO_LABELS, model.config.max_routers)
        for tap in self.capture.statistics() if self.capture else []:
            labels = segment_labels(tap.segment.link)
            add("vrrp_capture_packets", labels, tap.packets)
            add("vrrp_capture_kernel_drops", labels, tap.drops)
            add("ka_exporter_capture_up", labels, 1)
        for segment in self.capture.failed if self.capture else ():
            add("ka_exporter_capture_up", segment_labels(segment), 0)
        for link, up in self.local().links_up.items():
            add("ka_exporter_link_up", segment_labels(link), up)
        return iter(f)
