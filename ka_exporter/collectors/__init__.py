"""The exporter's collectors, one per source, over the one contract (ka_exporter.metrics.METRICS):
VRIDs and their routers (vrrp), why their masters changed (failover), CARP groups (carp), who
announces each VIP (claims), what the capture and decoder let through or not (capture), the
exporter itself (exporter). `ExporterCollector` is all of them as one, as
node_exporter's collector is its collectors': the families of each, in the contract's order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ka_exporter.capture import Capture
from ka_exporter.collectors.capture import CaptureCollector
from ka_exporter.collectors.carp import CarpCollector
from ka_exporter.collectors.claims import ClaimsCollector
from ka_exporter.collectors.exporter import ExporterSelfCollector
from ka_exporter.collectors.failover import FailoverCollector
from ka_exporter.collectors.vrrp import VrrpCollector
from ka_exporter.metrics import METRICS, LocalState
from ka_exporter.model import Model

__all__ = [
    "CaptureCollector",
    "CarpCollector",
    "ClaimsCollector",
    "ExporterCollector",
    "ExporterSelfCollector",
    "FailoverCollector",
    "VrrpCollector",
]


class ExporterCollector(Collector):
    def __init__(
        self,
        model: Model,
        capture: Capture | None,
        local: Callable[[], LocalState],
        clock: Callable[[], float],
    ) -> None:
        self.model = model
        self.vrrp = VrrpCollector(model, local, clock)
        self.collectors: tuple[Collector, ...] = (
            self.vrrp,
            FailoverCollector(model),
            CarpCollector(model, clock),
            ClaimsCollector(model, clock),
            CaptureCollector(model, capture, local),
            ExporterSelfCollector(local),
        )

    def collect(self) -> Iterator[Metric]:
        families = {f.name: f for c in self.collectors for f in c.collect()}
        return iter([families[name] for name in METRICS])
