import contextlib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ka_exporter.alerting.alert import Severity, Source, Status
from ka_exporter.notify import keepalived
from ka_exporter.notify.keepalived import Notification, ParseError, Previous


def test_notify_args_after_the_admins_own() -> None:
    assert keepalived.parse_argv(["n1", "INSTANCE", "V3_MC", "MASTER", "150"]) == Notification(
        "INSTANCE", "V3_MC", "MASTER", 150
    )
    assert keepalived.parse_argv(["GROUP", "G", "BACKUP", "0"]).type == "GROUP"


@pytest.mark.parametrize(
    "args",
    [[], ["INSTANCE", "VI_1", "MASTER"], ["HOST", "VI_1", "MASTER", "1"],
     ["INSTANCE", "VI_1", "MASTERX", "1"], ["INSTANCE", "VI_1", "MASTER", "256"],
     ["INSTANCE", "VI_1", "MASTER", "-1"], ["INSTANCE", "", "MASTER", "1"]],
)  # fmt: skip
def test_bad_notify_args(args: list[str]) -> None:
    with pytest.raises(ParseError):
        keepalived.parse_argv(args)


def test_flags_for_notify_master() -> None:
    assert keepalived.from_flags("master", "VI_1", None) == Notification(
        "INSTANCE", "VI_1", "MASTER", None
    )
    with pytest.raises(ParseError):
        keepalived.from_flags("UP", "VI_1", None)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('INSTANCE "VI_1" MASTER 100\n', Notification("INSTANCE", "VI_1", "MASTER", 100)),
        ('GROUP "G" BACKUP 0\n', Notification("GROUP", "G", "BACKUP", 0)),
        ('INSTANCE "X" MASTER_PRIORITY 140', Notification("INSTANCE", "X", "MASTER_PRIORITY", 140)),
        ('INSTANCE "X" BACKUP_PRIORITY 90', Notification("INSTANCE", "X", "BACKUP_PRIORITY", 90)),
        (
            'INSTANCE "V3_MC" MASTER_RX_LOWER_PRI 150',
            Notification("INSTANCE", "V3_MC", "MASTER_RX_LOWER_PRI", 150),
        ),
        ('INSTANCE "V2_PASS" STOP 150', Notification("INSTANCE", "V2_PASS", "STOP", 150)),
    ],
)
def test_fifo_lines(line: str, expected: Notification) -> None:
    assert keepalived.parse_fifo_line(line) == expected


@pytest.mark.parametrize(
    "line", ["", "INSTANCE VI_1 MASTER 100", 'INSTANCE "VI_1" MASTER', 'INSTANCE "VI_1" UP 1',
             'INSTANCE "VI_1" MASTER 999', 'instance "VI_1" MASTER 1']
)  # fmt: skip
def test_bad_fifo_lines(line: str) -> None:
    with pytest.raises(ParseError):
        keepalived.parse_fifo_line(line)


@given(st.text(max_size=200))
def test_fifo_parser_never_crashes_on_junk(line: str) -> None:
    try:
        note = keepalived.parse_fifo_line(line)
    except ParseError:
        return
    assert note.type in keepalived.TYPES
    assert note.priority is not None and 0 <= note.priority <= 255


@given(st.lists(st.text(max_size=20), max_size=8))
@example(["", "", "", "\u00b2"])  # a digit to str.isdigit(), not to int()
def test_argv_parser_never_crashes_on_junk(args: list[str]) -> None:
    with contextlib.suppress(ParseError):
        keepalived.parse_argv(args)


def alerts(note: Notification, previous: Previous | None = None) -> list:  # type: ignore[type-arg]
    return keepalived.to_alerts(
        note, host="node-a", cluster="lb1", now=1000.0, source=Source.NOTIFY, previous=previous
    )


def test_state_alert_labels_and_transition() -> None:
    (alert,) = alerts(Notification("INSTANCE", "VI_1", "MASTER", 100), Previous("BACKUP", 900.0))
    assert alert.name == "KeepalivedStateChange"
    assert alert.severity is Severity.WARNING
    assert alert.labels == {
        "iname": "VI_1", "type": "instance", "instance": "node-a", "cluster": "lb1",
        "state": "MASTER",
    }  # fmt: skip
    assert "BACKUP -> MASTER" in alert.annotations["description"]
    assert alert.ends_at == 1000.0 + keepalived.EVENT_SECONDS


def test_fault_fires_until_the_instance_leaves_it() -> None:
    (fault,) = alerts(Notification("INSTANCE", "VI_1", "FAULT", 100))
    assert fault.severity is Severity.CRITICAL and fault.ends_at is None
    backup, resolved = alerts(Notification("INSTANCE", "VI_1", "BACKUP", 100), Previous("FAULT", 1))
    assert resolved.status is Status.RESOLVED and resolved.fingerprint == fault.fingerprint
    assert backup.status is Status.FIRING


def test_priority_events_are_info() -> None:
    (alert,) = alerts(Notification("INSTANCE", "X", "MASTER_PRIORITY", 140))
    assert alert.severity is Severity.INFO
    assert "140" in alert.annotations["summary"]


def test_state_numbers_match_the_keepalived_exporter() -> None:
    assert keepalived.STATE_NUMBERS == {"INIT": 0, "BACKUP": 1, "MASTER": 2, "FAULT": 3}
