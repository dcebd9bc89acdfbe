"""Mail: one multipart/alternative message (plain text and HTML) per notification.

The Message-ID is derived from the notification id, so a retried delivery (say, after a timeout
on the final "250 OK" we never read) is the same message to the recipients' clients. SMTP codes
decide retrying: 4xx is the server's "later", 5xx is "never" (a refused login, an unknown
recipient). TLS verification is always on; an untrusted certificate is a Retry, not a Reject:
it is usually a renewal gone wrong on the server, and the alert should arrive once it is fixed.

The subject is built from the alert, whose instance name came from keepalived: line breaks and
other control characters in it become spaces, since a header cannot hold them (and the message
could not be built at all). The body names the VIPs keepalived.conf gives the instance.
"""

from __future__ import annotations

import asyncio
import html
import ssl
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import NoReturn

import aiosmtplib

from ka_exporter.alerting import vips
from ka_exporter.alerting.alert import Alert, Status
from ka_exporter.alerting.secret import Redactor, Secret, credential_parts
from ka_exporter.alerting.sink import Reject, Retry
from ka_exporter.alerting.sinks.options import Delivery, Options, known_keys
from ka_exporter.alerting.sinks.payload import facts, resolved_at, title

_PORTS = {"starttls": 587, "implicit": 465, "none": 25}
KEYS = known_keys(
    ("host", "port", "tls", "allow_plaintext", "username", "from", "to", "subject_prefix",
     "keepalived_config"),
    secrets=("password",),
)  # fmt: skip


@dataclass
class SmtpSink(Delivery):
    name: str
    host: str
    port: int
    tls_mode: str
    auth: tuple[str, Secret] | None
    sender: str
    recipients: tuple[str, ...]
    subject_prefix: str
    keepalived_config: str  # read for each mail, so an edited VIP list shows at once

    def message(self, alert: Alert) -> EmailMessage:
        sent = resolved_at(alert) if alert.status is Status.RESOLVED else alert.starts_at
        domain = parseaddr(self.sender)[1].rpartition("@")[2]
        lines = facts(alert, vips.read(self.keepalived_config).vips_for(alert))
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Subject"] = one_line(f"{self.subject_prefix} {title(alert)}")
        message["Date"] = format_datetime(datetime.fromtimestamp(sent, UTC))
        message["Message-ID"] = f"<{alert.id}@{domain}>"
        message["X-Alert-Fingerprint"] = alert.fingerprint
        message.set_content(_plain(alert, lines))
        message.add_alternative(_html(alert, lines), subtype="html")
        return message

    async def send(self, alert: Alert) -> None:
        target = f"SMTP server {self.host}:{self.port}"
        username, password = (None, None) if self.auth is None else self.auth
        try:
            # aiosmtplib's timeout is per command; the sink's bounds the whole transaction
            async with asyncio.timeout(self.timeout):
                errors, _ = await aiosmtplib.send(
                    self.message(alert),
                    hostname=self.host,
                    port=self.port,
                    username=username,
                    password=None if password is None else password.reveal(),
                    use_tls=self.tls_mode == "implicit",
                    start_tls=self.tls_mode == "starttls",
                    tls_context=self.tls,
                    timeout=self.timeout,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            _refused(target, [(r.recipient, r.code, r.message) for r in exc.recipients])
        except aiosmtplib.SMTPResponseException as exc:
            what = "refused"
            if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
                what = f"login as {username!r} refused"
            reason = f"{target}: {what}: {exc.code} {self.redact(exc.message)}"
            raise Retry(reason) if 400 <= exc.code < 500 else Reject(reason) from None
        except aiosmtplib.SMTPNotSupported as exc:  # no STARTTLS or AUTH offered: configuration
            raise Reject(f"{target}: {exc}") from None
        except TimeoutError:  # ours or aiosmtplib's
            raise Retry(f"{target}: no answer within {self.timeout:g} s") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            # STARTTLS raises the verification error itself, implicit TLS as the connect's cause
            if ssl.SSLCertVerificationError in (type(exc), type(exc.__cause__)):
                raise Retry(f"{target}: TLS certificate not trusted ({exc})") from None
            raise Retry(f"{target}: {self.redact(str(exc))}") from None
        if errors:  # some recipients got it, these did not
            _refused(target, [(rcpt, resp.code, resp.message) for rcpt, resp in errors.items()])


def one_line(text: str) -> str:
    """`text` fit for a header: control characters and line or paragraph separators (CR, LF,
    U+2028...) as spaces, runs of white space as one."""
    return " ".join(
        "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text).split()
    )


def _refused(target: str, refusals: list[tuple[str, int, str]]) -> NoReturn:
    reason = f"{target}: recipients refused: " + ", ".join(
        f"{rcpt} ({code} {message})" for rcpt, code, message in refusals
    )
    if any(400 <= code < 500 for _, code, _ in refusals):
        raise Retry(reason)
    raise Reject(reason)


def _plain(alert: Alert, rows: list[tuple[str, str]]) -> str:
    lines = [title(alert), ""]
    if alert.annotations.get("description"):
        lines += [alert.annotations["description"], ""]
    width = max(len(name) for name, _ in rows)
    lines += [f"{name + ':':<{width + 1}} {value}" for name, value in rows]
    if alert.annotations.get("wire"):
        lines += ["", "On the wire:", alert.annotations["wire"]]
    return "\n".join(lines) + "\n"


def _html(alert: Alert, rows: list[tuple[str, str]]) -> str:
    cells = "".join(
        f"<tr><th align='left'>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in rows
    )
    parts = [f"<h2>{html.escape(title(alert))}</h2>"]
    if alert.annotations.get("description"):
        parts.append(f"<p>{html.escape(alert.annotations['description'])}</p>")
    parts.append(f"<table>{cells}</table>")
    if alert.annotations.get("wire"):
        parts.append(f"<h3>On the wire</h3><pre>{html.escape(alert.annotations['wire'])}</pre>")
    return "<!DOCTYPE html><html><body>" + "".join(parts) + "</body></html>\n"


def _address(text: str, key: str) -> str:
    if "@" not in parseaddr(text)[1] or one_line(text) != text:
        raise ValueError(f"{key}: not a mail address: {text!r}")
    return text


def build(name: str, options: Mapping[str, object]) -> SmtpSink:
    opts = Options(options, KEYS)
    host = opts.string("host")
    tls_mode = opts.choice("tls", ("starttls", "implicit", "none"))
    if tls_mode == "none" and not opts.flag("allow_plaintext", default=False):
        raise ValueError(
            "tls: 'none' sends mail and any password in clear text; "
            "set allow_plaintext = true to allow it"
        )
    auth = opts.credentials()
    opts.flag("allow_plaintext", default=False)  # also valid (and unused) with TLS on
    return SmtpSink(
        name=name,
        host=host,
        port=opts.port("port", _PORTS[tls_mode]),
        tls_mode=tls_mode,
        auth=auth,
        sender=_address(opts.string("from"), "from"),
        recipients=tuple(_address(to, "to") for to in opts.string_list("to")),
        subject_prefix=opts.string("subject_prefix", "[keepalived]"),
        keepalived_config=opts.string("keepalived_config", vips.DEFAULT_PATH),
        **opts.delivery(30.0, Redactor(credential_parts(auth))),
    )
