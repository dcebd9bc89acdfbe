"""The exporter process: wires capture, netlink, the model and HTTP into one asyncio loop.

Everything that touches the outside world starts here and stops here; the core it feeds
(decode, model, ownership, metrics, status) stays pure.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp.web import AppRunner
from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from ka_exporter import __version__, privilege, status, web
from ka_exporter.alerter import Alerting, owned
from ka_exporter.alerting.alert import Alert
from ka_exporter.alerting.config import Config as NotifyConfig
from ka_exporter.alerting.spool import SpoolError
from ka_exporter.capture import (
    DEFAULT_RING_SIZE,
    Capture,
    CaptureError,
    PrivilegeError,
    check_privilege,
)
from ka_exporter.collectors import ExporterCollector
from ka_exporter.history import History
from ka_exporter.metrics import LocalState
from ka_exporter.model import INFINITY, Event, Model, ModelConfig, Segment
from ka_exporter.netlink import Link, Watcher, check_netns
from ka_exporter.peers import PeerState, PeerWatch, local_claims
from ka_exporter.runtime import Runtime
from ka_exporter.webconfig import Live, WebConfig

log = logging.getLogger(__name__)

TICK_SECONDS = 0.1  # how late a timed event (silence, lost master, split-brain) may be noticed
# how late the page may date a duplicate or orphan VIP when no alert needs it sooner: joining
# every VRID with netlink's addresses takes ~1.6 ms for 255 VRIDs, too much ten times a second
OWNERSHIP_SECONDS = 1.0
GLOB_CHARS = frozenset("*?[")


class StartupError(Exception):
    """The exporter cannot start; the message is the one line the user sees."""


@dataclass(frozen=True, slots=True)
class Settings:
    listen: tuple[str | None, int] = (None, 9743)
    telemetry_path: str = "/metrics"
    web_config: WebConfig | None = None  # TLS and basic auth
    interfaces: tuple[str, ...] = ()  # globs on the name, or on "netns/name"
    netns: tuple[str, ...] = ()
    model: ModelConfig = field(default_factory=ModelConfig)
    notify: NotifyConfig | None = None  # alert on our own events through these sinks
    expected_peers: tuple[str, ...] = ()  # any other VRRP source is an unknown router
    peers: tuple[str, ...] = ()  # other exporters whose master claims we compare with ours
    ring_size: int = DEFAULT_RING_SIZE  # bytes of capture ring per interface
    peer_names: Mapping[str, str] = field(default_factory=dict)  # address -> name, for people


def selected(segment: Segment, patterns: tuple[str, ...]) -> bool:
    if not patterns:
        return True
    full = f"{segment.netns}/{segment.interface}"
    return any(fnmatch.fnmatchcase(full if "/" in p else segment.interface, p) for p in patterns)


def describe(event: Event) -> str:
    """One logfmt line per model event."""
    key = event.key
    parts = [f"event={event.type.value}", f"interface={key.segment.interface}"]
    if key.segment.netns:
        parts.append(f"netns={key.segment.netns}")
    if key.segment.vlan:
        parts.append(f"vlan={key.segment.vlan}")
    parts += [f"family={key.family}", f"vrid={key.vrid}", f"addresses={','.join(event.addresses)}"]
    parts += [f"{k}={v}" for k, v in event.detail.items()]
    return " ".join(parts)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model = Model(settings.model)
        self.history = History()  # the status page's last hour
        self._owned_at = -INFINITY  # when the VIPs held wrongly were last looked at
        self.capture = Capture(self.model, asyncio.get_running_loop(), settings.ring_size)
        self.watchers = {ns: Watcher(ns, self._on_link) for ns in ("", *settings.netns)}
        self.links: dict[Segment, Link] = {}  # the selected interfaces netlink reports
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            ExporterCollector(self.model, self.capture, self.local, self.model_time)
        )
        self.registry.register(ProcessCollector(registry=None))
        self.runtime = Runtime(log)
        self.started = False
        self._runner: AppRunner | None = None
        self.alerting: Alerting | None = None
        notify_peers = settings.notify.expected_peers if settings.notify else frozenset()
        self.expected = frozenset(settings.expected_peers) | notify_peers
        self.peers: PeerWatch | None = None
        if settings.peers:
            cluster = settings.notify.cluster if settings.notify else ""
            self.peers = PeerWatch(
                settings.peers,
                PeerState(socket.gethostname(), cluster),
                lambda: local_claims(
                    self.model.snapshot(self.model_time(), shared=True), self.local().addresses
                ),
                self._alert,
                time.time,
            )
            self.registry.register(self.peers.collector)

    def local(self) -> LocalState:
        return LocalState(
            addresses={ns: w.local for ns, w in self.watchers.items()},
            netlink_up={ns: w.up for ns, w in self.watchers.items()},
            expected=self.expected,
            links_up={segment: link.up for segment, link in self.links.items()},
        )

    def model_time(self) -> float:
        """Now, as far as the capture has been read: the model's clock."""
        return self.capture.horizon(time.time())

    def ready(self) -> bool:
        return bool(self.capture.taps) and all(w.up for w in self.watchers.values())

    def status_page(self) -> str:
        now = self.model_time()
        self._pass(now, reading=True)  # the history as far as the table below
        return status.render(
            self.model.snapshot(now, shared=True),
            self.local().addresses,
            now,
            socket.gethostname(),
            __version__,
            self.settings.telemetry_path,
            self.model.carp_snapshot(now),
            {s: self.model.down.get(s) for s, link in self.links.items() if not link.up},
            self.history,
            self.settings.peer_names,
            self.model.claims_snapshot(now),
            self.peers.split_brains() if self.peers is not None else (),
        )

    async def start(self) -> None:
        """Checks what can be checked before touching anything, then listens, then captures,
        then lets go of the capabilities it no longer needs."""
        loop = asyncio.get_running_loop()
        pool = privilege.own_pool(loop)
        try:
            check_privilege()
            for netns in self.settings.netns:
                check_netns(netns)
        except (PrivilegeError, FileNotFoundError) as exc:
            raise StartupError(str(exc)) from None
        if self.settings.notify is not None:
            try:
                self.alerting = Alerting(
                    self.settings.notify, socket.gethostname(), self.settings.expected_peers
                )
            except SpoolError as exc:
                raise StartupError(str(exc)) from None
        app = web.make_app(
            self.registry, self.status_page, self.ready, self.settings.telemetry_path
        )
        host, port = self.settings.listen
        try:
            live = Live(self.settings.web_config) if self.settings.web_config else None
            self._runner = await web.serve(app, host, port, live)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StartupError(f"cannot listen on {host or ''}:{port}: {reason}") from None
        for watcher in self.watchers.values():
            try:
                await watcher.start()
            except PermissionError:
                raise StartupError(
                    f"cannot enter network namespace {watcher.netns!r}: needs CAP_SYS_ADMIN"
                ) from None
        self._check_interfaces()
        try:
            privilege.drop_with_pool(loop, pool, privilege.needed(bool(self.settings.netns)))
        except privilege.PrivilegeDropError as exc:
            raise StartupError(f"cannot drop capabilities: {exc}") from None
        spawn = self.runtime.spawn
        for watcher in self.watchers.values():
            spawn(watcher.run(), f"netlink watch of {watcher.netns or 'this host'}")
        spawn(self._tick(), "the model's tick")
        if self.alerting is not None:
            spawn(self.alerting.run(), "alert delivery")
        if self.peers is not None:
            spawn(self.peers.run(), "the peer watch")
        self.runtime.handle_signals()
        self.started = True
        taps = ", ".join(sorted(_where(s) for s in self.capture.taps)) or "no interface yet"
        log.info("listening on %s:%d, capturing on %s", host or "*", port, taps)

    async def stop(self) -> None:
        await self.runtime.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self.capture.close_all()
        for watcher in self.watchers.values():
            watcher.close()
        if self.alerting is not None:
            self.alerting.close()

    def _check_interfaces(self) -> None:
        known = {Segment(name, ns) for ns, w in self.watchers.items() for name in w.links.values()}
        for pattern in self.settings.interfaces:
            if not GLOB_CHARS & set(pattern) and not any(selected(s, (pattern,)) for s in known):
                raise StartupError(f"unknown interface {pattern!r}")

    def _on_link(self, segment: Segment, link: Link | None) -> None:
        if not selected(segment, self.settings.interfaces):
            return
        before = self.links.pop(segment, None)
        if link is None:
            if segment in self.capture.taps and self.started:
                log.info("stopped capturing on %s", _where(segment))
            self.capture.close(segment)
            self.model.link(segment, True, self.model_time())  # gone: nothing to hold for
        else:
            self.links[segment] = link
            if before is not None and before.up != link.up:
                log.info("link of %s is %s", _where(segment), "up" if link.up else "down")
            self.model.link(segment, link.up, self.model_time())
            self._capture(segment, link)
        for parent in {x.parent for x in (before, link) if x is not None and x.vlan}:
            self._leave_vlans(Segment(parent, segment.netns))
        if link is not None and not link.vlan:
            self._leave_vlans(segment)

    def _capture(self, segment: Segment, link: Link) -> None:
        vlan = str(link.vlan) if link.vlan else ""
        tap = self.capture.taps.get(segment)
        if tap is not None and tap.segment.vlan == vlan:
            return
        self.capture.close(segment)
        try:
            self.capture.open(segment, vlan)
            if self.started:
                log.info("capturing on %s", _where(segment))
        except PrivilegeError as exc:
            if not self.started:
                raise StartupError(str(exc)) from None
            log.error("%s", exc)
        except CaptureError as exc:
            log.warning("%s", exc)

    def _leave_vlans(self, parent: Segment) -> None:
        """Frames of a VLAN that has a captured subinterface are reported there, not on the
        parent as well."""
        vids = frozenset(
            link.vlan
            for s, link in self.links.items()
            if link.vlan and link.parent == parent.interface and s.netns == parent.netns
            and s in self.capture.taps
        )  # fmt: skip
        self.capture.elsewhere(parent, vids)

    async def _tick(self) -> None:
        while True:
            self._pass(self.model_time())
            await asyncio.sleep(TICK_SECONDS)

    def _pass(self, now: float, *, reading: bool = False) -> None:
        """Lets the model's time pass and hands its events on: the log, the history, alerts.
        `reading`: a page is about to show the VIPs this host holds wrongly, and since when."""
        self.model.advance(now)
        events = self.model.pop_events()
        for event in events:
            log.info("%s", describe(event))
        self.history.feed(events, now)
        if self.alerting is None and not reading and now - self._owned_at < OWNERSHIP_SECONDS:
            return
        views = self.model.snapshot(now, shared=True)  # read before the model changes
        held_wrongly = owned(views, self.local().addresses)
        self._owned_at = now
        self.history.own(held_wrongly, now)
        if self.alerting is not None:
            self.alerting.feed(events, held_wrongly, now)

    def _alert(self, alerts: list[Alert], now: float) -> None:
        if self.alerting is not None:
            self.alerting.commit(alerts, now)


def _where(segment: Segment) -> str:
    return f"{segment.netns}/{segment.interface}" if segment.netns else segment.interface


async def run(settings: Settings) -> int:
    """Runs until SIGTERM/SIGINT (exit status 0) or a background task fails (1); raises
    StartupError if it cannot start."""
    daemon = Daemon(settings)
    try:
        await daemon.start()
        status = await daemon.runtime.wait()
        log.info("stopping")
        return status
    finally:
        await daemon.stop()
