"""bench.live's Markdown: the live-capture section and the /metrics section of
docs/benchmarks.md."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence

from bench.live import (
    ADVERT_RATE,
    BACKGROUND_PPS,
    BURST_RING,
    CPU_TARGET,
    METRICS_TARGET_MS,
    PAUSED_FRAMES,
    RATE_TARGET,
    TIMES,
    Plan,
)
from bench.live.measure import LADDER, RECEIVERS, LiveResults
from bench.live.metrics import MetricsResults
from ka_exporter.capture import DEFAULT_RING_SIZE
from lab.report import cpu_model, kernel, python, today


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
    return (
        f"Measured {today()} with {python()}, scapy {scapy_version}, {kernel()},"
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
