from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from ka_exporter.collectors import ExporterCollector
from ka_exporter.decode import Claim, LinkType
from ka_exporter.exposition import generate
from ka_exporter.metrics import COUNTER, INFO, METRICS, LocalState
from ka_exporter.model import Model, Segment
from tests import segments
from tests.states import model_at
from tests.test_model import every, feed

ROOT = Path(__file__).parent.parent
GOLDEN = Path(__file__).parent / "golden"
# node 2 of the reference lab during the partition: it holds VIP 51 and is a master of 51.
NODE2 = LocalState({"": frozenset({"192.0.2.12", "192.0.2.51"})}, {"": True})
ALLOW_11 = LocalState(NODE2.addresses, NODE2.netlink_up, frozenset({"192.0.2.11"}))
BUILD_INFO = re.compile(rb"^ka_exporter_build_info\{.*\n", re.MULTILINE)


def exposition(capture: str, offset: float, local: LocalState = NODE2) -> bytes:
    model, now = model_at(capture, offset)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(model, None, lambda: local, lambda: now))
    return generate_latest(registry)


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


@pytest.mark.parametrize(
    ("capture", "offset", "golden"),
    [
        ("vrrp-all.pcap", 10.0, "converged.prom"),
        ("vrrp-all.pcap", 90.5, "split-brain.prom"),
        ("vrrp-all.pcap", 104.0, "after-failover.prom"),
    ],
)
def test_golden(capture: str, offset: float, golden: str, request: pytest.FixtureRequest) -> None:
    """The whole exposition against a reviewed file; `pytest --update-golden` rewrites it."""
    text = BUILD_INFO.sub(b"", exposition(capture, offset))  # python version varies by host
    path = GOLDEN / golden
    if request.config.getoption("update_golden", default=False):
        path.write_bytes(text)
    assert samples(text) == samples(path.read_bytes())
    assert text == path.read_bytes()


def test_split_brain_view() -> None:
    s = samples(exposition("vrrp-all.pcap", 90.5))
    base = {("interface", "eth0"), ("family", "ipv4"), ("vrid", "51")}
    assert s["vrrp_split_brain", frozenset(base)] == 1
    assert s["vrrp_masters", frozenset(base)] == 2
    assert s["vrrp_local_master", frozenset(base)] == 1
    assert s["vrrp_local_vip", frozenset({*base, ("vip", "192.0.2.51")})] == 1
    assert s["vrrp_duplicate_vip", frozenset(base)] == 0


def test_expected_routers_only_with_an_allowlist() -> None:
    assert not any(n == "vrrp_router_expected" for n, _ in samples(exposition("vrrp-all.pcap", 10)))
    s = samples(exposition("vrrp-all.pcap", 10.0, ALLOW_11))
    expected = {
        dict(labels)["address"]: v for (n, labels), v in s.items() if n.endswith("expected")
    }
    assert expected["192.0.2.11"] == 1
    assert {v for a, v in expected.items() if a != "192.0.2.11"} == {0}


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian: prometheus) missing"
)
@pytest.mark.parametrize("offset", [10.0, 90.5, 120.0])
def test_promtool_check_metrics(offset: float) -> None:
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition("vrrp-all.pcap", offset),
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def trunk_exposition() -> str:
    """A trunk: VRID 51 on two VLANs, QinQ, CARP beside (vhid 51 colliding), eth1 down."""
    model = Model()
    records = segments.trunk()
    for t, frame in records:
        model.ingest(Segment("eth0"), t, frame, LinkType.ETHERNET)
    now = records[-1][0]
    local = LocalState({"": frozenset()}, {"": True}, links_up={Segment("eth1"): False})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(model, None, lambda: local, lambda: now))
    text = generate_latest(registry)
    assert generate(registry) == text  # the kept text, with VLANs, QinQ and CARP
    assert list(openmetrics_families(generate(registry, openmetrics=True).decode()))
    return text.decode()


def test_trunk_series_carry_the_vlan_and_carp_its_vhid() -> None:
    found = samples(trunk_exposition().encode())
    eth0 = {("interface", "eth0"), ("family", "ipv4")}

    def value(name: str, **labels: str) -> float | None:
        return found.get((name, frozenset(eth0 | set(labels.items()))))

    assert value("vrrp_masters", vlan="100", vrid="51") == 1
    assert value("vrrp_masters", vlan="200", vrid="51") == 1
    assert value("vrrp_masters", vlan="300.52", vrid="52") == 1
    assert value("vrrp_split_brain", vlan="100", vrid="51") == 0
    assert value("vrrp_config_mismatch", vlan="100", vrid="51", field="vips") == 0
    assert value("vrrp_carp_collision", vlan="100", vrid="51") == 1
    assert value("vrrp_carp_collision", vlan="200", vrid="51") is None
    assert value("carp_masters", vlan="100", vhid="51") == 1
    assert value("carp_masters", vlan="100", vhid="60") == 1
    assert value("carp_speaker_advskew", vlan="100", vhid="51", address="192.0.2.31") == 10
    assert not [k for k in found if k[0] == "vrrp_packets_rejected_total"]
    assert found[("ka_exporter_link_up", frozenset({("interface", "eth1")}))] == 0
    assert not [
        labels for name, labels in found if name.startswith("vrrp_") and ("vlan", "") in labels
    ]


