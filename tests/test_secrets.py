"""No secret leaves the processes: the VRRP PASS password, the SMTP password, the webhook key.

One run of everything that handles them, real parts throughout: adverts with a PASS password on a
wire watched by the exporter (debug logs, its own alerts on), a ka-notify daemon whose SMTP sink
logs in to a real aiosmtpd with a wrong password (refused on purpose, so a dead letter with its
reason) and whose webhook sink signs for a real receiver, the keepalived hook, `ka-notify test`
and `queue`, and `ka-exporter analyze` of the same frames. Then every output is searched for each
secret, also hex- and base64-encoded.
"""

from __future__ import annotations

import base64
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from ka_exporter.decode import LinkType
from tests import frames
from tests.conftest import send
from tests.notify_servers import Receiver, free_port, make_pki, smtp_server
from tests.running import process, ready

BIN = Path(sys.executable).parent
SMTP_USER = "alerts"
ROUTER = "192.0.2.11"  # frames.SRC4, not among the expected peers: a VRRPUnknownRouter alert


def forms(name: str, secret: bytes, *, smtp_user: str | None = None) -> Iterator[tuple[str, str]]:
    """The secret as text, hex and base64, and as an SMTP AUTH PLAIN/LOGIN exchange carries it."""
    raw = [secret]
    if smtp_user is not None:
        raw.append(b"\0" + smtp_user.encode() + b"\0" + secret)
    for value in raw:
        yield f"{name} hex", value.hex()
        yield f"{name} HEX", value.hex().upper()
        yield f"{name} base64", base64.b64encode(value).decode().rstrip("=")
        yield f"{name} base64url", base64.urlsafe_b64encode(value).decode().rstrip("=")
    yield name, secret.decode()


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return f"{done.returncode}\n{done.stdout}\n{done.stderr}"


def dead(queue: str) -> int:
    found = re.search(r"dead letters (\d+)", queue)
    return int(found.group(1)) if found else 0


def wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.lab
def test_secrets_never_appear(wire: tuple[str, str], tmp_path: Path) -> None:
    a, b = wire
    vrrp_password = secrets.token_urlsafe(6).encode()  # 8 characters: all a PASS advert carries
    smtp_password = secrets.token_urlsafe(18)
    webhook_key = secrets.token_urlsafe(24)
    (tmp_path / "smtp.pw").write_text(smtp_password)
    (tmp_path / "webhook.key").write_text(webhook_key)
    pki = make_pki(tmp_path)
    adverts = [bytes(frames.advert(2, vrid=51, priority=150, authtype=1, auth=vrrp_password))]
    outputs: dict[str, str] = {}

    with ExitStack() as stack:
        smtp_port, mailbox = stack.enter_context(
            smtp_server(pki, implicit=False, user=SMTP_USER, password=secrets.token_urlsafe(18))
        )
        receiver = Receiver(key=webhook_key.encode())
        stack.callback(receiver.close)
        config = tmp_path / "ka.toml"
        config.write_text(
            f'cluster = "lb1"\nstate_dir = "{tmp_path / "state"}"\n'
            'expected_peers = ["192.0.2.12"]\n'
            f'[[sink]]\nname = "mail"\ntype = "smtp"\nhost = "127.0.0.1"\nport = {smtp_port}\n'
            f'tls = "starttls"\nca_file = "{pki.ca}"\nusername = "{SMTP_USER}"\n'
            f'password_file = "{tmp_path / "smtp.pw"}"\n'
            'from = "ka@example.org"\nto = ["ops@example.org"]\n'
            f'[[sink]]\nname = "hook"\ntype = "webhook"\nurl = "{receiver.url}"\n'
            f'secret_file = "{tmp_path / "webhook.key"}"\n'
        )
        notify_port, exporter_port = free_port(), free_port()
        notify_log, exporter_log = tmp_path / "notify.log", tmp_path / "exporter.log"
        daemon = [
            str(BIN / "ka-notify"),
            "daemon",
            "--config",
            str(config),
            "--web.listen-address",
            f"127.0.0.1:{notify_port}",
            "--log.level",
            "debug",
        ]
        exporter = [str(BIN / "ka-exporter"), "--web.listen-address", f"127.0.0.1:{exporter_port}",
                    "--netns", b, "--interface", f"{b}/eth0", "--notify.config", str(config),
                    "--log.level", "debug"]  # fmt: skip
        stack.enter_context(process(daemon, notify_log))
        stack.enter_context(process(exporter, exporter_log))
        wait(lambda: ready(exporter_port), 15, "exporter not ready")
        wait(lambda: ready(notify_port, "/metrics"), 15, "ka-notify daemon not ready")

        for _ in range(20):  # bounded: two seconds of adverts
            send(a, adverts)
            time.sleep(0.1)
        notify = str(BIN / "ka-notify")
        outputs["hook"] = run(notify, "--config", str(config), "--state", "MASTER",
                              "--instance", "VI_1")  # fmt: skip
        outputs["hook, keepalived arguments"] = run(
            notify, "--config", str(config), "INSTANCE", "VI_2", "BACKUP", "100"
        )
        outputs["test mail"] = run(notify, "test", "--config", str(config), "--sink", "mail")
        outputs["test hook"] = run(notify, "test", "--config", str(config), "--sink", "hook")

        def queue() -> str:
            outputs["queue"] = run(notify, "queue", "--config", str(config))
            return outputs["queue"]

        # the unknown router and the two hook alerts, by webhook; the same three refused by SMTP
        receiver.wait_for(3, 20)
        wait(lambda: dead(queue()) >= 3, 20, "three dead letters expected")
        outputs["exporter /metrics"] = get(f"http://127.0.0.1:{exporter_port}/metrics")
        outputs["exporter status page"] = get(f"http://127.0.0.1:{exporter_port}/")
        outputs["ka-notify /metrics"] = get(f"http://127.0.0.1:{notify_port}/metrics")

    pcap = tmp_path / "pass.pcap"
    sent = [(1 + i / 10, frame) for i in range(20) for frame in adverts]
    pcap.write_bytes(frames.pcap_bytes(sent, LinkType.ETHERNET))
    outputs["analyze"] = run(str(BIN / "ka-exporter"), "analyze", str(pcap))
    outputs["analyze json"] = run(
        str(BIN / "ka-exporter"), "analyze", "--format", "json", str(pcap)
    )
    outputs["exporter log"] = exporter_log.read_text()
    outputs["ka-notify log"] = notify_log.read_text()
    with receiver.lock:
        outputs["webhook bodies"] = b"\n".join(receiver.bodies).decode()
    outputs["mail"] = "\n".join(str(message) for _, message in mailbox.messages)
    for path in sorted((tmp_path / "state").iterdir()):  # the spool: SQLite and its WAL
        outputs[f"spool {path.name}"] = path.read_bytes().decode("latin-1")

    # It all happened: the secrets were in play where they could have leaked.
    assert vrrp_password in pcap.read_bytes()  # in clear on the wire, as VRRPv2 PASS sends it
    assert receiver.forged == 0
    for name in ("VRRPUnknownRouter", "KeepalivedStateChange"):
        assert name in outputs["webhook bodies"]
    assert "PASS" in outputs["analyze"]
    assert '"auth_fingerprint": "' in outputs["analyze json"]
    assert f'address="{ROUTER}"' in outputs["exporter /metrics"]
    assert ROUTER in outputs["exporter status page"]
    assert not mailbox.messages  # the login was refused

    found = [
        f"{form} in {where}"
        for secret in (
            forms("VRRP password", vrrp_password),
            forms("SMTP password", smtp_password.encode(), smtp_user=SMTP_USER),
            forms("webhook key", webhook_key.encode()),
        )
        for form, value in secret
        for where, text in outputs.items()
        if value in text
    ]
    assert not found, found
