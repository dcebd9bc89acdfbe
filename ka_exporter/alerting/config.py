"""ka-notify's one TOML file, checked in full: every error is reported with its line.

tomllib keeps no positions, so a small scan of the text maps (table, index, key) to lines;
an error without a key is reported at its table's header. A key nobody reads is named with the
known key closest to it, since that is usually what was meant.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ka_exporter.alerting.alert import Severity
from ka_exporter.alerting.sink import Sink

DEFAULT_PATH = "/etc/ka-notify.toml"
DEFAULT_STATE_DIR = "/var/lib/ka-notify"
SINK_KINDS = ("smtp", "webhook", "alertmanager", "slack")
SECRET_KEYS = ("password", "secret", "token")
SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
TOP_KEYS = {"cluster", "state_dir", "expected_peers", "damping", "sink", "route"}
DAMPING_KEYS = {"window", "threshold"}
ROUTE_KEYS = {"sinks", "alerts", "min_severity"}

SinkFactory = Callable[[str, Mapping[str, object]], Sink]

_HEADER = re.compile(r"\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")
_KEY = re.compile(r"\s*([A-Za-z0-9_-]+|\"[^\"]*\")\s*=")


@dataclass(frozen=True, slots=True)
class SinkConfig:
    name: str
    kind: str
    options: dict[str, Any]  # everything but name and type; the sink validates them


@dataclass(frozen=True, slots=True)
class Route:
    sinks: tuple[str, ...]
    alerts: frozenset[str] | None = None  # None: every alert name
    min_severity: Severity = Severity.INFO

    def matches(self, name: str, severity: Severity) -> bool:
        return (self.alerts is None or name in self.alerts) and SEVERITY_RANK[
            severity
        ] >= SEVERITY_RANK[self.min_severity]


@dataclass(frozen=True, slots=True)
class Damping:
    window: float = 60.0  # seconds
    threshold: int = 1  # messages let through per window before the rest become a digest


@dataclass(frozen=True, slots=True)
class Config:
    cluster: str = ""
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    expected_peers: frozenset[str] = frozenset()
    damping: Damping = field(default_factory=Damping)
    sinks: tuple[SinkConfig, ...] = ()
    routes: tuple[Route, ...] = ()


class ConfigError(Exception):
    """All problems of one file, each `FILE:LINE: message` (`FILE: message` without a line)."""

    def __init__(self, path: str, errors: list[tuple[int, str]]) -> None:
        self.lines = [
            f"{path}:{line}: {message}" if line else f"{path}: {message}"
            for line, message in sorted(errors)
        ]
        super().__init__("\n".join(self.lines))


class OptionsError(ValueError):
    """What a sink factory raises for several problems at once, each "<key>: <message>", so
    each is reported at its own line."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """ "; did you mean 'x'?" for the choice closest to a word that is none of them, or ""."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_key(key: str, known: Iterable[str], where: str = "") -> str:
    """`<where><key>: unknown key`, with the known key it was probably meant to be."""
    return f"{where}{key}: unknown key{did_you_mean(key, known)}"


def sink_factories() -> Mapping[str, SinkFactory]:
    """The sink types the sinks package implements (its import is deferred: hooks skip it)."""
    from ka_exporter.alerting.sinks import SINK_TYPES  # noqa: PLC0415

    return SINK_TYPES


class _Lines:
    """Where keys stand in the text: (table, index of [[table]], key) -> line number."""

    def __init__(self, text: str) -> None:
        self.keys: dict[tuple[str, int, str], int] = {}
        self.headers: dict[tuple[str, int], int] = {}
        counts: dict[str, int] = {}
        table, index = "", 0
        for number, line in enumerate(text.splitlines(), 1):
            header = _HEADER.match(line)
            if header:
                table = header.group(2)
                index = counts.get(table, -1) + 1 if header.group(1) == "[[" else 0
                counts[table] = index
                self.headers[table, index] = number
                continue
            key = _KEY.match(line)
            if key:
                self.keys.setdefault((table, index, key.group(1).strip('"')), number)

    def of(self, table: str, index: int, key: str | None = None) -> int:
        if key is not None and (table, index, key) in self.keys:
            return self.keys[table, index, key]
        return self.headers.get((table, index), 1)


