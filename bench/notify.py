"""How long keepalived waits for `ka-notify`: one hook run, from exec to exit 0.

    python -m bench.notify [--runs N] [--write docs/benchmarks.md]

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
import datetime
import http.server
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

START = "<!-- bench:notify:start -->"
END = "<!-- bench:notify:end -->"
TARGET_MS = 150.0


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
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


def report(times: dict[str, list[float]], runs: int, state_root: Path, gap: float) -> str:
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    lines = [
        f"Measured {today} with CPython {platform.python_version()}, Linux {platform.release()},"
        f" {runs} runs each, {gap:g} s apart, spool on {state_root} (fsync included). "
        f"Target: hook run ≤ {TARGET_MS:.0f} ms.",
        "",
        "| command | median ms | p90 ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    for name, values in times.items():
        ordered = sorted(values)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        lines.append(
            f"| `{name}` | {statistics.median(values):.0f} | {p90:.0f} | {max(values):.0f} |"
        )
    return "\n".join(lines)


def write(path: Path, section: str) -> None:
    text = path.read_text("utf-8")
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        text = text.rstrip("\n") + f"\n\n## ka-notify hook\n\n{START}\n{END}\n"
        start, end = text.find(START), text.find(END)
    path.write_text(text[: start + len(START)] + "\n" + section + "\n" + text[end:], "utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.notify", description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--state-root", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between hook runs")
    parser.add_argument("--write", type=Path, help="replace the marked section of this file")
    args = parser.parse_args()
    times = measure(args.runs, args.state_root, args.gap)
    section = report(times, args.runs, args.state_root, args.gap)
    print(section)
    if args.write:
        write(args.write, section)


if __name__ == "__main__":
    main()
