"""How long keepalived waits for `ka-notify`, and how soon an exporter event reaches a webhook.

    python -m bench.notify [--runs N] [--events N] [--write docs/benchmarks.md]

Event to webhook: the exporter's alerting (`ka_exporter.alerter.Alerting`, the object
its daemon feeds every tick) is given one model event at a time, in its own asyncio loop as in
the daemon; the time runs from the feed (which commits durably to the spool) to the moment a
webhook receiver in another thread has read the request. The daemon's tick adds at most
`TICK_SECONDS` before the feed.

Each run is the console script as keepalived starts it (`ka-notify INSTANCE VI_1 STATE 100`),
committing to a spool on disk (synchronous=FULL, so the fsync is in the time) and spawning its
detached worker, which delivers to a local HTTP receiver answering 200 meanwhile. The states
alternate so every run is a real transition; runs are `--gap` apart so that one run's
worker does not share the CPU with the next run (a burst would). For scale, the same
interpreter's bare start, `import importlib.metadata` and `import ka_exporter` (whose
__init__ reads the version through importlib.metadata) are timed alongside, in the same rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import ClassVar

from ka_exporter.alerter import Alerting
from ka_exporter.alerting.config import parse
from ka_exporter.daemon import TICK_SECONDS
from ka_exporter.model import Event, EventType, Segment, VridKey
from lab.report import kernel, python, today, write_sections

START = "<!-- bench:notify:start -->"
END = "<!-- bench:notify:end -->"
TARGET_MS = 150.0
EVENT_TARGET_MS = 1000.0  # p99, event to webhook received


class _Ok(http.server.BaseHTTPRequestHandler):
    # webhook-id -> perf_counter when its body was read
    arrived: ClassVar[dict[str, float]] = {}

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.arrived.setdefault(self.headers.get("webhook-id", ""), time.perf_counter())
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def measure(runs: int, state_root: Path, gap: float) -> dict[str, list[float]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = str(Path(sys.executable).parent / "ka-notify")
    with tempfile.TemporaryDirectory(dir=state_root) as tmp:
        config = Path(tmp) / "ka.toml"
        config.write_text(
            f'cluster = "bench"\nstate_dir = "{tmp}/state"\n[[sink]]\nname = "hook"\n'
            f'type = "webhook"\nurl = "http://127.0.0.1:{server.server_address[1]}/"\n'
        )
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import importlib.metadata'": [
                sys.executable,
                "-c",
                "import importlib.metadata",
            ],
            "python -c 'import ka_exporter'": [sys.executable, "-c", "import ka_exporter"],
        }
        times: dict[str, list[float]] = {"ka-notify hook run": [], **{k: [] for k in cases}}
        for n in range(runs):
            state = "MASTER" if n % 2 else "BACKUP"
            hook = [script, "--config", str(config), "n1", "INSTANCE", "VI_1", state, "100"]
            times["ka-notify hook run"].append(_time(hook))
            time.sleep(gap)  # the detached worker's delivery is not the hook's time
            for name, cmd in cases.items():
                times[name].append(_time(cmd))
        time.sleep(1.0)  # let the last detached worker finish before the directory goes
    server.shutdown()
    return times


def event_latency(events: int, state_root: Path) -> list[float]:
    """Milliseconds from feeding one event to its webhook arriving, event after event."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(dir=state_root) as tmp:
        config = parse(
            f'cluster = "bench"\nstate_dir = "{tmp}"\n[[sink]]\nname = "hook"\n'
            f'type = "webhook"\nurl = "{url}"\n'
        )
        alerting = Alerting(config, "bench")

        async def run() -> None:
            worker = asyncio.create_task(alerting.run())
            for n in range(events):
                key = VridKey(Segment("eth0"), "ipv4", n % 255 + 1)
                now = time.time()
                event = Event(now, EventType.SPLIT_BRAIN_START, key, ("192.0.2.1", "192.0.2.2"))
                before = set(_Ok.arrived)
                start = time.perf_counter()
                alerting.feed([event], set(), now)
                while not (new := set(_Ok.arrived) - before):
                    await asyncio.sleep(0.001)
                latencies.append((_Ok.arrived[new.pop()] - start) * 1000)
            worker.cancel()

        asyncio.run(run())
        alerting.close()
    server.shutdown()
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report_events(latencies: list[float], baseline_ms: float) -> str:
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    met = "met" if p99 <= EVENT_TARGET_MS else "**NOT met**"
    return "\n".join(
        [
            f"Event to webhook received, {len(latencies)} events one after another, spool "
            f"committed with fsync before delivery:",
            "",
            "| | ms | x `python -c pass` |",
            "|---|---:|---:|",
            f"| p50 | {p50:.1f} | {p50 / baseline_ms:.2f} |",
            f"| p99 | {p99:.1f} | {p99 / baseline_ms:.2f} |",
            f"| max | {max(latencies):.1f} | {max(latencies) / baseline_ms:.2f} |",
            "",
            f"Target: p99 at most {EVENT_TARGET_MS:.0f} ms: {met} ({p99:.1f} ms, plus at most "
            f"{TICK_SECONDS * 1000:.0f} ms of the daemon's tick).",
        ]
    )


def report(times: dict[str, list[float]], runs: int, state_root: Path, gap: float) -> str:
    lines = [
        f"Measured {today()} with {python()}, {kernel()},"
        f" {runs} runs each, {gap:g} s apart, spool on {state_root} (fsync included). "
        f"Target: hook run ≤ {TARGET_MS:.0f} ms.",
        "",
        "| command | median ms | p90 ms | max ms | median x `python -c pass` |",
        "|---|---:|---:|---:|---:|",
    ]
    baseline = statistics.median(times["python -c pass"])
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(
            f"| `{name}` | {median:.0f} | {percentile(values, 0.9):.0f} | {max(values):.0f} "
            f"| {median / baseline:.2f} |"
        )
    hook = statistics.median(times["ka-notify hook run"])
    met = "met" if hook <= TARGET_MS else "**NOT met**"
    lines += ["", f"Target: hook run median at most {TARGET_MS:.0f} ms: {met} ({hook:.0f} ms)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.notify", description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--state-root", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between hook runs")
    parser.add_argument("--events", type=int, default=300, help="events for the webhook latency")
    parser.add_argument("--write", type=Path, help="replace the marked section of this file")
    args = parser.parse_args()
    times = measure(args.runs, args.state_root, args.gap)
    latencies = event_latency(args.events, args.state_root)
    section = report(times, args.runs, args.state_root, args.gap)
    section += "\n\n" + report_events(latencies, statistics.median(times["python -c pass"]))
    print(section)
    if args.write:
        write_sections(args.write, [(START, END, section)])


if __name__ == "__main__":
    main()
