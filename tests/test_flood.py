"""A flood of spoofed routers through live capture into the real exporter: it stays bounded and
keeps counting the legitimate routers. bench/flood.py runs the same with a million adverts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.flood import LEGIT, LEGIT_PERIOD, LEGIT_WATCH, run
from ka_exporter.model import GAP_BUCKETS, MISMATCH_FIELDS, Reason

COUNT = 200_000
DISTINCT = 16_384  # spoofed routers, four times the cap
MAX_ROUTERS = 4096  # the default
# What the series can grow to, from the cap: each tracked router has six vrrp_router_* series and,
# as acting master, a vrrp_master; each VRID key (at most 255 per family on the one segment) has
# five state series, one vrrp_config_mismatch per field, three ownership series and a
# vrrp_local_vip per VIP (the flood advertises one per family, the legitimate VRID one more),
# and, once its master changed, a vrrp_master_changes per reason but `first`, the failover gap
# histogram (a bucket per bound, +Inf, sum, count) and the announcement's delay and absence.
SERIES_PER_ROUTER = 6 + 1
FAILOVER_SERIES = (len(Reason) - 1) + (len(GAP_BUCKETS) + 3) + 2
SERIES_PER_VRID = 5 + len(MISMATCH_FIELDS) + 3 + 2 + FAILOVER_SERIES
SERIES_BOUND = MAX_ROUTERS * SERIES_PER_ROUTER + 2 * 255 * SERIES_PER_VRID + 100
RSS_PEAK_MIB = 160  # measured about 110
RSS_GROWTH_MIB = 48  # measured about 25, from idle with the legitimate routers to the peak


@pytest.mark.lab
def test_flood_of_spoofed_routers(wire: tuple[str, str], tmp_path: Path) -> None:
    a, b = wire
    result = run(a, b, COUNT, DISTINCT, 60, MAX_ROUTERS, tmp_path / "exporter.log")
    report = "\n".join(result.lines())
    assert result.sent == COUNT, report
    assert result.captured >= COUNT, report  # every frame reached the exporter's socket
    assert result.tracked == result.limit == MAX_ROUTERS, report
    assert result.untracked > 0, report
    assert result.series <= SERIES_BOUND, report
    assert result.rss_peak_kib <= RSS_PEAK_MIB * 1024, report
    assert result.rss_peak_kib - result.rss_before_kib <= RSS_GROWTH_MIB * 1024, report
    for address in LEGIT:
        caught_up, later = result.legit_adverts[address]
        assert caught_up > 0, report
        # sent every LEGIT_PERIOD; half of that rate is enough to call it counted
        assert later - caught_up >= LEGIT_WATCH / LEGIT_PERIOD / 2, report
        # adverts queued behind the flood are late, not missing: no master is lost meanwhile
        assert result.legit_transitions[address] == 0, report
