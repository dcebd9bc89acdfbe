"""Coverage-guided fuzzing of the decoder with atheris (libFuzzer).

    python -m bench.fuzz [--runs N] [--seconds S] [--crashes DIR] [-- libFuzzer flags]

`decode` sits on the capture path of every packet the exporter sees, including whatever an
attacker on the segment sends, so it must answer every input with an Advert, a Carp, a Claim or
a known DropReason and never raise. The fuzzer's first input byte picks the link type
(Ethernet, raw IP, Linux SLL, SLL2), the rest is the frame. The corpus is seeded with every frame of
tests/data/*.pcap in each framing the decoder accepts. Any other outcome is a crash: the input is
saved under --crashes (tests/data/fuzz-crashes by default) and the run exits non-zero. At the end
a summary is printed: inputs run, exec/s, results by reason and libFuzzer's coverage counters.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["ka_exporter.decode"]):
    from ka_exporter.decode import Advert, Carp, Claim, DropReason, LinkType, decode

from ka_exporter.pcap import read
from lab.frames import FRAMINGS, reframe

ROOT = Path(__file__).resolve().parent.parent
LINKTYPES = tuple(LinkType)
KEY = b"fuzz-key-0123456789abcdef0123456"
COVERAGE = re.compile(r"cov: (\d+) ft: (\d+)")


class Harness:
    """The fuzz target, what it saw, and the end of the run.

    libFuzzer leaves through C exit(), past Python's exit handlers, so the harness itself stops
    the run at its limits, prints the summary and exits; a crash is saved before that.
    """

    def __init__(self, crashes: Path, runs: int, seconds: float, work: Path, seeds: int) -> None:
        self.crashes = crashes
        self.limit = runs
        self.seconds = seconds or float("inf")
        self.work = work  # libFuzzer's corpus and log, removed at the end
        self.log = work / "libfuzzer.log"
        self.seeds = seeds
        self.results: Counter[str] = Counter()
        self.runs = 0
        self.started = time.monotonic()
        self.stderr = os.dup(2)

    def __call__(self, data: bytes) -> None:
        self.runs += 1
        try:
            result = decode(data[1:], 0.0, LINKTYPES[data[0] % len(LINKTYPES)] if data else 0, KEY)
            if type(result) is DropReason:
                self.results[result.value] += 1
            elif (
                isinstance(result, Advert)
                and result.vrid
                and result.interval_cs > 0 <= result.trailer
            ):
                self.results["advert"] += 1
            elif isinstance(result, Carp) and result.vhid and result.interval > 0:
                self.results["carp"] += 1
            elif isinstance(result, Claim) and result.address and result.mac:
                self.results["claim"] += 1
            else:
                raise TypeError(f"decode returned {result!r}")  # not an advert, or a broken one
        except Exception:
            self.crash(data)
        if self.runs >= self.limit or (
            self.runs % 4096 == 0 and time.monotonic() - self.started >= self.seconds
        ):
            self.finish(0)

    def crash(self, data: bytes) -> None:
        self.crashes.mkdir(parents=True, exist_ok=True)
        path = self.crashes / f"crash-{hashlib.sha1(data).hexdigest()}"
        path.write_bytes(data)
        os.dup2(self.stderr, 2)
        traceback.print_exc()
        print(f"crash input saved to {path}", file=sys.stderr, flush=True)
        self.finish(1)

    def finish(self, code: int) -> NoReturn:
        os.dup2(self.stderr, 2)
        elapsed = max(time.monotonic() - self.started, 1e-9)
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        found = COVERAGE.findall(log)
        cov, ft = found[-1] if found else ("?", "?")
        crashes = len(list(self.crashes.glob("crash-*"))) if self.crashes.exists() else 0
        lines = [
            f"seeds: {self.seeds}",
            f"inputs run: {self.runs}",
            f"seconds: {elapsed:.1f}",
            f"exec/s: {self.runs / elapsed:.0f}",
            f"coverage: {cov} edges, {ft} features",
            f"crashes: {crashes}",
            "results:",
            *(f"  {reason}: {n}" for reason, n in sorted(self.results.items())),
        ]
        print("\n".join(lines), flush=True)
        shutil.rmtree(self.work, ignore_errors=True)
        os._exit(code)


def seed_corpus(directory: Path) -> int:
    """Writes every captured frame of tests/data in every framing as a libFuzzer seed."""
    count = 0
    for pcap in sorted((ROOT / "tests" / "data").glob("*.pcap")):
        with pcap.open("rb") as f:
            frames = [p.frame for p in read(f) if p.linktype == LinkType.ETHERNET]
        for frame in frames:
            for framing in FRAMINGS:
                body, linktype = reframe(frame, framing)
                seed = bytes([LINKTYPES.index(LinkType(linktype))]) + body
                (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
                count += 1
    return count


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000_000, help="inputs to run")
    parser.add_argument("--seconds", type=int, default=0, help="stop after this long (0: no limit)")
    parser.add_argument("--crashes", type=Path, default=ROOT / "tests" / "data" / "fuzz-crashes")
    parser.add_argument("libfuzzer", nargs="*", help="extra libFuzzer flags, after --")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ka-fuzz-"))
    corpus = work / "corpus"
    corpus.mkdir()
    harness = Harness(args.crashes.resolve(), args.runs, args.seconds, work, seed_corpus(corpus))
    # libFuzzer's progress lines (and coverage counters) go to a file the summary reads.
    with harness.log.open("wb") as out:
        os.dup2(out.fileno(), 2)
    flags = [f"-artifact_prefix={work}/", *args.libfuzzer, str(corpus)]
    atheris.Setup([sys.argv[0], *flags], harness)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
