"""Secrets for sinks come from a file or an environment variable, never from the config itself.

A config file is copied, diffed and pasted into tickets; a password in it leaks. So `<key>` is
refused and `<key>_file` (a path, content stripped) or `<key>_env` (a variable name) is read
instead. Error messages name the key, the path or the variable, never the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


class Secret:
    """A value that stays out of reprs, logs and tracebacks; `reveal()` where it is used."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        """`text` (a server's answer, say) with this secret blacked out, should it echo it."""
        return text.replace(self._value, "<redacted>")

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


def read_secret(options: Mapping[str, object], key: str, *, required: bool = True) -> Secret | None:
    """Reads `<key>_file` or `<key>_env`; raises ValueError("<key>...: ...") without the value."""
    if key in options:
        raise ValueError(
            f"{key}: secrets are not accepted inline; use {key}_file (a file holding it) "
            f"or {key}_env (an environment variable holding it)"
        )
    file_key, env_key = f"{key}_file", f"{key}_env"
    if file_key in options and env_key in options:
        raise ValueError(f"{key}: set only one of {file_key} and {env_key}")
    if file_key in options:
        path = _name(options[file_key], file_key)
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ValueError(f"{file_key}: cannot read {path}: {reason}") from None
        if not value:
            raise ValueError(f"{file_key}: {path} is empty")
        return Secret(value)
    if env_key in options:
        variable = _name(options[env_key], env_key)
        value = os.environ.get(variable, "").strip()
        if not value:
            raise ValueError(f"{env_key}: environment variable {variable} is not set or empty")
        return Secret(value)
    if required:
        raise ValueError(f"{key}: missing; set {file_key} or {env_key}")
    return None


def _name(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key}: expected a non-empty string")
    return value
