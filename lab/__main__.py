"""`python -m lab up | demo | record DIR | chaos | clean`: a lab to play with, reference captures,
chaos against keepalived's own word, recovery."""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from lab import addressing, chaos, demo, firewall, netns
from lab.config import Flavour, Instance, double_master
from lab.lab import CAPTURE_FILTER, Lab, LabError, unavailable
from lab.procs import Processes
from lab.record import record_all

# What `Lab` names its namespaces and temp dirs: ka + 4 hex digits.
_LAB_NAME = re.compile(r"ka[0-9a-f]{4}-")
_LAB_NAMESPACE = re.compile(r"ka[0-9a-f]{4}-(?:br|mon|n\d+)")


def _demo_instances() -> list[Instance]:
    # every node masters one VRID: n1 VRID 10, n2 VRID 11, n3 VRID 12 (IPv6)
    return [*double_master(10, 11), Instance(12, Flavour.V3_V6, {1: 100, 2: 120, 3: 150})]


def _describe(lab: Lab, alerting: bool = False) -> str:
    q = shlex.quote
    br, mon = lab.ns("br"), lab.ns("mon")
    lines = [f"lab {lab.prefix} is up; files in {lab.workdir}", ""]
    lines.append(f"  {br:12} bridge br0, ports " + ", ".join(f"n{i}-0" for i in lab.nodes))
    mon_v4 = addressing.host_ipv4(addressing.MONITOR_HOST)
    lines.append(f"  {mon:12} monitor on port mon-0 (never isolated), {mon_v4}")
    for i in lab.nodes:
        pid = demo.keepalived_pid(lab, i) or "-"
        addr = addressing.host_ipv4(addressing.node_host(i))
        lines.append(f"  {lab.ns(i):12} node {i}, {addr}, keepalived pid {pid}")
    lines.append("")
    for inst in lab.instances:
        prios = " ".join(f"n{n}={p}" for n, p in sorted(inst.priorities.items()))
        lines.append(f"  VRID {inst.vrid:3} {inst.flavour:6} {inst.vip_addresses[0]:20} {prios}")
    n1, n2 = lab.node(1), lab.node(2)
    if alerting:
        notify = lab.workdir / f"{n1.name}.ka-notify"
        logs = [
            f"  tail -f {n1.file('notify.log')} {notify}.log",
            f"  ka-notify queue --config {notify}.toml",
        ]
        split = (
            "   (off heals; the monitor hears both masters, n1 and n2 only themselves: "
            "their exporters' --cluster.peer sees it, vrrp_peer_split_brain)"
        )
    else:
        logs = [f"  tail -f {n1.file('fifo.log')} {n1.file('notify.log')}"]
        split = "   (off heals)"
    lines += [
        "",
        "in another shell, for example:",
        f"  ip netns exec {mon} tcpdump -ni eth0 -v {q(CAPTURE_FILTER)}",
        f"  ip -n {n1.ns} addr show dev eth0",
        *logs,
        f"  split brain: bridge -n {br} link set dev n1-0 isolated on; "
        f"bridge -n {br} link set dev n2-0 isolated on{split}",
        f"  firewall:    ip netns exec {n2.ns} nft {q(firewall.RULES)}",
        f"               ip netns exec {n2.ns} nft delete table inet {firewall.TABLE}",
        f"  priority:    echo 1 > {n1.file('track')}   (-60 on all of n1; echo 0 restores)",
        f"  link down:   ip -n {n1.ns} link set eth0 down",
        f"  stop n1:     kill -TERM $(cat {n1.file('pid')})",
        f"  crash n1:    kill -KILL $(cat {n1.file('vrrp.pid')} {n1.file('pid')})",
        f"  start n1:    ip netns exec {n1.ns} keepalived -n -l -D -G -P -f {n1.file('conf')} "
        f"-p {n1.file('pid')} -r {n1.file('vrrp.pid')} &",
        "",
        "Ctrl-C stops everything and removes the lab.",
    ]
    return "\n".join(lines)


