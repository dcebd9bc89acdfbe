"""Who answers for each VIP, from its announcements, for the addresses that matter
(Model.claims_snapshot)."""

from __future__ import annotations

from collections.abc import Iterator

from ka_exporter.collectors.base import ModelCollector
from ka_exporter.exposition import NO_LABELS, Family
from ka_exporter.metrics import segment_labels


class ClaimsCollector(ModelCollector):
    names = (
        "vrrp_vip_claimant",
        "vrrp_vip_claims",
        "vrrp_vip_last_claim_timestamp_seconds",
        "vrrp_vip_conflict",
        "vrrp_vip_conflicts",
        "vrrp_untracked_claims",
        "vrrp_tracked_claims",
        "vrrp_tracked_claims_limit",
    )

    def collect(self) -> Iterator[Family]:
        f = self.families()
        add, model = f.add, self.model
        for view in model.claims_snapshot(self.clock()):
            key = view.key
            base = segment_labels(key.segment).extend(family=key.family, vip=key.address)
            add("vrrp_vip_claimant", base.extend(mac=view.last_mac), 1)
            for claim in view.macs:
                add("vrrp_vip_claims", base.extend(mac=claim.mac), claim.count)
            add("vrrp_vip_last_claim_timestamp_seconds", base, max(c.last for c in view.macs))
            add("vrrp_vip_conflict", base, view.conflict_since is not None)
            add("vrrp_vip_conflicts", base, view.conflicts)
        for segment, count in model.untracked_claims.items():
            add("vrrp_untracked_claims", segment_labels(segment), count)
        add("vrrp_tracked_claims", NO_LABELS, model.claim_budget.used)
        add("vrrp_tracked_claims_limit", NO_LABELS, model.config.max_claims)
        return iter(f)
