"""What bench.live runs inside its namespaces, each child started by the parent as
`python -m bench.live --role ROLE --netns NAME` and spoken to in JSON lines on stdin and stdout:
the sender in A, and in B the exporter's capture path and the baseline, scapy's sniff()."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import pickle
import resource
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.live import CHUNK, IFACE, PACE_SLEEP, PACKET_STATISTICS, SOL_PACKET, TICK, Msg
from bench.live.metrics import steady_site
from ka_exporter.capture import DEFAULT_RING_SIZE

if TYPE_CHECKING:
    from ka_exporter.model import Model

# --- shared by the children ----------------------------------------------------------------------


def _check_netns(name: str) -> None:
    """Refuses to go on anywhere but inside the bench's own namespace `name`."""
    here = os.stat("/proc/self/ns/net")
    want = os.stat(f"/run/netns/{name}")  # made by this bench's parent with `ip netns add`
    if (here.st_dev, here.st_ino) != (want.st_dev, want.st_ino):
        raise SystemExit(f"bench.live: not inside network namespace {name}; refusing to run")


def _replies() -> Callable[[Msg], None]:
    """Replies go to the real stdout; anything else printed lands on stderr."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)

    def reply(msg: Msg) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    return reply


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _link(counter: str) -> int:
    """A counter of eth0 in this process's namespace (`ip netns exec` mounts its own /sys)."""
    with open(f"/sys/class/net/{IFACE}/statistics/{counter}", encoding="ascii") as f:
        return int(f.read())


class _Meter:
    """A receiver's side of one measurement: eth0's counters, CPU and wall time since it was
    made, and the process's memory at the end."""

    def __init__(self) -> None:
        self.rx, self.rx_dropped, self.cpu = _link("rx_packets"), _link("rx_dropped"), _cpu()
        self.start = time.monotonic()

    def read(self) -> Msg:
        return {
            "rx_packets": _link("rx_packets") - self.rx,
            "rx_dropped": _link("rx_dropped") - self.rx_dropped,
            "wall": time.monotonic() - self.start,
            "cpu": _cpu() - self.cpu,
            **_memory(),
        }


def _memory() -> Msg:
    fields: Msg = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])  # KiB
    return fields


# --- the sender (namespace A) --------------------------------------------------------------------


def _send(sock: socket.socket, sets: dict[str, list[bytes]], cmd: Msg) -> Msg:
    """Sends each stream at its rate (0: as fast as possible) until its count is reached or
    `max_seconds` have passed, whichever comes first."""
    streams = [(sets[s["set"]], float(s["rate"]), int(s["count"])) for s in cmd["streams"]]
    max_seconds = float(cmd["max_seconds"])
    sent = [0] * len(streams)
    enobufs = 0
    send, clock = sock.send, time.monotonic
    tx_dropped, cpu = _link("tx_dropped"), _cpu()
    start = last = clock()
    stop = start + max_seconds
    while (now := clock()) < stop:
        pending = progressed = False
        for i, (frames, rate, count) in enumerate(streams):
            done = sent[i]
            if done >= count:
                continue
            pending = True
            due = count if rate <= 0 else min(count, int((now - start) * rate) + 1)
            end, n = min(due, done + CHUNK), len(frames)
            while done < end:
                try:
                    send(frames[done % n])
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    enobufs += 1
                    break
                done += 1
            if done > sent[i]:
                sent[i], progressed = done, True
        if not pending:
            break
        if progressed:
            last = clock()
        else:
            time.sleep(PACE_SLEEP)
    return {
        "sent": sent,
        "seconds": last - start,
        "enobufs": enobufs,
        "tx_dropped": _link("tx_dropped") - tx_dropped,
        "cpu": _cpu() - cpu,
    }


def sender_main(netns: str, frames_path: Path) -> None:
    _check_netns(netns)
    reply = _replies()
    with frames_path.open("rb") as f:
        loaded = pickle.load(f)  # written by this bench's parent, in its own private directory
    sets: dict[str, list[bytes]] = loaded
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
        sock.bind((IFACE, 0))  # protocol 0: this socket sends only
        for line in sys.stdin:
            reply(_send(sock, sets, json.loads(line)))


# --- the exporter's capture path (namespace B) ---------------------------------------------------


def _counted(model: Model) -> int:
    """Every frame the model was handed: adverts of tracked routers, rejects, untracked."""
    adverts = sum(r.adverts for v in model.vrids.values() for r in v.routers.values())
    return adverts + sum(model.rejects.values()) + sum(model.untracked.values())


_scrape: list[Callable[[], float]] = []  # the big model's /metrics, built on first use


def _scraper() -> Callable[[], float]:
    """Renders /metrics of 4 interfaces x 255 VRIDs x 3 routers, as the daemon's HTTP handler
    does: synchronously, on the event loop, after the masters advertised once more; returns
    the seconds the rendering took."""
    if not _scrape:
        from ka_exporter.exposition import generate  # noqa: PLC0415

        registry, _, advertise = steady_site()
        generate(registry)

        def render() -> float:
            advertise()
            t = time.perf_counter()
            generate(registry)
            return time.perf_counter() - t

        _scrape.append(render)
    return _scrape[0]


