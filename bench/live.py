"""Live capture against scapy's sniff(), /metrics latency and memory, all measured in one run.

    python -m bench.live [--quick] [--rounds N] [--write docs/benchmarks.md]

Needs root. The run makes two network namespaces of its own, kabXXXX-a and kabXXXX-b, joined by
a veth pair (eth0 on both sides, no addresses, IPv6 off), and every frame it sends goes from A to
B and carries documentation addresses only (192.0.2.0/24, 198.51.100.0/24, 2001:db8::/32). The
work is done by child processes, each started with `ip netns exec` and refusing to run unless it
finds itself inside its bench namespace:

- a sender in A, writing prebuilt frames on eth0 through an AF_PACKET socket, paced by a clock
  check every few frames, every send loop bounded both in frames and in seconds;
- the exporter's capture path in B: `ka_exporter.capture.Capture` feeding a `Model` in an
  asyncio loop, with the daemon's 0.1 s tick (`advance` + `pop_events`), as the daemon runs it;
- the baseline in B: scapy's own `sniff()` on `conf.L2listen` with the same BPF filter and
  scapy's defaults (64 KiB receive buffer), its `prn` callback only counting.

Only one receiver has a socket open at a time, and they take turns at each step, so all see
the same moments of a shared, noisy machine; what is reported are medians over rounds and ratios
to the baseline, absolute rates only as context. Measured: the highest zero-drop rate up a
ladder of rates (also with one /metrics rendering of a large model on the capture's event loop,
as the daemon's HTTP handler does it); a burst sent flat out; what the capture ring holds with
the reader stopped; CPU at a normal advert rate with and without UDP background, next to an
empty asyncio loop woken as often; memory idle and after a flood of spoofed routers. Every child
is stopped by PID and both namespaces deleted on the way out, Ctrl-C included. /metrics latency
needs no network: a model is filled directly and rendered as /metrics serves it, and by
prometheus_client, next to a plain labelled Gauge of as many samples.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import datetime
import errno
import json
import os
import pickle
import platform
import queue
import random
import resource
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ka_exporter.capture import DEFAULT_RING_SIZE

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from bench.decode import Instance
    from ka_exporter.metrics import ExporterCollector
    from ka_exporter.model import Model

ROOT = Path(__file__).resolve().parent.parent
LIVE_START, LIVE_END = "<!-- bench:live:start -->", "<!-- bench:live:end -->"
METRICS_START, METRICS_END = "<!-- bench:metrics:start -->", "<!-- bench:metrics:end -->"
DESCRIPTION = "Live capture against scapy's sniff(), /metrics latency and memory, in one run."
TIMES = "\u00d7"
IFACE = "eth0"
SOL_PACKET, PACKET_STATISTICS = 263, 6

RATE_TARGET = 50_000  # adverts/s with zero drops, on one core
CPU_TARGET = 2.0  # % of one core under 100k pps of background traffic
METRICS_TARGET_MS = 20.0  # /metrics p50 for 255 VRIDs x 3 routers x 4 interfaces
BACKGROUND_PPS = 100_000
ADVERT_RATE = 500  # adverts/s during the CPU measurement
PAUSED_FRAMES = 400_000  # sent with the exporter's reader stopped, to see what the ring holds
BURST_RING = 48 << 20  # --capture.ring-size for the burst target; the default is 8 MiB
FLOOD_FRAMES = 6_144  # distinct spoofed routers, above the 4096 cap
FLOOD_RATE = 20_000

CHUNK = 32  # frames sent between two clock checks
PACE_SLEEP = 0.0002  # seconds the sender sleeps when it is ahead of its schedule
TICK = 0.1  # the daemon's TICK_SECONDS; the capture driver looks at its model then too
IDLE_STOP = 0.5  # a receiver that saw frames and then none for this long is done
SHORTFALL = 0.95  # a step whose sender reached less than this share of the rate says nothing


# --- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    rounds: int
    step_seconds: float
    ladder: tuple[int, ...]
    floor: tuple[int, ...]  # tried downwards when a receiver fails the ladder's first rung
    burst: int
    cpu_seconds: float
    metrics_seconds: float
    metrics_min: int  # renderings of the exporter's /metrics at least (the baseline: half)
    site_frames: int = 20_000


DEFAULT = Plan(
    rounds=3,
    step_seconds=1.5,
    ladder=(5_000, 10_000, 25_000, 50_000, 75_000, 100_000, 150_000, 200_000),
    floor=(2_500, 1_000, 500),
    burst=300_000,
    cpu_seconds=4.0,
    metrics_seconds=10.0,
    metrics_min=20,
)
QUICK = Plan(
    rounds=1,
    step_seconds=1.0,
    ladder=(10_000, 25_000, 50_000, 75_000, 100_000, 150_000),
    floor=(5_000, 2_500, 1_000),
    burst=300_000,
    cpu_seconds=1.5,
    metrics_seconds=2.0,
    metrics_min=4,
)

Msg = dict[str, Any]


_T0 = time.monotonic()


def _progress(text: str) -> None:
    print(f"[{time.monotonic() - _T0:5.1f} s] {text}", file=sys.stderr, flush=True)


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


def _sender_main(netns: str, frames_path: Path) -> None:
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

        registry, _, advertise = _steady_site()
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
        rx, rx_dropped, cpu = _link("rx_packets"), _link("rx_dropped"), _cpu()
        start = changed = time.monotonic()
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
        wall, cpu = time.monotonic() - start, _cpu() - cpu
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
            "rx_packets": _link("rx_packets") - rx,
            "rx_dropped": _link("rx_dropped") - rx_dropped,
            "wall": wall,
            "active": changed - start if seen else wall,  # until the last frame counted
            "cpu": cpu,
            "routers": model.router_count,
            "untracked": sum(model.untracked.values()),
            "rejects": sum(model.rejects.values()),
            "events": events + len(model.pop_events()),
            "scrapes": scrapes,
            **_memory(),
        }
    finally:
        for timer in timers:
            timer.cancel()
        capture.close_all()
        if stop_line is not None and not stop_line.done():
            stop_line.cancel()


async def _capture_loop(reply: Callable[[Msg], None]) -> None:
    loop = asyncio.get_running_loop()
    lines = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(lines), sys.stdin)
    while line := await lines.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "status":
            reply(_memory())
        elif cmd["cmd"] == "arm":
            reply(await _capture_session(cmd, reply, lines))


def _capture_main(netns: str) -> None:
    _check_netns(netns)
    reply = _replies()
    # The whole daemon module, though only its capture path runs: the RSS measured here then
    # includes what the real process imports (aiohttp, prometheus_client, pyroute2).
    import ka_exporter.daemon  # noqa: F401, PLC0415

    asyncio.run(_capture_loop(reply))


# --- the baseline: scapy's sniff() (namespace B) -------------------------------------------------


def _sniff_main(netns: str) -> None:
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

            rx, rx_dropped, cpu = _link("rx_packets"), _link("rx_dropped"), _cpu()
            start = time.monotonic()
            reply({"ready": True})
            sniff(opened_socket=sock, prn=prn, store=False, count=expect, timeout=window)
            wall, cpu = time.monotonic() - start, _cpu() - cpu
            packets, drops = struct.unpack(
                "II", sock.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            )
            reply(
                {
                    "received": counter[0],
                    "packets": packets,
                    "drops": drops,
                    "rcvbuf": rcvbuf,
                    "rx_packets": _link("rx_packets") - rx,
                    "rx_dropped": _link("rx_dropped") - rx_dropped,
                    "wall": wall,
                    "cpu": cpu,
                    **_memory(),
                }
            )
        finally:
            sock.close()


# --- the parent: frames ------------------------------------------------------------------------


def _documentation_site(
    original: Callable[[random.Random], list[Instance]],
) -> Callable[[random.Random], list[Instance]]:
    """bench.decode's site with its addresses moved into the documentation ranges."""

    def site(rng: random.Random) -> list[Instance]:
        instances = original(rng)
        for inst in instances:
            v = inst.vrid
            if inst.kind == "v3_ipv6":
                inst.routers = (f"2001:db8:{v:x}::2", f"2001:db8:{v:x}::3")
                inst.vips = tuple(f"2001:db8:{v:x}::{i + 1:x}" for i in range(len(inst.vips)))
            else:
                inst.routers = (f"192.0.2.{2 * v}", f"192.0.2.{2 * v + 1}")
                inst.vips = tuple(f"198.51.100.{v + 100 * i}" for i in range(len(inst.vips)))
        return instances

    return site


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _respoof(template: bytes, src: str, vrid: int) -> bytes:
    """A scapy-built VRRPv3 advert (Ethernet, no IP options) from another source and VRID,
    its IPv4 header and RFC 5798 pseudo-header checksums made anew: thousands of them cost
    microseconds each instead of scapy's milliseconds."""
    b = bytearray(template)
    if b[12:14] == b"\x08\x00":
        ip, vrrp = 14, 34
        b[ip + 12 : ip + 16] = socket.inet_pton(socket.AF_INET, src)
        b[ip + 10 : ip + 12] = bytes(2)
        b[ip + 10 : ip + 12] = _checksum(bytes(b[ip:vrrp])).to_bytes(2)
        pseudo = bytes(b[ip + 12 : ip + 20]) + struct.pack("!BBH", 0, 112, len(b) - vrrp)
    else:
        ip, vrrp = 14, 54
        b[ip + 8 : ip + 24] = socket.inet_pton(socket.AF_INET6, src)
        pseudo = bytes(b[ip + 8 : ip + 40]) + struct.pack("!I3xB", len(b) - vrrp, 112)
    b[vrrp + 1] = vrid
    b[vrrp + 6 : vrrp + 8] = bytes(2)
    b[vrrp + 6 : vrrp + 8] = _checksum(pseudo + bytes(b[vrrp:])).to_bytes(2)
    return bytes(b)


