"""One HTTP POST and one mapping of its outcome to Retry/Reject, shared by the HTTP sinks.

2xx delivers. 408, 429 and 5xx are the receiver asking us to come back (with Retry-After if it
says when); connection errors and timeouts too. Everything else — other 4xx, and 3xx, which
are not followed because a redirect would carry the signed body somewhere unconfigured — cannot
get better by sending the same request again. Reasons name the origin only: a Slack URL's path
is its secret. A refusal's body is kept for the operator, redacted in full before it is cut to
an excerpt, so a cut cannot leave half a token behind.
"""

from __future__ import annotations

import base64
import email.utils
import ssl
import time
from collections.abc import Mapping

import aiohttp
from yarl import URL

from ka_exporter.alerting.secret import Redactor, Secret
from ka_exporter.alerting.sink import Reject, Retry

_RETRYABLE = frozenset({408, 429})
_EXCERPT = 200  # characters of a refusal's body kept in the reason, for the operator
_READ = 64 * 1024  # bytes of it read and redacted: where an echoed request ends, at most


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" zone: the RFC says GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


async def post(
    url: URL,
    body: bytes,
    *,
    headers: Mapping[str, str],
    timeout: float,
    tls: ssl.SSLContext,
    redact: Redactor,
    auth: tuple[str, Secret] | None = None,
) -> None:
    """POSTs `body` once; returns on 2xx, raises Retry or Reject otherwise."""
    target = str(url.origin())
    request_headers = {"Content-Type": "application/json", **headers}
    if auth is not None:  # RFC 7617 with UTF-8, built here: aiohttp's BasicAuth is deprecated
        pair = base64.b64encode(f"{auth[0]}:{auth[1].reveal()}".encode()).decode()
        request_headers["Authorization"] = f"Basic {pair}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(
                url,
                data=body,
                headers=request_headers,
                ssl=tls,
                allow_redirects=False,
            ) as response,
        ):
            if 200 <= response.status < 300:
                return
            text = (await response.content.read(_READ)).decode("utf-8", "replace")
            status, wait = response.status, retry_after(response.headers.get("Retry-After"))
    except aiohttp.ClientConnectorCertificateError as exc:
        raise Retry(f"{target}: TLS certificate not trusted ({exc.certificate_error})") from None
    except aiohttp.ClientConnectorError as exc:
        raise Retry(f"{target}: cannot connect ({exc.strerror or exc.os_error})") from None
    except TimeoutError:
        raise Retry(f"{target}: no answer within {timeout:g} s") from None
    except aiohttp.ClientError as exc:
        raise Retry(f"{target}: {type(exc).__name__}") from None
    reason = f"{target}: HTTP {status}"
    detail = " ".join(redact(text).split())[:_EXCERPT]
    if detail:
        reason = f"{reason}: {detail}"
    if status in _RETRYABLE or status >= 500:
        raise Retry(reason, after=wait)
    raise Reject(reason)
