from __future__ import annotations

import asyncio
import gzip
import random
import shutil
import subprocess
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector

from ka_exporter import web
from ka_exporter.collectors import ExporterCollector
from ka_exporter.decode import Advert, Checksum
from ka_exporter.exposition import Family, LabelSet, TextCache, generate, negotiate
from ka_exporter.metrics import LocalState
from ka_exporter.model import Model, Segment
from ka_exporter.pcap import read
from tests.notify_servers import free_port
from tests.states import DATA, SEGMENT, model_at

NODE2 = LocalState({"": frozenset({"192.0.2.12", "192.0.2.51"})}, {"": True})
ALLOW_11 = LocalState(NODE2.addresses, NODE2.netlink_up, frozenset({"192.0.2.11"}))
AWKWARD = ['say "hi"', "back\\slash", "two\nlines", 'all\\"\n', "plain", ""]


def registry_of(model: Model, now: float, local: LocalState = NODE2) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(model, None, lambda: local, lambda: now))
    return registry


def samples(text: bytes) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    ]


@pytest.mark.parametrize("offset", [10.0, 90.5, 104.0, 120.0])
@pytest.mark.parametrize("local", [NODE2, ALLOW_11, LocalState({}, {})])
def test_same_text_as_prometheus_client(offset: float, local: LocalState) -> None:
    registry = registry_of(*model_at("vrrp-all.pcap", offset), local)
    fast, reference = generate(registry), generate_latest(registry)
    assert samples(fast) == samples(reference)
    assert fast == reference


@pytest.mark.parametrize("offset", [10.0, 90.5, 104.0, 120.0])
@pytest.mark.parametrize("local", [NODE2, ALLOW_11, LocalState({}, {})])
def test_same_openmetrics_as_prometheus_client(offset: float, local: LocalState) -> None:
    """The same samples as the text format, valid to prometheus_client's strict OpenMetrics
    parser, and the bytes its OpenMetrics encoder writes."""
    registry = registry_of(*model_at("vrrp-all.pcap", offset), local)
    fast = generate(registry, openmetrics=True)
    assert fast == openmetrics_latest(registry)
    assert fast.endswith(b"\n# EOF\n") and fast.count(b"# EOF") == 1
    parsed = [
        (s.name, s.labels, s.value)
        for family in openmetrics_families(fast.decode())
        for s in family.samples
    ]
    assert parsed == samples(generate(registry))


def test_openmetrics_with_other_collectors_ends_once() -> None:
    """prometheus_client's collectors between and after ours: one # EOF, at the end."""
    model, now = model_at("vrrp-all.pcap", 90.5)
    registry = CollectorRegistry(auto_describe=False)
    Gauge("ka_first", "Before.", ["x"], registry=registry).labels('a"b').set(2)
    registry.register(ExporterCollector(model, None, lambda: NODE2, lambda: now))
    Counter("ka_last", "After.", registry=registry).inc()
    text = generate(registry, openmetrics=True).decode()
    names = [f.name for f in openmetrics_families(text)]
    assert names[0] == "ka_first" and names[-1] == "ka_last" and "vrrp_split_brain" in names
    assert text.count("# EOF") == 1 and text.endswith("\n# EOF\n")
    assert text == openmetrics_latest(registry).decode()


