"""Typed reading of one sink's option table, so every sink validates the same way.

Each getter raises ValueError("<key>: <message>"); the config checker adds file:line. Each
sink declares its keys, and keys it does not know are refused first, each named with the known
key it is closest to: a typo (`pasword_file`, `too`) is reported as itself, not as the key it
was meant to be ("to: missing"), and never silently disables authentication.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypedDict

from yarl import URL

from ka_exporter.alerting.config import OptionsError, unknown_key
from ka_exporter.alerting.secret import Redactor, Secret, read_secret
from ka_exporter.alerting.sink import MAX_AGE, MAX_ATTEMPTS
from ka_exporter.alerting.spool import LEASE_SECONDS

COMMON = ("timeout", "ca_file", "max_attempts", "max_age")  # every sink type has these
# One attempt, connect to answer, ends well within the lease its delivery holds.
MAX_TIMEOUT = LEASE_SECONDS / 2


@dataclass(kw_only=True)
class Delivery:
    """What every sink has besides its own settings: the bound of one attempt, its secrets'
    redaction, its TLS, and when a failing delivery becomes a dead letter."""

    timeout: float
    redact: Redactor
    tls: ssl.SSLContext = field(repr=False)
    max_attempts: int = MAX_ATTEMPTS
    max_age: float = MAX_AGE
    resend_interval: float | None = None  # set by the sinks that want firing alerts re-sent


class DeliveryOptions(TypedDict):
    timeout: float
    redact: Redactor
    tls: ssl.SSLContext
    max_attempts: int
    max_age: float


def known_keys(keys: Iterable[str], secrets: Iterable[str] = ()) -> frozenset[str]:
    """A sink's keys: `keys`, the common ones, and each secret with its _file and _env forms
    (the inline form is known too, to be refused with its own message)."""
    forms = {f"{key}{suffix}" for key in secrets for suffix in ("", "_file", "_env")}
    return frozenset({*keys, *COMMON, *forms})


class Options:
    def __init__(self, options: Mapping[str, object], known: frozenset[str]) -> None:
        unknown = sorted(set(options) - known)
        if unknown:
            raise OptionsError([unknown_key(key, known) for key in unknown])
        self._options = options

    def string(self, key: str, default: str | None = None) -> str:
        value = self._options.get(key)
        if value is None:
            if default is None:
                raise ValueError(f"{key}: missing")
            return default
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key}: expected a non-empty string")
        return value

    def optional_string(self, key: str) -> str | None:
        return None if self._options.get(key) is None else self.string(key)

    def number(self, key: str, default: float) -> float:
        value = self._options.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"{key}: expected a positive number of seconds")
        return float(value)

    def timeout(self, default: float) -> float:
        """The bound of one attempt, from connecting to the receiver's last answer."""
        value = self.number("timeout", default)
        if value > MAX_TIMEOUT:
            raise ValueError(
                f"timeout: at most {MAX_TIMEOUT:g} s: an attempt must end well within the "
                f"{LEASE_SECONDS:g} s its delivery is leased for"
            )
        return value

    def max_attempts(self) -> int:
        """How many attempts a delivery gets before it is a dead letter."""
        value = self._options.get("max_attempts")
        if value is None:
            return MAX_ATTEMPTS
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("max_attempts: expected a whole number of attempts, at least 1")
        return value

    def max_age(self) -> float:
        """Seconds after it was queued that a delivery still failing is a dead letter."""
        return self.number("max_age", MAX_AGE)

    def delivery(self, timeout: float, redact: Redactor) -> DeliveryOptions:
        """The common keys, read the same way for every sink; `timeout` is its default."""
        return DeliveryOptions(
            timeout=self.timeout(timeout),
            redact=redact,
            tls=self.tls(),
            max_attempts=self.max_attempts(),
            max_age=self.max_age(),
        )

    def port(self, key: str, default: int) -> int:
        value = self._options.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise ValueError(f"{key}: expected a port number 1-65535")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._options.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, choices[0])
        if value not in choices:
            raise ValueError(f"{key}: expected one of {', '.join(choices)}, not {value!r}")
        return value

    def string_list(self, key: str) -> list[str]:
        value = self._options.get(key)
        if value is None:
            raise ValueError(f"{key}: missing")
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(item, str) and item for item in value)
        ):
            raise ValueError(f"{key}: expected a non-empty list of strings")
        return list(value)

    def table(self, key: str) -> dict[str, str]:
        value = self._options.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ValueError(f"{key}: expected a table of strings")
        return dict(value)

    def url(self, key: str) -> URL:
        return checked_url(self.string(key), key)

    def secret(self, key: str) -> Secret:
        value = self.optional_secret(key, required=True)
        assert value is not None  # read_secret raised otherwise
        return value

    def optional_secret(self, key: str, *, required: bool = False) -> Secret | None:
        return read_secret(self._options, key, required=required)

    def credentials(self) -> tuple[str, Secret] | None:
        """`username` with `password_file`/`password_env`: both or neither."""
        username = self.optional_string("username")
        password = self.optional_secret("password", required=username is not None)
        if username is None:
            if password is not None:
                raise ValueError("username: missing; a password is set")
            return None
        assert password is not None  # required above
        return username, password

    def tls(self) -> ssl.SSLContext:
        """Certificate verification is always on; `ca_file` replaces the system CAs."""
        ca_file = self.optional_string("ca_file")
        try:
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ca_file: cannot load {ca_file}: {exc}") from None


def checked_url(text: str, key: str) -> URL:
    """An absolute http(s) URL; the message never quotes it (a Slack URL is a secret). A
    password in it would be a secret written into the config file, so it is refused."""
    try:
        url = URL(text)
    except ValueError:
        raise ValueError(f"{key}: not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{key}: expected an http:// or https:// URL")
    if url.password is not None:
        raise ValueError(
            f"{key}: credentials do not go into the URL; use password_file or authorization_file"
        )
    return url
