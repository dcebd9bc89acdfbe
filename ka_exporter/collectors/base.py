"""What the collectors of model views share: the model, its clock, and their families' text kept
across scrapes."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.registry import Collector

from ka_exporter.exposition import TextCache
from ka_exporter.metrics import Families
from ka_exporter.model import Model


class ModelCollector(Collector):
    names: tuple[str, ...] = ()  # the METRICS families it yields, in the contract's order

    def __init__(self, model: Model, clock: Callable[[], float]) -> None:
        self.model = model
        self.clock = clock
        self._texts: TextCache = {}

    def families(self) -> Families:
        return Families(self.names, self._texts)
