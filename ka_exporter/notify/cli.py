"""ka-notify: keepalived's notify hook, its delivery daemon, and the tools around the spool.

Exit status: 0 done (for the hook: the alert is committed to disk), 1 the spool cannot take it,
2 bad input (arguments or config). Each failure is one line on stderr; the hook's also go to
syslog, since keepalived sends a hook's output to /dev/null and ignores its exit status. The
hook path imports nothing heavy (no aiohttp, no prometheus_client) to stay fast.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence

from ka_exporter import version
from ka_exporter.alerting.alert import Alert, Severity, Source, Status
from ka_exporter.alerting.config import Config, ConfigError, load, make_sinks
from ka_exporter.alerting.spool import Spool, SpoolBusy, SpoolError, try_drain_lock
from ka_exporter.notify import keepalived
from ka_exporter.notify.commands import (
    PROG,
    command_parser,
    config_flag,
    fail,
    load_config,
)
from ka_exporter.notify.intake import (
    INCOMING,
    Emitted,
    flush,
    ingest,
    keep,
    kept,
    process_start,
    record,
)

DRAIN_LINGER = 30.0  # a hook-spawned worker waits this long for a retry before leaving it
HOOK_LOCK_WAIT = 0.25  # keepalived kills a STOP hook after about 1 s: keep the event elsewhere
SYSLOG = "/dev/log"
_SYSLOG_LEVELS = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}
_LOG_DAEMON = 3 << 3

# by its name, not __name__: run as `python -m` it is __main__
log = logging.getLogger("ka_exporter.notify.cli")
# what the hook and its worker say, from the app and the delivery core, goes to syslog
REPORTERS = [logging.getLogger(name) for name in ("ka_exporter.notify", "ka_exporter.alerting")]


class Syslog(logging.Handler):
    """One datagram per record to the local syslog socket, which the journal reads too."""

    def emit(self, record: logging.LogRecord) -> None:
        import socket  # noqa: PLC0415  (only when there is something to say)

        level = _SYSLOG_LEVELS.get(record.levelno, 7)
        line = f"<{_LOG_DAEMON | level}>{PROG}[{record.process}]: {self.format(record)}"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(line.encode(), SYSLOG)
        except OSError:
            pass  # no syslog on this host: what else there is (stderr) has the line


class _Line(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


def _hook_logging() -> None:
    """The hook's reports go to syslog and, for a person running it, to stderr."""
    stderr = logging.StreamHandler()
    for handler in (Syslog(), stderr):
        handler.setFormatter(_Line())
        for reports in REPORTERS:
            reports.addHandler(handler)
    for reports in REPORTERS:
        reports.propagate = False


# --- hook ----------------------------------------------------------------------------------


