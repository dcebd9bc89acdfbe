"""From a keepalived notification to alerts committed in the spool.

The hook and the FIFO reader share this: the instance's previous state, flap damping and
routing happen in the one durable transaction that stores the alerts, so concurrent hook runs
(separate processes) see one consistent damper and one history per instance.

Events are ranked by when keepalived emitted them, not by when they commit: hook runs of a burst
finish in any order, and an event older than the instance's last one changes neither its state
(`keepalived_vrrp_state`) nor what the receivers are told is current; it is only counted.
An event the spool cannot take is kept as a file in `incoming/` (state_dir's, or the runtime
directory's) and recorded from there, in its own place in that order, by the next deliverer.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ka_exporter.alerting.alert import Alert, Source
from ka_exporter.alerting.config import Config
from ka_exporter.alerting.damping import Damper
from ka_exporter.alerting.routing import sinks_for
from ka_exporter.alerting.spool import Instance, Spool, open_private, os_reason, try_lock
from ka_exporter.notify import keepalived

log = logging.getLogger(__name__)

DAMPED_STATES = ("MASTER", "BACKUP")  # a flapping pair; FAULT, STOP and priorities always pass
DAMPER = "damper"  # its name in the spool's kv table
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
INCOMING = "incoming"
INGEST_LOCK = "ingest.lock"
# The daemon's runtime directory (the shipped unit's RuntimeDirectory): a tmpfs, so it still
# takes an event when the disk of state_dir is full.
RUNTIME_DIR = Path(os.environ.get("KA_NOTIFY_RUNTIME_DIR", "/run/ka-notify"))


@dataclass(frozen=True, slots=True)
class Emitted:
    """When keepalived emitted an event: `at` (Unix seconds) is what the alerts carry; `order`
    (nanoseconds of CLOCK_BOOTTIME) ranks the events of one `boot` exactly."""

    at: float
    boot: str
    order: int

    def after(self, last: Instance) -> bool:
        """Whether this event is newer than the instance's last one."""
        return self.order > last.order if self.boot == last.boot else self.at >= last.at


def _boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def process_start() -> Emitted:
    """The hook's event: when keepalived forked it, read from /proc, so Python's start-up and
    the scheduler cannot reorder a burst. Forks within one clock tick rank by pid, which the
    kernel hands out in increasing order."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])
    except OSError:  # no /proc: the order the hook runs in is the best there is
        return arrival()
    hz = os.sysconf("SC_CLK_TCK")
    tick_ns = 1_000_000_000 // hz
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / hz
    return Emitted(time.time() - age, _boot_id(), ticks * tick_ns + min(os.getpid(), tick_ns - 1))


def arrival(previous: Emitted | None = None) -> Emitted:
    """An event as it is read (the FIFO): now, and strictly after `previous`."""
    order = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    if previous is not None:
        order = max(order, previous.order + 1)
    return Emitted(time.time(), previous.boot if previous else _boot_id(), order)


def _damper(spool: Spool, config: Config) -> Damper:
    damper = Damper(config.damping.window, config.damping.threshold)
    saved = spool.get_value(DAMPER)
    if saved:
        try:
            damper.load(saved)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.error("malformed flap damping state in the spool set aside (%s)", exc)
            spool.set_value(f"{DAMPER}.malformed", saved)
            damper = Damper(config.damping.window, config.damping.threshold)
    return damper


def record(
    spool: Spool,
    config: Config,
    note: keepalived.Notification,
    source: Source,
    emitted: Emitted,
    host: str | None = None,
) -> list[Alert]:
    """Stores the instance's new state and every alert it gives, routed; returns the alerts."""
    host = host or os.uname().nodename
    now = emitted.at
    with spool.transaction(durable=True):
        last = spool.instance(note.type, note.name)
        if last is not None and (last.boot, last.order) == (emitted.boot, emitted.order):
            return []  # this very event, recorded once already (then its kept file stayed)
        if last is not None and not emitted.after(last):
            spool.count("events", source.value, "stale")
            return []
        spool.count("events", source.value, note.state.lower())
        previous = None
        if last is not None and last.state and note.is_state:
            previous = keepalived.Previous(last.state, last.since)
        state = note.state if note.is_state else (last.state if last else "")
        spool.put_instance(
            note.type,
            note.name,
            Instance(
                state,
                last.since if last is not None and last.state == state else now,
                note.priority if note.priority is not None or last is None else last.priority,
                emitted.boot,
                emitted.order,
                now,
            ),
        )
        if note.is_state and (previous is None or previous.state != note.state):
            spool.count("transitions", note.type, note.name)
        damper = _damper(spool, config)
        passes, digests = True, damper.flush(now)
        leaving_fault = previous is not None and previous.state == "FAULT"
        if note.state in DAMPED_STATES and not leaving_fault:  # a resolution always goes out
            passes, closed = damper.offer(keepalived.damping_key(note), note.state, now)
            digests += closed
        spool.set_value(DAMPER, damper.dump())
        alerts = []
        if passes:
            alerts += keepalived.to_alerts(
                note, host=host, cluster=config.cluster, now=now, source=source, previous=previous
            )
        alerts += [
            keepalived.digest_alert(d, host=host, cluster=config.cluster, source=source)
            for d in digests
        ]
        for alert in alerts:
            spool.add(alert, sinks_for(alert, config), now)
    return alerts


