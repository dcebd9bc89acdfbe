"""HTTP: /metrics, the status page, and the health endpoints Prometheus tooling expects."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from ka_exporter.exposition import generate, negotiate
from ka_exporter.webconfig import Live

SHUTDOWN_SECONDS = 0.3  # SIGTERM must end the process within a second


def parse_listen_address(text: str) -> tuple[str | None, int]:
    """`host:port`, `[v6]:port` or `:port` (all addresses), as the Go exporters take it."""
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"not host:port: {text!r}")
    host = host.strip("[]")
    return host or None, int(port)


def make_app(
    registry: CollectorRegistry,
    status_page: Callable[[], str],
    ready: Callable[[], bool],
    telemetry_path: str,
) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        # What the scraper prefers: Prometheus 2 and 3 rank OpenMetrics first, then the text
        # format (1.0.0, 0.0.4); both are written by the fast exposition.
        fmt = negotiate(request.headers.get("Accept"))
        body = generate(registry, fmt.openmetrics)
        response = web.Response(body=body, headers={"Content-Type": fmt.content_type})
        response.enable_compression()  # when the scraper accepts gzip; off the loop if large
        return response

    async def status(_: web.Request) -> web.Response:
        return web.Response(text=status_page(), content_type="text/html")

    async def healthy(_: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def readiness(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="OK\n")
        return web.Response(status=503, text="capture or netlink not up yet\n")

    app = web.Application()
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/", status)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", readiness)
    return app


async def serve(
    app: web.Application, host: str | None, port: int, live: Live | None = None
) -> web.AppRunner:
    """Starts listening; raises OSError (e.g. address in use) before anything is served.

    With a web config, every path is behind its TLS and basic auth, as in exporter-toolkit.
    """
    if live is not None:
        app.middlewares.append(live.middleware)
        app.cleanup_ctx.append(live.watching)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    try:
        ssl_context = live.ssl_context() if live is not None else None
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
