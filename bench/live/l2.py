"""bench.live's L2 section: what ordinary ARP and neighbour discovery cost the capture (the
kernel filter keeps them out of user space), and what a storm of spoofed address announcements
does to its memory (the claim tracker's cap bounds it).

    python -m bench.live --only l2 [--quick] [--rounds N] [--write docs/benchmarks.md]

The same wire as the live section (`measure.Wire`: two namespaces of the bench's own, a veth
pair, IPv6 off, eth0 with no address, so nothing in B answers an ARP or ND frame), the same
sender child, and a capture child of its own (`--role l2-capture`): a fresh
`ka_exporter.capture.Capture` and `Model` per measurement, with the daemon's tick, that also
counts what the ring handed to the model and samples its RSS at each tick.

- CPU: a window with no traffic; 10k/s of ordinary ARP requests and replies and ND
  solicitations and solicited (unicast) advertisements among 64 hosts; 500 adverts/s with and
  without that background; and, to show what the filter saves, 10k/s of announcements from
  the same hosts (gratuitous ARP and unsolicited NA), which do reach user space. The cases
  take turns within a round; the kernel's PACKET_STATISTICS say how many frames passed the
  filter.
- Memory: a fresh capture process, idle, then a storm of gratuitous ARPs and unsolicited NAs,
  every one from a random spoofed MAC, over 6,000 addresses (more than the 4,096-address cap);
  beside it a fresh process, idle, then as many VRRP adverts from 6,000 spoofed sources (more
  than the router cap). RSS idle, after, at its peak, and along the storm.

The frames, and the addresses they use, are `bench.live.l2_frames`'.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.live import ADVERT_RATE, IDLE_STOP, IFACE, TICK, TIMES, Msg, Plan, progress
from bench.live.l2_frames import HOSTS, STORM_ADDRESSES, STORM_V4, STORM_V6, build_l2_frames
from ka_exporter.claims import MACS_PER_ADDRESS, RECENT

L2_START, L2_END = "<!-- bench:l2:start -->", "<!-- bench:l2:end -->"
L2_RATE = 10_000  # frames/s of ordinary ARP and ND background
STORM_FRAMES = 400_000  # past the point where the tracker's heap stops growing
STORM_FRAMES_QUICK = 40_000
STORM_RATE = 40_000  # frames/s: below what the capture takes on an idle machine
# the storm's ring (--capture.ring-size): it holds the whole storm, so that a process starved
# by a loaded machine still counts every frame; mapped from the start, it is in RssFile, and
# what the model keeps is in RssAnon
STORM_RING = 96 << 20
# after this many frames of the storm every tracked address holds as many MACs and recent
# claims as it may: from then on the tracker's memory is at its bound
SATURATED = max(RECENT, MACS_PER_ADDRESS) * STORM_ADDRESSES
CPU_CASES = ("idle", "ordinary", "adverts", "adverts+ordinary", "announce")


# --- the capture child (namespace B) ---------------------------------------------------------


def _heap() -> Msg:
    """RssAnon (the heap: what the model keeps) and RssFile (the mapped ring among it), KiB."""
    fields: Msg = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile"):
                fields[name] = int(value.split()[0])
    return fields


async def _session(cmd: Msg, reply: Callable[[Msg], None]) -> Msg:
    """One measurement: a fresh Capture and Model on eth0, until `expect` frames reached the
    model, or it saw none for `idle` seconds after some, or `window` seconds passed."""
    from bench.live.children import _Meter  # noqa: PLC0415
    from ka_exporter.capture import DEFAULT_RING_SIZE, Capture  # noqa: PLC0415
    from ka_exporter.model import Model, Segment  # noqa: PLC0415

    model = Model()
    capture = Capture(model, asyncio.get_running_loop(), int(cmd.get("ring", DEFAULT_RING_SIZE)))
    handed = [0]
    ingest = model.ingest

    def counting(segment: Segment, t: float, frame: bytes, linktype: int) -> None:
        handed[0] += 1
        ingest(segment, t, frame, linktype)

    model.ingest = counting  # type: ignore[method-assign, assignment]
    expect, window, idle = int(cmd["expect"]), float(cmd["window"]), float(cmd["idle"])
    rss: list[tuple[int, int]] = []  # (frames handed to the model, RssAnon KiB) at each tick
    events = 0
    try:
        capture.open(Segment(IFACE))
        meter = _Meter()
        start = changed = meter.start
        seen = 0
        reply({"ready": True})
        while True:
            await asyncio.sleep(TICK)
            model.advance(time.time())  # the daemon's tick
            events += len(model.pop_events())
            now = time.monotonic()
            if handed[0] != seen:
                seen, changed = handed[0], now
                rss.append((seen, _heap()["RssAnon"]))
            if (
                (expect and seen >= expect)
                or (idle and seen and now - changed >= idle)
                or now - start >= window
            ):
                break
        measured = meter.read()
        (tap,) = capture.statistics()
        claims = list(model.claims.values())
        return {
            "received": handed[0],
            "packets": tap.packets,
            "drops": tap.drops,
            "wakeups": tap.wakeups,
            "active": changed - start if seen else measured["wall"],
            "claims": len(claims),
            "claim_limit": model.claim_budget.limit,
            "macs": sum(len(c.macs) for c in claims),
            "most_macs": max((len(c.macs) for c in claims), default=0),
            "untracked_claims": sum(model.untracked_claims.values()),
            "conflicts": sum(c.conflicts for c in claims),
            "routers": model.router_count,
            "untracked": sum(model.untracked.values()),
            "rejects": sum(model.rejects.values()),
            "events": events + len(model.pop_events()),
            "rss": rss,
            **measured,
            **_heap(),
        }
    finally:
        capture.close_all()


def capture_main(netns: str) -> None:
    from bench.live.children import _check_netns, _replies  # noqa: PLC0415

    _check_netns(netns)
    reply = _replies()
    import ka_exporter.daemon  # noqa: F401, PLC0415  # what the real process imports counts
    from bench.live.children import command_loop  # noqa: PLC0415

    asyncio.run(command_loop(reply, lambda cmd, _: _session(cmd, reply)))


# --- the parent ----------------------------------------------------------------------------------


@dataclass
class L2Results:
    cpu: dict[str, list[Msg]]  # case -> the receiver's replies, the sender's under "sender"
    idle: list[Msg]  # the storm's fresh processes before it
    storm: list[Msg]
    spoofed_idle: list[Msg]
    spoofed: list[Msg]
    storm_frames: int


def run_l2(plan: Plan, seed: int, workdir: Path, storm: int) -> L2Results:
    from bench.live.measure import Bench, Wire  # noqa: PLC0415

    progress("L2: building frames")
    sets = build_l2_frames(storm, seed)
    frames_path = workdir / "l2-frames.pickle"
    with frames_path.open("wb") as f:
        pickle.dump(sets, f)
    seconds = plan.cpu_seconds
    with Wire() as wire:
        progress(f"L2: namespaces {wire.a}, {wire.b}")
        sender = wire.start("sender", wire.a, "sender", "--frames", str(frames_path))
        ka = wire.start("L2 capture", wire.b, "l2-capture")
        ka.ask({"cmd": "status"}, timeout=60)
        bench = Bench(plan, wire, sender, {"ka": (ka, {})})

        def cpu(case: str) -> Msg:
            streams: list[Msg] = []
            if case.startswith("adverts"):
                streams.append({"set": "adverts", "rate": ADVERT_RATE, "count": 0})
            if case.endswith("ordinary"):
                streams.append({"set": "ordinary", "rate": L2_RATE, "count": 0})
            if case == "announce":
                streams.append({"set": "announce", "rate": L2_RATE, "count": 0})
            for s in streams:
                s["count"] = round(float(s["rate"]) * seconds)
            step = bench.step(
                "ka",
                streams or [{"set": "adverts", "rate": 1, "count": 0}],
                window=seconds,
                max_seconds=seconds + 0.5,
                expect=0,
                idle=0,
            )
            return {**step.reply, "sets": [s["set"] for s in streams]}

        def fresh(name: str, set_name: str) -> tuple[Msg, Msg]:
            child = wire.start(name, wire.b, "l2-capture")
            try:
                child.ask({"cmd": "status"}, timeout=60)
                bench.receivers["fresh"] = (child, {})
                before = bench.step(
                    "fresh",
                    [{"set": set_name, "rate": 1, "count": 0}],
                    window=0.5,
                    max_seconds=0.1,
                    expect=0,
                    idle=0,
                    extra={"ring": STORM_RING},
                )
                after = bench.step(
                    "fresh",
                    [{"set": set_name, "rate": STORM_RATE, "count": storm}],
                    window=storm / STORM_RATE + 20,
                    max_seconds=storm / STORM_RATE * 2 + 1,
                    expect=storm,
                    idle=IDLE_STOP * 4,
                    extra={"ring": STORM_RING},
                )
                return before.reply, after.reply
            finally:
                wire.stop(child)

        results = L2Results({c: [] for c in CPU_CASES}, [], [], [], [], storm)
        for r in range(plan.rounds):
            progress(f"L2 round {r + 1}/{plan.rounds}: CPU")
            shift = r % len(CPU_CASES)
            for case in CPU_CASES[shift:] + CPU_CASES[:shift]:
                results.cpu[case].append(cpu(case))
            progress(f"L2 round {r + 1}/{plan.rounds}: memory, a storm of announcements")
            order = [
                ("storm", results.idle, results.storm),
                ("spoofed", results.spoofed_idle, results.spoofed),
            ]
            for set_name, idles, afters in order[r % 2 :] + order[: r % 2]:  # taking turns
                before, after = fresh(f"L2 capture ({set_name})", set_name)
                idles.append(before)
                afters.append(after)
    return results


# --- the report ----------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


CPU_LABELS = {
    "idle": "no traffic (baseline)",
    "ordinary": f"{L2_RATE // 1000}k/s ordinary ARP and ND",
    "adverts": f"{ADVERT_RATE} adverts/s",
    "adverts+ordinary": f"{ADVERT_RATE} adverts/s + {L2_RATE // 1000}k/s ordinary ARP and ND",
    "announce": f"{L2_RATE // 1000}k/s announcements (gratuitous ARP, unsolicited NA): what the"
    " background would cost if it reached user space",
}


def _share(m: Msg) -> float:
    return 100 * float(m["cpu"]) / float(m["wall"]) if m["wall"] else 0.0


def _offered(m: Msg) -> float:
    sender = m["sender"]
    return sum(sender["sent"]) / sender["seconds"] if sender["seconds"] else 0.0


def report_l2(plan: Plan, res: L2Results) -> str:
    from lab.report import cpu_model, kernel, python, today  # noqa: PLC0415

    rounds = plan.rounds
    pct = {case: [_share(m) for m in ms] for case, ms in res.cpu.items()}
    per_round = {
        case: [a / b if b else 0.0 for a, b in zip(pct[case], pct["idle"], strict=True)]
        for case in CPU_CASES
    }
    with_adverts = [
        a / b if b else 0.0 for a, b in zip(pct["adverts+ordinary"], pct["adverts"], strict=True)
    ]
    lines = [
        f"Measured {today()} with {python()}, {kernel()}, on {cpu_model()}"
        f" ({os.cpu_count()} cores). Medians of {rounds} round{'s' * (rounds > 1)}.",
        "",
        f"**CPU** of the capture process (getrusage, user + system), as a share of one core,"
        f" over {plan.cpu_seconds:g} s windows, the cases taking turns within each round; the"
        f" ratio is against the no-traffic window of the same round. Background: ARP requests"
        f" (broadcast) and replies, neighbour solicitations (to solicited-node groups) and"
        f" solicited advertisements (unicast, override set) among {HOSTS} hosts, in equal"
        f" shares, offered at {_median([_offered(m) for m in res.cpu['ordinary']]):,.0f}"
        ' frames/s (median). "To user space" is what passed the kernel filter'
        " (PACKET_STATISTICS) of what reached the capture's eth0.",
        "",
        f"| case | CPU % of one core | per round | {TIMES} no traffic | to user space |"
        " model: claims / rejects | loop wake-ups /s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case, label in CPU_LABELS.items():
        ms = res.cpu[case]
        ratio = "1.00" if case == "idle" else f"{_median(per_round[case]):.2f}"
        user = (
            f"{_median([m['packets'] for m in ms]):,.0f} of"
            f" {_median([m['rx_packets'] for m in ms]):,.0f}"
        )
        model = f"{max(m['claims'] for m in ms):,} / {max(m['rejects'] for m in ms):,}"
        wakeups = f"{_median([m['wakeups'] / m['wall'] for m in ms]):,.0f}"
        spread = ", ".join(f"{v:.2f}" for v in pct[case])
        lines.append(
            f"| {label} | {_median(pct[case]):.2f} | {spread} | {ratio} | {user} | {model} |"
            f" {wakeups} |"
        )
    ordinary = res.cpu["ordinary"] + res.cpu["adverts+ordinary"]
    background = sum(m["sender"]["sent"][-1] for m in ordinary)
    adverts = sum(m["sender"]["sent"][0] for m in res.cpu["adverts+ordinary"])
    passed = sum(m["packets"] for m in ordinary) - adverts  # what passed and was no advert
    stray = sum(m["claims"] + m["rejects"] for m in ordinary)
    announce = _median(pct["announce"])
    per_frame = _median(
        [1e6 * m["cpu"] / m["received"] for m in res.cpu["announce"] if m["received"]]
    )
    lines += [
        "",
        f"Ordinary ARP and ND reach user space: {'**none**' if passed == 0 else f'**{passed:,}**'}"
        f" of the {background:,} background frames sent over all rounds"
        f" (the model: {stray:,} claims or rejects);"
        f" with them, {_median(pct['ordinary']):.2f} % of a core against"
        f" {_median(pct['idle']):.2f} % with no traffic"
        f" ({_median(per_round['ordinary']):.2f}{TIMES}), and with {ADVERT_RATE} adverts/s"
        f" {_median(pct['adverts+ordinary']):.2f} % against {_median(pct['adverts']):.2f} %"
        f" ({_median(with_adverts):.2f}{TIMES} the adverts alone). Let up to user space, as"
        f" many announcements would cost {announce:.2f} % of a core"
        f" ({_median(per_round['announce']):.1f}{TIMES} no traffic,"
        f" {per_frame:,.0f}"
        " µs per frame with the daemon's tick).",
        "",
        *_memory_report(res),
    ]
    return "\n".join(lines)


def _memory_report(res: L2Results) -> list[str]:
    n = res.storm_frames

    def grown(ms: list[Msg], idle: list[Msg], field: str) -> float:
        return _median([m[field] - i[field] for m, i in zip(ms, idle, strict=True)])

    def row(label: str, ms: list[Msg], idle: list[Msg], tracked: str) -> str:
        heap, base = _median([m["RssAnon"] for m in ms]), _median([i["RssAnon"] for i in idle])
        peak = _median([max([m["RssAnon"]] + [kib for _, kib in m["rss"]]) for m in ms])
        clean = sum(m["drops"] == 0 and m["received"] == m["sender"]["sent"][0] for m in ms)
        us = _median([1e6 * m["cpu"] / m["received"] for m in ms if m["received"]])
        return (
            f"| {label} | {_mib(base)} | {_mib(heap)} | {_mib(peak)} |"
            f" {_mib(grown(ms, idle, 'RssAnon'))} | {heap / base:.2f} |"
            f" {_mib(_median([i['VmRSS'] for i in idle]))} |"
            f" {_mib(_median([m['VmRSS'] for m in ms]))} |"
            f" {_mib(_median([m['VmHWM'] for m in ms]))} | {tracked} |"
            f" {clean}/{len(ms)} | {us:,.1f} |"
        )

    s, a = res.storm, res.spoofed
    limit = max(m["claim_limit"] for m in s)
    claims = f"{max(m['claims'] for m in s):,} addresses, {max(m['macs'] for m in s):,} MACs"
    claims += f" (at most {max(m['most_macs'] for m in s)} per address);"
    claims += f" {_median([m['untracked_claims'] for m in s]):,.0f} claims untracked"
    routers = f"{max(m['routers'] for m in a):,} routers;"
    routers += f" {_median([m['untracked'] for m in a]):,.0f} adverts untracked"
    ring = _median([i["RssFile"] for i in res.idle])
    lines = [
        f"**Memory** of a fresh capture process, idle and after {n:,} frames at"
        f" {STORM_RATE // 1000}k/s, a process per round and case, the whole daemon module"
        f" imported. The storm: gratuitous ARPs (requests and replies) and unsolicited NAs, each"
        f" from a random spoofed MAC, over {STORM_ADDRESSES:,} addresses in turn"
        f" ({len(STORM_V4)} IPv4, {len(STORM_V6):,} IPv6), above the cap of {limit:,}; the"
        f" baseline: as many VRRPv3 adverts cycled over {STORM_ADDRESSES:,} spoofed sources (the"
        " same addresses, spread over 255 VRIDs per family), above the router cap. The capture"
        f" ring is {STORM_RING >> 20} MiB here (`--capture.ring-size`), so that the whole storm"
        " fits in it and a process the shared machine starves still counts every frame; it is"
        f" mapped from the start and counts in RssFile ({_mib(ring)} MiB idle, libraries"
        " included), while what the model keeps is in RssAnon, the heap: the first columns."
        " VmRSS is both, VmHWM its peak. Heap peak: the highest of the samples taken at every"
        " tick.",
        "",
        f"| process | heap idle MiB | heap after | heap peak | heap grown | {TIMES} idle |"
        " VmRSS idle | VmRSS after | VmHWM | tracked | every frame counted | µs per frame |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        row(f"{n:,} spoofed announcements", s, res.idle, claims),
        row(f"{n:,} adverts from spoofed sources (baseline)", a, res.spoofed_idle, routers),
    ]
    storm, adverts = grown(s, res.idle, "RssAnon"), grown(a, res.spoofed_idle, "RssAnon")

    def heap_at(frames: float) -> float:
        """The heap at the first tick past `frames`, median of the rounds."""
        return _median(
            [next((kib for seen, kib in m["rss"] if seen >= frames), m["RssAnon"]) for m in s]
        )

    marks = ", ".join(f"{q:.0%}: {_mib(heap_at(q * n))}" for q in (0.25, 0.5, 0.75, 1.0))
    bound = (
        f" Every tracked address holds its {MACS_PER_ADDRESS} MACs and {RECENT} recent claims"
        f" after {SATURATED:,} frames ({RECENT} passes over the addresses), at"
        f" {_mib(heap_at(SATURATED))} MiB of heap; over the second half of the storm,"
        f" {n // 2:,} frames, the heap grew by {_mib(heap_at(n) - heap_at(n / 2))} MiB."
        if n > 2 * SATURATED
        else ""
    )
    lines += [
        "",
        f"The storm grows the heap by {_mib(storm)} MiB"
        f" ({storm * 1024 / max(limit, 1):,.0f} bytes per tracked address, its MACs and recent"
        f" claims included), against {_mib(adverts)} MiB for the adverts"
        f" ({storm / adverts if adverts else 0:.1f}{TIMES}); the heap along the storm, in MiB,"
        f" after {marks} of the frames. What the tracker keeps is bounded by its caps,"
        f" {limit:,} addresses of {MACS_PER_ADDRESS} MACs each ({limit * MACS_PER_ADDRESS:,}"
        f" MACs) and {RECENT} recent claims per address; past them, a spoofed announcement"
        " replaces the MAC longest silent, or is counted as untracked." + bound,
    ]
    return lines
