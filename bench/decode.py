"""Decoder throughput against scapy's dissector, all measured in one run.

    python -m bench.decode [--seconds N] [--rounds N] [--frames N] [--write docs/benchmarks.md]

The machine may be shared and noisy, so absolute rates mean little; what this reports is each
case's rate as a ratio to scapy's `Ether(frame)` on the same frames, measured in the same round.
Within a round the cases take turns in slices of about 2 ms, so they see the same moments of the
machine; the medians over several rounds are reported, with the range of the ratios.

Three streams are measured: a synthetic site built here from scapy-made frames (40 VRIDs mixing
VRRPv2 PASS and AH, VRRPv3 over IPv4 multicast, IPv6 and unicast, every master advertising each
second, with occasional failovers and priority changes), a replay of tests/data/vrrp-all.pcap,
and one VRID of 2,000 sources, as a spoofing flood under the router cap makes it. Each is run
through ka_exporter's decoder alone and decoder + model, both as in steady state (a master
repeats the same message, so the decoder's memo of validated messages answers) and with the memo
emptied before every frame (the flood case: every frame unseen).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import heapq
import hmac
import os
import random
import statistics
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import scapy
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import AH
from scapy.layers.l2 import Ether
from scapy.layers.vrrp import VRRP, VRRPv3
from scapy.packet import Raw, bind_layers

import ka_exporter.decode as kd
from ka_exporter.decode import Advert, LinkType, decode
from ka_exporter.model import EventType, Model, Segment
from ka_exporter.pcap import read
from lab.frames import checksum
from lab.report import cpu_model, python, today, write_sections

# scapy leaves an AH-wrapped advert as Raw unless told that AH next header 112 is VRRP.
bind_layers(AH, VRRP, nh=112)

ROOT = Path(__file__).resolve().parent.parent
PCAP = "tests/data/vrrp-all.pcap"
START = "<!-- bench:decode:start -->"
END = "<!-- bench:decode:end -->"
DESCRIPTION = "Decoder throughput against scapy's dissector, measured in one run."
TIMES, DASH = "\u00d7", "\u2013"  # for the Markdown tables
TARGET = 30.0  # the goal for decode + model, realistic stream, as a multiple of scapy
SEGMENT = Segment("eth0")
CROWD = 2_000  # sources in the crowded VRID: half the default router cap
SLICE_NS = 2_000_000  # each case runs ~2 ms at a turn, then hands over to the next
GROUP4 = "224.0.0.18"
GROUP6 = "ff02::12"
EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z; any start works, only the spacing matters
P_FAILOVER = 1 / 400  # per advert: the master resigns (priority 0) and the backup takes over
P_PRIORITY = 1 / 500  # per advert: the master's priority moves (a tracked interface, a script)
# The site: (kind, number of VRIDs), 40 in all.
SITE = (("v2_pass", 10), ("v2_ah", 6), ("v3_ipv4", 12), ("v3_ipv6", 8), ("v3_unicast", 4))
KIND_LABELS = {
    "v2_pass": "VRRPv2 PASS",
    "v2_ah": "VRRPv2 AH",
    "v3_ipv4": "VRRPv3 IPv4 multicast with 1-3 VIPs",
    "v3_ipv6": "VRRPv3 IPv6 from link-local",
    "v3_unicast": "VRRPv3 IPv4 unicast",
}


class Frame(NamedTuple):
    frame: bytes
    time: float
    linktype: int


@dataclass(frozen=True)
class Stream:
    name: str
    description: str
    frames: list[Frame]


# --- the synthetic site --------------------------------------------------------------------------


@dataclass
class Instance:
    """One VRID: two routers, the first preferred; `master` indexes the one advertising."""

    vrid: int
    kind: str
    routers: tuple[str, str]
    priorities: tuple[int, int]
    vips: tuple[str, ...]
    password: bytes = b""
    master: int = 0
    priority: int = 0
    ip_id: list[int] = field(default_factory=lambda: [0, 0])
    ah_seq: list[int] = field(default_factory=lambda: [0, 0])


def _site(rng: random.Random) -> list[Instance]:
    instances: list[Instance] = []
    vrid = 0
    for kind, count in SITE:
        for i in range(count):
            vrid += 1
            if kind == "v3_ipv6":
                routers = (f"fe80::5054:ff:fe{vrid:02x}:2", f"fe80::5054:ff:fe{vrid:02x}:3")
                vips: tuple[str, ...] = ("fe80::1", f"2001:db8:{vrid:x}::1")[: 1 + i % 2]
            elif kind == "v3_unicast":
                routers = (f"172.16.{vrid}.2", f"172.16.{vrid}.3")
                vips = (f"172.16.{vrid}.1",)
            else:
                routers = (f"10.0.{vrid}.2", f"10.0.{vrid}.3")
                n = 1 + i % 3 if kind == "v3_ipv4" else 1
                vips = (f"10.0.{vrid}.1", f"10.0.{vrid}.10", f"10.0.{vrid}.11")[:n]
            primary = rng.randrange(110, 255)
            instances.append(
                Instance(
                    vrid,
                    kind,
                    routers,
                    (primary, 100),
                    vips,
                    password=b"site-pw%d" % (vrid % 3) if kind == "v2_pass" else b"",
                    priority=primary,
                )
            )
    return instances


def _mac(inst: Instance, who: int) -> str:
    return f"52:54:00:{inst.vrid:02x}:00:{who + 2:02x}"


def _template(inst: Instance, who: int, priority: int) -> bytes:
    """The advert of router `who` at `priority`, built and checksummed by scapy."""
    src, peer = inst.routers[who], inst.routers[1 - who]
    eth = Ether(src=_mac(inst, who), dst="01:00:5e:00:00:12")
    kw: dict[str, Any] = {"vrid": inst.vrid, "priority": priority, "addrlist": list(inst.vips)}
    if inst.kind == "v3_ipv6":
        eth.dst = "33:33:00:00:00:12"
        pkt = eth / IPv6(src=src, dst=GROUP6, hlim=255, nh=112) / VRRPv3(adv=100, **kw)
    elif inst.kind == "v3_unicast":
        eth.dst = _mac(inst, 1 - who)
        pkt = eth / IP(src=src, dst=peer, ttl=255) / VRRPv3(adv=100, **kw)
    elif inst.kind == "v3_ipv4":
        pkt = eth / IP(src=src, dst=GROUP4, ttl=255) / VRRPv3(adv=100, **kw)
    elif inst.kind == "v2_pass":
        auth1, auth2 = struct.unpack("!II", inst.password.ljust(8, b"\0")[:8])
        message = VRRP(version=2, authtype=1, adv=1, auth1=auth1, auth2=auth2, **kw)
        pkt = eth / IP(src=src, dst=GROUP4, ttl=255) / message
    else:  # v2_ah: an AH header (next header 112, 24 bytes, 12-byte ICV) before the message
        vrrp = bytes(VRRP(version=2, authtype=2, adv=1, **kw))
        spi = 0xC0000000 | inst.vrid << 8 | who
        ah = struct.pack("!BBHII", 112, 4, 0, spi, 0) + bytes(12)
        pkt = eth / IP(src=src, dst=GROUP4, ttl=255, proto=51) / Raw(ah + vrrp)
    return bytes(pkt)


def _stamp(template: bytes, inst: Instance, who: int) -> bytes:
    """Per-packet fields a real sender varies: the IPv4 ID, and AH's sequence number and ICV."""
    if template[12:14] != b"\x08\x00":
        return template
    b = bytearray(template)
    inst.ip_id[who] = (inst.ip_id[who] + 1) & 0xFFFF
    b[18:20] = inst.ip_id[who].to_bytes(2)
    b[24:26] = b"\0\0"
    if inst.kind == "v2_ah":
        inst.ah_seq[who] += 1
        b[42:46] = inst.ah_seq[who].to_bytes(4)
        b[46:58] = bytes(12)
        icv_input = bytes(b[14:])
        b[46:58] = hmac.new(inst.routers[who].encode(), icv_input, hashlib.md5).digest()[:12]
    b[24:26] = checksum(b[14:34]).to_bytes(2)
    return bytes(b)