class _Console:
    """Lines from other threads (the mails) wait until the description has been printed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[str] | None = []

    def show(self, line: str) -> None:
        with self._lock:
            if self._held is not None:
                self._held.append(line)
            else:
                print(line, flush=True)

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held or [], None
            for line in held:
                print(line, flush=True)


def _tick(lab: Lab, pids: dict[int, int | None]) -> tuple[list[str], str]:
    """Lines about keepalived started or stopped since `pids` (updated), and who holds what.
    keepalived is followed by its pid file, so a node restarted by hand is followed too."""
    now = time.strftime("%H:%M:%S")
    news = []
    for node in lab.nodes:
        pid = demo.keepalived_pid(lab, node)
        if pid != pids.get(node):
            what = f"keepalived running, pid {pid}" if pid else "keepalived not running"
            news.append(f"{now}  n{node}: {what}")
            pids[node] = pid
    running = {node for node, pid in pids.items() if pid}
    status = []
    for inst in lab.instances:
        holding = sorted(demo.holders(lab, inst.vrid, running))
        who = "+".join(f"n{n}" for n in holding) or "nobody"
        status.append(f"VRID {inst.vrid}: {who}{' (split brain)' * (len(holding) > 1)}")
    return news, "   ".join(status)


def _up(keep: bool, exporters: bool) -> None:
    console = _Console()
    with (
        Lab(_demo_instances(), keep_dir=keep, fifo_reader=not exporters) as lab,
        contextlib.ExitStack() as stack,
    ):
        if exporters:  # ka-notify reads the FIFOs: it starts before keepalived, then the rest
            lines = stack.enter_context(demo.started(lab, console.show))
        else:
            lab.start_all()
        print(_describe(lab, alerting=exporters), flush=True)
        if exporters:
            print("\nka-exporter (one per namespace), ka-notify (one per node), all on this "
                  "host's loopback:", flush=True)  # fmt: skip
            print("\n".join(lines) + "\n", flush=True)
        pids = {node: demo.keepalived_pid(lab, node) for node in lab.nodes}
        shown = ""
        try:
            console.release()
            while True:
                news, line = _tick(lab, pids)
                for item in news:
                    console.show(item)
                if line != shown or news:
                    console.show(f"{time.strftime('%H:%M:%S')}  {line}")
                    shown = line
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("\nstopping lab ...", flush=True)
    print(f"lab {lab.prefix} removed" + (f"; files kept in {lab.workdir}" if keep else ""))


def _clean() -> None:
    """Recovery after a lab's Python was SIGKILLed and could not clean up. It removes every
    lab on this host, running or not, so it is a command and never done automatically."""
    for ns in netns.names():
        if _LAB_NAMESPACE.fullmatch(ns):
            Processes.kill_all(netns.pids(ns))
            netns.delete(ns)
            print(f"removed namespace {ns}")
    for path in Path(tempfile.gettempdir()).iterdir():
        if _LAB_NAME.match(path.name) and (path / "notify.sh").exists():
            shutil.rmtree(path, ignore_errors=True)
            print(f"removed {path}")


def _chaos(seed: int, faults: int, advert_int: float, keep: bool, flags: list[str]) -> bool:
    """The per-fault table as it happens, then the summary; True when nothing disagreed."""
    print(f"chaos: seed {seed}, {faults} faults, advert interval {advert_int:g} s", flush=True)
    started = time.monotonic()
    results = chaos.run(
        seed,
        faults,
        advert_int=advert_int,
        report=lambda result: print(chaos.row(result), flush=True),
        keep_dir=keep,
        exporter_args=flags,
        opened=lambda lab: print(f"lab {lab.prefix}, files in {lab.workdir}", flush=True),
    )
    print(chaos.summary(results, time.monotonic() - started))
    return all(result.ok for result in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="3-node lab in the foreground until Ctrl-C")
    up.add_argument("--keep", action="store_true", help="keep configs and logs afterwards")
    show = sub.add_parser("demo", help="`up`, plus an exporter per namespace and Prometheus")
    show.add_argument("--keep", action="store_true", help="keep configs and logs afterwards")
    record = sub.add_parser("record", help="record the reference captures lab-*.pcap")
    record.add_argument("dir", type=Path)
    run = sub.add_parser("chaos", help="random faults, exporter checked against keepalived")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--faults", type=int, default=50)
    run.add_argument("--advert-int", type=float, default=1.0, help="seconds (default 1)")
    run.add_argument("--keep", action="store_true", help="keep configs and logs afterwards")
    run.add_argument(
        "--exporter-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="pass a flag to ka-exporter, e.g. --exporter-flag=--vrrp.split-brain-debounce=3",
    )
    sub.add_parser("clean", help="remove leftovers of labs whose process was killed")
    args = parser.parse_args(argv)

    reason = unavailable()
    if reason:
        print(f"cannot run a lab: {reason}", file=sys.stderr)
        return 2
    try:
        if args.command in ("up", "demo"):
            _up(args.keep, exporters=args.command == "demo")
        elif args.command == "chaos":
            if not _chaos(args.seed, args.faults, args.advert_int, args.keep, args.exporter_flag):
                return 1
        elif args.command == "record":
            for path in record_all(args.dir):
                print(f"{path}  {path.stat().st_size} bytes")
        else:
            _clean()
    except (LabError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
