"""The durable queue between an event and its deliveries: SQLite in WAL mode in state_dir.

The hook commits with synchronous=FULL before it exits 0, so once keepalived sees success the
alert survives a crash or power loss. Deliveries are at-least-once: a claim is a lease, and a
worker killed mid-send leaves a row that becomes due again when the lease ends; the alert id
lets receivers spot the duplicate. Marks after a send use synchronous=NORMAL (WAL): losing one
to power loss means a duplicate, never a loss.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ka_exporter.notify.alert import Alert, Status

FILENAME = "spool.db"
LEASE_SECONDS = 60.0  # a claim older than this is presumed dead (longer than any sink timeout)

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


class SpoolError(Exception):
    """The spool cannot be written; the message is the one line keepalived will log."""


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 1.0
    cap: float = 300.0

    def delay(self, attempts: int, after: float | None, rng: random.Random) -> float:
        """Full jitter (uniform up to base*2^n, capped), never sooner than a Retry-After."""
        jitter = rng.uniform(0, min(self.cap, self.base * 2 ** min(attempts, 30)))
        return max(jitter, after or 0.0)


@dataclass(frozen=True, slots=True)
class Delivery:
    seq: int
    alert: Alert
    sink: str
    attempts: int


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


def _describe(exc: sqlite3.Error, path: Path) -> str:
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "readonly" in text:
        return f"spool {path} is read-only"
    if "full" in text:
        return f"spool {path}: disk full"
    if "unable to open" in text:
        return f"cannot open spool {path}: the directory is missing or not writable"
    return f"spool {path}: {text}"


class Spool:
    def __init__(self, conn: sqlite3.Connection, path: Path, backoff: Backoff) -> None:
        self.conn, self.path, self.backoff = conn, path, backoff
        self.rng = random.Random()

    @classmethod
    def open(cls, state_dir: Path, backoff: Backoff | None = None) -> Spool:
        path = state_dir / FILENAME
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise SpoolError(f"cannot create spool directory {state_dir}: {exc.strerror}") from None
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise SpoolError(_describe(exc, path)) from None
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
                self.conn.execute("ROLLBACK")
                raise
            finally:
                if durable:
                    self.conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise SpoolError(_describe(exc, self.path)) from None

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

    def swap_state(
        self, kind: str, name: str, state: str | None, priority: int | None, now: float
    ) -> tuple[str, float] | None:
        """Inside a transaction: records what an instance reported (a state, a priority or both)
        and returns the state it replaces, with its start."""
        row = self.conn.execute(
            "SELECT state, since, priority FROM instances WHERE type = ? AND name = ?",
            (kind, name),
        ).fetchone()
        old = None if row is None else (str(row[0]), float(row[1]))
        new_state, since = (state, now) if old is None or state not in (None, old[0]) else old
        self.conn.execute(
            "INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?, ?)",
            (
                kind,
                name,
                new_state or "",
                since,
                priority if priority is not None else row and row[2],
            ),
        )
        return old

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

    def claim(self, sink: str, now: float) -> Delivery | None:
        """The sink's oldest pending delivery if it is due: one at a time keeps the order."""
        with self.transaction():
            row = self.conn.execute(
                "SELECT d.seq, a.body, d.attempts, d.due, d.lease_until FROM deliveries d "
                "JOIN alerts a ON a.id = d.alert_id "
                "WHERE d.sink = ? AND d.state = 'pending' ORDER BY d.seq LIMIT 1",
                (sink,),
            ).fetchone()
            if row is None or row[3] > now or row[4] > now:
                return None
            self.conn.execute(
                "UPDATE deliveries SET lease_until = ? WHERE seq = ?", (now + LEASE_SECONDS, row[0])
            )
        return Delivery(row[0], Alert.from_json(row[1]), sink, row[2])

    def release_leases(self) -> None:
        """Called by the holder of the drain lock, the only deliverer: a lease still standing
        belongs to a worker that died mid-send, and its row is due again now."""
        with self.transaction():
            self.conn.execute("UPDATE deliveries SET lease_until = 0 WHERE lease_until > 0")

    def delivery(self, alert_id: str, sink: str) -> Delivery:
        """One named delivery, claimed out of turn (`ka-notify test`)."""
        seq, body, attempts = self.conn.execute(
            "SELECT d.seq, a.body, d.attempts FROM deliveries d JOIN alerts a ON a.id = d.alert_id "
            "WHERE d.alert_id = ? AND d.sink = ?",
            (alert_id, sink),
        ).fetchone()
        return Delivery(seq, Alert.from_json(body), sink, attempts)

    def next_due(self, sink: str) -> float | None:
        """When the sink's head becomes claimable (None: nothing pending)."""
        row = self.conn.execute(
            "SELECT max(due, lease_until) FROM deliveries "
            "WHERE sink = ? AND state = 'pending' ORDER BY seq LIMIT 1",
            (sink,),
        ).fetchone()
        return None if row is None else float(row[0])

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
        return [Delivery(seq, Alert.from_json(body), sink, n) for seq, body, n in rows]

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
            alert = Alert.from_json(body)
            summary = alert.annotations.get("summary", "")
            result.append(
                Row(
                    state,
                    sink,
                    alert_id,
                    alert.name,
                    alert.status.value,
                    attempts,
                    due,
                    reason,
                    summary,
                )
            )
        return result
