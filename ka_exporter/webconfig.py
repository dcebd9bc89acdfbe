"""TLS and basic auth for the HTTP endpoints, from a Prometheus exporter-toolkit web config file.

The file format is the toolkit's, so one file serves this exporter and the Go ones alike. The
file and the files it names are re-read when they change (checked once a second): certificates
rotate and users change without a restart. A file that turns bad at run time leaves the last
good configuration in force, with one error logged.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import os
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from aiohttp import web

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0  # stat the files this often
CACHE_SECONDS = 60.0  # a successful bcrypt check is trusted this long: bcrypt is slow on purpose
CACHE_SIZE = 256
REALM = 'Basic realm="ka-exporter", charset="UTF-8"'

# client_auth_type -> ssl verify mode; None: the toolkit's mode that Python's ssl cannot do
# (it asks for a certificate but never verifies it, which Python cannot express)
CLIENT_AUTH: dict[str, ssl.VerifyMode | None] = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": None,
    "RequireAnyClientCert": None,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
MIN_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
TOP_KEYS = frozenset({"tls_server_config", "basic_auth_users"})
TLS_KEYS = frozenset({"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"})
_BCRYPT = re.compile(rb"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
# checked against when the user is unknown, so that an unknown user costs as much as a known one;
# a literal (of a random password, cost 10), as hashing one here would add 0.1 s to every start
_DUMMY_HASH = b"$2b$10$d.tx6InDOHHSQ5uOAXX7HumSQrBEXHm6uy2hbL/ry8edkXPHLTr5e"


class WebConfigError(Exception):
    """The file cannot be used; the message is one line naming the file and the problem."""


@dataclass(frozen=True, slots=True)
class Tls:
    cert_file: Path
    key_file: Path
    client_auth: ssl.VerifyMode = ssl.CERT_NONE
    client_ca_file: Path | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2

    def named_files(self) -> dict[str, Path]:
        named = {"cert_file": self.cert_file, "key_file": self.key_file}
        return named | ({"client_ca_file": self.client_ca_file} if self.client_ca_file else {})

    def files(self) -> tuple[Path, ...]:
        return tuple(self.named_files().values())

    def context(self) -> ssl.SSLContext:
        """A server context; raises WebConfigError if a certificate or key does not load."""
        for key, path in self.named_files().items():  # ssl's errors do not say which file
            try:
                path.open("rb").close()
            except OSError as exc:
                raise WebConfigError(f"tls_server_config.{key}: {path}: {exc.strerror}") from None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self.min_version
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
            if self.client_ca_file is not None:
                context.load_verify_locations(self.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(
                f"cannot load the certificate, key or CA: {_reason(exc)}"
            ) from None
        context.verify_mode = self.client_auth
        return context


@dataclass(frozen=True, slots=True)
class WebConfig:
    path: Path
    tls: Tls | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash

    def files(self) -> tuple[Path, ...]:
        return (self.path, *(self.tls.files() if self.tls else ()))


def load(path: str | Path) -> WebConfig:
    """Parses and checks the file in full, including that the TLS files load."""
    path = Path(path)
    try:
        config = parse(path, yaml.safe_load(path.read_text()))
        if config.tls is not None:
            config.tls.context()
    except OSError as exc:
        raise WebConfigError(f"{path}: cannot read: {_reason(exc)}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not YAML"
        raise WebConfigError(f"{path}{where}: {problem}") from None
    except WebConfigError as exc:
        raise WebConfigError(f"{path}: {exc}") from None
    return config


def from_flag(text: str) -> WebConfig:
    """load() as an argparse type: a bad file is a usage error, one line and exit 2."""
    try:
        return load(text)
    except WebConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse(path: Path, data: object) -> WebConfig:
    """The checked configuration from the YAML document; relative paths are the file's."""
    if data is None:
        return WebConfig(path)
    top = _mapping(data, "the file")
    _known(top, TOP_KEYS, "")
    tls = None
    if top.get("tls_server_config") is not None:
        tls = _tls(path.parent, _mapping(top["tls_server_config"], "tls_server_config"))
    users = {}
    for user, hashed in _mapping(top.get("basic_auth_users") or {}, "basic_auth_users").items():
        if not isinstance(user, str) or not user or ":" in user:
            raise WebConfigError(f"basic_auth_users: not a user name: {user!r}")
        if not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed.encode()):
            raise WebConfigError(f"basic_auth_users: {user}: not a bcrypt hash")
        users[user] = hashed.encode()
    return WebConfig(path, tls, users)