def _notify_form(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Options and keepalived's TYPE NAME STATE PRIORITY: those four are data even when they
    look like options (an instance named `-h`)."""
    tail = len(argv) - 4
    # `--type INSTANCE` followed by three more options is not keepalived's form
    after_value = tail > 0 and argv[tail - 1].startswith("-") and "=" not in argv[tail - 1]
    if tail >= 0 and argv[tail] in keepalived.TYPES and not after_value:
        return list(argv[:tail]), list(argv[tail:])
    return list(argv), []


def hook_main(argv: Sequence[str]) -> int:
    emitted = process_start()
    options, data = _notify_form(argv)
    parser = command_parser(
        PROG,
        'keepalived notify hook: `notify "ka-notify"` (TYPE NAME STATE PRIORITY appended by '
        'keepalived), or `notify_master "ka-notify --keepalived.state MASTER '
        '--keepalived.instance VI_1"`. Other commands: daemon, drain, queue, check-config FILE, '
        "test --sink.name NAME.",
    )
    version.add_flag(parser)
    config_flag(parser)
    parser.flag(
        "keepalived.state", "state", help="for notify_master & co., which pass no arguments"
    )
    parser.flag("keepalived.instance", "instance", help="the vrrp_instance (with the state)")
    parser.flag(
        "keepalived.type",
        "type",
        default="INSTANCE",
        choices=keepalived.TYPES,
        help="INSTANCE or GROUP (with the state)",
    )
    parser.flag(
        "keepalived.priority", "priority", type=int, help="the priority (with the state), if known"
    )
    parser.add_argument("args", nargs="*", help="what keepalived passes: ... TYPE NAME STATE PRIO")
    args = parser.parse_args(options)
    state, instance = args.keepalived_state, args.keepalived_instance
    _hook_logging()  # from here on, keepalived would hide what the hook says: syslog too
    try:
        if data:
            note = keepalived.parse_argv(data)
        elif state is not None or instance is not None:
            if state is None or instance is None:
                parser.error("--keepalived.state and --keepalived.instance go together")
            note = keepalived.from_flags(
                state, instance, args.keepalived_priority, args.keepalived_type
            )
        else:
            note = keepalived.parse_argv(args.args)
    except keepalived.ParseError as exc:
        log.error("%s", exc)
        return 2
    try:
        config = load(args.config)
    except ConfigError as exc:
        for line in exc.lines:
            log.error("%s", line)
        return 2
    try:
        spool = Spool.open(config.state_dir, lock_wait=HOOK_LOCK_WAIT)
        try:
            record(spool, config, note, Source.NOTIFY, emitted)
        finally:
            spool.close()
    except SpoolError as exc:
        return not_committed(config, note, emitted, exc)
    spawn_drainer(config)
    return 0


def not_committed(
    config: Config, note: keepalived.Notification, emitted: Emitted, exc: SpoolError
) -> int:
    """Keeps the event where it can (see intake.keep) and says so in one line; the spawned
    worker, or the daemon, records it once the spool takes it again. A busy spool is no fault:
    an event kept on state_dir's disk is as safe as committed, so that alone exits 0."""
    path, what = keep(note, Source.NOTIFY, emitted, config)
    if path is None:
        log.error("%s; %s", exc, what)
        return 1
    fine = isinstance(exc, SpoolBusy) and path.parent == config.state_dir / INCOMING
    log.log(logging.WARNING if fine else logging.ERROR, "%s; %s", exc, what)
    spawn_drainer(config)
    return 0 if fine else 1


def spawn_drainer(config: Config) -> None:
    """Double fork: a detached worker delivers what is due, so the hook can return at once."""
    if not config.sinks:
        return
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    code = 0
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # keepalived must not wait on pipes we keep open
            os.dup2(null, fd)
        for reports in REPORTERS:
            for handler in reports.handlers[:]:
                reports.removeHandler(handler)
            reports.propagate = True
        syslog = Syslog()
        syslog.setFormatter(logging.Formatter("%(message)s"))
        logging.basicConfig(level=logging.INFO, handlers=[syslog])
        code = drain(config)
    except BaseException:
        log.exception("drainer failed")
        code = 1
    finally:
        os._exit(code)


def drain(config: Config, linger: float = DRAIN_LINGER) -> int:
    """Delivers under the drain lock until nothing is due soon; one drainer (or daemon) at once.

    After letting go of the lock it looks once more: a hook that enqueued (or kept its event)
    while we held it found the lock taken and left its rows to us. A flap digest still to come
    (at most one damping window away) is waited for, so a quiet instance's digest is not left
    behind.
    """
    import asyncio  # noqa: PLC0415  (the hook path avoids asyncio and the sinks)

    from ka_exporter.alerting.worker import Worker  # noqa: PLC0415

    sinks = make_sinks(config)
    spool = Spool.open(config.state_dir)
    while True:
        # kept events first, lock or not: whoever holds it (the daemon, the exporter) delivers
        seen = set(kept(config))
        try:
            ingest(spool, config)
        except SpoolError as exc:
            log.error("%s", exc)
        if (lock := try_drain_lock(config.state_dir)) is None:
            return 0
        with lock:  # closing it lets go
            spool.release_leases()
            asyncio.run(Worker(spool, sinks).drain(linger))
            digests, digest_due = flush(spool, config, time.time(), Source.NOTIFY)
        soon = time.time() + linger
        if digests or any((due := spool.next_due(s)) is not None and due <= soon for s in sinks):
            continue
        if set(kept(config)) - seen:  # a hook kept its event while we held the lock
            continue
        if digest_due is None:
            return 0
        time.sleep(max(0.0, digest_due - time.time()))


# --- the other commands ----------------------------------------------------------------------


def check_config_main(argv: Sequence[str]) -> int:
    parser = command_parser(f"{PROG} check-config", "Check a configuration file.")
    parser.add_argument("file")
    args = parser.parse_args(argv)
    config = load_config(parser, args.file, check_sinks=True, bare=True)
    names = ", ".join(s.name for s in config.sinks) or "none"
    print(
        f"{args.file}: ok: cluster {config.cluster}, {len(config.sinks)} sinks ({names}), "
        f"{len(config.routes)} routes"
    )
    return 0


def queue_main(argv: Sequence[str]) -> int:
    parser = command_parser(f"{PROG} queue", "List pending and dead-letter deliveries.")
    config_flag(parser)
    args = parser.parse_args(argv)
    config = load_config(parser, args.config)
    try:
        spool = Spool.open(config.state_dir)
        rows, stats = spool.rows(), spool.stats()
    except SpoolError as exc:
        fail(parser.prog, exc)
    print(f"pending {stats.depth} (oldest {stats.oldest_age:.0f}s), dead letters {stats.dead}")
    for r in rows:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.due))
        print(
            f"{r.state:8} {r.sink:16} {r.alert_id} {r.name} {r.status} attempts={r.attempts} "
            f"due={when} reason={r.reason!r} summary={r.summary!r}"
        )
    return 0


