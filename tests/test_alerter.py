"""The exporter's own events through the spool to a real webhook receiver, in one loop."""

import asyncio
import time
from pathlib import Path

import pytest

from ka_exporter.alerter import Alerting, owned
from ka_exporter.alerting.config import load
from ka_exporter.cli import main
from ka_exporter.model import Event, EventType
from tests.notify_servers import Receiver, receiver_fixture  # noqa: F401  (a fixture)
from tests.test_alerting_worker import write_config
from tests.test_ownership import KEY, VIP, A, B, view

DEADLINE = 1.0  # the bound: event to webhook received


def test_events_reach_the_webhook_within_a_second(tmp_path: Path, receiver: Receiver) -> None:
    config = load(str(write_config(tmp_path, receiver.url)), check_sinks=True)
    alerting = Alerting(config, "node-a", expected_peers=[A, B])
    rogue = "192.0.2.99"
    events = [
        Event(time.time(), EventType.SPLIT_BRAIN_START, KEY, (A, B)),
        Event(time.time(), EventType.ROUTER_APPEARED, KEY, (A,)),  # expected: no alert
        Event(time.time(), EventType.ROUTER_APPEARED, KEY, (rogue,)),
    ]

    async def scenario() -> float:
        task = asyncio.create_task(alerting.run())
        try:
            start = time.monotonic()
            alerting.feed(events, owned([view((A,))], {"": frozenset({B})}), time.time())
            while len(receiver.unique()) < 2 and time.monotonic() - start < 5:
                await asyncio.sleep(0.01)
            return time.monotonic() - start
        finally:
            task.cancel()

    took = asyncio.run(scenario())
    alerting.close()
    assert len(receiver.unique()) == 2, receiver.bodies
    assert took < DEADLINE
    bodies = b"".join(receiver.bodies)
    assert (
        b'"alertname":"VRRPSplitBrain"' in bodies and b'"alertname":"VRRPUnknownRouter"' in bodies
    )
    assert rogue.encode() in bodies and b'"instance":"node-a"' in bodies


def test_ownership_changes_fire_and_resolve(tmp_path: Path, receiver: Receiver) -> None:
    config = load(str(write_config(tmp_path, receiver.url)), check_sinks=True)
    alerting = Alerting(config, "node-b")
    backup_holding_vip = {"": frozenset({B, VIP})}
    assert owned([view((A,))], backup_holding_vip) == {(KEY, "duplicate")}
    assert owned([view(())], backup_holding_vip) == {(KEY, "orphan")}
    assert owned([view((A,))], {"": frozenset({B})}) == set()
    assert owned([view((A,))], {"other-ns": frozenset({B, VIP})}) == set()

    async def scenario() -> None:
        task = asyncio.create_task(alerting.run())
        try:
            alerting.feed([], owned([view((A,))], backup_holding_vip), 10.0)  # fires
            alerting.feed([], owned([view((A,))], backup_holding_vip), 11.0)  # still: nothing new
            alerting.feed([], owned([view((A,))], {"": frozenset({B})}), 12.0)  # resolves
            deadline = time.monotonic() + 5
            while len(receiver.unique()) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            task.cancel()

    asyncio.run(scenario())
    alerting.close()
    assert len(receiver.unique()) == 2
    statuses = [b'"status":"resolved"' in body for body in receiver.bodies]
    assert statuses == [False, True]
    assert all(b"VRRPDuplicateVIP" in body for body in receiver.bodies)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--peer", "node-b:9743"],
            "argument --cluster.peer/--peer: not an http(s) URL: 'node-b:9743'",
        ),
        (["--vrrp.expected-peer", "node-b"], "not an IP address: 'node-b'"),
        (["--notify.config", "/nonexistent/ka.toml"], "/nonexistent/ka.toml: cannot read"),
    ],
)
def test_bad_alerting_flags_are_one_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err, err


def test_notify_config_errors_name_their_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "ka.toml"
    bad.write_text('cluster = ""\nexpected_peers = ["nope"]\n')
    with pytest.raises(SystemExit) as exit_:
        main(["--notify.config", str(bad)])
    lines = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2
    assert lines == [
        f"ka-exporter: error: {bad}:1: cluster: a non-empty string naming the cluster is required",
        f"ka-exporter: error: {bad}:2: expected_peers: not an IP address: 'nope'",
    ]
