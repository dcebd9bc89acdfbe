"""CARP groups heard beside the VRIDs: per vhid its masters, per speaker its last advert."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.registry import Collector

from ka_exporter.exposition import Family, TextCache
from ka_exporter.metrics import Families, segment_labels
from ka_exporter.model import Model


class CarpCollector(Collector):
    names = (
        "carp_masters",
        "carp_speaker_advertisements",
        "carp_speaker_advbase_seconds",
        "carp_speaker_advskew",
        "carp_speaker_demote",
        "carp_speaker_last_advert_timestamp_seconds",
    )

    def __init__(self, model: Model, clock: Callable[[], float]) -> None:
        self.model = model
        self.clock = clock
        self._texts: TextCache = {}

    def collect(self) -> Iterator[Family]:
        f = Families(self.names, self._texts)
        add = f.add
        for view in self.model.carp_snapshot(self.clock()):
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
        return iter(f)
