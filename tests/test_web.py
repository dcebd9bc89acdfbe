from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web as aioweb
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector

from ka_exporter import web
from ka_exporter.collectors import ExporterCollector
from ka_exporter.exposition import generate
from ka_exporter.metrics import LocalState
from lab import prometheus as prom
from tests.states import model_at


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":9743", (None, 9743)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:9743", ("::1", 9743)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_listen_address(text: str, expected: tuple[str | None, int]) -> None:
    assert web.parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["9743", "host:", "host:x", ":0", ":65536", "", ":\u00b2"])
def test_parse_listen_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        web.parse_listen_address(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def fetch(url: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(get, url)


@contextlib.asynccontextmanager
async def serving(ready: bool) -> AsyncIterator[str]:
    model, now = model_at("vrrp-all.pcap", 90.5)
    registry = CollectorRegistry(auto_describe=False)
    local = LocalState({}, {"": True})
    registry.register(ExporterCollector(model, None, lambda: local, lambda: now))
    app = web.make_app(registry, lambda: "<html>status</html>", lambda: ready, "/probe")
    port = free_port()
    runner = await web.serve(app, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def endpoints(url: str) -> None:
    status, ctype, body = await fetch(url + "/probe")
    assert status == 200 and ctype.startswith("text/plain")
    assert 'vrrp_split_brain{family="ipv4",interface="eth0",vrid="51"} 1.0' in body
    assert (await fetch(url + "/"))[2] == "<html>status</html>"
    assert (await fetch(url + "/-/healthy"))[:1] == (200,)
    assert (await fetch(url + "/-/ready"))[:1] == (200,)
    assert (await fetch(url + "/metrics"))[0] == 404  # the path is the flag's


async def not_ready(url: str) -> None:
    assert (await fetch(url + "/-/ready"))[0] == 503
    assert (await fetch(url + "/-/healthy"))[0] == 200


async def port_in_use(url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(OSError, match="address already in use"):
        await web.serve(web.make_app(CollectorRegistry(), str, bool, "/m"), "127.0.0.1", port)


@pytest.mark.parametrize(
    ("ready", "check"), [(True, endpoints), (False, not_ready), (True, port_in_use)]
)
def test_server(ready: bool, check: Callable[[str], Awaitable[None]]) -> None:
    async def main() -> None:
        async with serving(ready) as url:
            await check(url)

    asyncio.run(main())


@pytest.mark.skipif(prom.available() is not None, reason=str(prom.available()))
def test_a_real_prometheus_scrapes_openmetrics() -> None:
    """Prometheus asks for OpenMetrics first, gets it, and stores every sample: the split-brain
    of the pcap's VRID 51, the counters under their _total names, the build info."""
    model, now = model_at("vrrp-all.pcap", 90.5)
    registry = CollectorRegistry(auto_describe=False)
    local = LocalState({"": frozenset({"192.0.2.12", "192.0.2.51"})}, {"": True})
    registry.register(ExporterCollector(model, None, lambda: local, lambda: now))
    registry.register(ProcessCollector(registry=None))
    exposed = list(text_string_to_metric_families(generate(registry, openmetrics=True).decode()))
    seen: list[tuple[str, str]] = []

    @aioweb.middleware
    async def record(request: aioweb.Request, handler: aioweb.Handler) -> aioweb.StreamResponse:
        response = await handler(request)
        seen.append((request.headers.get("Accept", ""), response.headers["Content-Type"]))
        return response

    def query(prometheus: prom.Prometheus, expr: str) -> dict[str, float]:
        return {
            ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()) if k not in
                     ("__name__", "instance", "job")): float(r["value"][1])
            for r in prometheus.query(expr)
        }  # fmt: skip

    async def main() -> dict[str, dict[str, float]]:
        app = web.make_app(registry, str, lambda: True, "/metrics")
        app.middlewares.append(record)
        port = free_port()
        runner = await web.serve(app, "127.0.0.1", port)
        prometheus = prom.Prometheus({"ka": [f"127.0.0.1:{port}"]}, port=free_port())
        try:
            await asyncio.to_thread(prometheus.__enter__)
            for _ in range(100):
                found = await asyncio.to_thread(query, prometheus, "scrape_samples_scraped")
                if found:
                    break
                await asyncio.sleep(0.3)
            return {
                expr: await asyncio.to_thread(query, prometheus, expr)
                for expr in ('up', 'vrrp_split_brain{vrid="51"}', "scrape_samples_scraped",
                             "count(vrrp_router_advertisements_total)", "ka_exporter_build_info")
            }  # fmt: skip
        finally:
            await asyncio.to_thread(prometheus.__exit__, None, None, None)
            await runner.cleanup()

    results = asyncio.run(main())
    assert seen and seen[0][0].startswith("application/openmetrics-text;version=1.0.0")
    assert seen[0][1].startswith("application/openmetrics-text; version=1.0.0;")
    assert results["up"] == {"": 1}
    assert results['vrrp_split_brain{vrid="51"}'] == {"family=ipv4,interface=eth0,vrid=51": 1}
    assert results["scrape_samples_scraped"] == {"": sum(len(f.samples) for f in exposed)}
    routers = [r for f in exposed if f.name == "vrrp_router_advertisements" for r in f.samples]
    assert results["count(vrrp_router_advertisements_total)"] == {"": len(routers)}
    assert len(results["ka_exporter_build_info"]) == 1
