"""Secrets for sinks come from a file or an environment variable, never from the config itself.

A config file is copied, diffed and pasted into tickets; a password in it leaks. So `<key>` is
refused and `<key>_file` (a path, content stripped) or `<key>_env` (a variable name) is read
instead. Error messages name the key, the path or the variable, never the value.

A receiver may echo the request in an error page, and what it echoes is what went on the wire:
the path of a Slack URL, a bearer token without its scheme, Basic credentials in base64, all
possibly URL-encoded. So a `Redactor` blacks out every form a secret can take there, not only
the string as configured.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote

from yarl import URL

REDACTED = "<redacted>"


class Secret:
    """A value that stays out of reprs, logs and tracebacks; `reveal()` where it is used."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


def _encodings(value: str) -> set[str]:
    """`value` as it can appear in an echoed request: as is, URL-encoded, base64, HTML."""
    raw = value.encode()
    return {
        value,
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        html.escape(value),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


def token_like(segment: str) -> bool:
    """A credential (Slack's T.../B.../token, Mattermost's hook id, an API key), not a word of
    the API's own (`services`, `hooks`, `net`)."""
    return len(segment) >= 8 and (len(segment) >= 16 or any(c.isdigit() for c in segment))


def url_parts(url: URL) -> list[str]:
    """What of a URL is secret-shaped on its own, should it carry a credential: the token-like
    segments of its path (and the path from the first of them on), its query values."""
    segments = url.path.split("/")
    first = next((i for i, s in enumerate(segments) if token_like(s)), None)
    parts = [*(s for s in segments if token_like(s)), *(v for v in url.query.values() if v)]
    if first is not None:
        parts.append("/".join(segments[first:]))
    return parts


def credential_parts(auth: tuple[str, Secret] | None) -> list[str]:
    """A password and the strings that carry it with the user: Basic auth's `user:pass` (sent
    base64) and SMTP AUTH PLAIN's NUL-separated form."""
    if auth is None:
        return []
    user, password = auth[0], auth[1].reveal()
    return [password, f"{user}:{password}", f"\0{user}\0{password}"]


def authorization_parts(value: str) -> list[str]:
    """An Authorization header value and its credential without the scheme; a Basic one also
    decoded."""
    parts = [value]
    scheme, _, credential = value.strip().partition(" ")
    credential = credential.strip()
    if not credential:
        return parts
    parts.append(credential)
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(credential, validate=True).decode().partition(":")
        except ValueError:
            return parts
        parts += credential_parts((user, Secret(password)))
    return parts


class Redactor:
    """Blacks out every encoding of the given secret strings; longest first, so a token inside
    a URL does not leave the rest of the URL behind."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = frozenset(s for s in secrets if s)
        forms = {form for s in self._secrets for form in _encodings(s) | _encodings(unquote(s))}
        ordered = sorted((f for f in forms if f), key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE) if ordered else None
        )

    def __call__(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub(REDACTED, text)

    def __or__(self, other: Redactor) -> Redactor:
        return Redactor(self._secrets | other._secrets)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"


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