def synthetic(n_frames: int, seed: int) -> tuple[Stream, list[tuple[int, int]]]:
    """The site's advert stream, and the (vrid, priority) each frame must decode to."""
    rng = random.Random(seed)
    instances = _site(rng)
    templates: dict[tuple[int, int, int], bytes] = {}
    frames: list[Frame] = []
    expected: list[tuple[int, int]] = []
    failovers = priority_changes = 0
    queue = [(EPOCH + rng.random(), i) for i in range(len(instances))]
    heapq.heapify(queue)

    def send(inst: Instance, who: int, priority: int, t: float) -> None:
        key = (inst.vrid, who, priority)
        template = templates.get(key)
        if template is None:
            template = templates[key] = _template(inst, who, priority)
        frames.append(Frame(_stamp(template, inst, who), t, LinkType.ETHERNET))
        expected.append((inst.vrid, priority))

    while len(frames) < n_frames:
        t, i = heapq.heappop(queue)
        inst = instances[i]
        draw = rng.random()
        if draw < P_FAILOVER:
            # The master shuts down (priority 0); the backup takes over after its skew time.
            send(inst, inst.master, 0, t)
            inst.master = 1 - inst.master
            inst.priority = inst.priorities[inst.master]
            failovers += 1
            t += (256 - inst.priority) / 256
        else:
            if draw < P_FAILOVER + P_PRIORITY:
                base = inst.priorities[inst.master]
                inst.priority = base - 20 if inst.priority == base else base
                priority_changes += 1
            send(inst, inst.master, inst.priority, t)
            t += 1.0 + rng.uniform(-0.001, 0.001)
        heapq.heappush(queue, (t, i))
    span = frames[-1].time - frames[0].time
    mix = ", ".join(f"{count} {KIND_LABELS[kind]}" for kind, count in SITE)
    description = (
        f"{len(frames):,} frames from {len(instances)} VRIDs over {span:.0f} s: {mix};"
        " every master advertises each second;"
        f" {failovers} failovers, {priority_changes} priority changes"
    )
    return Stream("synthetic site", description, frames), expected


