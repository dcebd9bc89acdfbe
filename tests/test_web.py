from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from prometheus_client import CollectorRegistry

from ka_exporter import web
from ka_exporter.collectors import ExporterCollector
from ka_exporter.metrics import LocalState
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