def build_frames(plan: Plan, seed: int) -> tuple[dict[str, list[bytes]], str]:
    """The frame sets the sender plays, and a description of the site stream."""
    from unittest import mock  # noqa: PLC0415

    from scapy.layers.inet import IP, UDP  # noqa: PLC0415
    from scapy.layers.inet6 import IPv6  # noqa: PLC0415
    from scapy.layers.l2 import Ether  # noqa: PLC0415
    from scapy.layers.vrrp import VRRPv3  # noqa: PLC0415
    from scapy.packet import Raw  # noqa: PLC0415

    import bench.decode as bd  # noqa: PLC0415
    from ka_exporter.decode import Advert, decode  # noqa: PLC0415

    with mock.patch.object(bd, "_site", _documentation_site(bd._site)):
        stream, expected = bd.synthetic(plan.site_frames, seed)
    note = bd.check(stream, expected)
    site = [f.frame for f in stream.frames]
    description = f"{stream.description.split(' over ')[0]} ({note})"

    udp = [
        bytes(
            Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
            / IP(src="192.0.2.250", dst="198.51.100.250", ttl=64)
            / UDP(sport=40000 + i, dport=9)
            / Raw(bytes(18))
        )
        for i in range(256)
    ]
    v4 = bytes(
        Ether(src="02:00:5e:00:01:01", dst="01:00:5e:00:00:12")
        / IP(src="192.0.2.1", dst="224.0.0.18", ttl=255)
        / VRRPv3(vrid=1, priority=100, adv=100, addrlist=["198.51.100.1"])
    )
    v6 = bytes(
        Ether(src="02:00:5e:00:02:01", dst="33:33:00:00:00:12")
        / IPv6(src="2001:db8::1", dst="ff02::12", hlim=255, nh=112)
        / VRRPv3(vrid=1, priority=100, adv=100, addrlist=["2001:db8::1"])
    )
    pool = [f"192.0.2.{i}" for i in range(1, 255)] + [f"198.51.100.{i}" for i in range(1, 255)]
    flood: list[bytes] = []
    for i in range(FLOOD_FRAMES // 2):
        flood.append(_respoof(v4, pool[i % len(pool)], 1 + i // len(pool)))
        flood.append(_respoof(v6, f"2001:db8::{i + 1:x}", 1 + i % 255))
    routers = set()
    for frame in flood:
        advert = decode(frame, 0.0)
        if not isinstance(advert, Advert):
            raise SystemExit(f"bench.live: a flood frame does not decode: {advert}")
        routers.add((advert.family, advert.vrid, advert.src))
    if len(routers) != len(flood):
        raise SystemExit("bench.live: the flood's sources are not all distinct")
    for frame in udp:
        if isinstance(decode(frame, 0.0), Advert):
            raise SystemExit("bench.live: a background frame decodes as an advert")
    return {"site": site, "udp": udp, "flood": flood}, description


# --- the parent: namespaces and children -------------------------------------------------------


def _ip(*args: str, check: bool = True) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    # If the parent dies without cleaning up, the kernel stops its children all the same.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """A child in a bench namespace, spoken to in JSON lines."""

    def __init__(self, name: str, netns: str, role: str, *extra: str) -> None:
        self.name = name
        argv = [sys.executable, "-m", "bench.live", "--role", role, "--netns", netns, *extra]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, *argv],  # execs in place: the PID is python's
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            start_new_session=True,  # Ctrl-C reaches the parent only, which stops us by PID
            preexec_fn=_child_setup,  # noqa: PLW1509
        )
        self.replies: queue.Queue[Msg | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.replies.put(json.loads(line))
        self.replies.put(None)

    def send(self, msg: Msg) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float) -> Msg:
        try:
            msg = self.replies.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no answer within {timeout:.0f} s") from None
        if msg is None:
            raise RuntimeError(f"{self.name} exited ({self.proc.poll()})")
        return msg

    def ask(self, msg: Msg, timeout: float) -> Msg:
        self.send(msg)
        return self.receive(timeout)

    def close(self) -> None:
        """EOF first, then SIGTERM, then SIGKILL, always to this child's own PID."""
        proc = self.proc
        if proc.stdin is not None:
            with suppress(OSError):
                proc.stdin.close()
        for stop in (None, proc.terminate, proc.kill):
            if stop is not None and proc.poll() is None:
                stop()
            try:
                proc.wait(timeout=3)
                return
            except subprocess.TimeoutExpired:
                continue


@contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C waits while a teardown runs: half a teardown would leak a namespace."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Wire:
    """Two namespaces joined by a veth pair, and the children that live in them."""

    def __init__(self) -> None:
        tag = secrets.token_hex(2)
        self.a, self.b = f"kab{tag}-a", f"kab{tag}-b"
        self.namespaces: list[str] = []
        self.children: list[Child] = []

    def __enter__(self) -> Wire:
        try:
            for ns in (self.a, self.b):
                with _signals_held():
                    _ip("netns", "add", ns)
                    self.namespaces.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
                for key in ("all", "default"):  # no ND/MLD chatter, no IPv6 stack work
                    _ip(
                        "netns",
                        "exec",
                        ns,
                        "sysctl",
                        "-q",
                        "-w",
                        f"net.ipv6.conf.{key}.disable_ipv6=1",
                    )
            # Created inside A with its peer inside B: never an interface of the root namespace.
            _ip(
                "-n",
                self.a,
                "link",
                "add",
                IFACE,
                "type",
                "veth",
                "peer",
                "name",
                IFACE,
                "netns",
                self.b,
            )
            for ns in (self.a, self.b):
                _ip("-n", ns, "link", "set", IFACE, "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def start(self, name: str, netns: str, role: str, *extra: str) -> Child:
        with _signals_held():
            child = Child(name, netns, role, *extra)
            self.children.append(child)
        return child

    def stop(self, child: Child) -> None:
        with _signals_held():
            child.close()
            self.children.remove(child)

    def __exit__(self, *_: object) -> None:
        with _signals_held():
            for child in reversed(self.children):
                child.close()
            self.children.clear()
            for ns in self.namespaces:
                _ip("netns", "del", ns, check=False)
            self.namespaces.clear()


# --- the parent: measurements ------------------------------------------------------------------


@dataclass
class Step:
    receiver: str
    offered: float  # frames/s asked of the sender; 0 = as fast as it can
    sent: int
    send_rate: float
    received: int
    packets: int
    drops: int
    rx_dropped: int
    tx_dropped: int
    enobufs: int
    cpu: float
    wall: float
    machine: float  # cores busy on the whole machine meanwhile (/proc/stat)
    reply: Msg

    @property
    def load(self) -> float:
        """The receiver's CPU time as a share of one core, while it was counting frames (an
        exporter that stopped on idleness waited half a second more, doing nothing)."""
        active = float(self.reply.get("active", self.wall))
        return self.cpu / active if active > 0 else 0.0

    @property
    def clean(self) -> bool:
        """Every frame sent was counted, and nothing was dropped on the way."""
        return (
            self.drops == 0
            and self.received == self.sent
            and self.rx_dropped == 0
            and self.tx_dropped == 0
        )

    @property
    def sender_short(self) -> bool:
        return self.offered > 0 and self.send_rate < SHORTFALL * self.offered


def _busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [float(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


@dataclass
class Bench:
    plan: Plan
    wire: Wire
    sender: Child
    receivers: dict[str, tuple[Child, Msg]]  # name -> child, and what its arm adds

    def step(
        self,
        receiver: str,
        streams: Sequence[Msg],
        *,
        window: float,
        max_seconds: float,
        expect: int,
        idle: float = IDLE_STOP,
        paused: bool = False,
        extra: Msg | None = None,
    ) -> Step:
        rx, options = self.receivers[receiver]
        arm = {"cmd": "arm", "expect": expect, "window": window, "idle": idle, "paused": paused}
        rx.ask({**arm, **options, **(extra or {})}, timeout=30)
        busy, total = _busy()
        out = self.sender.ask(
            {"streams": list(streams), "max_seconds": max_seconds}, timeout=max_seconds + 30
        )
        if paused:
            rx.send({"cmd": "stop"})
        got = rx.receive(timeout=window + 30)
        busy2, total2 = _busy()
        machine = (busy2 - busy) / (total2 - total) * (os.cpu_count() or 1) if total2 > total else 0
        sent = int(out["sent"][0])  # the first stream is the one the receiver counts
        seconds = float(out["seconds"])
        step = Step(
            receiver,
            float(streams[0]["rate"]),
            sent,
            sent / seconds if seconds > 0 else 0.0,
            int(got["received"]),
            int(got["packets"]),
            int(got["drops"]),
            int(got["rx_dropped"]),
            int(out["tx_dropped"]),
            int(out["enobufs"]),
            float(got["cpu"]),
            float(got["wall"]),
            machine,
            {**got, "sender": out},
        )
        print(
            f"  {receiver:9} offered {step.offered:>9,.0f}/s sent {sent:>8,} at"
            f" {step.send_rate:>9,.0f}/s: received {step.received:>8,}, kernel drops"
            f" {step.drops:>7,}, receiver CPU {step.load:4.0%}, cores busy {machine:.1f}"
            f"{'' if step.clean else '  <- not clean'}",
            file=sys.stderr,
            flush=True,
        )
        return step

    def rate_step(self, receiver: str, rate: int) -> Step:
        seconds = self.plan.step_seconds
        count = round(rate * seconds)
        scapy = receiver == "scapy"
        return self.step(
            receiver,
            [{"set": "site", "rate": rate, "count": count}],
            # scapy's sniff() cannot tell idleness: it stops at the count or at its timeout
            window=seconds + (0.6 if scapy else 5.0),
            max_seconds=seconds * 1.5 + 0.5,
            expect=count,
            extra={"scrape_at": seconds / 3} if receiver == "ka+scrape" else None,
        )

    def burst(self, receiver: str, window: float) -> Step:
        n = self.plan.burst
        return self.step(
            receiver,
            [{"set": "site", "rate": 0, "count": n}],
            window=window,
            max_seconds=20.0,
            expect=n,
            extra={"ring": BURST_RING},
        )

    def cpu(self, case: str) -> Step:
        """One CPU case: `ka` (adverts only), `ka+bg` (adverts and background), `ka+udp`
        (background only), `scapy+bg`, or `wake` (no socket: an asyncio loop woken as often as
        adverts arrive)."""
        seconds = self.plan.cpu_seconds
        adverts = round(ADVERT_RATE * seconds) if case != "ka+udp" else 0
        streams: list[Msg] = [{"set": "site", "rate": ADVERT_RATE, "count": adverts}]
        if case.endswith(("+bg", "+udp")):
            count = round(BACKGROUND_PPS * seconds)
            streams.append({"set": "udp", "rate": BACKGROUND_PPS, "count": count})
        if case == "wake":
            streams = [{"set": "site", "rate": 1, "count": 0}]
        return self.step(
            case.partition("+")[0],
            streams,
            window=seconds,
            max_seconds=seconds + 0.5,
            expect=0,
            idle=0,
            extra={"wake": ADVERT_RATE} if case == "wake" else None,
        )


@dataclass
class Ladder:
    """One receiver's climb in one round: up the rungs until a step fails."""

    passed: list[int] = field(default_factory=list)
    failed: int | None = None
    sender_limited: bool = False
    steps: list[Step] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.failed is not None or self.sender_limited

    def record(self, rate: int, step: Step) -> None:
        self.steps.append(step)
        if step.sender_short:
            self.sender_limited = True
        elif step.clean:
            self.passed.append(rate)
        else:
            self.failed = rate

    @property
    def best(self) -> int:
        return max(self.passed, default=0)


@dataclass
class LiveResults:
    description: str
    ladders: dict[str, list[Ladder]]
    bursts: dict[str, list[Step]]
    cpu: dict[str, list[Step]]
    paused: Step
    idle: dict[str, Step]
    flood: Step
    sender_max: list[float]
    frame_size: float
    enobufs: int  # sends the kernel refused for want of buffer, over the whole run


RECEIVERS = ("ka", "scapy")
LADDER = ("ka", "ka+scrape", "scapy")
CPU_CASES = ("wake", "ka", "ka+bg", "ka+udp", "scapy+bg")


def run_live(plan: Plan, seed: int, workdir: Path) -> LiveResults:
    _progress("building frames")
    sets, description = build_frames(plan, seed)
    frames_path = workdir / "frames.pickle"
    with frames_path.open("wb") as f:
        pickle.dump(sets, f)
    with Wire() as wire:
        _progress(f"namespaces {wire.a}, {wire.b}")
        sender = wire.start("sender", wire.a, "sender", "--frames", str(frames_path))
        ka = wire.start("capture", wire.b, "capture")
        scapy = wire.start("scapy sniff", wire.b, "sniff")
        fresh = wire.start("capture (memory)", wire.b, "capture")
        # its own process: the scraped model's objects would slow the other's garbage collector
        scraped = wire.start("capture (scraped)", wire.b, "capture")
        receivers: dict[str, tuple[Child, Msg]] = {
            "ka": (ka, {}),
            "ka+scrape": (scraped, {}),  # scrape_at is set per step
            "scapy": (scapy, {}),
            "fresh": (fresh, {}),
            "wake": (ka, {}),
        }
        bench = Bench(plan, wire, sender, receivers)
        for child in (ka, scapy, fresh, scraped):
            child.ask({"cmd": "status"}, timeout=60)  # started, imports done

        _progress("memory: idle, then a flood of spoofed routers")
        idle = {
            name: bench.step(
                name,
                [{"set": "site", "rate": 1, "count": 0}],
                window=0.5,
                max_seconds=0.1,
                expect=0,
                idle=0,
            )
            for name in ("fresh", "scapy")
        }
        flood = bench.step(
            "fresh",
            [{"set": "flood", "rate": FLOOD_RATE, "count": FLOOD_FRAMES}],
            window=FLOOD_FRAMES / FLOOD_RATE + 10,
            max_seconds=FLOOD_FRAMES / FLOOD_RATE * 2 + 1,
            expect=FLOOD_FRAMES,
        )
        wire.stop(fresh)

        ladders: dict[str, list[Ladder]] = {r: [] for r in LADDER}
        bursts: dict[str, list[Step]] = {r: [] for r in RECEIVERS}
        cpu: dict[str, list[Step]] = {case: [] for case in CPU_CASES}
        for r in range(plan.rounds):
            order = LADDER[r % len(LADDER) :] + LADDER[: r % len(LADDER)]
            _progress(f"round {r + 1}/{plan.rounds}: rate ladder")
            climbs = {name: Ladder() for name in LADDER}
            for rate in plan.ladder:
                for name in order:
                    if not climbs[name].done:
                        climbs[name].record(rate, bench.rate_step(name, rate))
            for name in order:  # a receiver that failed the first rung: down until it passes
                climb = climbs[name]
                if climb.failed == plan.ladder[0]:
                    for rate in plan.floor:
                        step = bench.rate_step(name, rate)
                        climb.steps.append(step)
                        if step.clean and not step.sender_short:
                            climb.passed.append(rate)
                            break
                ladders[name].append(climb)

            _progress(f"round {r + 1}/{plan.rounds}: burst")
            send_seconds = 0.0
            for name in RECEIVERS:
                # scapy cannot tell idleness, so its window follows the exporter's burst
                window = 60.0 if name == "ka" else max(2.0, send_seconds * 1.5 + 0.5)
                step = bench.burst(name, window)
                send_seconds = max(send_seconds, step.sent / max(step.send_rate, 1.0))
                bursts[name].append(step)

            _progress(f"round {r + 1}/{plan.rounds}: CPU")
            shift = r % len(CPU_CASES)
            for case in CPU_CASES[shift:] + CPU_CASES[:shift]:
                cpu[case].append(bench.cpu(case))

        _progress("capture ring, reader stopped")
        paused = bench.step(
            "ka",
            [{"set": "site", "rate": 0, "count": PAUSED_FRAMES}],
            window=60.0,
            max_seconds=20.0,
            expect=0,
            idle=0,
            paused=True,
            extra={"ring": BURST_RING},
        )
        sender_max = [s.send_rate for steps in bursts.values() for s in steps]
    size = statistics.mean(len(f) for f in sets["site"])
    every = [s for ls in ladders.values() for lad in ls for s in lad.steps]
    every += [s for steps in (*bursts.values(), *cpu.values()) for s in steps]
    enobufs = sum(s.enobufs for s in every)
    return LiveResults(
        description, ladders, bursts, cpu, paused, idle, flood, sender_max, size, enobufs
    )


# --- /metrics latency (no network) -------------------------------------------------------------


@dataclass
class MetricsResults:
    routers: int
    vrids: int
    samples: int
    size: int
    ka_ms: list[float]
    baseline_ms: list[float]
    baseline_size: int
    collect_ms: list[float]  # ExporterCollector.collect() alone: the exporter's own share
    latest_ms: list[float]  # prometheus_client's generate_latest of the same registry


def _advert(t: float, src: str, vrid: int, priority: int) -> Any:
    from ka_exporter.decode import Advert, Checksum  # noqa: PLC0415

    vip = (f"198.51.100.{vrid}",)
    return Advert(
        t, "ipv4", src, "224.0.0.18", 3, vrid, priority, 100, vip, 0, "", False,
        Checksum.MESSAGE, 0, 255,
    )  # fmt: skip


def _filled_model() -> tuple[Model, float, frozenset[str]]:
    """4 interfaces x 255 VRIDs x 3 routers: on each VRID the first router masters, the two
    others advertised 2 s ago (an earlier episode) and are still tracked."""
    from ka_exporter.model import Model, Segment  # noqa: PLC0415

    model, t0 = Model(), 1_767_225_600.0
    local: set[str] = set()
    for i in range(4):
        segment = Segment(f"eth{i}")
        routers = [f"192.0.2.{10 * i + r + 1}" for r in range(3)]
        local.add(routers[0])
        for vrid in range(1, 256):
            local.add(f"198.51.100.{vrid}")
            for r, t, priority in ((1, t0, 120), (2, t0, 110), (0, t0 + 2.0, 150)):
                model.observe(segment, _advert(t, routers[r], vrid, priority))
    model.pop_events()
    return model, t0 + 2.1, frozenset(local)


def _steady_site() -> tuple[CollectorRegistry, ExporterCollector, Callable[[], None]]:
    """The filled model behind a registry, as in the daemon (no capture), and what changes it
    between two scrapes of a steady site: every master advertises once more (advert counts and
    last-advert times change), nothing else does."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from ka_exporter.metrics import ExporterCollector, LocalState  # noqa: PLC0415

    model, start, held = _filled_model()
    now = [start]
    local = LocalState(addresses={"": held}, netlink_up={"": True})
    collector = ExporterCollector(model, None, lambda: local, lambda: now[0])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    def advertise() -> None:
        now[0] += 0.001
        for vrid in model.vrids.values():
            if vrid.master is not None:
                master = vrid.routers[vrid.master]
                observe = _advert(now[0], master.address, vrid.key.vrid, master.priority)
                model.observe(vrid.key.segment, observe)

    return registry, collector, advertise


def measure_metrics(seconds: float, minimum: int) -> MetricsResults:
    from prometheus_client import CollectorRegistry, Gauge, generate_latest  # noqa: PLC0415

    from ka_exporter.exposition import generate  # noqa: PLC0415

    ka, collector, advertise = _steady_site()
    model = collector.model
    text = generate(ka)
    if text != generate_latest(ka):
        raise SystemExit("the fast exposition differs from prometheus_client's")
    samples = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))

    baseline = CollectorRegistry(auto_describe=False)
    gauge = Gauge(
        "bench_baseline",
        "A plain labelled gauge.",
        ["interface", "family", "vrid", "address"],
        registry=baseline,
    )
    for k in range(samples):
        gauge.labels(f"eth{k % 4}", "ipv4", str(1 + (k // 4) % 255), f"192.0.2.{k // 1020}").set(k)
    baseline_size = len(generate_latest(baseline))

    ka_ms: list[float] = []
    base_ms: list[float] = []
    collect_ms: list[float] = []
    latest_ms: list[float] = []
    generate_latest(baseline)  # warm-up; the exporter's was rendered above
    start = time.perf_counter()
    while len(ka_ms) < minimum or (time.perf_counter() - start < seconds and len(ka_ms) < 2000):
        # the slow ones, needed for their medians only, every other time
        cases: list[tuple[Callable[[], object], list[float]]] = [(lambda: generate(ka), ka_ms)]
        if len(ka_ms) % 2 == 0:
            cases.append((lambda: generate_latest(baseline), base_ms))
            cases.append((lambda: generate_latest(ka), latest_ms))
        cases.append((lambda: list(collector.collect()), collect_ms))
        for render, out in cases:
            advertise()
            t = time.perf_counter()
            render()
            out.append((time.perf_counter() - t) * 1e3)
    vrids = len(model.vrids)
    return MetricsResults(
        model.router_count,
        vrids,
        samples,
        len(text),
        ka_ms,
        base_ms,
        baseline_size,
        collect_ms,
        latest_ms,
    )


# --- report ------------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def _spread(values: Sequence[float], fmt: str = ",.0f") -> str:
    return ", ".join(format(v, fmt) for v in values)


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def _header(scapy_version: str) -> str:
    from bench.decode import cpu_model  # noqa: PLC0415

    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    python = f"{platform.python_implementation()} {platform.python_version()}"
    kernel = ".".join(platform.release().split(".")[:2])  # no build suffix
    return (
        f"Measured {today} with {python}, scapy {scapy_version}, Linux {kernel},"
        f" on {cpu_model()} ({os.cpu_count()} cores)."
    )


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def _rate(r: float) -> str:
    return f"{r / 1000:g}k" if r >= 1000 else f"{r:g}"


LABELS = {
    "ka": "ka-exporter `Capture` + `Model`",
    "ka+scrape": "the same, rendering one /metrics of the 3,060-router model meanwhile",
    "scapy": "scapy `sniff()` (baseline)",
}


def _ladder_report(plan: Plan, live: LiveResults) -> list[str]:
    best = {name: [ladder.best for ladder in live.ladders[name]] for name in LADDER}
    top = plan.ladder[-1]
    lines = [
        f"**Sustained rate**: steps of {plan.step_seconds:g} s at"
        f" {', '.join(_rate(r) for r in plan.ladder)} adverts/s, each receiver climbing until a"
        f" step fails (one failing the first rung tries {', '.join(_rate(r) for r in plan.floor)});"
        " a step passes when nothing was dropped (PACKET_STATISTICS, veth counters) and the"
        " receiver counted every frame sent. The scrape, when there is one, starts a third of"
        " the way into the step and runs on the event loop, as the daemon's HTTP handler does.",
        "",
        f"| receiver | highest zero-drop rate /s | per round | {TIMES} scapy |"
        " receiver CPU at that rate |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in LADDER:
        ladders = live.ladders[name]
        ratios = [k / b for k, b in zip(best[name], best["scapy"], strict=True) if b]
        ratio = f"{_median(ratios):.1f}" if ratios else "n/a"
        load = [s.load for lad in ladders for s in lad.steps if s.offered == lad.best and s.clean]
        limited = " (sender-limited)" if any(lad.sender_limited for lad in ladders) else ""
        at_top = " (the top rung)" if _median(best[name]) >= top else ""
        lines.append(
            f"| {LABELS[name]} | {_median(best[name]):,.0f}{limited}{at_top} |"
            f" {', '.join(_rate(b) for b in best[name])} | {ratio} | {_median(load):.0%} |"
        )
    scrapes = [
        1e3 * t for lad in live.ladders["ka+scrape"] for s in lad.steps for t in s.reply["scrapes"]
    ]
    lines += [
        "",
        "Every step, all rounds: clean rounds / rounds, median kernel drops, median CPU of the"
        " receiving process (share of one core), and how busy the whole machine was (cores,"
        " sender and kernel included)."
        + (
            f" The /metrics renderings took {_median(scrapes):,.0f} ms (median)." if scrapes else ""
        ),
        "",
        "| offered /s | sent /s | ka | drops | CPU | ka + scrape | drops | scapy | drops"
        " | received | cores busy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    steps = [s for ladders in live.ladders.values() for lad in ladders for s in lad.steps]
    for rate in sorted({s.offered for s in steps}):
        at_rate = [s for s in steps if s.offered == rate]
        row = [f"{rate:,.0f}", f"{_median([s.send_rate for s in at_rate]):,.0f}"]
        for name in LADDER:
            st = [s for s in at_rate if s.receiver == name]
            cells = ["", ""] + ([""] if name != "ka+scrape" else [])
            if st:
                cells = [
                    f"{sum(s.clean for s in st)}/{len(st)}",
                    f"{_median([s.drops for s in st]):,.0f}",
                ]
                if name == "ka":
                    cells.append(f"{_median([s.load for s in st]):.0%}")
                elif name == "scapy":
                    cells.append(f"{_median([s.received / s.sent for s in st if s.sent]):.0%}")
            row += cells
        row.append(f"{_median([s.machine for s in at_rate]):.1f}")
        lines.append("| " + " | ".join(row) + " |")
    ka_best = _median(best["ka"])
    lines += [
        "",
        f"Target: at least {RATE_TARGET:,} adverts/s with zero drops on one core:"
        f" {_verdict(ka_best >= RATE_TARGET)} ({ka_best:,.0f}/s; with a scrape during the step,"
        f" {_median(best['ka+scrape']):,.0f}/s).",
    ]
    # what the default ring holds, scaled from the paused measurement of the burst's ring
    held = (live.paused.packets - live.paused.drops) * DEFAULT_RING_SIZE // BURST_RING
    if scrapes and held:
        scrape = _median(scrapes) / 1e3
        lines[-1] += (
            f" A rendering holds the event loop for {scrape * 1e3:,.0f} ms, and the default"
            f" capture ring holds about {held:,} frames (below): above about"
            f" {held / scrape:,.0f} adverts/s"
            " a scrape alone would make the kernel drop."
        )
    return lines


def _burst_report(plan: Plan, live: LiveResults) -> list[str]:
    lines = [
        f"**Burst**: {plan.burst:,} adverts sent as fast as the sender can"
        f" ({_median([s.send_rate for s in live.bursts['ka']]):,.0f} frames/s, median).",
        "",
        "| receiver | received | kernel drops | per round: received / drops |",
        "|---|---:|---:|---:|",
    ]
    for name in RECEIVERS:
        bursts = live.bursts[name]
        per_round = "; ".join(f"{s.received:,} / {s.drops:,}" for s in bursts)
        lines.append(
            f"| {LABELS[name]} | {_median([s.received for s in bursts]):,.0f} |"
            f" {_median([s.drops for s in bursts]):,.0f} | {per_round} |"
        )
    zero = all(s.clean for s in live.bursts["ka"])
    p = live.paused
    held = p.packets - p.drops
    rcvbuf = int(p.reply["rcvbuf"])
    lines += [
        "",
        f"Target: no drop in the burst: {_verdict(zero)}, with `--capture.ring-size"
        f" {BURST_RING >> 20}MiB`. With its reader stopped, the"
        f" exporter's {rcvbuf / 2**20:g} MiB capture ring held {held:,} of {PAUSED_FRAMES:,}"
        " frames sent flat out, then the kernel dropped the rest:"
        f" {rcvbuf / held if held else 0:,.0f} bytes per frame for a"
        f" {live.frame_size:.0f}-byte advert on average (a socket receive buffer charges each"
        " queued frame its whole allocation, about 830 bytes). A burst is absorbed up to that"
        " many frames plus what the reader drains while it lasts; the default ring,"
        f" {DEFAULT_RING_SIZE >> 20} MiB, holds about"
        f" {held * DEFAULT_RING_SIZE // rcvbuf if rcvbuf else 0:,}.",
    ]
    return lines


CPU_LABELS = {
    "idle": "ka-exporter, no traffic",
    "wake": f"no socket: an empty asyncio callback {ADVERT_RATE} times/s (floor)",
    "ka": f"ka-exporter, {ADVERT_RATE} adverts/s",
    "ka+udp": f"ka-exporter, {BACKGROUND_PPS // 1000}k UDP frames/s only",
    "ka+bg": f"ka-exporter, {ADVERT_RATE} adverts/s + {BACKGROUND_PPS // 1000}k UDP frames/s",
    "scapy+bg": f"scapy `sniff()`, {ADVERT_RATE} adverts/s + {BACKGROUND_PPS // 1000}k UDP"
    " frames/s (baseline)",
}


def _cpu_report(plan: Plan, live: LiveResults) -> list[str]:
    from ka_exporter.capture import RETIRE_MS  # noqa: PLC0415

    runs = {"idle": [live.idle["fresh"]], **live.cpu}
    pct = {case: [100 * s.cpu / s.wall for s in steps] for case, steps in runs.items()}
    udp = [
        s.reply["sender"]["sent"][1] / s.reply["sender"]["seconds"]
        for s in live.cpu["ka+bg"]
        if s.reply["sender"]["seconds"]
    ]
    lines = [
        f"**CPU** of the receiving process (getrusage, user + system), as a share of one core,"
        f" over {plan.cpu_seconds:g} s windows; the background is UDP on the same veth, offered"
        f" at {_median(udp):,.0f} frames/s (median). Every row includes the daemon's 10 ticks a"
        " second (`advance` + `pop_events`), at which the bench driver also counts what its"
        " model saw: the first row.",
        "",
        "| case | CPU % of one core | per round | µs per advert | frames to user space |"
        " loop wake-ups /s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for case, label in CPU_LABELS.items():
        steps = runs[case]
        adverts = [s.received for s in steps]
        per_advert = (
            f"{_median([1e6 * s.cpu / s.received for s in steps if s.received]):,.0f}"
            if any(adverts)
            else ""
        )
        user_space = (
            f"{_median([s.packets for s in steps]):,.0f} of"
            f" {_median([s.reply['rx_packets'] for s in steps]):,.0f}"
            if case not in ("wake", "idle")
            else ""
        )
        wakeups = (
            f"{_median([s.reply['wakeups'] / s.wall for s in steps]):,.0f}"
            if case.startswith("ka")
            else ""
        )
        lines.append(
            f"| {label} | {_median(pct[case]):.2f} | {_spread(pct[case], '.2f')} |"
            f" {per_advert} | {user_space} | {wakeups} |"
        )
    ka_bg, floor = _median(pct["ka+bg"]), _median(pct["wake"])
    lines += [
        "",
        f"Target: below {CPU_TARGET:g} % of one core with {ADVERT_RATE} adverts/s under the"
        f" background: {_verdict(ka_bg < CPU_TARGET)} ({ka_bg:.2f} %;"
        f" {ka_bg / _median(pct['ka']):.2f}{TIMES} the adverts-only figure,"
        f" {ka_bg / floor:.1f}{TIMES} the empty loop woken as often,"
        f" {ka_bg / _median(pct['scapy+bg']):.2f}{TIMES} scapy). The background costs nothing"
        f" in user space: with UDP only, {_median(pct['ka+udp']):.2f} %, against"
        f" {_median(pct['idle']):.2f} % with no traffic, and"
        f" {max(s.packets for s in live.cpu['ka+udp']):,} UDP frames passed the kernel filter."
        " Woken once per advert, the loop alone would cost about as much as an empty callback"
        f" run as often, {floor:.2f} % of a core on this machine; the capture ring hands adverts"
        " over a block at a time, at most every"
        f" {RETIRE_MS} ms, so the loop wakes"
        f" {_median([s.reply['wakeups'] / s.wall for s in live.cpu['ka']]):,.0f} times a second"
        f" for {ADVERT_RATE} adverts.",
    ]
    return lines


def _memory_report(live: LiveResults) -> list[str]:
    f = live.flood
    idle_ka, idle_scapy = live.idle["fresh"], live.idle["scapy"]
    grown = f.reply["VmRSS"] - idle_ka.reply["VmRSS"]
    return [
        "**Memory** (VmRSS; the capture process imports the whole daemon module, so aiohttp,"
        " prometheus_client and pyroute2 count as in the real process):",
        "",
        f"| process | RSS MiB | {TIMES} scapy |",
        "|---|---:|---:|",
        f"| scapy `sniff()`, idle, socket open (baseline) | {_mib(idle_scapy.reply['VmRSS'])} |"
        " 1.0 |",
        f"| ka-exporter capture, idle, socket open | {_mib(idle_ka.reply['VmRSS'])} |"
        f" {idle_ka.reply['VmRSS'] / idle_scapy.reply['VmRSS']:.2f} |",
        f"| ka-exporter capture after {f.sent:,} adverts from distinct spoofed sources:"
        f" {f.reply['routers']:,} routers tracked (the cap), {f.reply['untracked']:,} adverts"
        f" untracked | {_mib(f.reply['VmRSS'])} |"
        f" {f.reply['VmRSS'] / idle_scapy.reply['VmRSS']:.2f} |",
        "",
        f"The flood added {_mib(grown)} MiB, {grown * 1024 / max(f.reply['routers'], 1):,.0f}"
        " bytes per tracked router, the decoder's memo of 4,096 distinct messages included."
        f" The capture ring, {idle_ka.reply['ring'] / 2**20:g} MiB per interface, is mapped into"
        " the process and counts in its RSS from the start.",
    ]


def report_live(plan: Plan, live: LiveResults, scapy_version: str) -> str:
    rounds = plan.rounds
    lines = [
        _header(scapy_version) + f" Medians of {rounds} round{'s' * (rounds > 1)}.",
        "",
        f"Frames: {live.description}, cycled; sending flat out, the sender reached"
        f" {max(live.sender_max):,.0f} frames/s"
        + (f" ({live.enobufs:,} sends refused with ENOBUFS)." if live.enobufs else "."),
        "",
        *_ladder_report(plan, live),
        "",
        *_burst_report(plan, live),
        "",
        *_cpu_report(plan, live),
        "",
        *_memory_report(live),
    ]
    return "\n".join(lines)


def report_metrics(m: MetricsResults, scapy_version: str) -> str:
    ka50, ka99 = _pct(m.ka_ms, 0.5), _pct(m.ka_ms, 0.99)
    b50, b99 = _pct(m.baseline_ms, 0.5), _pct(m.baseline_ms, 0.99)
    c50, c99 = _pct(m.collect_ms, 0.5), _pct(m.collect_ms, 0.99)
    g50, g99 = _pct(m.latest_ms, 0.5), _pct(m.latest_ms, 0.99)
    few = len(m.latest_ms) < 100
    lines = [
        _header(scapy_version),
        f"{len(m.ka_ms)} renderings of the exporter's /metrics, {len(m.baseline_ms)} of the"
        " baseline's and of prometheus_client's rendering of the exporter, interleaved, in one"
        " process" + ("; with so few of the slow ones, their p99 is the slowest." if few else "."),
        "",
        f"Model: 4 interfaces {TIMES} 255 VRIDs {TIMES} 3 routers ({m.vrids:,} VRIDs,"
        f" {m.routers:,} routers, one master each, this host holding a router and every VIP),"
        f" rendered by `ExporterCollector` (capture=None) to {m.samples:,} samples,"
        f" {m.size / 1024:,.0f} KiB, the same bytes both ways. Before each rendering every"
        " master advertises once more, as between two scrapes of a steady site: advert counts"
        " and last-advert times change, the rest does not.",
        "",
        f"| exposition | p50 ms | p99 ms | {TIMES} baseline (p50) |",
        "|---|---:|---:|---:|",
        f"| ka-exporter /metrics: `exposition.generate` | {ka50:.1f} | {ka99:.1f} |"
        f" {ka50 / b50:.3f} |",
        f"| of which `ExporterCollector.collect()` | {c50:.1f} | {c99:.1f} | {c50 / b50:.3f} |",
        f"| prometheus_client `generate_latest` of the same registry | {g50:.1f} | {g99:.1f} |"
        f" {g50 / b50:.2f} |",
        f"| `generate_latest` of a plain labelled `Gauge`, {m.samples:,} samples,"
        f" {m.baseline_size / 1024:,.0f} KiB (baseline) | {b50:.1f} | {b99:.1f} | 1.00 |",
        "",
        f"Target: p50 at most {METRICS_TARGET_MS:g} ms: {_verdict(ka50 <= METRICS_TARGET_MS)}"
        f" ({ka50:.1f} ms, {g50 / ka50:.0f}{TIMES} faster than prometheus_client's rendering of"
        f" the same samples). Most of it is collect(): reading the model and pairing each value"
        " with its cached label text; of the text, only families whose values changed since the"
        " last scrape are written again. The daemon renders on its"
        " event loop, so capture pauses for as long; frames wait in the ring meanwhile (see the"
        " scraped rate under Live capture). Gzip, when the scraper asks for it, is done off the"
        " loop.",
    ]
    return "\n".join(lines)


def write(path: Path, sections: Sequence[tuple[str, str, str]]) -> None:
    text = path.read_text(encoding="utf-8")
    for start_mark, end_mark, body in sections:
        start, end = text.find(start_mark), text.find(end_mark)
        if start < 0 or end < start:
            raise SystemExit(f"{path}: no {start_mark} ... {end_mark} section to replace")
        text = text[: start + len(start_mark)] + "\n" + body + "\n" + text[end:]
    path.write_text(text, "utf-8")


# --- entry -------------------------------------------------------------------------------------


def _interrupt(signum: int, _: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="one short round (under ~40 s)")
    parser.add_argument("--rounds", type=int, help="rounds (3; 1 with --quick)")
    parser.add_argument("--seed", type=int, default=1, help="synthetic stream seed (1)")
    parser.add_argument(
        "--only",
        choices=("live", "metrics"),
        help="measure and write one section: live (root, ~3 min) or metrics (no network)",
    )
    parser.add_argument(
        "--write", type=Path, metavar="MARKDOWN", help="update this file's sections"
    )
    parser.add_argument("--role", choices=("sender", "capture", "sniff"), help=argparse.SUPPRESS)
    parser.add_argument("--netns", help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.role is not None:  # a child, inside a bench namespace
        try:
            if args.role == "sender":
                _sender_main(args.netns, args.frames)
            elif args.role == "capture":
                _capture_main(args.netns)
            else:
                _sniff_main(args.netns)
        except (KeyboardInterrupt, BrokenPipeError):
            pass
        return

    if os.geteuid() != 0 and args.only != "metrics":
        raise SystemExit("bench.live needs root: it creates network namespaces")
    for tool in ("ip", "sysctl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench.live needs {tool}")
    plan = QUICK if args.quick else DEFAULT
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error("--rounds must be positive")
        plan = Plan(**{**plan.__dict__, "rounds": args.rounds})
    signal.signal(signal.SIGTERM, _interrupt)
    import scapy  # noqa: PLC0415

    started = time.monotonic()
    sections: list[tuple[str, str, str]] = []
    if args.only != "metrics":
        workdir = Path(tempfile.mkdtemp(prefix="bench-live-"))
        try:
            live = run_live(plan, args.seed, workdir)
        except KeyboardInterrupt:
            raise SystemExit("interrupted: children stopped, namespaces deleted") from None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        sections.append((LIVE_START, LIVE_END, report_live(plan, live, scapy.__version__)))
    if args.only != "live":
        _progress("/metrics latency")
        metrics = measure_metrics(plan.metrics_seconds, plan.metrics_min)
        body = report_metrics(metrics, scapy.__version__)
        sections.append((METRICS_START, METRICS_END, body))
    print("\n\n".join(body for _, _, body in sections))
    print(f"\n({time.monotonic() - started:.0f} s in all)", file=sys.stderr)
    if args.write is not None:
        write(args.write, sections)
        print(f"wrote {args.write}", file=sys.stderr)


if __name__ == "__main__":
    main()
