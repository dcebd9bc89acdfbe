"""The exporter itself: its build, and whether it watches each namespace's addresses and links.
(Process metrics are prometheus_client's ProcessCollector, registered beside.)"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator

from prometheus_client.registry import Collector

from ka_exporter import __version__
from ka_exporter.exposition import Family, LabelSet, TextCache
from ka_exporter.metrics import Families, LocalState


class ExporterSelfCollector(Collector):
    names = ("ka_exporter_build", "ka_exporter_netlink_up")

    def __init__(self, local: Callable[[], LocalState]) -> None:
        self.local = local
        self._texts: TextCache = {}
        self._build = LabelSet({"version": __version__, "python": platform.python_version()})

    def collect(self) -> Iterator[Family]:
        f = Families(self.names, self._texts)
        for netns, up in self.local().netlink_up.items():
            f.add("ka_exporter_netlink_up", LabelSet({"netns": netns} if netns else {}), up)
        f.add("ka_exporter_build", self._build, 1)
        return iter(f)
