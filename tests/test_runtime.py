"""The daemons' shared lifecycle: signals stop it, a background task never dies in silence."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from ka_exporter.runtime import EXIT_CRASHED, Runtime

log = logging.getLogger("test-runtime")


async def forever() -> None:
    await asyncio.Event().wait()


def test_a_task_that_fails_is_said_once_and_stops_the_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def tick() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    async def main() -> tuple[int, bool]:
        runtime = Runtime(log)
        other = runtime.spawn(forever(), "the peer watch")
        runtime.spawn(tick(), "the model's tick")
        status = await asyncio.wait_for(runtime.wait(), 5)
        await runtime.close()
        return status, other.cancelled()

    with caplog.at_level(logging.ERROR):
        status, cancelled = asyncio.run(main())
    assert status == EXIT_CRASHED and cancelled
    (record,) = caplog.records
    assert record.getMessage() == "the model's tick failed; stopping: boom"
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


def test_a_task_that_returns_is_a_failure_too(caplog: pytest.LogCaptureFixture) -> None:
    async def done() -> None:
        return None

    async def main() -> int:
        runtime = Runtime(log)
        runtime.spawn(done(), "netlink watch of blue")
        status = await asyncio.wait_for(runtime.wait(), 5)
        await runtime.close()
        return status

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(main()) == EXIT_CRASHED
    assert [r.getMessage() for r in caplog.records] == [
        "netlink watch of blue ended, which it never should; stopping"
    ]


def test_sigterm_stops_cleanly_and_cancelled_tasks_are_not_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> int:
        runtime = Runtime(log)
        runtime.handle_signals()
        runtime.spawn(forever(), "the model's tick")
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
        status = await asyncio.wait_for(runtime.wait(), 5)
        await runtime.close()
        return status

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(main()) == 0
    assert not caplog.records
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