def drain_main(argv: Sequence[str]) -> int:
    parser = command_parser(
        f"{PROG} drain", "Deliver what is due now and leave (for a timer where no daemon runs)."
    )
    config_flag(parser)
    args = parser.parse_args(argv)
    config = load_config(parser, args.config, check_sinks=True)
    try:
        return drain(config, linger=0.0)
    except SpoolError as exc:
        fail(parser.prog, exc)


def test_main(argv: Sequence[str]) -> int:
    parser = command_parser(f"{PROG} test", "Send one test alert through a sink now and report.")
    config_flag(parser)
    parser.flag("sink.name", "sink", help="the sink's name in the config (required)")
    args = parser.parse_args(argv)
    name = args.sink_name
    if not name:
        parser.error("the following arguments are required: --sink.name")
    config = load_config(parser, args.config, check_sinks=True)
    if name not in {s.name for s in config.sinks}:
        parser.error(f"no sink named {name!r} in {args.config}")
    import asyncio  # noqa: PLC0415

    from ka_exporter.alerting.worker import Worker  # noqa: PLC0415

    now = time.time()
    host = os.uname().nodename
    alert = Alert(
        name="KaNotifyTest",
        severity=Severity.INFO,
        status=Status.FIRING,
        source=Source.TEST,
        starts_at=now,
        ends_at=now + 300,
        labels={"cluster": config.cluster, "instance": host, "sink": name},
        annotations={"summary": f"ka-notify test from {host}", "description": "a test alert"},
    )
    sink = make_sinks(config)[name]
    try:
        spool = Spool.open(config.state_dir)
        spool.enqueue([(alert, [name])], now)
        delivery = spool.delivery(alert.id, name)
        result, reason = asyncio.run(Worker(spool, {}).deliver(sink, delivery))
    except SpoolError as exc:
        fail(parser.prog, exc)
    print(f"{name}: {result}" + (f": {reason}" if reason else ""))
    return 0 if result == "delivered" else 1


COMMANDS = {
    "check-config": check_config_main,
    "drain": drain_main,
    "queue": queue_main,
    "test": test_main,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "daemon":
        from ka_exporter.notify.service import daemon_main  # noqa: PLC0415

        return daemon_main(args[1:])
    if args and args[0] in COMMANDS:
        return COMMANDS[args[0]](args[1:])
    return hook_main(args)


if __name__ == "__main__":
    sys.exit(main())
