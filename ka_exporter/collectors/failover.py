"""Why masters changed and how long the VIPs waited: per VRID, only for those that changed.

A steady site has no failovers to speak of, so these series exist only for VRIDs that had one:
a histogram per VRID of a large site would otherwise cost more than the rest of the scrape.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ka_exporter.exposition import Family, TextCache
from ka_exporter.metrics import METRICS, Families, segment_labels
from ka_exporter.model import GAP_BUCKETS, Model, Reason

GAP = "vrrp_failover_gap_seconds"
_BOUNDS = [*map(floatToGoString, GAP_BUCKETS), "+Inf"]


class FailoverCollector(Collector):
    names = (
        "vrrp_master_changes",
        GAP,
        "vrrp_announce_delay_seconds",
        "vrrp_announce_missing",
    )

    def __init__(self, model: Model) -> None:
        self.model = model
        self._texts: TextCache = {}

    def collect(self) -> Iterator[Family | Metric]:
        f = Families([n for n in self.names if n != GAP], self._texts)
        add = f.add
        gaps = Metric(GAP, METRICS[GAP][1], "histogram")
        for vrid in self.model.vrids.values():
            changed = vrid.reasons.keys() - {Reason.FIRST}
            if not changed and vrid.announced_after is None and not vrid.unannounced:
                continue
            key = vrid.key
            base = segment_labels(key.segment).extend(family=key.family, vrid=str(key.vrid))
            for reason in sorted(changed):
                add("vrrp_master_changes", base.extend(reason=reason), vrid.reasons[reason])
            if vrid.announced_after is not None:
                add("vrrp_announce_delay_seconds", base, vrid.announced_after)
            if vrid.unannounced:
                add("vrrp_announce_missing", base, vrid.unannounced)
            counts = vrid.gaps.counts
            if sum(counts):
                total = 0
                for bound, count in zip(_BOUNDS, counts, strict=True):
                    total += count
                    gaps.add_sample(f"{GAP}_bucket", {**base.labels, "le": bound}, total)
                gaps.add_sample(f"{GAP}_count", base.labels, total)
                gaps.add_sample(f"{GAP}_sum", base.labels, vrid.gaps.total)
        families: dict[str, Family | Metric] = {family.name: family for family in f}
        families[GAP] = gaps
        return iter([families[name] for name in self.names])
