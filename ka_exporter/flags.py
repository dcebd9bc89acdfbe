"""Command-line flags in the Prometheus exporter style, each also read from the environment.

Both commands build their flags here, so every flag has its variable (`--web.listen-address` is
PREFIX_WEB_LISTEN_ADDRESS) and every mistake ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
from typing import NoReturn


def env_name(prefix: str, flag: str) -> str:
    return prefix + flag.upper().replace(".", "_").replace("-", "_")


def dest(flag: str) -> str:
    """The attribute a flag is read back from: `web.listen-address` is `web_listen_address`."""
    return flag.replace(".", "_").replace("-", "_")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, and defaults may come from the environment."""

    def __init__(self, *args: object, env_prefix: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.env_prefix = env_prefix

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")

    def flag(self, name: str, *aliases: str, **kwargs: object) -> None:
        """Adds `--name` (and `--alias`, an older spelling, whose variable is read too); its
        default comes from the environment. A repeatable flag takes a comma-separated list."""
        env = env_name(self.env_prefix, name)
        repeated = kwargs.get("action") == "append"
        found = [
            e for e in (env, *(env_name(self.env_prefix, a) for a in aliases)) if e in os.environ
        ]
        if found:
            env = found[0]
            raw = os.environ[env]
            convert = kwargs.get("type", str)
            choices = kwargs.get("choices")
            assert callable(convert)
            try:
                values = [convert(v) for v in raw.split(",")] if repeated else [convert(raw)]
            except (argparse.ArgumentTypeError, ValueError) as exc:
                self.error(f"{env}={raw!r}: {exc}")
            if isinstance(choices, tuple) and any(v not in choices for v in values):
                self.error(f"{env}={raw!r}: choose from {', '.join(map(str, choices))}")
            kwargs["default"] = values if repeated else values[0]
        elif repeated:
            kwargs["default"] = []
        help_text = f"{kwargs.pop('help', '')} [env {env_name(self.env_prefix, name)}]"
        if repeated:  # flags on the command line replace the environment's list, not extend it
            kwargs["action"] = _Replace
        options = [f"--{name}", *(f"--{alias}" for alias in aliases)]
        self.add_argument(*options, dest=dest(name), help=help_text, **kwargs)  # type: ignore[arg-type]


class _Replace(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest)
        fresh = getattr(namespace, f"_{self.dest}_fresh", False)
        setattr(namespace, self.dest, [*current, values] if fresh else [values])
        setattr(namespace, f"_{self.dest}_fresh", True)
