"""/metrics latency, no network needed: a model of 4 interfaces x 255 VRIDs x 3 routers filled
directly and rendered as /metrics serves it, and by prometheus_client, next to a plain labelled
Gauge of as many samples. The capture child renders the same model during a rate step."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ka_exporter.collectors import ExporterCollector
    from ka_exporter.model import Model


SLOW_EVERY = 5  # renderings of the exporter's /metrics per one of the baseline's


@dataclass
class MetricsResults:
    routers: int
    vrids: int
    samples: int
    size: int
    ka_ms: list[float]
    baseline_ms: list[float]
    baseline_size: int
    collect_ms: list[float]  # ExporterCollector.collect() alone: reading the model, the kept text
    latest_ms: list[float]  # prometheus_client's generate_latest of the same registry


def _advert(t: float, src: str, vrid: int, priority: int) -> Any:
    from ka_exporter.decode import Advert, Checksum  # noqa: PLC0415

    vip = (f"198.51.100.{vrid}",)
    return Advert(
        t, "ipv4", src, "224.0.0.18", 3, vrid, priority, 100, vip, 0, "", False,
        Checksum.MESSAGE, 0, 255,
    )  # fmt: skip


def _filled_model() -> tuple[Model, float, frozenset[str]]:
    """4 interfaces x 255 VRIDs x 3 routers: on each VRID the first router masters, the two
    others advertised 2 s ago (an earlier episode) and are still tracked."""
    from ka_exporter.model import Model, Segment  # noqa: PLC0415

    model, t0 = Model(), 1_767_225_600.0
    local: set[str] = set()
    for i in range(4):
        segment = Segment(f"eth{i}")
        routers = [f"192.0.2.{10 * i + r + 1}" for r in range(3)]
        local.add(routers[0])
        for vrid in range(1, 256):
            local.add(f"198.51.100.{vrid}")
            for r, t, priority in ((1, t0, 120), (2, t0, 110), (0, t0 + 2.0, 150)):
                model.observe(segment, _advert(t, routers[r], vrid, priority))
    model.pop_events()
    return model, t0 + 2.1, frozenset(local)


def steady_site() -> tuple[CollectorRegistry, ExporterCollector, Callable[[], None]]:
    """The filled model behind a registry, as in the daemon (no capture), and what changes it
    between two scrapes of a steady site: every master advertises once more (advert counts and
    last-advert times change), nothing else does."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from ka_exporter.collectors import ExporterCollector  # noqa: PLC0415
    from ka_exporter.metrics import LocalState  # noqa: PLC0415

    model, start, held = _filled_model()
    now = [start]
    local = LocalState(addresses={"": held}, netlink_up={"": True})
    collector = ExporterCollector(model, None, lambda: local, lambda: now[0])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    def advertise() -> None:
        now[0] += 0.001
        for vrid in model.vrids.values():
            if vrid.master is not None:
                master = vrid.routers[vrid.master]
                observe = _advert(now[0], master.address, vrid.key.vrid, master.priority)
                model.observe(vrid.key.segment, observe)

    return registry, collector, advertise


def measure_metrics(seconds: float, minimum: int) -> MetricsResults:
    from prometheus_client import CollectorRegistry, Gauge, generate_latest  # noqa: PLC0415

    from ka_exporter.exposition import generate  # noqa: PLC0415

    ka, collector, advertise = steady_site()
    model = collector.model
    text = generate(ka)
    if text != generate_latest(ka):
        raise SystemExit("the fast exposition differs from prometheus_client's")
    samples = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))

    baseline = CollectorRegistry(auto_describe=False)
    gauge = Gauge(
        "bench_baseline",
        "A plain labelled gauge.",
        ["interface", "family", "vrid", "address"],
        registry=baseline,
    )
    for k in range(samples):
        gauge.labels(f"eth{k % 4}", "ipv4", str(1 + (k // 4) % 255), f"192.0.2.{k // 1020}").set(k)
    baseline_size = len(generate_latest(baseline))

    ka_ms: list[float] = []
    base_ms: list[float] = []
    collect_ms: list[float] = []
    latest_ms: list[float] = []
    generate_latest(baseline)  # warm-up; the exporter's was rendered above
    start = time.perf_counter()
    while len(ka_ms) < minimum or (time.perf_counter() - start < seconds and len(ka_ms) < 2000):
        # the slow ones, needed for their medians only, every SLOW_EVERY times: the exporter's
        # p99 needs the most renderings
        cases: list[tuple[Callable[[], object], list[float]]] = [(lambda: generate(ka), ka_ms)]
        if len(ka_ms) % SLOW_EVERY == 0:
            cases.append((lambda: generate_latest(baseline), base_ms))
            cases.append((lambda: generate_latest(ka), latest_ms))
        cases.append((lambda: list(collector.collect()), collect_ms))
        for render, out in cases:
            advertise()
            t = time.perf_counter()
            render()
            out.append((time.perf_counter() - t) * 1e3)
    vrids = len(model.vrids)
    return MetricsResults(
        model.router_count,
        vrids,
        samples,
        len(text),
        ka_ms,
        base_ms,
        baseline_size,
        collect_ms,
        latest_ms,
    )