def crowded(n_routers: int, n_frames: int) -> Stream:
    """One VRID of `n_routers` sources, each advertising every second: a spoofing flood kept
    under the router cap, where a model that rescans a VRID's routers per advert slows down."""
    templates = []
    for n in range(n_routers):
        src = f"10.1.{n // 250}.{n % 250 + 1}"
        eth = Ether(src=f"52:54:01:00:{n >> 8:02x}:{n & 0xFF:02x}", dst="01:00:5e:00:00:12")
        advert = VRRPv3(vrid=7, priority=100, adv=100, addrlist=["10.1.255.1"])
        templates.append(bytes(eth / IP(src=src, dst=GROUP4, ttl=255) / advert))
    frames = [
        Frame(templates[i % n_routers], EPOCH + i / n_routers, LinkType.ETHERNET)
        for i in range(n_frames)
    ]
    description = (
        f"{n_frames:,} frames from {n_routers:,} sources in one VRID over"
        f" {n_frames / n_routers:.0f} s, each advertising every second"
    )
    return Stream(f"one VRID of {n_routers:,} routers", description, frames)


def replay(path: Path, name: str) -> Stream:
    with path.open("rb") as f:
        frames = [Frame(p.frame, p.time, p.linktype) for p in read(f)]
    span = frames[-1].time - frames[0].time if frames else 0.0
    return Stream(f"replay of {name}", f"{len(frames):,} frames over {span:.0f} s", frames)


# --- checks: the streams are what they claim, and both decoders agree on them ------------------


def check(stream: Stream, expected: Sequence[tuple[int, int]] | None = None) -> str:
    """Raises SystemExit unless every frame decodes; returns the memo's hit rate from cold."""
    if any(f.linktype != LinkType.ETHERNET for f in stream.frames):
        raise SystemExit(f"{stream.name}: the scapy baseline here dissects Ethernet frames only")
    kd._memo.clear()
    misses = 0
    seen: dict[tuple[str, int, str, int], Frame] = {}
    for i, f in enumerate(stream.frames):
        before = len(kd._memo)
        advert = decode(f.frame, f.time, f.linktype)
        misses += len(kd._memo) != before
        if not isinstance(advert, Advert):
            raise SystemExit(f"{stream.name}: frame {i} rejected: {advert}")
        if expected is not None and (advert.vrid, advert.priority) != expected[i]:
            raise SystemExit(f"{stream.name}: frame {i} decoded as {advert}, not {expected[i]}")
        seen.setdefault((advert.family, advert.vrid, advert.src, advert.priority), f)
    for (_, vrid, _, priority), f in seen.items():
        pkt = Ether(f.frame)
        vr = pkt.getlayer(VRRP)
        if vr is None:
            vr = pkt.getlayer(VRRPv3)
        if vr is None or (vr.vrid, vr.priority) != (vrid, priority):
            raise SystemExit(f"{stream.name}: scapy dissects a frame differently: {pkt!r}")
    distinct = f"{misses:,} distinct messages" if misses < kd._MEMO_SIZE else "memo overflowed"
    return f"{distinct}, memo hit rate {1 - misses / len(stream.frames):.1%} from cold"


