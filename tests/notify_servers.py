"""Real counterparts for the sink tests: a CA made with openssl, an SMTP server (aiosmtpd), an
HTTP receiver (aiohttp) and Alertmanager itself, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from ka_exporter.alerting.alert import Alert, Severity, Source, Status
from lab.running import free_port, process, ready


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_pki(directory: Path) -> Pki:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=ka-exporter test CA")  # fmt: skip
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "authorityKeyIdentifier=keyid,issuer\nextendedKeyUsage=serverAuth\n"
    )
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2",
            "-extfile", "ext.cnf")  # fmt: skip
    return Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")


@dataclass
class Mailbox:
    """Receives for aiosmtpd: every accepted message with its envelope recipients."""

    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    delay: float = 0.0  # seconds before each answer to EHLO and DATA: a slow server

    async def handle_EHLO(
        self, server: SMTPServer, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:  # fmt: skip
        await asyncio.sleep(self.delay)
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay)
        assert isinstance(envelope.content, bytes)
        self.messages.append(
            (list(envelope.rcpt_tos), message_from_bytes(envelope.content, policy=policy.default))
        )
        return "250 OK"


def authenticator(user: str, password: str) -> Callable[..., AuthResult]:
    def check(
        server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            user.encode(),
            password.encode(),
        )
        return AuthResult(success=ok, handled=False)

    return check


@contextlib.contextmanager
def smtp_server(
    pki: Pki, *, implicit: bool, user: str, password: str
) -> Iterator[tuple[int, Mailbox]]:
    """STARTTLS required (or implicit TLS) and AUTH required, as a real submission port."""
    mailbox, port = Mailbox(), free_port()
    # aiosmtpd only knows about TLS it negotiated itself (STARTTLS): for implicit TLS it must not
    # insist on TLS before AUTH, the whole connection is TLS anyway.
    tls: dict[str, Any] = (
        {"ssl_context": pki.server_context(), "auth_require_tls": False}
        if implicit
        else {"tls_context": pki.server_context(), "require_starttls": True}
    )
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator(user, password),
        auth_required=True,
        **tls,
    )
    controller.start()
    try:
        yield port, mailbox
    finally:
        controller.stop()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def http_receiver(handler: Handler, method: str = "POST") -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 answering every `method` request with `handler`; yields its
    base URL."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    app = web.Application()
    app.router.add_route(method, "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def alertmanager(directory: Path, users: Mapping[str, str] | None = None) -> Iterator[str]:
    """Debian's prometheus-alertmanager with a do-nothing route, stopped by its PID; with
    `users`, its own Basic auth (a web config of bcrypt hashes)."""
    config = directory / "am.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = ["prometheus-alertmanager", f"--config.file={config}", f"--storage.path={directory}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]  # fmt: skip
    if users:
        web_config = directory / "web.yml"
        salt = bcrypt.gensalt(4)  # the cheapest cost: a test's login, not a vault
        hashes = {u: bcrypt.hashpw(p.encode(), salt).decode() for u, p in users.items()}
        web_config.write_text(json.dumps({"basic_auth_users": hashes}))  # JSON is YAML
        argv.append(f"--web.config.file={web_config}")
    with process(argv, directory / "am.log") as am:
        deadline = time.monotonic() + 15
        while not (ready(port) or (users and refuses_anonymous(port))):
            if am.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((directory / "am.log").read_text())
            time.sleep(0.05)
        yield url


def refuses_anonymous(port: int) -> bool:
    """Whether a server on loopback is up and asks for credentials (401)."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1).close()
    except urllib.error.HTTPError as refused:
        return refused.code == 401
    except OSError:
        pass
    return False


async def get_json(url: str) -> Any:
    """GET off the event loop (urllib), so the test does not lean on the code under test."""

    def fetch() -> Any:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    return await asyncio.to_thread(fetch)


def sample_alert(status: Status = Status.FIRING, ends_at: float | None = None) -> Alert:
    """A keepalived transition as the notify hook reports it, with what the wire shows."""
    return Alert(
        name="KeepalivedStateChange",
        severity=Severity.CRITICAL,
        status=status,
        source=Source.NOTIFY,
        starts_at=time.time() - 30,
        ends_at=ends_at,
        labels={"cluster": "lb1", "instance": "node-a", "iname": "VI_1", "vrid": "51"},
        annotations={
            "summary": "node-a became MASTER for VI_1 (vrid 51)",
            "old_state": "BACKUP",
            "new_state": "MASTER",
            "priority": "150",
            "wire": "vrid 51: 192.0.2.1 prio 150 MASTER; 192.0.2.2 prio 100 silent",
        },
    )


def signed(key: bytes, headers: Mapping[str, str], body: bytes) -> bool:
    message = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()
    version, _, signature = headers.get("webhook-signature", "").partition(",")
    return version == "v1" and hmac.compare_digest(signature, expected)


class Receiver:
    """A webhook receiver on 127.0.0.1 in a thread of its own; counts webhook-ids. With `key`
    it accepts only requests whose Standard Webhooks HMAC-SHA256 signature checks out."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key
        self.forged = 0  # requests refused for a bad signature
        self.ids: list[str] = []
        self.bodies: list[bytes] = []
        self.down_until = 0.0
        self.delay = 0.0
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            if time.time() < self.down_until:
                return web.Response(status=503)
            if self.key is not None and not signed(self.key, request.headers, body):
                self.forged += 1
                return web.Response(status=401)
            await asyncio.sleep(self.delay)
            with self.lock:
                self.ids.append(request.headers["webhook-id"])
                self.bodies.append(body)
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/", handle)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def unique(self) -> set[str]:
        with self.lock:
            return set(self.ids)

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while len(self.unique()) < count and time.time() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    """Import it (as `receiver_fixture`) where a test takes a `receiver`."""
    r = Receiver()
    yield r
    r.close()
