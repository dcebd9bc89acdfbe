"""The installed version, read only when asked: importlib.metadata costs ~40 ms of startup,
which the notify hook, run by keepalived on every transition, should not pay."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn


def installed() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("ka-exporter")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


class _VersionFlag(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **_: Any) -> None:
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, nargs=0, help="print the version and exit"
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        sys.stdout.write(f"{parser.prog} {installed()}\n")
        parser.exit(0)


def add_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=_VersionFlag)
