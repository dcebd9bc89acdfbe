"""`python -m bench.live`: the parent's command line, and each child's entry (`--role`).

A child imports only what its role needs, so what its memory figure counts is its own."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.live import (
    DEFAULT,
    DESCRIPTION,
    LIVE_END,
    LIVE_START,
    METRICS_END,
    METRICS_START,
    QUICK,
    Plan,
    progress,
)


def _interrupt(signum: int, _: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="one short round (under ~40 s)")
    parser.add_argument("--rounds", type=int, help="rounds (3; 1 with --quick)")
    parser.add_argument("--seed", type=int, default=1, help="synthetic stream seed (1)")
    parser.add_argument(
        "--only",
        choices=("live", "metrics", "l2"),
        help="measure and write one section: live (root, ~3 min), metrics (no network) or l2"
        " (root, ARP/ND background and announcement storms, ~3 min)",
    )
    parser.add_argument(
        "--write", type=Path, metavar="MARKDOWN", help="update this file's sections"
    )
    parser.add_argument(
        "--role", choices=("sender", "capture", "sniff", "l2-capture"), help=argparse.SUPPRESS
    )
    parser.add_argument("--netns", help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.role is not None:  # a child, inside a bench namespace
        from bench.live import children  # noqa: PLC0415

        try:
            if args.role == "sender":
                children.sender_main(args.netns, args.frames)
            elif args.role == "capture":
                children.capture_main(args.netns)
            elif args.role == "l2-capture":
                from bench.live import l2  # noqa: PLC0415

                l2.capture_main(args.netns)
            else:
                children.sniff_main(args.netns)
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

    from bench.live.measure import run_live  # noqa: PLC0415
    from bench.live.metrics import measure_metrics  # noqa: PLC0415
    from bench.live.report import report_live, report_metrics  # noqa: PLC0415
    from lab.report import write_sections  # noqa: PLC0415

    started = time.monotonic()
    sections: list[tuple[str, str, str]] = []
    if args.only in (None, "live"):
        workdir = Path(tempfile.mkdtemp(prefix="bench-live-"))
        try:
            live = run_live(plan, args.seed, workdir)
        except KeyboardInterrupt:
            raise SystemExit("interrupted: children stopped, namespaces deleted") from None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        sections.append((LIVE_START, LIVE_END, report_live(plan, live, scapy.__version__)))
    if args.only in (None, "l2"):
        from bench.live import l2  # noqa: PLC0415

        workdir = Path(tempfile.mkdtemp(prefix="bench-l2-"))
        storm = l2.STORM_FRAMES_QUICK if args.quick else l2.STORM_FRAMES
        try:
            l2_results = l2.run_l2(plan, args.seed, workdir, storm)
        except KeyboardInterrupt:
            raise SystemExit("interrupted: children stopped, namespaces deleted") from None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        sections.append((l2.L2_START, l2.L2_END, l2.report_l2(plan, l2_results)))
    if args.only in (None, "metrics"):
        progress("/metrics latency")
        metrics = measure_metrics(plan.metrics_seconds, plan.metrics_min)
        body = report_metrics(metrics, scapy.__version__)
        sections.append((METRICS_START, METRICS_END, body))
    print("\n\n".join(body for _, _, body in sections))
    print(f"\n({time.monotonic() - started:.0f} s in all)", file=sys.stderr)
    if args.write is not None:
        write_sections(args.write, sections)
        print(f"wrote {args.write}", file=sys.stderr)


if __name__ == "__main__":
    main()
