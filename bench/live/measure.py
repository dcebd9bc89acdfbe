"""bench.live's parent: the frames the sender plays, the children in their namespaces, and the
measuring steps and rounds."""

from __future__ import annotations

import json
import os
import pickle
import queue
import random
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from bench.live import (
    ADVERT_RATE,
    BACKGROUND_PPS,
    BURST_RING,
    FLOOD_FRAMES,
    FLOOD_RATE,
    IDLE_STOP,
    PAUSED_FRAMES,
    ROOT,
    SHORTFALL,
    Msg,
    Plan,
    progress,
)
from lab import netns, veth
from lab.procs import signals_deferred, start

if TYPE_CHECKING:
    from bench.decode import Instance

# --- frames --------------------------------------------------------------------------------------


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


def build_frames(plan: Plan, seed: int) -> tuple[dict[str, list[bytes]], str]:
    """The frame sets the sender plays, and a description of the site stream."""
    from unittest import mock  # noqa: PLC0415

    from scapy.layers.inet import IP, UDP  # noqa: PLC0415
    from scapy.layers.l2 import Ether  # noqa: PLC0415
    from scapy.packet import Raw  # noqa: PLC0415

    import bench.decode as bd  # noqa: PLC0415
    from ka_exporter.decode import Advert, decode  # noqa: PLC0415
    from lab.frames import advert, respoof  # noqa: PLC0415

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
    v4 = bytes(advert(3, src="192.0.2.1", addrlist=["198.51.100.1"]))
    v6 = bytes(advert(3, "ipv6", src="2001:db8::1", addrlist=["2001:db8::1"]))
    pool = [f"192.0.2.{i}" for i in range(1, 255)] + [f"198.51.100.{i}" for i in range(1, 255)]
    flood: list[bytes] = []
    for i in range(FLOOD_FRAMES // 2):
        flood.append(respoof(v4, pool[i % len(pool)], 1 + i // len(pool)))
        flood.append(respoof(v6, f"2001:db8::{i + 1:x}", 1 + i % 255))
    routers = set()
    for frame in flood:
        decoded = decode(frame, 0.0)
        if not isinstance(decoded, Advert):
            raise SystemExit(f"bench.live: a flood frame does not decode: {decoded}")
        routers.add((decoded.family, decoded.vrid, decoded.src))
    if len(routers) != len(flood):
        raise SystemExit("bench.live: the flood's sources are not all distinct")
    for frame in udp:
        if isinstance(decode(frame, 0.0), Advert):
            raise SystemExit("bench.live: a background frame decodes as an advert")
    return {"site": site, "udp": udp, "flood": flood}, description


# --- namespaces and children ---------------------------------------------------------------------


class Child:
    """A child in a bench namespace, spoken to in JSON lines."""

    def __init__(self, name: str, ns: str, role: str, *extra: str) -> None:
        self.name = name
        argv = [sys.executable, "-m", "bench.live", "--role", role, "--netns", ns, *extra]
        self.proc: subprocess.Popen[str] = start(
            netns.exec_argv(ns, argv),  # execs in place: the PID is python's
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
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


class Wire:
    """lab.veth's pair of namespaces (IPv6 off), and the children that live in them; children
    are stopped before the namespaces go, Ctrl-C included."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self._stack = ExitStack()
        self.a = self.b = ""

    def __enter__(self) -> Wire:
        self.a, self.b = self._stack.enter_context(veth.pair("kab", ipv6=False))
        return self

    def start(self, name: str, ns: str, role: str, *extra: str) -> Child:
        with signals_deferred():  # a child started is a child recorded
            child = Child(name, ns, role, *extra)
            self.children.append(child)
        return child

    def stop(self, child: Child) -> None:
        with signals_deferred():
            child.close()
            self.children.remove(child)

    def __exit__(self, *_: object) -> None:
        with signals_deferred():
            for child in reversed(self.children):
                child.close()
            self.children.clear()
        self._stack.close()


# --- measurements --------------------------------------------------------------------------------


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
    progress("building frames")
    sets, description = build_frames(plan, seed)
    frames_path = workdir / "frames.pickle"
    with frames_path.open("wb") as f:
        pickle.dump(sets, f)
    with Wire() as wire:
        progress(f"namespaces {wire.a}, {wire.b}")
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

        progress("memory: idle, then a flood of spoofed routers")
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
            progress(f"round {r + 1}/{plan.rounds}: rate ladder")
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

            progress(f"round {r + 1}/{plan.rounds}: burst")
            send_seconds = 0.0
            for name in RECEIVERS:
                # scapy cannot tell idleness, so its window follows the exporter's burst
                window = 60.0 if name == "ka" else max(2.0, send_seconds * 1.5 + 0.5)
                step = bench.burst(name, window)
                send_seconds = max(send_seconds, step.sent / max(step.send_rate, 1.0))
                bursts[name].append(step)

            progress(f"round {r + 1}/{plan.rounds}: CPU")
            shift = r % len(CPU_CASES)
            for case in CPU_CASES[shift:] + CPU_CASES[:shift]:
                cpu[case].append(bench.cpu(case))

        progress("capture ring, reader stopped")
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
