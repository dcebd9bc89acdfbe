"""--web.config.file: the exporter-toolkit format checked in full, then TLS and basic auth served
for real (ssl + http.client against web.serve, and the ka-notify daemon as a process)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import logging
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry

from ka_exporter import cli, web, webconfig
from ka_exporter.notify import cli as notify_cli
from lab import wait_for
from tests.notify_servers import Pki, free_port, make_pki
from tests.running import process

USER, PASSWORD = "prometheus", "s3cret-scrape"


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def client_cert(pki: Pki, name: str) -> tuple[Path, Path]:
    """A client certificate signed by `pki`'s CA."""
    directory = pki.ca.parent

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")  # fmt: skip
    (directory / "client.cnf").write_text("extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", "client.cnf")  # fmt: skip
    return directory / f"{name}.pem", directory / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_yaml(pki: Pki, extra: str = "") -> str:
    return f"tls_server_config:\n  cert_file: {pki.cert}\n  key_file: {pki.key}\n{extra}"


def users_yaml(**users: str) -> str:
    return "basic_auth_users:\n" + "".join(f"  {u}: {hashed(p)}\n" for u, p in users.items())


# --- the file, checked ----------------------------------------------------------------------

BAD_FILES: dict[str, tuple[Callable[[Pki], str], str]] = {
    "unknown key": (lambda p: "tls_config: {}\n", "tls_config: unknown or unsupported key"),
    "unknown tls key": (
        lambda p: tls_yaml(p, "  cipher_suites: [x]\n"),
        "tls_server_config.cipher_suites: unknown or unsupported key",
    ),
    "not a mapping": (lambda p: "- a\n- b\n", "expected a mapping, not list"),
    "not yaml": (lambda p: "basic_auth_users: [a\nb: c\n", ".yml:2: expected ',' or ']'"),
    "no key_file": (
        lambda p: f"tls_server_config:\n  cert_file: {p.cert}\n",
        "tls_server_config.key_file is required",
    ),
    "missing cert": (
        lambda p: tls_yaml(p).replace(str(p.cert), "/nonexistent.pem"),
        "/nonexistent.pem: No such file or directory",
    ),
    "key of another cert": (
        lambda p: tls_yaml(p).replace(str(p.key), str(p.ca.with_suffix(".key"))),
        "KEY_VALUES_MISMATCH",
    ),
    "not a certificate": (
        lambda p: tls_yaml(p).replace(str(p.cert), str(p.ca.parent / "ext.cnf")),
        "cannot load the certificate",
    ),
    "bad client_auth_type": (
        lambda p: tls_yaml(p, "  client_auth_type: Always\n"),
        "client_auth_type: 'Always': choose from NoClientCert",
    ),
    "unverified client cert": (
        lambda p: tls_yaml(p, "  client_auth_type: RequireAnyClientCert\n"),
        "RequireAnyClientCert (a certificate asked for but not verified) is not supported",
    ),
    "verify without ca": (
        lambda p: tls_yaml(p, "  client_auth_type: RequireAndVerifyClientCert\n"),
        "client_ca_file is required with RequireAndVerifyClientCert",
    ),
    "ca without verify": (
        lambda p: tls_yaml(p, f"  client_ca_file: {p.ca}\n"),
        "client_ca_file is set but client_auth_type verifies no certificate",
    ),
    "old tls": (lambda p: tls_yaml(p, "  min_version: TLS11\n"), "'TLS11': choose from TLS12"),
    "plain password": (
        lambda p: "basic_auth_users:\n  alice: hunter2\n",
        "basic_auth_users: alice: not a bcrypt hash",
    ),
    "user with colon": (
        lambda p: f"basic_auth_users:\n  'a:b': {hashed('x')}\n",
        "not a user name: 'a:b'",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_is_one_line_and_exit_2(
    case: str, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = BAD_FILES[case]
    path = tmp_path / "web.yml"
    path.write_text(make(pki))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--web.config.file", str(path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ka-exporter: error: "), err
    assert str(path) in err and message in err
    assert "hunter2" not in err  # a wrong value is named by its key, not echoed


def test_missing_file_from_environment_and_for_ka_notify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.yml")
    monkeypatch.setenv("KA_EXPORTER_WEB_CONFIG_FILE", missing)
    for main, prefix in (
        (lambda: cli.main([]), "ka-exporter: error: KA_EXPORTER_WEB_CONFIG_FILE="),
        (lambda: notify_cli.main(["daemon", "--web.config.file", missing]), "ka-notify daemon: "),
    ):
        with pytest.raises(SystemExit) as exit_:
            main()
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(prefix), err
        assert f"{missing}: cannot read: No such file or directory" in err


def test_relative_paths_are_the_files_and_empty_file_is_plain_http(tmp_path: Path) -> None:
    tls = {"cert_file": "a.pem", "key_file": "/etc/a.key"}
    config = webconfig.parse(tmp_path / "web.yml", {"tls_server_config": tls})
    assert config.tls is not None
    assert (config.tls.cert_file, config.tls.key_file) == (tmp_path / "a.pem", Path("/etc/a.key"))
    (tmp_path / "empty.yml").write_text("")
    assert webconfig.load(tmp_path / "empty.yml") == webconfig.WebConfig(tmp_path / "empty.yml")


# --- served ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(path: Path) -> AsyncIterator[tuple[int, webconfig.Live]]:
    """The server behind `path`; its Live, whose refresh() the tests call rather than wait for
    the timer (the ka-notify test below waits for it)."""
    registry = CollectorRegistry()
    app = web.make_app(registry, lambda: "<html>status</html>", lambda: True, "/metrics")
    port = free_port()
    live = webconfig.Live(webconfig.load(path))
    runner = await web.serve(app, "127.0.0.1", port, live)
    try:
        yield port, live
    finally:
        await runner.cleanup()


def client_context(ca: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def request(
    port: int,
    path: str = "/metrics",
    auth: tuple[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str]]:
    """One GET; over TLS when a client context is given."""
    conn = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
        if context
        else http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    )
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, dict(response.headers)
    finally:
        conn.close()


async def call(*args: object, **kwargs: object) -> tuple[int, dict[str, str]]:
    return await asyncio.to_thread(request, *args, **kwargs)  # type: ignore[arg-type]


def test_basic_auth_over_tls_guards_every_path(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(tls_yaml(pki) + users_yaml(**{USER: PASSWORD}))
    tls = client_context(pki.ca)

    async def main() -> None:
        async with serving(path) as (port, _):
            for where in ("/metrics", "/", "/-/healthy", "/-/ready"):
                assert (await call(port, where, (USER, PASSWORD), tls))[0] == 200
                status, headers = await call(port, where, None, tls)
                assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
            assert (await call(port, "/metrics", (USER, "wrong"), tls))[0] == 401
            assert (await call(port, "/metrics", ("nobody", PASSWORD), tls))[0] == 401
            assert (await call(port, "/metrics", (USER, PASSWORD), tls))[0] == 200  # cached
            with pytest.raises(http.client.RemoteDisconnected):  # plain HTTP to a TLS port
                await call(port, "/metrics", (USER, PASSWORD))

    asyncio.run(main())


def test_client_certificate_required_and_verified(
    pki: Pki, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path / "web.yml"
    verify = f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca}\n"
    path.write_text(tls_yaml(pki, verify))
    good = client_cert(pki, "scraper")
    stranger = client_cert(make_pki(tmp_path_factory.mktemp("other")), "stranger")

    async def main() -> None:
        async with serving(path) as (port, _):
            assert (await call(port, "/metrics", None, client_context(pki.ca, good)))[0] == 200
            for cert in (None, stranger):
                with pytest.raises((ssl.SSLError, ConnectionResetError)):
                    await call(port, "/metrics", None, client_context(pki.ca, cert))

    asyncio.run(main())


def test_changed_files_are_picked_up_and_a_bad_one_is_ignored(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    pki = make_pki(tmp_path_factory.mktemp("replaced"))  # its files are replaced below
    path = tmp_path / "web.yml"
    path.write_text(tls_yaml(pki) + users_yaml(**{USER: PASSWORD}))
    rotated = make_pki(tmp_path_factory.mktemp("rotated"))

    async def main() -> None:
        async with serving(path) as (port, live):
            tls = client_context(pki.ca)
            assert (await call(port, "/", (USER, PASSWORD), tls))[0] == 200
            path.write_text(tls_yaml(pki) + users_yaml(alice="new-password"))
            live.refresh()
            assert (await call(port, "/", ("alice", "new-password"), tls))[0] == 200
            assert (await call(port, "/", (USER, PASSWORD), tls))[0] == 401  # cache dropped
            # a broken file leaves the last good configuration in force, logged once
            path.write_text(users_yaml(alice="x").replace("$2b$", "$9z$"))
            for _ in range(2):
                live.refresh()
                assert (await call(port, "/", ("alice", "new-password"), tls))[0] == 200
            errors = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 1 and "not a bcrypt hash" in errors[0].getMessage()
            # certificate rotation: new handshakes get the new certificate
            for name in ("cert", "key"):
                os.replace(getattr(rotated, name), getattr(pki, name))
            path.write_text(tls_yaml(pki) + users_yaml(alice="new-password"))
            live.refresh()
            new = client_context(rotated.ca)
            assert (await call(port, "/", ("alice", "new-password"), new))[0] == 200
            with pytest.raises(ssl.SSLCertVerificationError):
                await call(port, "/", ("alice", "new-password"), tls)

    asyncio.run(main())


@pytest.fixture
def notify_config(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "ka.toml"
    path.write_text(  # a sink keeps the daemon running; no event means nothing is sent
        f'cluster = "t"\nstate_dir = "{tmp_path / "state"}"\n'
        '[[sink]]\nname = "hook"\ntype = "webhook"\nurl = "http://127.0.0.1:9/"\n'
    )
    (tmp_path / "state").mkdir()
    yield path


def test_ka_notify_daemon_serves_behind_the_web_config(
    pki: Pki, tmp_path: Path, notify_config: Path
) -> None:
    web_yml = tmp_path / "web.yml"
    web_yml.write_text(tls_yaml(pki) + users_yaml(**{USER: PASSWORD}))
    port = free_port()
    argv = [str(Path(sys.executable).parent / "ka-notify"), "daemon", "--config",
            str(notify_config), "--web.listen-address", f"127.0.0.1:{port}",
            "--web.config.file", str(web_yml)]  # fmt: skip
    tls = client_context(pki.ca)

    def up() -> bool:
        try:
            return request(port, "/metrics", None, tls)[0] == 401
        except OSError:
            return False

    with process(argv, tmp_path / "daemon.log"):
        wait_for(up, 15, what="ka-notify daemon")
        assert request(port, "/metrics", (USER, PASSWORD), tls)[0] == 200
        assert request(port, "/metrics", (USER, "guess"), tls)[0] == 401
        web_yml.write_text(tls_yaml(pki) + users_yaml(**{USER: "rotated-password"}))
        wait_for(
            lambda: request(port, "/metrics", (USER, "rotated-password"), tls)[0] == 200,
            10,
            what="new password taken without restart",
        )
        assert request(port, "/metrics", (USER, PASSWORD), tls)[0] == 401
    log = (tmp_path / "daemon.log").read_text()
    assert PASSWORD not in log and "rotated-password" not in log
    assert "web config reloaded" in log


def test_client_auth_turned_on_at_run_time(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(tls_yaml(pki))
    good = client_cert(pki, "late")

    async def main() -> None:
        async with serving(path) as (port, live):
            assert (await call(port, "/", None, client_context(pki.ca)))[0] == 200
            verify = f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca}\n"
            path.write_text(tls_yaml(pki, verify))
            live.refresh()
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                await call(port, "/", None, client_context(pki.ca))
            assert (await call(port, "/", None, client_context(pki.ca, good)))[0] == 200

    asyncio.run(main())
