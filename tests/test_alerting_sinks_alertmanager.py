"""The Alertmanager sink against Debian's prometheus-alertmanager 0.25."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from ka_exporter.alerting.alert import Alert, Status
from ka_exporter.alerting.sink import Retry
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
