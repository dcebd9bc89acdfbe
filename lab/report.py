"""What the benchmarks' sections of docs/benchmarks.md share: the machine they were measured on,
and the rewriting of a section between its markers."""

from __future__ import annotations

import datetime
import platform
from collections.abc import Sequence
from pathlib import Path

Section = tuple[str, str, str]  # start marker, end marker, the body between them


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def kernel() -> str:
    """`Linux 6.1`: the release without its build suffix, which says nothing about speed."""
    return "Linux " + ".".join(platform.release().split(".")[:2])


def python() -> str:
    """`CPython 3.11.7`."""
    return f"{platform.python_implementation()} {platform.python_version()}"


def today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def write_sections(path: Path, sections: Sequence[Section]) -> None:
    """Replaces what stands between each pair of markers in `path`; the markers stay."""
    text = path.read_text(encoding="utf-8")
    for start_mark, end_mark, body in sections:
        start, end = text.find(start_mark), text.find(end_mark)
        if start < 0 or end < start:
            raise SystemExit(f"{path}: no {start_mark} ... {end_mark} section to replace")
        text = text[: start + len(start_mark)] + "\n" + body + "\n" + text[end:]
    path.write_text(text, "utf-8")