def load(path: str, *, check_sinks: bool = False) -> Config:
    """Parses and checks the file; `check_sinks` also has each sink type validate its options."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ConfigError(path, [(0, f"cannot read: {reason}")]) from None
    return parse(text, path, check_sinks=check_sinks)


def parse(text: str, path: str = "<config>", *, check_sinks: bool = False) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+)", str(exc))
        line = int(match.group(1)) if match else 0
        raise ConfigError(path, [(line, str(exc).split(" (at line")[0])]) from None
    lines = _Lines(text)
    errors: list[tuple[int, str]] = []

    def error(
        message: str, table: str = "", index: int = 0, key: str | None = None, line: int = 0
    ) -> None:
        errors.append((line or lines.of(table, index, key), message))

    for key in sorted(set(raw) - TOP_KEYS):
        error(unknown_key(key, TOP_KEYS), key=key)
    cluster = raw.get("cluster", "")
    if not isinstance(cluster, str) or not cluster:
        error("cluster: a non-empty string naming the cluster is required", key="cluster")
        cluster = ""
    state_dir = raw.get("state_dir", DEFAULT_STATE_DIR)
    if not isinstance(state_dir, str) or not state_dir.startswith("/"):
        error("state_dir: must be an absolute path", key="state_dir")
        state_dir = DEFAULT_STATE_DIR
    peers = _peers(raw.get("expected_peers", []), error)
    damping = _damping(raw.get("damping", {}), error)
    sinks = _sinks(raw.get("sink", []), error, lines, check_sinks)
    routes = _routes(raw.get("route", []), {s.name for s in sinks}, error)
    if errors:
        raise ConfigError(path, errors)
    return Config(cluster, Path(state_dir), peers, damping, sinks, routes)


Error = Callable[..., None]


def _peers(value: object, error: Error) -> frozenset[str]:
    if not isinstance(value, list):
        error("expected_peers: must be a list of addresses", key="expected_peers")
        return frozenset()
    peers = set()
    for item in value:
        try:
            peers.add(str(ipaddress.ip_address(item if isinstance(item, str) else "")))
        except ValueError:
            error(f"expected_peers: not an IP address: {item!r}", key="expected_peers")
    return frozenset(peers)


def _damping(value: object, error: Error) -> Damping:
    if not isinstance(value, dict):
        error("damping: must be a table", key="damping")
        return Damping()
    for key in sorted(set(value) - DAMPING_KEYS):
        error(unknown_key(key, DAMPING_KEYS, "damping."), "damping", 0, key)
    window, threshold = value.get("window", 60), value.get("threshold", 1)
    if isinstance(window, bool) or not isinstance(window, int | float) or window <= 0:
        error("window: must be a number of seconds above 0", "damping", 0, "window")
        window = 60
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        error("threshold: must be an integer of at least 1", "damping", 0, "threshold")
        threshold = 1
    return Damping(float(window), threshold)


def _sinks(value: object, error: Error, lines: _Lines, check: bool) -> tuple[SinkConfig, ...]:
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        error("sink: must be [[sink]] tables", key="sink")
        return ()
    factories = sink_factories() if check else {}
    sinks: list[SinkConfig] = []
    for index, table in enumerate(value):
        name, kind = table.get("name"), table.get("type")
        if not isinstance(name, str) or not name:
            error("name: every sink needs a name", "sink", index, "name")
            continue
        if any(s.name == name for s in sinks):
            error(f"name: sink {name!r} is defined twice", "sink", index, "name")
        if kind not in SINK_KINDS:
            hint = did_you_mean(kind, SINK_KINDS)
            error(f"type: must be one of {', '.join(SINK_KINDS)}{hint}", "sink", index, "type")
            continue
        options = {k: v for k, v in table.items() if k not in ("name", "type")}
        secrets = [k for k in options if k in SECRET_KEYS or k.endswith(("_password", "_token"))]
        for key in secrets:
            error(
                f"{key}: secrets are not written into this file; use {key}_file (a file only "
                f"ka-notify reads) or {key}_env (an environment variable)",
                "sink",
                index,
                key,
            )
        if check and not secrets:
            try:
                factories[kind](name, dict(options))
            except ValueError as exc:
                for problem in exc.messages if isinstance(exc, OptionsError) else [str(exc)]:
                    key, _, message = problem.partition(": ")
                    line = lines.of("sink", index, key if message else None)
                    error(f"sink {name!r}: {problem}", line=line)
        sinks.append(SinkConfig(name, kind, options))
    return tuple(sinks)


def _routes(value: object, known: set[str], error: Error) -> tuple[Route, ...]:
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        error("route: must be [[route]] tables", key="route")
        return ()
    routes = []
    for index, table in enumerate(value):
        for key in sorted(set(table) - ROUTE_KEYS):
            error(unknown_key(key, ROUTE_KEYS, "route."), "route", index, key)
        sinks = table.get("sinks")
        if not isinstance(sinks, list) or not sinks or not all(isinstance(s, str) for s in sinks):
            error("sinks: a list of sink names is required", "route", index, "sinks")
            continue
        for name in sinks:
            if name not in known:
                hint = did_you_mean(name, known)
                error(f"sinks: no sink named {name!r}{hint}", "route", index, "sinks")
        alerts = table.get("alerts")
        if alerts is not None and (
            not isinstance(alerts, list) or not all(isinstance(a, str) for a in alerts)
        ):
            error("alerts: must be a list of alert names", "route", index, "alerts")
            alerts = None
        severity = table.get("min_severity", "info")
        if severity not in SEVERITY_RANK:
            error("min_severity: must be info, warning or critical", "route", index, "min_severity")
            severity = "info"
        routes.append(
            Route(tuple(sinks), None if alerts is None else frozenset(alerts), Severity(severity))
        )
    return tuple(routes)


def make_sinks(config: Config) -> dict[str, Sink]:
    """The configured sinks, built (the config was checked, so a ValueError here is a bug)."""
    factories = sink_factories()
    return {s.name: factories[s.kind](s.name, dict(s.options)) for s in config.sinks}