def model_events(stream: Stream) -> str:
    model = Model()
    for f in stream.frames:
        model.ingest(SEGMENT, f.time, f.frame, f.linktype)
    kinds = [e.type for e in model.pop_events()]
    changed = kinds.count(EventType.MASTER_CHANGED)
    priority = kinds.count(EventType.PRIORITY_CHANGED)
    return f"the model reports {changed} master changes, {priority} priority changes"


# --- the cases ---------------------------------------------------------------------------------

Process = Callable[[Sequence[Frame]], None]


def scapy_dissect() -> Process:
    ether = Ether

    def run(chunk: Sequence[Frame]) -> None:
        for frame, _, _ in chunk:
            ether(frame)

    return run


def decode_only() -> Process:
    dec = decode

    def run(chunk: Sequence[Frame]) -> None:
        for frame, t, linktype in chunk:
            dec(frame, t, linktype)

    return run


def decode_model() -> Process:
    ingest, segment = Model().ingest, SEGMENT

    def run(chunk: Sequence[Frame]) -> None:
        for frame, t, linktype in chunk:
            ingest(segment, t, frame, linktype)

    return run


def decode_cold() -> Process:
    dec, forget = decode, kd._memo.clear

    def run(chunk: Sequence[Frame]) -> None:
        for frame, t, linktype in chunk:
            forget()
            dec(frame, t, linktype)

    return run


def decode_model_cold() -> Process:
    ingest, segment, forget = Model().ingest, SEGMENT, kd._memo.clear

    def run(chunk: Sequence[Frame]) -> None:
        for frame, t, linktype in chunk:
            forget()
            ingest(segment, t, frame, linktype)

    return run


class Case(NamedTuple):
    key: str
    label: str
    factory: Callable[[], Process]  # called at the start of every pass over the stream


BASELINE = Case("scapy", "scapy `Ether(frame)` (baseline)", scapy_dissect)
CASES = (
    BASELINE,
    Case("decode", "decode", decode_only),
    Case("model", "decode + model", decode_model),
    Case("decode_cold", "decode, memo defeated", decode_cold),
    Case("model_cold", "decode + model, memo defeated", decode_model_cold),
)


@dataclass
class Runner:
    """Feeds a case its stream a slice at a time; a pass over the stream spans many slices."""

    frames: list[Frame]
    factory: Callable[[], Process]
    size: int = 20  # frames per slice; `calibrate` sets it
    pos: int = 0
    process: Process | None = None
    # The decoder's memo as this case left it: the cases take turns, and a steady-state case
    # must not find its memo emptied by a memo-defeated one. Swapped in and out untimed; its
    # entries are the decoder's private business.
    memo: dict[tuple[bytes, bytes], Any] = field(default_factory=dict)

    def step(self) -> tuple[int, int]:
        """One timed slice: (frames, nanoseconds)."""
        if self.pos == 0 or self.process is None:
            self.process = self.factory()  # a fresh model: time restarts with the stream
        chunk = self.frames[self.pos : self.pos + self.size]
        process, collect, memo = self.process, gc.collect, kd._memo
        memo.clear()
        memo.update(self.memo)
        start = time.perf_counter_ns()
        process(chunk)
        # Each slice pays for its own young garbage (scapy's packets are reference cycles), so
        # none of it is left for the next case to collect.
        collect(0)
        elapsed = time.perf_counter_ns() - start
        self.memo = memo.copy()
        self.pos = self.pos + self.size if self.pos + self.size < len(self.frames) else 0
        return len(chunk), elapsed

    def calibrate(self, slice_ns: int) -> None:
        """Sizes the slices to take about `slice_ns` each."""
        samples = []
        for _ in range(5):
            frames, ns = self.step()
            samples.append(ns / frames)
        per_frame = statistics.median(samples)
        self.size = max(1, min(len(self.frames), round(slice_ns / per_frame)))