async def _capture_session(
    cmd: Msg, reply: Callable[[Msg], None], lines: asyncio.StreamReader
) -> Msg:
    """One measurement: a fresh Capture and Model on eth0, until the count, idleness, the
    window or (paused) the parent's "stop". With `wake`, no socket at all: an empty callback
    `wake` times a second, the floor of an asyncio process woken that often."""
    from ka_exporter.capture import Capture  # noqa: PLC0415
    from ka_exporter.model import Model, Segment  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    model = Model()
    ring = int(cmd.get("ring", DEFAULT_RING_SIZE))
    capture = Capture(model, loop, ring)
    segment = Segment(IFACE)
    expect, window, idle = int(cmd["expect"]), float(cmd["window"]), float(cmd["idle"])
    wake, scrape_at = float(cmd.get("wake", 0)), float(cmd.get("scrape_at", 0))
    stop_line: asyncio.Task[bytes] | None = None
    timers: list[asyncio.TimerHandle] = []
    scrapes: list[float] = []
    try:
        rcvbuf = 0
        if not wake:
            capture.open(segment)
            tap = capture.taps[segment]
            rcvbuf = ring
            if cmd["paused"]:  # the ring fills, nobody reads it, until the parent says "stop"
                loop.remove_reader(tap.ring.sock.fileno())
                stop_line = asyncio.ensure_future(lines.readline())
        if scrape_at:
            render = _scraper()

            def scrape() -> None:
                scrapes.append(render())

            timers.append(loop.call_later(scrape_at, scrape))
        if wake:
            due = loop.time()

            def woken() -> None:
                nonlocal due
                due += 1 / wake
                timers.append(loop.call_at(due, woken))

            woken()
        events = 0
        meter = _Meter()
        start = changed = meter.start
        seen = 0
        reply({"ready": True})
        while True:
            await asyncio.sleep(TICK)
            model.advance(time.time())  # the daemon's tick
            events += len(model.pop_events())
            now = time.monotonic()
            count = _counted(model)
            if count != seen:
                seen, changed = count, now
            if (
                (stop_line is not None and stop_line.done())
                or (expect and count >= expect)
                or (idle and count and now - changed >= idle)
                or now - start >= window
            ):
                break
        measured = meter.read()
        packets = drops = wakeups = 0
        for tap in capture.statistics():
            packets, drops, wakeups = tap.packets, tap.drops, tap.wakeups
        return {
            "received": _counted(model),
            "packets": packets,
            "drops": drops,
            "rcvbuf": rcvbuf,
            "ring": ring,
            "wakeups": wakeups,
            "active": changed - start if seen else measured["wall"],  # until the last one counted
            "routers": model.router_count,
            "untracked": sum(model.untracked.values()),
            "rejects": sum(model.rejects.values()),
            "events": events + len(model.pop_events()),
            "scrapes": scrapes,
            **measured,
        }
    finally:
        for timer in timers:
            timer.cancel()
        capture.close_all()
        if stop_line is not None and not stop_line.done():
            stop_line.cancel()


Session = Callable[[dict[str, Any], asyncio.StreamReader], Awaitable[Msg]]


async def command_loop(reply: Callable[[Msg], None], session: Session) -> None:
    """A capture child's commands on stdin, one JSON line each: `status` answers its memory,
    `arm` runs a measuring session (which may read its own stop line) and answers its result."""
    loop = asyncio.get_running_loop()
    lines = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(lines), sys.stdin)
    while line := await lines.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "status":
            reply(_memory())
        elif cmd["cmd"] == "arm":
            reply(await session(cmd, lines))


def capture_main(netns: str) -> None:
    _check_netns(netns)
    reply = _replies()
    # The whole daemon module, though only its capture path runs: the RSS measured here then
    # includes what the real process imports (aiohttp, prometheus_client, pyroute2).
    import ka_exporter.daemon  # noqa: F401, PLC0415

    asyncio.run(command_loop(reply, lambda cmd, lines: _capture_session(cmd, reply, lines)))


# --- the baseline: scapy's sniff() (namespace B) -------------------------------------------------


def sniff_main(netns: str) -> None:
    _check_netns(netns)
    reply = _replies()
    import logging  # noqa: PLC0415

    logging.getLogger("scapy").setLevel(logging.ERROR)
    from scapy.all import conf, sniff  # noqa: PLC0415
    from scapy.layers.ipsec import AH  # noqa: PLC0415
    from scapy.layers.vrrp import VRRP  # noqa: PLC0415
    from scapy.packet import bind_layers  # noqa: PLC0415

    from ka_exporter.capture import FILTER  # noqa: PLC0415

    bind_layers(AH, VRRP, nh=112)  # as in bench.decode: AH adverts are dissected to VRRP too
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "status":
            reply(_memory())
            continue
        expect, window = int(cmd["expect"]), float(cmd["window"])
        sock = conf.L2listen(iface=IFACE, filter=FILTER)  # scapy's defaults: 64 KiB buffer
        try:
            rcvbuf = sock.ins.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            counter = [0]

            def prn(_: object, counter: list[int] = counter) -> None:
                counter[0] += 1

            meter = _Meter()
            reply({"ready": True})
            sniff(opened_socket=sock, prn=prn, store=False, count=expect, timeout=window)
            measured = meter.read()
            packets, drops = struct.unpack(
                "II", sock.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            )
            reply(
                {
                    "received": counter[0],
                    "packets": packets,
                    "drops": drops,
                    "rcvbuf": rcvbuf,
                    **measured,
                }
            )
        finally:
            sock.close()