PROMETHEUS_2 = (  # what Prometheus 2.x sends
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3 = (  # Prometheus 3's default scrape_protocols
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
PROMETHEUS_3_TEXT = (  # scrape_protocols: [PrometheusText1.0.0, PrometheusText0.0.4]
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
PROMETHEUS_3_PROTO = (  # protobuf first, then the rest
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;"
    "q=0.5,application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.4,*/*;q=0.1"
)
TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"
TEXT_1_0_0 = "text/plain; version=1.0.0; charset=utf-8; escaping="
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping="
ACCEPT = [
    (None, TEXT_0_0_4),
    ("", TEXT_0_0_4),
    ("*/*", TEXT_0_0_4),
    ("text/*", TEXT_0_0_4),
    ("text/plain", TEXT_0_0_4),
    ("text/plain;version=0.0.4", TEXT_0_0_4),
    ("text/plain;version=1.0.0", TEXT_1_0_0 + "underscores"),
    ("text/plain; version=1.0.0; escaping=allow-utf-8", TEXT_1_0_0 + "allow-utf-8"),
    ("text/plain;version=1.0.0;escaping=dots", TEXT_1_0_0 + "dots"),
    ("text/plain;version=1.0.0;escaping=<script>", TEXT_1_0_0 + "underscores"),  # validated
    ("application/openmetrics-text", OPENMETRICS + "underscores"),
    ("application/openmetrics-text; version=1.0.0", OPENMETRICS + "underscores"),
    ("application/*", OPENMETRICS + "underscores"),
    (
        "application/openmetrics-text;version=0.0.1",
        "application/openmetrics-text; version=0.0.1; charset=utf-8",
    ),
    (PROMETHEUS_2, OPENMETRICS + "underscores"),
    (PROMETHEUS_3, OPENMETRICS + "allow-utf-8"),
    (PROMETHEUS_3_TEXT, TEXT_1_0_0 + "allow-utf-8"),
    (PROMETHEUS_3_PROTO, OPENMETRICS + "underscores"),
    # q-values rank, whatever the order; the first listed among equals; q=0 is "not this"
    ("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5", TEXT_0_0_4),
    (
        "application/openmetrics-text;q=0.2,text/plain;version=1.0.0;q=0.7",
        TEXT_1_0_0 + "underscores",
    ),
    (
        "text/plain;version=1.0.0;q=0.5,application/openmetrics-text;q=0.5",
        TEXT_1_0_0 + "underscores",
    ),
    ("application/openmetrics-text;q=0,*/*;q=0.1", TEXT_0_0_4),
    ("application/openmetrics-text;q=0", TEXT_0_0_4),
    # versions and types not served are passed over; nothing served: text 0.0.4
    (
        "application/openmetrics-text;version=2.0.0,text/plain;version=1.0.0;q=0.1",
        TEXT_1_0_0 + "underscores",
    ),
    ("text/plain;version=0.0.5", TEXT_0_0_4),
    (
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
        TEXT_0_0_4,
    ),
    ("application/json", TEXT_0_0_4),
    # spelling: case, spaces, quotes, a q that is not a number
    (" Application/OpenMetrics-Text ; Version=1.0.0 ; Q=0.9 ", OPENMETRICS + "underscores"),
    ('application/openmetrics-text;version="1.0.0"', OPENMETRICS + "underscores"),
    ("application/openmetrics-text;q=high,text/plain;version=1.0.0", TEXT_1_0_0 + "underscores"),
]


@pytest.mark.parametrize(("accept", "content_type"), ACCEPT)
def test_negotiation(accept: str | None, content_type: str) -> None:
    fmt = negotiate(accept)
    assert fmt.content_type == content_type
    assert fmt.openmetrics == content_type.startswith("application/openmetrics-text")


def test_cached_labels_follow_the_model() -> None:
    """One collector through a whole capture (masters change, routers fall silent and expire),
    against a fresh, cacheless one at every step; the cache holds only live VRIDs."""
    model = Model()
    collector = ExporterCollector(model, None, lambda: NODE2, lambda: now)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    with open(DATA / "vrrp-all.pcap", "rb") as stream:
        packets = list(read(stream))
    start, checked = packets[0].time, 0
    for packet in packets:
        model.ingest(SEGMENT, packet.time, packet.frame, packet.linktype)
        if packet.time - start > checked:
            now = packet.time
            assert generate(registry) == generate_latest(registry_of(model, now))
            checked += 3
    now = packets[-1].time + 3600  # everything silent and forgotten
    assert generate(registry) == generate_latest(registry_of(model, now))
    assert not model.vrids and not collector.vrrp._lines


LOCALS = [
    NODE2,
    ALLOW_11,
    LocalState({}, {}),
    LocalState(
        {"": frozenset({"192.0.2.1", "198.51.100.1"})}, {"": True}, frozenset({"192.0.2.2"})
    ),
    LocalState({"": frozenset({"198.51.100.2"}), "blue": frozenset({"192.0.2.3"})}, {"": True}),
]


VIPS = [("198.51.100.1",), ("198.51.100.2",), ("198.51.100.1", "198.51.100.2")]


@pytest.mark.parametrize("seed", range(4))
def test_kept_text_follows_any_change(seed: int) -> None:
    """Random adverts on a few VRIDs (priorities, resignations, intervals, VIPs, routers coming
    and expiring, time jumping), this host's addresses and the allowlist changing: after every
    step the kept text is what the plain row-by-row rendering of the same moment writes."""
    rng = random.Random(seed)
    model, now, local = Model(), 1_767_225_600.0, [NODE2]
    registry = CollectorRegistry(auto_describe=False)
    collector = ExporterCollector(model, None, lambda: local[0], lambda: now)
    registry.register(collector)
    segments = [Segment("eth0"), Segment("eth1", "blue"), Segment("eth0", vlan="100")]
    for _ in range(400):
        for _ in range(rng.randrange(0, 8)):
            advert = Advert(
                now, "ipv4", f"192.0.2.{rng.randrange(1, 5)}", "224.0.0.18", 3,
                rng.randrange(1, 4), rng.choice([0, 100, 100, 150, 200]),
                rng.choice([100, 100, 100, 200]),
                rng.choice(VIPS),
                0, "", False, Checksum.MESSAGE, 0, 255,
            )  # fmt: skip
            model.observe(rng.choice(segments), advert)
            now += rng.choice([0.0, 0.01, 0.2])
        now += rng.choice([0.1, 0.5, 1.0, 4.0, 40.0])
        if rng.random() < 0.1:
            local[0] = rng.choice(LOCALS)
        assert generate(registry) == generate_latest(registry)
        assert generate(registry, openmetrics=True) == openmetrics_latest(registry)
    assert len(collector.vrrp._lines) == len(model.vrids)


@pytest.mark.parametrize("value", AWKWARD)
def test_label_values_are_escaped(value: str) -> None:
    family = Family("ka_test", 'Help with "quotes", a \\ and a\nnewline.', "gauge")
    family.rows.append((LabelSet({"netns": value, "interface": "eth0"}), 1))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OneFamily(family))
    text = generate(registry)
    assert text == generate_latest(registry)
    assert samples(text) == [("ka_test", {"netns": value, "interface": "eth0"}, 1.0)]
    if shutil.which("promtool"):
        check = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, check=False
        )
        assert check.returncode == 0, check.stderr


class OneFamily:
    def __init__(self, family: Family) -> None:
        self.family = family

    def collect(self) -> list[Family]:
        return [self.family]


def test_unchanged_families_are_not_written_again() -> None:
    """The cache answers only for rows equal to the last ones: same label sets, equal values."""
    cache: TextCache = {}
    eth0, eth1 = LabelSet({"interface": "eth0"}), LabelSet({"interface": "eth1"})

    def text(*rows: tuple[LabelSet, float]) -> str:
        family = Family("ka_test", "Cached.", "gauge", cache)
        family.rows.extend(rows)
        return family.body()

    first = text((eth0, 1), (eth1, 0))
    assert first == 'ka_test{interface="eth0"} 1.0\nka_test{interface="eth1"} 0.0\n'
    assert text((eth0, True), (eth1, 0.0)) is first
    second = text((eth0, 2), (eth1, 0))
    assert second == first.replace("} 1.0", "} 2.0")
    relabelled = text((LabelSet({"interface": "eth0"}), 2), (eth1, 0))
    assert relabelled == second and relabelled is not second
    assert text() == ""


@pytest.mark.parametrize(
    "value",
    [0, 1, True, 255, 256, 0.5, 1e6, 1767225600.123, 2.5e21, float("inf"), float("nan"),
     -1, -256, 12_345, 999_999, 1_000_000, 10**7 + 1, -(10**15) + 1, -(10**15), 2**64, 1.0e-7],
)  # fmt: skip
def test_values_formatted_as_prometheus_client_does(value: float) -> None:
    family = Family("ka_test", "Values.", "counter")
    family.rows.append((LabelSet({}), value))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OneFamily(family))
    assert generate(registry) == generate_latest(registry)


