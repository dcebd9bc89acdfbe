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

The plan and its figures are here; `children` holds what runs inside the namespaces (sender,
capture, sniff), `measure` the parent's frames, children and steps, `metrics` the /metrics
latency, `report` the Markdown, and `__main__` the command line. The wire itself is lab.veth's.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
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


def progress(text: str) -> None:
    print(f"[{time.monotonic() - _T0:5.1f} s] {text}", file=sys.stderr, flush=True)