def claims_exposition() -> str:
    """A takeover announced by its new master, one nobody announced, and a VIP two MACs
    announce in turns."""
    model = Model()
    a, b = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
    model.observe_claim(Segment("eth0"), Claim(0.0, "ipv4", "192.0.2.51", a))
    stream = [
        *every("192.0.2.11", 0, 5, vrid=51, prio=150, vips=("192.0.2.51",)),
        *every("192.0.2.11", 0, 5, vrid=52, prio=150, vips=("192.0.2.52",)),
    ]
    feed(model, sorted(stream, key=lambda adv: adv.time))
    takeover = [
        *every("192.0.2.12", 8.7, 18.9, vrid=51, vips=("192.0.2.51",)),
        *every("192.0.2.12", 8.7, 18.9, vrid=52, vips=("192.0.2.52",)),
    ]
    claims = [Claim(t, "ipv4", "192.0.2.51", mac) for t, mac in ((8.71, b), (9.0, a), (9.2, b))]
    for item in sorted([*takeover, *claims], key=lambda x: x.time):
        if isinstance(item, Claim):
            model.observe_claim(Segment("eth0"), item)
        else:
            model.observe(Segment("eth0"), item)
    local = LocalState({"": frozenset()}, {"": True})
    registry = CollectorRegistry(auto_describe=False)
    # after VRID 52's takeover went unannounced for a window (18.7), before the conflict's end
    registry.register(ExporterCollector(model, None, lambda: local, lambda: 18.9))
    return generate_latest(registry).decode()


def test_announcements_and_failovers_are_exposed() -> None:
    found = samples(claims_exposition().encode())
    eth0 = {("interface", "eth0"), ("family", "ipv4")}

    def value(name: str, **labels: str) -> float | None:
        return found.get((name, frozenset(eth0 | set(labels.items()))))

    vip = {"vip": "192.0.2.51"}
    assert value("vrrp_vip_conflict", **vip) == 1
    assert value("vrrp_vip_claimant_info", **vip, mac="02:00:00:00:00:0b") == 1
    assert value("vrrp_vip_claims_total", **vip, mac="02:00:00:00:00:0a") == 2
    assert value("vrrp_master_changes_total", vrid="51", reason="silent") == 1
    assert value("vrrp_failover_gap_seconds_count", vrid="51") == 1
    assert value("vrrp_failover_gap_seconds_bucket", vrid="51", le="5.0") == 1
    assert value("vrrp_failover_gap_seconds_bucket", vrid="51", le="2.5") == 0
    assert value("vrrp_announce_delay_seconds", vrid="51") == pytest.approx(0.01)
    assert value("vrrp_announce_missing_total", vrid="52") == 1
    assert value("vrrp_announce_missing_total", vrid="51") is None


def test_every_family_is_exposed_as_declared() -> None:
    text = exposition("vrrp-all.pcap", 104.0, ALLOW_11).decode()  # after a transition
    text += trunk_exposition() + claims_exposition()
    for name, (kind, doc) in METRICS.items():
        if name.startswith(
            ("vrrp_capture", "vrrp_untracked", "vrrp_packets", "ka_exporter_capture")
        ):
            continue  # need live taps, rejects or a flood: covered by the capture and model tests
        exposed = name + ("_total" if kind == COUNTER else "_info" if kind == INFO else "")
        assert f"# TYPE {exposed} {'gauge' if kind == INFO else kind}" in text
        assert f"# HELP {exposed} {doc}" in text
        assert re.search(rf"^{exposed}(_bucket)?(\{{| )", text, re.MULTILINE), name


def test_each_family_comes_from_one_collector_in_the_contracts_order() -> None:
    """The collectors split METRICS between them, each yielding its own families, all of them,
    in the order METRICS lists them; ExporterCollector yields them all in that order."""
    collector = ExporterCollector(Model(), None, lambda: NODE2, lambda: 0.0)
    names = [name for c in collector.collectors for name in c.names]
    assert sorted(names) == sorted(METRICS) and len(names) == len(set(names))
    for c in collector.collectors:
        assert (
            [f.name for f in c.collect()] == list(c.names) == [n for n in METRICS if n in c.names]
        )
    assert [f.name for f in collector.collect()] == list(METRICS)


def test_docs_list_every_metric_with_its_help() -> None:
    docs = (ROOT / "docs" / "metrics.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| \w+ \| .*? \| (.+?) \|$", docs, re.MULTILINE))
    for name, (kind, doc) in METRICS.items():
        exposed = name + ("_total" if kind == COUNTER else "_info" if kind == INFO else "")
        assert rows.get(exposed) == doc, exposed
    assert len(rows) == len(METRICS)


def test_no_password_in_metrics() -> None:
    text = exposition("vrrp-all.pcap", 90.5)
    for form in (b"secret12", b"secret1", b"7365637265743132", b"c2VjcmV0MTI", b"ahsecret"):
        assert form not in text