@dataclass
class Result:
    rates: dict[str, list[float]]  # case key -> frames/s, one per round

    def ratios(self, key: str) -> list[float]:
        return [r / b for r, b in zip(self.rates[key], self.rates[BASELINE.key], strict=True)]


def measure(streams: Sequence[Stream], rounds: int, seconds: float) -> list[Result]:
    """Per round and stream, the cases take turns slice by slice (each about SLICE_NS), so they
    all see the same moments of a noisy machine; a round's rate is its frames over its time."""
    round_ns = seconds * 1e9 / (rounds * len(streams))
    runners = [{case.key: Runner(s.frames, case.factory) for case in CASES} for s in streams]
    for stream_runners in runners:  # warm-up, not recorded
        for runner in stream_runners.values():
            runner.calibrate(SLICE_NS)
    results = [Result({case.key: [] for case in CASES}) for _ in streams]
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}", file=sys.stderr, flush=True)
        order = CASES[r % len(CASES) :] + CASES[: r % len(CASES)]
        for stream_runners, result in zip(runners, results, strict=True):
            frames = dict.fromkeys(stream_runners, 0)
            elapsed = dict.fromkeys(stream_runners, 0)
            spent = 0
            gc.collect()
            while spent < round_ns:
                for case in order:
                    n, ns = stream_runners[case.key].step()
                    frames[case.key] += n
                    elapsed[case.key] += ns
                    spent += ns
            for key, n in frames.items():
                result.rates[key].append(n * 1e9 / elapsed[key])
    return results


# --- report ------------------------------------------------------------------------------------


def table(result: Result) -> list[str]:
    lines = [
        f"| case | frames/s | µs/frame | {TIMES} scapy | {TIMES} scapy, min{DASH}max |",
        "|---|---:|---:|---:|---:|",
    ]
    for case in CASES:
        rate = statistics.median(result.rates[case.key])
        ratios = result.ratios(case.key)
        spread = "" if case is BASELINE else f"{min(ratios):.1f}{DASH}{max(ratios):.1f}"
        lines.append(
            f"| {case.label} | {rate:,.0f} | {1e6 / rate:.2f} |"
            f" {statistics.median(ratios):.1f} | {spread} |"
        )
    return lines


def report(
    streams: Sequence[Stream], notes: Sequence[str], results: Sequence[Result], rounds: int
) -> str:
    lines = [
        f"Measured {today()} with {python()}, scapy {scapy.__version__},"
        f" on {cpu_model()} ({os.cpu_count()} cores; the benchmark runs on one).",
        f"Medians of {rounds} interleaved rounds; each ratio is against scapy in the same round.",
    ]
    for stream, note, result in zip(streams, notes, results, strict=True):
        lines += ["", f"**{stream.name}**: {stream.description}; {note}.", "", *table(result)]
    realistic, cold = (statistics.median(results[0].ratios(k)) for k in ("model", "model_cold"))
    verdict = "met" if realistic >= TARGET else "NOT met"
    lines += [
        "",
        f"Target: decode + model at least {TARGET:.0f}{TIMES} scapy on one core, realistic stream:"
        f" **{verdict}** ({realistic:.1f}{TIMES}; {cold:.1f}{TIMES} with the memo defeated).",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.decode", description=DESCRIPTION)
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring time in all (30)")
    parser.add_argument("--rounds", type=int, default=11, help="interleaved rounds (11)")
    parser.add_argument(
        "--frames", type=int, default=20_000, help="synthetic stream length (20000)"
    )
    parser.add_argument("--seed", type=int, default=1, help="synthetic stream seed (1)")
    parser.add_argument("--write", type=Path, metavar="MARKDOWN", help="update this file's section")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1 or args.frames < 1:
        parser.error("--seconds, --rounds and --frames must be positive")

    site, expected = synthetic(args.frames, args.seed)
    streams = [site, replay(ROOT / PCAP, PCAP), crowded(CROWD, args.frames)]
    notes = []
    for stream, exp in zip(streams, (expected, None, None), strict=True):
        notes.append(f"{check(stream, exp)}; {model_events(stream)}")
    results = measure(streams, args.rounds, args.seconds)
    section = report(streams, notes, results, args.rounds)
    print(section)
    if args.write is not None:
        write_sections(args.write, [(START, END, section)])
        print(f"\nwrote {args.write}", file=sys.stderr)


if __name__ == "__main__":
    main()