def _tls(base: Path, data: Mapping[str, Any]) -> Tls:
    _known(data, TLS_KEYS, "tls_server_config.")
    files = {}
    for key in ("cert_file", "key_file", "client_ca_file"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise WebConfigError(f"tls_server_config.{key}: not a file name: {value!r}")
        files[key] = base / value
    for key in ("cert_file", "key_file"):
        if key not in files:
            raise WebConfigError(f"tls_server_config.{key} is required")
    auth_name = data.get("client_auth_type") or "NoClientCert"
    if auth_name not in CLIENT_AUTH:
        raise WebConfigError(
            f"tls_server_config.client_auth_type: {auth_name!r}: "
            f"choose from {', '.join(CLIENT_AUTH)}"
        )
    auth = CLIENT_AUTH[auth_name]
    if auth is None:
        raise WebConfigError(
            f"tls_server_config.client_auth_type: {auth_name} (a certificate asked for but not "
            "verified) is not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
        )
    ca = files.get("client_ca_file")
    if auth != ssl.CERT_NONE and ca is None:
        raise WebConfigError(f"tls_server_config.client_ca_file is required with {auth_name}")
    if auth == ssl.CERT_NONE and ca is not None:
        raise WebConfigError(
            "tls_server_config.client_ca_file is set but client_auth_type verifies no certificate"
        )
    version = data.get("min_version") or "TLS12"
    if version not in MIN_VERSIONS:
        raise WebConfigError(
            f"tls_server_config.min_version: {version!r}: choose from {', '.join(MIN_VERSIONS)}"
        )
    return Tls(files["cert_file"], files["key_file"], auth, ca, MIN_VERSIONS[version])


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise WebConfigError(f"{what}: expected a mapping, not {type(value).__name__}")
    return value


def _known(data: Mapping[str, Any], known: frozenset[str], prefix: str) -> None:
    for key in data:
        if key not in known:
            raise WebConfigError(
                f"{prefix}{key}: unknown or unsupported key (known: {', '.join(sorted(known))})"
            )


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Live:
    """The configuration in force, re-read when one of its files changes.

    The files are checked by a timer, not by the connection that would first use them: a
    connection's TLS settings are fixed when it is accepted. TLS works through one listening
    context that takes the new verify mode and minimum version, and whose SNI callback (called
    on every handshake, with or without a server name) hands the connection the newest context
    with its certificate and client CAs.
    """

    def __init__(self, config: WebConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._context = config.tls.context() if config.tls else None
        self._front = self._context
        self._stamp = _stamp(config.files())
        self._failed: tuple[object, ...] | None = None  # the stamp last reported as bad
        self._cache: dict[bytes, float] = {}

    def ssl_context(self) -> ssl.SSLContext | None:
        """The listening context (None: plain HTTP), fixed for the life of the server."""
        if self._front is not None:
            self._front.sni_callback = self._on_handshake
        return self._front

    async def watching(self, _: web.Application) -> AsyncIterator[None]:
        """For the app's cleanup_ctx: checks the files every CHECK_SECONDS while it serves."""

        async def watch() -> None:
            while True:
                await asyncio.sleep(CHECK_SECONDS)
                self.refresh()

        task = asyncio.create_task(watch())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def refresh(self) -> None:
        """Re-reads the files if they changed."""
        stamp = _stamp(self.config.files())
        if stamp in (self._stamp, self._failed):
            return
        try:
            config = load(self.config.path)
            if (config.tls is None) != (self.config.tls is None):
                raise WebConfigError(f"{config.path}: turning TLS on or off needs a restart")
            context = config.tls.context() if config.tls else None
        except WebConfigError as exc:
            self._failed = stamp
            log.error("web config not reloaded, the last good one stays in force: %s", exc)
            return
        self.config, self._context, self._failed = config, context, None
        if self._front is not None and context is not None:  # copied into each new connection
            self._front.verify_mode = context.verify_mode
            self._front.minimum_version = context.minimum_version
        self._stamp = _stamp(config.files())
        self._cache.clear()
        log.info("web config reloaded from %s", config.path)

    def _on_handshake(self, sock: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        if self._context is not None:
            sock.context = self._context

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every path, health endpoints included, is behind basic auth when users are set."""
        if self.config.users and not await self._authorized(request.headers.get("Authorization")):
            return web.Response(
                status=401, text="Unauthorized\n", headers={"WWW-Authenticate": REALM}
            )
        return await handler(request)

    async def _authorized(self, header: str | None) -> bool:
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        hashed = self.config.users.get(user)
        key = hashlib.sha256(b"\0".join([user.encode(), hashed or b"", password.encode()])).digest()
        now = self.clock()
        if self._cache.get(key, 0.0) > now:
            return True
        checked = await asyncio.get_running_loop().run_in_executor(
            None, bcrypt.checkpw, password.encode(), hashed or _DUMMY_HASH
        )
        if not (checked and hashed):
            return False
        if len(self._cache) >= CACHE_SIZE:
            self._cache = {k: t for k, t in self._cache.items() if t > now}
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
        self._cache[key] = now + CACHE_SECONDS
        return True


def _stamp(paths: tuple[Path, ...]) -> tuple[object, ...]:
    """What tells a file changed: inode, size and mtime (a missing file is a change too)."""
    marks: list[object] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            marks.append(exc.errno)
            continue
        marks.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(marks)
