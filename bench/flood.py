"""A flood of spoofed VRRP routers against the real exporter process, through live capture.

    python -m bench.flood [--count N] [--distinct N] [--seconds S] [--max-routers N]

Anyone on a segment can send adverts from made-up sources; the exporter must then stay bounded
(the router cap) and keep watching the real routers. Inside two namespaces of its own joined by
a veth pair, a few legitimate routers advertise every 100 ms while `--count` valid VRRPv3 adverts
(checksums right, so they count as routers) from `--distinct` random documentation sources and
VRIDs are sent as fast as one socket can. The run prints the exporter's RSS, the series it
exports, the router and untracked counts, kernel drops and the legitimate routers' counters.
tests/test_flood.py runs the same with a smaller count.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lab import frames, veth
from lab.running import free_port, process, ready

EXPORTER = str(Path(sys.executable).with_name("ka-exporter"))
LEGIT = {"198.51.100.1": 10, "198.51.100.2": 11}  # masters of their VRIDs; the flood uses neither
LEGIT_PERIOD = 0.1
LEGIT_WATCH = 2.0  # seconds the legitimate counters are watched after the flood
LEGIT_MAX_ROUNDS = 3000  # the legitimate sender's own bound: five minutes
SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def legit_frames() -> list[bytes]:
    """Each legitimate router the master of its own VRID (VRRPv3 over IPv4, priority 200)."""
    return [
        bytes(frames.advert(3, src=src, vrid=vrid, priority=200, addrlist=[f"198.51.100.{vrid}"]))
        for src, vrid in LEGIT.items()
    ]


def flood_frames(distinct: int, seed: int) -> list[bytes]:
    """`distinct` adverts from distinct (family, source, VRID): half IPv4 from 192.0.2.0/24, half
    IPv6 from 2001:db8:f::/48, VRIDs random."""
    rng = random.Random(seed)
    v4 = bytes(frames.advert(3, src="192.0.2.1", addrlist=["192.0.2.200"]))
    v6 = bytes(frames.advert(3, "ipv6", src="2001:db8:f::1", addrlist=["2001:db8:f::200"]))
    vrids = [v for v in range(1, 256) if v not in LEGIT.values()]
    v4_keys = rng.sample([(h, v) for h in range(1, 255) for v in vrids], distinct // 2)
    out = [frames.respoof(v4, f"192.0.2.{h}", vrid) for h, vrid in v4_keys]
    base = int(ipaddress.IPv6Address("2001:db8:f::"))
    v6_hosts = rng.sample(range(1, 1 << 32), distinct - len(out))
    out += [
        frames.respoof(v6, str(ipaddress.IPv6Address(base + h)), rng.choice(vrids))
        for h in v6_hosts
    ]
    return out


class Exporter:
    """Reads the ka-exporter process's /metrics and memory."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc, self.port = proc, port

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not ready(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the exporter did not become ready")
            time.sleep(0.05)

    def memory_kib(self, field: str) -> int:
        """A memory figure of /proc/PID/status: VmRSS now, VmHWM the peak."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def samples(self) -> list[tuple[str, str, float]]:
        """(name, labels, value) of every series in /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as r:
            text = r.read().decode()
        return [
            (m.group(1), m.group(2) or "", float(m.group(3)))
            for m in map(SAMPLE.match, text.splitlines())
            if m
        ]


@dataclass
class Result:
    sent: int
    send_seconds: float
    catch_up_seconds: float  # from the flood's end until legitimate adverts flow at their rate
    rss_before_kib: int
    rss_after_kib: int
    rss_peak_kib: int
    series: int
    tracked: float
    limit: float
    untracked: float
    captured: float
    drops: float
    legit_adverts: dict[str, tuple[float, float]]  # address -> (caught up, LEGIT_WATCH later)
    legit_transitions: dict[str, float]  # address -> master transitions of its VRID

    def lines(self) -> list[str]:
        return [
            f"adverts sent: {self.sent} in {self.send_seconds:.1f} s "
            f"({self.sent / max(self.send_seconds, 1e-9):.0f}/s)",
            f"exporter caught up {self.catch_up_seconds:.1f} s after the flood",
            f"RSS: {self.rss_before_kib / 1024:.1f} MiB before, "
            f"{self.rss_after_kib / 1024:.1f} MiB after, peak {self.rss_peak_kib / 1024:.1f} MiB",
            f"series in /metrics: {self.series}",
            f"tracked routers: {self.tracked:.0f} (limit {self.limit:.0f})",
            f"untracked adverts: {self.untracked:.0f}",
            f"captured: {self.captured:.0f}, kernel drops: {self.drops:.0f}",
            *(
                f"legitimate {a}: {n0:.0f} adverts when caught up, {n1:.0f} {LEGIT_WATCH:.0f} s on"
                for a, (n0, n1) in self.legit_adverts.items()
            ),
            *(
                f"legitimate {a}: {n:.0f} master transitions of its VRID"
                for a, n in self.legit_transitions.items()
            ),
        ]


def total(samples: list[tuple[str, str, float]], name: str, *fragments: str) -> float:
    return sum(v for n, labels, v in samples if n == name and all(f in labels for f in fragments))


def legit_counts(exporter: Exporter) -> dict[str, float]:
    samples = exporter.samples()
    return {a: total(samples, "vrrp_router_advertisements_total", f'address="{a}"') for a in LEGIT}


def run(
    a: str, b: str, count: int, distinct: int, seconds: float, max_routers: int, log: Path
) -> Result:
    """Floods from namespace `a` onto the exporter watching `b`, both ends of one veth."""
    flood = flood_frames(distinct, seed=count)
    stream = random.Random(distinct).choices(flood, k=count)
    legit, stop = legit_frames(), threading.Event()

    def rounds() -> Iterator[bytes]:
        for _ in range(LEGIT_MAX_ROUNDS):
            yield from legit
            if stop.wait(LEGIT_PERIOD):
                return

    port = free_port()
    argv = [EXPORTER, "--web.listen-address", f"127.0.0.1:{port}", "--netns", b,
            "--interface", f"{b}/eth0", "--vrrp.max-routers", str(max_routers)]  # fmt: skip
    sender = threading.Thread(target=veth.send, args=(a, rounds()), daemon=True)
    with process(argv, log) as proc:
        try:
            return measure(Exporter(proc, port), sender, a, stream, seconds)
        finally:
            stop.set()
            sender.join(timeout=5)


def measure(
    exporter: Exporter, sender: threading.Thread, a: str, stream: list[bytes], seconds: float
) -> Result:
    """Legitimate routers first, then the flood within `seconds`, then the exporter's state."""
    exporter.wait_ready()
    sender.start()
    deadline = time.monotonic() + 10
    while not all(legit_counts(exporter).values()):
        if time.monotonic() > deadline:
            raise RuntimeError("the legitimate routers never showed up")
        time.sleep(0.1)
    rss_before = exporter.memory_kib("VmRSS")
    sent = 0

    def bounded() -> Iterator[bytes]:
        nonlocal sent
        end = time.monotonic() + seconds
        for frame in stream:
            if sent % 1024 == 0 and time.monotonic() > end:
                return
            sent += 1
            yield frame

    started = time.monotonic()
    veth.send(a, bounded())
    send_seconds = time.monotonic() - started
    catch_up = caught_up(exporter)
    samples = exporter.samples()
    after = legit_counts(exporter)
    time.sleep(LEGIT_WATCH)
    later = legit_counts(exporter)
    return Result(
        sent=sent,
        send_seconds=send_seconds,
        catch_up_seconds=catch_up,
        rss_before_kib=rss_before,
        rss_after_kib=exporter.memory_kib("VmRSS"),
        rss_peak_kib=exporter.memory_kib("VmHWM"),
        series=len(samples),
        tracked=total(samples, "vrrp_tracked_routers"),
        limit=total(samples, "vrrp_tracked_routers_limit"),
        untracked=total(samples, "vrrp_untracked_advertisements_total"),
        captured=total(samples, "vrrp_capture_packets_total"),
        drops=total(samples, "vrrp_capture_kernel_drops_total"),
        legit_adverts={x: (after[x], later[x]) for x in LEGIT},
        legit_transitions={
            x: total(samples, "vrrp_master_transitions_total", f'vrid="{v}"', 'family="ipv4"')
            for x, v in LEGIT.items()
        },
    )


def caught_up(exporter: Exporter, timeout: float = 120) -> float:
    """Seconds after the flood until the exporter idles (below a fifth of a CPU in two half-second
    windows in a row): it has worked through the backlog in its socket buffer. Read from /proc,
    as a scrape of thousands of routers would itself keep it busy."""
    start = time.monotonic()
    then, before, idle = start, exporter.cpu_seconds(), 0
    while idle < 2:
        if time.monotonic() - start > timeout:
            raise RuntimeError("the exporter did not catch up after the flood")
        time.sleep(0.5)
        now, cpu = time.monotonic(), exporter.cpu_seconds()
        idle = idle + 1 if (cpu - before) / (now - then) < 0.2 else 0
        then, before = now, cpu
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="flood adverts to send")
    parser.add_argument("--distinct", type=int, default=16_384, help="distinct spoofed routers")
    parser.add_argument("--seconds", type=float, default=300, help="bound on the send loop")
    parser.add_argument("--max-routers", type=int, default=4096)
    args = parser.parse_args()
    with veth.pair("kaf", ipv6=False) as (a, b), tempfile.TemporaryDirectory() as tmp:
        result = run(a, b, args.count, args.distinct, args.seconds, args.max_routers,
                     Path(tmp) / "exporter.log")  # fmt: skip
    print("\n".join(result.lines()))


if __name__ == "__main__":
    main()