def flush(
    spool: Spool, config: Config, now: float, source: Source, host: str | None = None
) -> tuple[list[Alert], float | None]:
    """Digests of the damping windows closed by `now`, stored; and when the next one is due."""
    host = host or os.uname().nodename
    with spool.transaction(durable=True):
        damper = _damper(spool, config)
        digests = damper.flush(now)
        alerts = [
            keepalived.digest_alert(d, host=host, cluster=config.cluster, source=source)
            for d in digests
        ]
        if digests:
            spool.set_value(DAMPER, damper.dump())
            for alert in alerts:
                spool.add(alert, sinks_for(alert, config), now)
    return alerts, damper.next_deadline()


# --- events the spool could not take ----------------------------------------------------------


def incoming_dirs(config: Config) -> tuple[Path, Path]:
    return config.state_dir / INCOMING, RUNTIME_DIR / INCOMING


def keep(
    note: keepalived.Notification, source: Source, emitted: Emitted, config: Config
) -> tuple[Path | None, str]:
    """Writes the event to the first incoming directory that takes it (the runtime directory
    only where the daemon's unit made it); returns the file, or None, and what happened to the
    event in words, for the line that reports it."""
    what = " ".join(str(v) for v in asdict(note).values() if v is not None)
    body = json.dumps({**asdict(note), "source": source.value, **asdict(emitted)}).encode()
    errors = []
    for directory in incoming_dirs(config):
        if not directory.parent.is_dir():
            continue
        path = directory / f"{emitted.order:020d}-{os.getpid()}.json"
        try:
            if not directory.is_dir():
                directory.mkdir(mode=0o700)
                if os.geteuid() == 0:  # the directory's owner's, as every file in it
                    st = directory.parent.stat()
                    os.chown(directory, st.st_uid, st.st_gid)
            _write_durably(path, body)
        except OSError as exc:
            errors.append(f"{directory}: {os_reason(exc)}")
            continue
        return path, f"{what} kept in {path}"
    return None, f"{what} lost, no incoming directory takes it: {', '.join(errors) or 'none'}"


def _write_durably(path: Path, body: bytes) -> None:
    """`path` holding `body`, whole or not at all, on disk when this returns (a file of the
    directory's owner, 0600: see open_private)."""
    temp = path.with_suffix(".tmp")
    try:
        fd = open_private(temp)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        temp.rename(path)
    except OSError:
        temp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def kept(config: Config) -> list[Path]:
    """The events kept in incoming directories, oldest first."""
    dirs = [d for d in incoming_dirs(config) if d.is_dir()]
    return sorted((p for d in dirs for p in d.glob("*.json")), key=lambda p: p.name)


def ingest(spool: Spool, config: Config) -> int:
    """Records the kept events, oldest first, and removes their files; returns how many. A file
    that cannot be read is reported once and set aside (renamed *.bad). One process at a time:
    another one ingesting now has them, or sees them when it looks again."""
    try:
        lock = try_lock(config.state_dir / INGEST_LOCK)
    except OSError:  # state_dir not writable: neither is the spool
        return 0
    if lock is None:
        return 0
    with lock:
        return _ingest(spool, config)


def _ingest(spool: Spool, config: Config) -> int:
    paths = kept(config)
    for path in paths:
        try:
            raw = json.loads(path.read_bytes())
            note = keepalived.checked(
                raw["type"], raw["name"], raw["state"], raw["priority"], keepalived.EVENTS
            )
            emitted = Emitted(float(raw["at"]), str(raw["boot"]), int(raw["order"]))
            source = Source(raw["source"])
        except OSError as exc:
            log.error("kept event %s cannot be read: %s", path, os_reason(exc))
            continue
        except (ValueError, KeyError, TypeError) as exc:  # ParseError is a ValueError
            log.error("kept event %s set aside as %s: %s", path, path.suffix, exc)
            path.rename(path.with_suffix(".bad"))
            continue
        record(spool, config, note, source, emitted)  # a SpoolError leaves the file for later
        path.unlink(missing_ok=True)
    return len(paths)
