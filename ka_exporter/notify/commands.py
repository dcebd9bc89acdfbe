"""What every ka-notify command shares: its flags' parser, the config flag, the config loaded
with its errors at their lines, and the one line a spool failure ends in. The command line
(cli) and the daemon (service) both build on it; neither imports the other's internals.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from ka_exporter.alerting.config import DEFAULT_PATH, Config, ConfigError, load
from ka_exporter.alerting.spool import SpoolError
from ka_exporter.flags import Parser

PROG = "ka-notify"
ENV_PREFIX = "KA_NOTIFY_"  # every flag's variable: --config is KA_NOTIFY_CONFIG


def command_parser(prog: str, description: str) -> Parser:
    """A command's flags: dotted, each with its KA_NOTIFY_ variable, errors in one line."""
    return Parser(prog=prog, description=description, env_prefix=ENV_PREFIX)


def config_flag(parser: Parser) -> None:
    parser.flag("config", default=DEFAULT_PATH, help=f"configuration file (default {DEFAULT_PATH})")


def load_config(
    parser: Parser, path: str, *, check_sinks: bool = False, bare: bool = False
) -> Config:
    """The config, or exit 2 with each error on a line of its own: `PROG: error: FILE:LINE:
    message`, or `bare` (check-config) without the prefix, as compilers print, for editors."""
    try:
        return load(path, check_sinks=check_sinks)
    except ConfigError as exc:
        prefix = "" if bare else f"{parser.prog}: error: "
        parser.exit(2, "".join(f"{prefix}{line}\n" for line in exc.lines))


def fail(prog: str, exc: SpoolError) -> NoReturn:
    sys.stderr.write(f"{prog}: error: {exc}\n")
    sys.exit(1)