def test_other_collectors_rendered_in_registry_order() -> None:
    """Process metrics and other collectors of the registry keep working, in their place."""
    model, now = model_at("vrrp-all.pcap", 90.5)
    registry = CollectorRegistry(auto_describe=False)
    Gauge("ka_first", "Before.", ["x"], registry=registry).labels('a"b').set(2)
    registry.register(ExporterCollector(model, None, lambda: NODE2, lambda: now))
    Counter("ka_last", "After.", registry=registry).inc()
    registry.register(ProcessCollector(registry=None))
    names = [f.name for f in text_string_to_metric_families(generate(registry).decode())]
    assert names[0] == "ka_first" and "vrrp_split_brain" in names
    assert names.index("ka_last") > names.index("ka_exporter_build_info")
    assert any(n.startswith("process_") for n in names[names.index("ka_last") :])


def fetch(url: str, headers: dict[str, str]) -> tuple[str, str, bytes]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return (
            response.headers["Content-Type"],
            response.headers.get("Content-Encoding", ""),
            response.read(),
        )


@pytest.mark.parametrize(("accept", "content_type"), [a for a in ACCEPT if a[0] is not None])
def test_served_as_negotiated_and_gzipped(accept: str, content_type: str) -> None:
    """Over HTTP, each Accept form gets its format, the bytes prometheus_client's encoder of
    that format writes, gzipped when asked."""
    registry = registry_of(*model_at("vrrp-all.pcap", 90.5))
    openmetrics = content_type.startswith("application/openmetrics-text")
    reference = openmetrics_latest(registry) if openmetrics else generate_latest(registry)

    async def main() -> list[tuple[str, str, bytes]]:
        app = web.make_app(registry, str, lambda: True, "/metrics")
        port = free_port()
        runner = await web.serve(app, "127.0.0.1", port)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            return [
                await asyncio.to_thread(fetch, url, headers)
                for headers in ({"Accept": accept}, {"Accept": accept, "Accept-Encoding": "gzip"})
            ]
        finally:
            await runner.cleanup()

    plain, zipped = asyncio.run(main())
    assert plain == (content_type, "", reference)
    assert zipped[:2] == (content_type, "gzip")
    assert gzip.decompress(zipped[2]) == reference


def test_served_without_accept_as_text() -> None:
    registry = registry_of(*model_at("vrrp-all.pcap", 90.5))

    async def main() -> tuple[str, str, bytes]:
        app = web.make_app(registry, str, lambda: True, "/metrics")
        port = free_port()
        runner = await web.serve(app, "127.0.0.1", port)
        try:
            return await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/metrics", {})
        finally:
            await runner.cleanup()

    assert asyncio.run(main()) == (TEXT_0_0_4, "", generate_latest(registry))
