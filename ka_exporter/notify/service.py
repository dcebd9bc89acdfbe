"""`ka-notify daemon`: the FIFO reader, flap damping, the delivery worker and /metrics in one
asyncio loop. It holds the drain lock, so hook-spawned workers stand aside while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from ka_exporter import web, webconfig
from ka_exporter.alerting.alert import Source
from ka_exporter.alerting.config import Config, make_sinks
from ka_exporter.alerting.spool import Spool, SpoolError, os_reason, try_drain_lock
from ka_exporter.alerting.worker import Worker
from ka_exporter.notify import keepalived
from ka_exporter.notify.commands import (
    PROG,
    command_parser,
    config_flag,
    fail,
    load_config,
)
from ka_exporter.notify.fifo import FifoError, ensure_fifo, read_lines
from ka_exporter.notify.intake import Emitted, arrival, flush, ingest, keep, record
from ka_exporter.notify.metrics import NotifyMetrics
from ka_exporter.runtime import Runtime
from ka_exporter.webconfig import Live, WebConfig

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The daemon cannot start; the message is the one line for the operator."""


class Feed:
    """FIFO lines -> metrics and the spool (with damping); then wakes the worker. keepalived
    writes the FIFO in event order, so each line is ranked after the one read before it."""

    def __init__(
        self, config: Config, spool: Spool, metrics: NotifyMetrics, worker: Worker
    ) -> None:
        self.config, self.spool, self.metrics, self.worker = config, spool, metrics, worker
        self.last: Emitted | None = None

    def line(self, text: str) -> None:
        try:
            note = keepalived.parse_fifo_line(text)
        except keepalived.ParseError as exc:
            log.warning("fifo: %s", exc)
            try:
                with self.spool.transaction():
                    self.spool.count("events", Source.FIFO.value, "invalid")
            except SpoolError as error:
                log.error("%s", error)
            return
        self.last = arrival(self.last)
        try:
            record(self.spool, self.config, note, Source.FIFO, self.last)
        except SpoolError as exc:
            log.error("%s; %s", exc, keep(note, Source.FIFO, self.last, self.config)[1])
        self.worker.poke()

    async def flush_loop(self) -> None:
        """Sends digests when their window closes, even if the instance then stays quiet."""
        while True:
            try:
                kept = ingest(self.spool, self.config)  # what hooks could not commit
                digests, due = flush(self.spool, self.config, time.time(), Source.FIFO)
            except SpoolError as exc:
                log.error("%s", exc)
                kept, digests, due = 0, [], None
            if digests or kept:
                self.worker.poke()
            await asyncio.sleep(1.0 if due is None else min(1.0, max(0.05, due - time.time())))


async def run(
    config: Config,
    fifo: Path | None,
    listen: tuple[str | None, int],
    web_config: WebConfig | None = None,
) -> int:
    """Until SIGTERM or SIGINT (0), or until the worker, the digest loop or the FIFO reader
    ends, which the runtime logs once with its traceback (1)."""
    if fifo is not None:
        ensure_fifo(fifo)  # a path that cannot be the FIFO is a startup error, not a crash
    spool = Spool.open(config.state_dir)
    metrics = NotifyMetrics(spool)
    worker = Worker(spool, make_sinks(config))
    feed = Feed(config, spool, metrics, worker)
    while (lock := try_drain_lock(config.state_dir)) is None:
        await asyncio.sleep(0.2)  # a hook-spawned drainer may hold it for a moment
    spool.release_leases()
    app = web.make_app(metrics.registry, lambda: "ka-notify\n", lambda: True, "/metrics")
    host, port = listen
    try:
        runner = await web.serve(app, host, port, Live(web_config) if web_config else None)
    except OSError as exc:
        lock.close()
        raise StartupError(f"cannot listen on {host or ''}:{port}: {os_reason(exc)}") from None
    runtime = Runtime(log)
    runtime.handle_signals()
    try:
        runtime.spawn(worker.run(), "delivery worker")
        runtime.spawn(feed.flush_loop(), "digest loop")
        if fifo is not None:
            runtime.spawn(read_lines(fifo, feed.line), "fifo reader")
        log.info("listening on %s:%d, fifo %s", host or "*", port, fifo or "none")
        return await runtime.wait()
    finally:
        await runtime.close()
        await runner.cleanup()
        lock.close()
        spool.close()


def daemon_main(argv: Sequence[str]) -> int:
    parser = command_parser(
        f"{PROG} daemon",
        "Deliver the spool continuously, read keepalived's notify FIFO, serve /metrics.",
    )
    config_flag(parser)
    parser.flag(
        "keepalived.notify-fifo",
        type=Path,
        help="keepalived's vrrp_notify_fifo (created if missing)",
    )
    parser.flag(
        "web.listen-address",
        type=_listen,
        default=(None, 9744),
        help="host:port for /metrics (default :9744)",
    )
    parser.flag(
        "web.config.file",
        type=webconfig.from_flag,
        help="TLS and basic auth from this exporter-toolkit web config file (re-read on change)",
    )
    parser.flag(
        "log.level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="how much to log",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s level=%(levelname)s %(message)s"
    )
    config = load_config(parser, args.config, check_sinks=True)
    fifo, listen = args.keepalived_notify_fifo, args.web_listen_address
    try:
        return asyncio.run(run(config, fifo, listen, args.web_config_file))
    except SpoolError as exc:
        fail(parser.prog, exc)
    except (FifoError, StartupError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: {os_reason(exc)}\n")


def _listen(text: str) -> tuple[str | None, int]:
    try:
        return web.parse_listen_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
