"""CARP groups heard beside the VRIDs: per vhid its masters, per speaker its last advert."""

from __future__ import annotations

from collections.abc import Iterator

from ka_exporter.collectors.base import ModelCollector
from ka_exporter.exposition import Family
from ka_exporter.metrics import segment_labels


class CarpCollector(ModelCollector):
    names = (
        "carp_masters",
        "carp_speaker_advertisements",
        "carp_speaker_advbase_seconds",
        "carp_speaker_advskew",
        "carp_speaker_demote",
        "carp_speaker_last_advert_timestamp_seconds",
    )

    def collect(self) -> Iterator[Family]:
        f = self.families()
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
