"""Secrets a receiver echoes back stay out of the log, the spool and `ka-notify queue`.

A real HTTP receiver answers every request with an error page that repeats it: request line,
headers and body, HTML-escaped, and the path once more URL-encoded, after enough text that the
reason's 200-character excerpt ends in the middle of the credential. The Slack sink (its URL
token in the path), a webhook with a bearer token and tokens in its URL and headers, and an
Alertmanager sink with Basic credentials deliver to it from the config, through the worker,
into a real spool file. Then every output is searched for every form of every secret: as is,
URL-encoded, base64 (Basic's user:pass too), and any 8 characters of one.
"""

from __future__ import annotations

import asyncio
import base64
import html
import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web
from yarl import URL

from ka_exporter.alerting.config import load, make_sinks
from ka_exporter.alerting.secret import (
    Redactor,
    Secret,
    authorization_parts,
    credential_parts,
    url_parts,
)
from ka_exporter.alerting.spool import Spool
from ka_exporter.alerting.worker import Worker
from ka_exporter.notify import cli
from tests.notify_servers import http_receiver, sample_alert

USER = "alerts"


async def echo(request: web.Request) -> web.Response:
    """The credential first (Authorization, or the Slack URL's path), where the reason's
    excerpt ends. 500 for the Slack path (a retry: the reason stays on the pending row), 400
    otherwise (a dead letter)."""
    body = await request.read()
    first = (
        [f"Authorization: {request.headers['Authorization']}"]
        if request.headers.get("Authorization")
        else []
    )
    lines = [*first, f"{request.method} {request.raw_path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    page = (
        f"<html><body><p>{'.' * 150}</p><pre>{html.escape(chr(10).join(lines))}\n\n"
        f"{html.escape(body.decode())}</pre><p>path: {quote(request.raw_path, safe='')}</p>"
        "</body></html>"
    )
    status = 500 if request.path.startswith("/services/") else 400
    return web.Response(status=status, text=page, content_type="text/html")


def forms(secret: str) -> Iterator[str]:
    yield from (secret, quote(secret, safe=""), base64.b64encode(secret.encode()).decode()[:-2])
    yield from (secret[i : i + 8] for i in range(len(secret) - 7))


def test_echoed_secrets_are_redacted_everywhere(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="ka_exporter.alerting")
    slack_ids = [f"T{secrets.randbelow(10**9):09d}", f"B{secrets.randbelow(10**9):09d}"]
    slack_token, bearer = secrets.token_hex(12), secrets.token_urlsafe(24)
    hook_token, query_token = secrets.token_hex(16), secrets.token_urlsafe(16)
    api_key = secrets.token_hex(12)
    password = secrets.token_urlsafe(18)
    monkeypatch.setenv("KA_TEST_BEARER", f"Bearer {bearer}")
    (tmp_path / "password").write_text(password)
    config_path = tmp_path / "ka.toml"

    async def deliver() -> None:
        async with http_receiver(echo) as base:
            (tmp_path / "slack").write_text(f"{base}/services/{'/'.join(slack_ids)}/{slack_token}")
            config_path.write_text(
                f'cluster = "lb1"\nstate_dir = "{tmp_path / "state"}"\n'
                f'[[sink]]\nname = "chat"\ntype = "slack"\nurl_file = "{tmp_path / "slack"}"\n'
                f'[[sink]]\nname = "hook"\ntype = "webhook"\n'
                f'url = "{base}/hook/{hook_token}?key={query_token}"\n'
                'authorization_env = "KA_TEST_BEARER"\n'
                f'headers = {{ X-Api-Key = "{api_key}", X-Team = "net" }}\n'
                f'[[sink]]\nname = "am"\ntype = "alertmanager"\nurls = ["{base}"]\n'
                f'username = "{USER}"\npassword_file = "{tmp_path / "password"}"\n'
            )
            config = load(str(config_path), check_sinks=True)
            spool = Spool.open(config.state_dir)
            spool.enqueue([(sample_alert(), ["chat", "hook", "am"])], time.time())
            await Worker(spool, make_sinks(config)).drain()
            spool.close()

    asyncio.run(deliver())
    assert cli.main(["queue", "--config", str(config_path)]) == 0
    queue = capsys.readouterr().out
    outputs = {"log": caplog.text, "queue": queue}
    for path in sorted((tmp_path / "state").glob("spool.db*")):
        outputs[path.name] = path.read_bytes().decode("latin-1")

    # it happened: each sink was answered with its request echoed, and says so
    assert "pending" in queue and "dead letters 2" in queue
    assert queue.count("HTTP 500: ") == 1 and queue.count("HTTP 400: ") == 2
    assert "POST /services/<redacted>" in queue and "Authorization: <redacted>" in queue
    all_secrets = [*slack_ids, slack_token, bearer, hook_token, query_token, api_key, password]
    all_secrets.append(f"{USER}:{password}")
    found = [
        f"{form!r} of secret {n} in {where}"
        for n, secret in enumerate(all_secrets)
        for form in forms(secret)
        for where, text in outputs.items()
        if form in text
    ]
    assert not found, found


def test_each_form_of_each_secret_is_blacked_out_and_the_rest_kept() -> None:
    slack = URL("https://hooks.slack.com/services/T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx")
    mattermost = URL("https://chat.example/hooks/8xk3m9q1p7bz5rdwn4tsgh2yce")
    basic = "Basic " + base64.b64encode(b"alerts:pa ss/word").decode()
    redact = Redactor(
        [
            str(slack),
            *url_parts(slack),
            *url_parts(mattermost),
            *authorization_parts("Bearer tok.en-123"),
            *authorization_parts(basic),
            *credential_parts(("mailer", Secret("hunter2!"))),
        ]
    )
    echoed = [
        "POST /services/T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx HTTP/1.1",
        "path=%2Fservices%2FT0123ABCD%2FB0456EFGH%2Fabcdefghijklmnopqrstuvwx",
        "POST /hooks/8xk3m9q1p7bz5rdwn4tsgh2yce",
        "Authorization: Bearer tok.en-123",
        "token dG9rLmVuLTEyMw",  # base64 of the bearer token
        f"Authorization: {basic}",
        "user alerts, password pa%20ss%2Fword, or pa+ss%2Fword",
        "AUTH PLAIN " + base64.b64encode(b"\0mailer\0hunter2!").decode(),
        "AUTH LOGIN " + base64.b64encode(b"hunter2!").decode(),
        "&lt;hunter2!&gt;",
    ]
    pieces = ["T0123ABCD", "abcdefghijklmnop", "8xk3m9q1p7", "tok.en", "dG9rLmVuLTEy", "pa ss",
              "pa%20ss", "pa+ss", "hunter2", "aHVudGVy", "YWxlcnRzOnBh"]  # fmt: skip
    for text in echoed:
        assert not [p for p in pieces if p in redact(text)], (text, redact(text))
    kept = "https://hooks.slack.com: HTTP 400: POST /services/ and /hooks/ refused for alerts"
    assert redact(kept) == kept
