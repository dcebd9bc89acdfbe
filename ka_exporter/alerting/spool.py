"""The durable queue between an event and its deliveries: SQLite in WAL mode in state_dir.

The hook commits with synchronous=FULL before it exits 0, so once keepalived sees success the
alert survives a crash or power loss. Deliveries are at-least-once: a claim is a lease, and a
worker killed mid-send leaves a row that becomes due again when the lease ends; the alert id
lets receivers spot the duplicate. Marks after a send use synchronous=NORMAL (WAL): losing one
to power loss means a duplicate, never a loss.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import logging
import os
import random
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ka_exporter.alerting.alert import Alert, Status

log = logging.getLogger(__name__)

FILENAME = "spool.db"
LEASE_SECONDS = 60.0  # a claim older than this is presumed dead (longer than any sink timeout)
LOCK_WAIT = 10.0  # how long a writer waits for another one; the hook waits far less

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, body TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL REFERENCES alerts(id),
    sink TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | delivered | dead
    attempts INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    resend_at REAL,  -- delivered firing alerts a sink wants repeated until resolved
    reason TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL,
    UNIQUE (alert_id, sink)
);
CREATE INDEX IF NOT EXISTS deliveries_head ON deliveries (sink, state, seq);
CREATE TABLE IF NOT EXISTS counts (
    metric TEXT NOT NULL, a TEXT NOT NULL, b TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (metric, a, b)
);
CREATE TABLE IF NOT EXISTS kv (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    type TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL, since REAL NOT NULL,
    priority INTEGER, PRIMARY KEY (type, name)
);
"""
# Added later: where the instance's last event stands in keepalived's order (see Emitted).
_INSTANCE_ORDER = ("boot TEXT NOT NULL DEFAULT ''", "ord INTEGER NOT NULL DEFAULT 0",
                   "at REAL NOT NULL DEFAULT 0")  # fmt: skip
SCHEMA_VERSION = 1


class SpoolError(Exception):
    """The spool cannot be written; the message is one line for the operator."""


class SpoolBusy(SpoolError):
    """Another process held the spool longer than this one could wait: nothing is wrong."""


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 1.0
    cap: float = 300.0

    def delay(self, attempts: int, after: float | None, rng: random.Random) -> float:
        """Full jitter (uniform up to base*2^n, capped), never sooner than a Retry-After."""
        jitter = rng.uniform(0, min(self.cap, self.base * 2 ** min(attempts, 30)))
        return max(jitter, after or 0.0)


class Pick(enum.Enum):
    """Which pending row of a sink claim() gives.

    HEAD: the oldest, once due; the rows behind it wait (a sink that is down keeps its order).
    ANY: the oldest due row of any subject (Alert.subject) whose older rows are all done, so a
    row in backoff holds back its own subject only; one subject's rows stay in order.
    PROBE: the oldest row of another subject than the head's, due or not: whether the sink
    delivers anything at all while its head fails."""

    HEAD = "head"
    ANY = "any"
    PROBE = "probe"


@dataclass(frozen=True, slots=True)
class Delivery:
    seq: int
    alert: Alert
    sink: str
    attempts: int
    queued: float = 0.0  # when the alert was first spooled: the age max_age bounds


@dataclass(frozen=True, slots=True)
class Stats:
    depth: int
    oldest_age: float  # seconds the oldest pending delivery has waited; 0 when none
    dead: int


@dataclass(frozen=True, slots=True)
class Row:
    """One line of `ka-notify queue`: what and where, never the sink's options."""

    state: str
    sink: str
    alert_id: str
    name: str
    status: str
    attempts: int
    due: float
    reason: str
    summary: str


@dataclass(frozen=True, slots=True)
class Instance:
    """An instance's last accepted event: its state (since when) and where it stands in
    keepalived's order (`boot`, `order`; `at` compares events of different boots)."""

    state: str  # "" while only priorities were reported
    since: float
    priority: int | None
    boot: str
    order: int
    at: float


