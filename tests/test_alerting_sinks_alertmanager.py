"""The Alertmanager sink against Debian's prometheus-alertmanager 0.25."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ka_exporter.alerting.alert import Alert, Status
from ka_exporter.alerting.sink import Reject, Retry
from ka_exporter.alerting.sinks import alertmanager
from tests.notify_servers import alertmanager as run_alertmanager
from tests.notify_servers import free_port, get_json, sample_alert


@pytest.fixture(scope="module")
def am_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_alertmanager(tmp_path_factory.mktemp("alertmanager")) as url:
        yield url


async def active(url: str, alert: Alert) -> list[dict[str, Any]]:
    """The active alerts in Alertmanager that carry this alert's labels."""
    found: list[dict[str, Any]] = await get_json(f"{url}/api/v2/alerts?active=true")
    return [a for a in found if a["labels"] == alert.all_labels]


def test_firing_then_resolved(am_url: str) -> None:
    sink = alertmanager.build("am", {"urls": [am_url], "resend_interval": 20})
    firing = sample_alert()

    async def main() -> None:
        before = time.time()
        await sink.send(firing)
        (seen,) = await active(am_url, firing)
        assert seen["status"]["state"] == "active"
        assert seen["annotations"] == firing.annotations
        ends = datetime.fromisoformat(seen["endsAt"].replace("Z", "+00:00")).timestamp()
        assert before + 60 - 2 <= ends <= time.time() + 60 + 2  # 3 x resend_interval
        await sink.send(sample_alert(Status.RESOLVED))  # same labels: the same alert
        await asyncio.sleep(0.01)
        assert await active(am_url, firing) == []

    asyncio.run(main())


def test_one_replica_down_is_still_delivered(am_url: str) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    alert = sample_alert()
    sink = alertmanager.build("am", {"urls": [down, am_url]})

    async def main() -> None:
        await sink.send(alert)
        assert len(await active(am_url, alert)) == 1
        await sink.send(sample_alert(Status.RESOLVED))

    asyncio.run(main())


def test_all_replicas_down_is_retry_naming_each() -> None:
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    with pytest.raises(Retry) as caught:
        asyncio.run(alertmanager.build("am", {"urls": urls}).send(sample_alert()))
    for url in urls:
        assert f"{url}: cannot connect" in str(caught.value)


def test_basic_auth_is_what_alertmanager_checks(tmp_path: Path) -> None:
    """Alertmanager's own web config checks the credentials: a password beyond Latin-1 (sent
    as UTF-8, RFC 7617) is let in, a wrong one is refused for good, its value in no reason."""
    password = "pässwörd ✓ 42"
    (tmp_path / "right").write_text(password)
    (tmp_path / "wrong").write_text("guess-1234")
    with run_alertmanager(tmp_path, {"alerts": password}) as url:
        right = alertmanager.build("am", {"urls": [url], "username": "alerts",
                                          "password_file": str(tmp_path / "right")})  # fmt: skip
        wrong = alertmanager.build("am", {"urls": [url], "username": "alerts",
                                          "password_file": str(tmp_path / "wrong")})  # fmt: skip
        asyncio.run(right.send(sample_alert()))
        with pytest.raises(Reject) as refused:
            asyncio.run(wrong.send(sample_alert()))
        anonymous = urllib.request.Request(f"{url}/api/v2/alerts")
        with pytest.raises(urllib.error.HTTPError) as unauthorized:
            urllib.request.urlopen(anonymous, timeout=5)
    assert "HTTP 401" in str(refused.value) and "guess-1234" not in str(refused.value)
    assert unauthorized.value.code == 401
