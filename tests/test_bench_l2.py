"""A short run of bench.live's L2 section on its own wire: ordinary ARP and ND never reach the
capture's user space, and a storm of spoofed announcements leaves the claim tracker at its cap.
`python -m bench.live --only l2` measures the same at length for docs/benchmarks.md."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.live import QUICK, Plan
from bench.live.l2 import run_l2
from bench.live.l2_frames import STORM_ADDRESSES
from ka_exporter.claims import MACS_PER_ADDRESS

STORM = 12_000  # two passes over the addresses
CAP = 4096  # ModelConfig.max_claims' default


@pytest.mark.lab
def test_l2_background_stays_in_the_kernel_and_a_storm_stays_under_the_cap(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    plan = Plan(**{**QUICK.__dict__, "cpu_seconds": 0.5})
    res = run_l2(plan, 1, tmp_path, STORM)
    for case in ("ordinary", "adverts+ordinary"):
        (m,) = res.cpu[case]
        assert m["rx_packets"] >= m["sender"]["sent"][-1] > 0, m
        adverts = m["sender"]["sent"][0] if case.startswith("adverts") else 0
        assert m["packets"] == adverts, m  # only the adverts passed the filter
        assert (m["claims"], m["rejects"]) == (0, 0), m
    (m,) = res.cpu["announce"]
    assert m["packets"] == m["sender"]["sent"][0] > 0, m
    (s,) = res.storm
    assert s["received"] == s["sender"]["sent"][0] == STORM, s
    assert s["claims"] == s["claim_limit"] == CAP, s
    assert s["most_macs"] <= MACS_PER_ADDRESS, s
    assert s["untracked_claims"] == STORM // STORM_ADDRESSES * (STORM_ADDRESSES - CAP), s