_REASONS = {
    "SQLITE_FULL": "disk full",
    "SQLITE_READONLY": "read-only",
    "SQLITE_BUSY": "locked by another process",
    "SQLITE_NOTADB": "corrupt (not an SQLite database)",
    "SQLITE_CORRUPT": "corrupt",
}


def _error(exc: sqlite3.Error, path: Path) -> SpoolError:
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith("SQLITE_IOERR") and _no_space(path):
        name = "SQLITE_FULL"  # SQLite says "disk I/O error" when the WAL index cannot grow
    if name == "SQLITE_CANTOPEN":
        return SpoolError(f"cannot open spool {path}: the directory is missing or not writable")
    error = SpoolBusy if name == "SQLITE_BUSY" else SpoolError
    return error(f"spool {path}: {_REASONS.get(name, str(exc))}")


def _no_space(path: Path) -> bool:
    try:
        fs = os.statvfs(path.parent)
    except OSError:
        return False
    return fs.f_bavail * fs.f_frsize < 65536


def os_reason(exc: OSError) -> str:
    """An OSError as words, never `[Errno N]`; ENOSPC reads "disk full" as SQLite's does."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    return os.strerror(exc.errno) if exc.errno else str(exc)


def open_private(path: Path) -> int:
    """Opens `path` read-write (created if missing) as a file of the directory's owner, 0600.

    The hook may run as root (keepalived's script_user) while the daemon runs as the user that
    owns state_dir (systemd's DynamicUser): what root creates is handed to that owner, so the
    daemon can always write it, and no file is readable by others even in a 0755 directory.
    (SQLite gives its -wal and -shm files the database file's owner and mode.)
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        st, parent = os.fstat(fd), os.stat(path.parent)
        if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (parent.st_uid, parent.st_gid):
            os.fchown(fd, parent.st_uid, parent.st_gid)
        if st.st_mode & 0o077 and os.geteuid() in (0, st.st_uid):
            os.fchmod(fd, st.st_mode & 0o700)
    except OSError:
        os.close(fd)
        raise
    return fd


def try_lock(path: Path) -> TextIO | None:
    """An exclusive lock on `path` (a file of the directory's owner) if no process holds it;
    closing the file lets go."""
    lock = os.fdopen(open_private(path), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def _migrate(conn: sqlite3.Connection) -> None:
    """Brings a spool of an older version up to date, once, whichever process opens it first."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(instances)")}
        for column in _INSTANCE_ORDER:
            if column.split()[0] not in columns:
                conn.execute(f"ALTER TABLE instances ADD COLUMN {column}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _alert(body: str) -> Alert | str:
    """The stored alert, or why it cannot be read (a row damaged or written by something else)."""
    try:
        return Alert.from_json(body)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"malformed alert in the spool ({type(exc).__name__}: {str(exc)[:80]})"


class Spool:
    def __init__(self, conn: sqlite3.Connection, path: Path, backoff: Backoff) -> None:
        self.conn, self.path, self.backoff = conn, path, backoff
        self.rng = random.Random()

    @classmethod
    def open(
        cls, state_dir: Path, backoff: Backoff | None = None, *, lock_wait: float = LOCK_WAIT
    ) -> Spool:
        path = state_dir / FILENAME
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise SpoolError(
                f"cannot create spool directory {state_dir}: {os_reason(exc)}"
            ) from None
        try:
            for name in (FILENAME, f"{FILENAME}-wal", f"{FILENAME}-shm"):
                if name == FILENAME or (state_dir / name).exists():  # left by an older version
                    os.close(open_private(state_dir / name))
        except OSError as exc:
            reason = os_reason(exc)
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                reason = f"not writable ({reason})"
            raise SpoolError(f"cannot open spool {path}: {reason}") from None
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=lock_wait)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                _migrate(conn)
        except sqlite3.Error as exc:
            raise _error(exc, path) from None
        return cls(conn, path, backoff or Backoff())

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self, durable: bool = False) -> Iterator[None]:
        """BEGIN IMMEDIATE .. COMMIT; `durable` fsyncs the commit (what the hook promises)."""
        try:
            if durable:
                self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.conn.execute("COMMIT")
            except BaseException:
                # a failed COMMIT (disk full) may have rolled back already: the reason is the
                # COMMIT's, not "cannot rollback - no transaction is active"
                if self.conn.in_transaction:
                    with suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
                raise
            finally:
                if durable:
                    self.conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise _error(exc, self.path) from None

    # --- producers -----------------------------------------------------------------------------

    def add(self, alert: Alert, sinks: Iterable[str], now: float) -> None:
        """Inside a transaction. Idempotent: the same notification to the same sink is one row."""
        self.conn.execute(
            "INSERT OR IGNORE INTO alerts (id, fingerprint, body, created) VALUES (?, ?, ?, ?)",
            (alert.id, alert.fingerprint, alert.to_json(), now),
        )
        self.conn.executemany(
            "INSERT OR IGNORE INTO deliveries (alert_id, sink, due, updated) VALUES (?, ?, ?, ?)",
            [(alert.id, sink, now, now) for sink in sinks],
        )

    def enqueue(self, items: Iterable[tuple[Alert, list[str]]], now: float) -> None:
        with self.transaction(durable=True):
            for alert, sinks in items:
                self.add(alert, sinks, now)

    def instance(self, kind: str, name: str) -> Instance | None:
        row = self.conn.execute(
            "SELECT state, since, priority, boot, ord, at FROM instances "
            "WHERE type = ? AND name = ?",
            (kind, name),
        ).fetchone()
        return None if row is None else Instance(*row)

    def put_instance(self, kind: str, name: str, inst: Instance) -> None:
        """Inside a transaction: the instance's new last event."""
        self.conn.execute(
            "INSERT OR REPLACE INTO instances (type, name, state, since, priority, boot, ord, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, name, inst.state, inst.since, inst.priority, inst.boot, inst.order, inst.at),
        )

    def instances(self) -> list[tuple[str, str, str, int | None]]:
        """(type, name, state, priority) of every instance keepalived told us about; the state
        is "" while only priorities were reported."""
        rows = self.conn.execute("SELECT type, name, state, priority FROM instances ORDER BY 1, 2")
        return [(str(t), str(n), str(s), p) for t, n, s, p in rows]

    def count(self, metric: str, a: str, b: str) -> None:
        """Inside a transaction: adds one to a counter kept here, so the work of every process
        (hook runs, their workers, the daemon) shows in one /metrics."""
        self.conn.execute(
            "INSERT INTO counts VALUES (?, ?, ?, 1) "
            "ON CONFLICT (metric, a, b) DO UPDATE SET n = n + 1",
            (metric, a, b),
        )

    def counts(self, metric: str) -> dict[tuple[str, str], int]:
        rows = self.conn.execute("SELECT a, b, n FROM counts WHERE metric = ?", (metric,))
        return {(str(a), str(b)): int(n) for a, b, n in rows}

    def get_value(self, name: str) -> str | None:
        row = self.conn.execute("SELECT value FROM kv WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_value(self, name: str, value: str) -> None:
        """Inside a transaction: small state shared by hook runs (the flap damper)."""
        self.conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (name, value))

    # --- the worker ----------------------------------------------------------------------------

    def claim(self, sink: str, now: float, pick: Pick = Pick.HEAD) -> Delivery | None:
        """The sink's next delivery to attempt (see Pick), leased, or None if none is due.
        Rows that cannot be read are set aside on the way."""
        with self.transaction():
            rows = self.conn.execute(
                "SELECT d.seq, a.body, d.attempts, d.due, d.lease_until, a.created "
                "FROM deliveries d JOIN alerts a ON a.id = d.alert_id "
                "WHERE d.sink = ? AND d.state = 'pending' ORDER BY d.seq",
                (sink,),
            )
            held: set[str] = set()  # subjects with an older row still pending
            head: str | None = None
            chosen = None
            unreadable: list[tuple[int, str]] = []
            for seq, body, attempts, due, lease, queued in rows:  # read only as far as needed
                alert = _alert(body)
                if not isinstance(alert, Alert):
                    unreadable.append((seq, alert))  # and the row behind is looked at
                    continue
                subject = alert.subject
                if head is None:
                    head = subject
                if subject in held:
                    continue
                held.add(subject)
                ready = max(due, lease) <= now
                if pick is Pick.HEAD:
                    chosen = (seq, alert, attempts, queued) if ready else None
                    break
                if pick is Pick.PROBE and subject != head and lease <= now:
                    chosen = (seq, alert, attempts, queued)  # its own backoff notwithstanding
                    break
                if pick is Pick.ANY and ready:
                    chosen = (seq, alert, attempts, queued)
                    break
            rows.close()
            for seq, reason in unreadable:
                self._set_aside(seq, sink, reason, now)
            if chosen is None:
                return None
            seq, alert, attempts, queued = chosen
            self.conn.execute(
                "UPDATE deliveries SET lease_until = ? WHERE seq = ?", (now + LEASE_SECONDS, seq)
            )
        return Delivery(seq, alert, sink, attempts, queued)

    def _set_aside(self, seq: int, sink: str, reason: str, now: float) -> None:
        """Inside a transaction: a row that cannot be read becomes a dead letter with its reason,
        reported once, so it holds back neither the rows behind it nor the daemon."""
        log.error("sink=%s delivery=%d set aside: %s", sink, seq, reason)
        self.conn.execute(
            "UPDATE deliveries SET state = 'dead', lease_until = 0, resend_at = NULL, reason = ?, "
            "updated = ? WHERE seq = ?",
            (reason, now, seq),
        )

    def release_leases(self) -> None:
        """Called by the holder of the drain lock, the only deliverer: a lease still standing
        belongs to a worker that died mid-send, and its row is due again now."""
        with self.transaction():
            self.conn.execute("UPDATE deliveries SET lease_until = 0 WHERE lease_until > 0")

    def delivery(self, alert_id: str, sink: str) -> Delivery:
        """One named delivery, claimed out of turn (`ka-notify test`)."""
        seq, body, attempts, queued = self.conn.execute(
            "SELECT d.seq, a.body, d.attempts, a.created FROM deliveries d "
            "JOIN alerts a ON a.id = d.alert_id WHERE d.alert_id = ? AND d.sink = ?",
            (alert_id, sink),
        ).fetchone()
        alert = _alert(body)
        if not isinstance(alert, Alert):
            raise SpoolError(f"spool {self.path}: {alert}")
        return Delivery(seq, alert, sink, attempts, queued)

    def next_due(self, sink: str, pick: Pick = Pick.HEAD) -> float | None:
        """When claim(sink, pick=HEAD) has the head, or claim(sink, pick=ANY) the oldest row
        of some subject, to give (None: nothing pending)."""
        if pick is Pick.HEAD:
            row = self.conn.execute(
                "SELECT max(due, lease_until) FROM deliveries "
                "WHERE sink = ? AND state = 'pending' ORDER BY seq LIMIT 1",
                (sink,),
            ).fetchone()
            return None if row is None else float(row[0])
        rows = self.conn.execute(
            "SELECT a.body, max(d.due, d.lease_until) FROM deliveries d "
            "JOIN alerts a ON a.id = d.alert_id WHERE d.sink = ? AND d.state = 'pending' "
            "ORDER BY d.seq",
            (sink,),
        ).fetchall()
        first: dict[str, float] = {}
        for n, (body, ready) in enumerate(rows):
            alert = _alert(body)  # a row that cannot be read is its own subject, set aside
            first.setdefault(alert.subject if isinstance(alert, Alert) else f"#{n}", ready)
        return min(first.values(), default=None)

    def delivered(self, d: Delivery, now: float, resend_interval: float | None) -> None:
        alert = d.alert
        resend = None
        if (
            resend_interval
            and alert.status is Status.FIRING
            and (alert.ends_at is None or alert.ends_at > now + resend_interval)
        ):
            resend = now + resend_interval
        with self.transaction():
            self.conn.execute(
                "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, "
                "lease_until = 0, resend_at = ?, reason = '', updated = ? WHERE seq = ?",
                (resend, now, d.seq),
            )

    def retry(self, d: Delivery, now: float, reason: str, after: float | None) -> float:
        """Schedules the next attempt; returns its delay."""
        delay = self.backoff.delay(d.attempts, after, self.rng)
        with self.transaction():
            self.conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, due = ?, lease_until = 0, "
                "reason = ?, updated = ? WHERE seq = ?",
                (now + delay, reason, now, d.seq),
            )
        return delay

    def dead(self, d: Delivery, now: float, reason: str) -> None:
        with self.transaction():
            self.conn.execute(
                "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, lease_until = 0, "
                "reason = ?, updated = ? WHERE seq = ?",
                (reason, now, d.seq),
            )

    def resends_due(self, sink: str, now: float) -> list[Delivery]:
        """Delivered firing alerts to repeat, unless a newer notification replaced them."""
        rows = self.conn.execute(
            "SELECT d.seq, a.body, d.attempts FROM deliveries d JOIN alerts a ON a.id = d.alert_id "
            "WHERE d.sink = ? AND d.state = 'delivered' AND d.resend_at <= ? AND NOT EXISTS ("
            " SELECT 1 FROM deliveries d2 JOIN alerts a2 ON a2.id = d2.alert_id "
            " WHERE d2.sink = d.sink AND a2.fingerprint = a.fingerprint AND d2.seq > d.seq)"
            " ORDER BY d.seq",
            (sink, now),
        ).fetchall()
        due = []
        for seq, body, n in rows:
            alert = _alert(body)
            if isinstance(alert, Alert):
                due.append(Delivery(seq, alert, sink, n))
            else:
                with self.transaction():
                    self._set_aside(seq, sink, alert, now)
        return due

    def resent(self, d: Delivery, now: float, resend_interval: float) -> None:
        alert = d.alert
        ends = alert.ends_at
        resend = now + resend_interval if ends is None or ends > now + resend_interval else None
        with self.transaction():
            self.conn.execute(
                "UPDATE deliveries SET resend_at = ?, updated = ? WHERE seq = ?",
                (resend, now, d.seq),
            )

    # --- readers -------------------------------------------------------------------------------

    def stats(self, now: float | None = None) -> Stats:
        now = time.time() if now is None else now
        depth, oldest = self.conn.execute(
            "SELECT count(*), min(a.created) FROM deliveries d JOIN alerts a ON a.id = d.alert_id "
            "WHERE d.state = 'pending'"
        ).fetchone()
        (dead,) = self.conn.execute(
            "SELECT count(*) FROM deliveries WHERE state = 'dead'"
        ).fetchone()
        return Stats(int(depth), max(0.0, now - oldest) if oldest is not None else 0.0, int(dead))

    def rows(self, states: tuple[str, ...] = ("pending", "dead")) -> list[Row]:
        marks = ", ".join("?" for _ in states)
        rows = self.conn.execute(
            "SELECT d.state, d.sink, d.alert_id, a.body, d.attempts, d.due, d.reason "
            f"FROM deliveries d JOIN alerts a ON a.id = d.alert_id WHERE d.state IN ({marks}) "
            "ORDER BY d.seq",
            states,
        ).fetchall()
        result = []
        for state, sink, alert_id, body, attempts, due, reason in rows:
            alert = _alert(body)
            if isinstance(alert, Alert):
                name, status = alert.name, alert.status.value
                summary = alert.annotations.get("summary", "")
            else:  # shown as it is; the worker sets it aside when it reaches it
                name, status, summary = "?", "?", alert
            result.append(Row(state, sink, alert_id, name, status, attempts, due, reason, summary))
        return result


LOCK_NAME = "drain.lock"


def try_drain_lock(state_dir: Path) -> TextIO | None:
    """The drain lock if it is free: whoever holds it is the spool's only deliverer."""
    return try_lock(state_dir / LOCK_NAME)
