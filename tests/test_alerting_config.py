from collections.abc import Mapping
from pathlib import Path

import pytest

from ka_exporter.alerting import config
from ka_exporter.alerting.alert import Alert, Severity, Source, Status
from ka_exporter.alerting.config import ConfigError, parse
from ka_exporter.alerting.routing import sinks_for
from ka_exporter.notify import cli


class FakeSink:
    resend_interval = None

    def __init__(self, name: str, options: Mapping[str, object]) -> None:
        self.name = name
        if "url" not in options:
            raise ValueError("url: required")
        if set(options) - {"url", "token_file"}:
            raise ValueError(f"{sorted(set(options) - {'url', 'token_file'})[0]}: unknown option")

    async def send(self, alert: Alert) -> None:
        pass


REAL_FACTORIES = config.sink_factories


@pytest.fixture(autouse=True)
def fake_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "sink_factories", lambda: {"webhook": FakeSink})


GOOD = """\
cluster = "lb1"
state_dir = "/var/lib/ka-notify"
expected_peers = ["192.0.2.11", "2001:db8::1"]

[damping]
window = 30
threshold = 2

[[sink]]
name = "ops"
type = "webhook"
url = "http://127.0.0.1:1/"

[[sink]]
name = "pager"
type = "webhook"
url = "http://127.0.0.1:2/"
token_file = "/etc/ka-notify/token"

[[route]]
sinks = ["ops"]

[[route]]
sinks = ["pager", "ops"]
alerts = ["VRRPSplitBrain"]
min_severity = "critical"
"""

BAD = """\
cluster = ""
colour = "red"

[damping]
window = -1

[[sink]]
name = "ops"
type = "webhook"
url = "http://127.0.0.1:1/"
token = "hunter2"

[[sink]]
name = "mail"
type = "pigeon"

[[sink]]
name = "hook"
type = "webhook"
urll = "http://x/"

[[route]]
sinks = ["ops", "nope"]
min_severity = "loud"
"""


def test_good_config() -> None:
    cfg = parse(GOOD, check_sinks=True)
    assert cfg.cluster == "lb1"
    assert cfg.expected_peers == {"192.0.2.11", "2001:db8::1"}
    assert (cfg.damping.window, cfg.damping.threshold) == (30.0, 2)
    assert [s.name for s in cfg.sinks] == ["ops", "pager"]
    assert cfg.sinks[1].options == {
        "url": "http://127.0.0.1:2/",
        "token_file": "/etc/ka-notify/token",
    }


def test_every_error_with_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse(BAD, "ka.toml", check_sinks=True)
    lines = info.value.lines
    assert lines[0].startswith("ka.toml:1: cluster:")
    assert "ka.toml:2: colour: unknown key; did you mean 'cluster'?" in lines
    assert any(line.startswith("ka.toml:5: window:") for line in lines)
    (secret,) = [line for line in lines if "hunter2" in line or "token:" in line]
    assert secret.startswith("ka.toml:11: token:") and "token_file" in secret
    assert "hunter2" not in secret
    assert any(line.startswith("ka.toml:15: type:") for line in lines)
    assert "ka.toml:17: sink 'hook': url: required" in lines  # no key line: the header
    assert "ka.toml:23: sinks: no sink named 'nope'" in lines
    assert any(line.startswith("ka.toml:24: min_severity:") for line in lines)
    assert len(lines) == 8


def test_syntax_error_has_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse('cluster = "lb1"\n[[sink]\n', "x.toml")
    assert info.value.lines[0].startswith("x.toml:2: ")


def alert(name: str, severity: Severity) -> Alert:
    return Alert(name, severity, Status.FIRING, Source.TEST, 0.0)


def test_routing() -> None:
    cfg = parse(GOOD)
    assert sinks_for(alert("VRRPSplitBrain", Severity.CRITICAL), cfg) == ["ops", "pager"]
    assert sinks_for(alert("VRRPSplitBrain", Severity.WARNING), cfg) == ["ops"]
    assert sinks_for(alert("VRRPNoMaster", Severity.CRITICAL), cfg) == ["ops"]
    no_routes = parse(GOOD.split("[[route]]", maxsplit=1)[0])
    assert sinks_for(alert("X", Severity.INFO), no_routes) == ["ops", "pager"]


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    assert cli.main(["check-config", str(good)]) == 0
    out = capsys.readouterr().out
    assert out == f"{good}: ok: cluster lb1, 2 sinks (ops, pager), 2 routes\n"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["check-config", str(bad)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 8 and all(line.startswith(f"{bad}:") for line in err)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["check-config", str(tmp_path / "missing.toml")])
    assert exit_.value.code == 2
    assert "cannot read" in capsys.readouterr().err


TYPOS = """\
cluster = "lb1"
clustr_name = "x"

[damping]
windw = 30

[[sink]]
name = "mail"
type = "smtp"
host = "mx.example.org"
from = "ka@example.org"
too = ["ops@example.org"]
timeout = 60

[[sink]]
name = "hook"
type = "webhook"
url = "https://hooks.example/ka"
timeout = 60

[[sink]]
name = "chat"
type = "slak"

[[route]]
sinks = ["mails"]
"""


def test_check_config_names_unknown_keys_and_what_was_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo is reported as itself, at its line, with the key it was probably meant to be
    (not as the key it hides: "to: missing"); a timeout the lease cannot cover is not ok."""
    monkeypatch.setattr(config, "sink_factories", REAL_FACTORIES)
    path = tmp_path / "ka.toml"
    path.write_text(TYPOS)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["check-config", str(path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:2: clustr_name: unknown key; did you mean 'cluster'?",
        f"{path}:5: damping.windw: unknown key; did you mean 'window'?",
        f"{path}:12: sink 'mail': too: unknown key; did you mean 'to'?",
        f"{path}:19: sink 'hook': timeout: at most 30 s: an attempt must end well within the "
        "60 s its delivery is leased for",
        f"{path}:23: type: must be one of smtp, webhook, alertmanager, slack; "
        "did you mean 'slack'?",
        f"{path}:26: sinks: no sink named 'mails'; did you mean 'mail'?",
    ]


def test_an_unreadable_file_has_no_line_zero(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(str(tmp_path / "missing.toml"))
    assert info.value.lines == [
        f"{tmp_path / 'missing.toml'}: cannot read: No such file or directory"
    ]
