"""Bad configuration and a hostile environment: each gives one clear line, never a traceback.

The flag cases come from the parsers themselves, so a new flag is covered (and must reject a
nonsense value) without touching this file; the ka-notify cases come from a file that sets every
key, each key in turn given a value of the wrong type.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ka_exporter import cli
from ka_exporter.notify import cli as notify_cli
from lab import netns, wait_for
from tests import frames
from tests.conftest import send
from tests.notify_servers import make_pki
from tests.test_privilege import exporter, get

BIN = Path(sys.executable).parent
NONSENSE = "ka-does-not-exist"


class _Built(Exception):
    pass


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Each command's parser as its main() builds it (caught at parse_args, nothing run)."""
    found: dict[str, argparse.ArgumentParser] = {}

    def grab(self: argparse.ArgumentParser, *_: object, **__: object) -> None:
        found[self.prog] = self
        raise _Built

    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(cli.ENV_PREFIX):
                patch.delenv(name)
        patch.setattr(cli.Parser, "parse_args", grab)
        for argv in ([], ["analyze"]):
            with contextlib.suppress(_Built):
                cli.main(argv)
    return found


def flag_cases() -> list[tuple[str, str, str]]:
    """(command, flag, environment variable) for every flag that takes a value."""
    cases = []
    for prog, parser in parsers().items():
        for action in parser._actions:
            flags = [s for s in action.option_strings if s.startswith("--")]
            if not flags or action.nargs == 0:
                continue
            env = cli.ENV_PREFIX + flags[0][2:].upper().replace(".", "_").replace("-", "_")
            cases.append((prog, flags[0], env))
    return cases


@pytest.fixture(scope="module")
def quiet_ns() -> Iterator[str]:
    """A namespace with only loopback: an exporter that gets past its flags finds nothing."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    name = f"kabad{secrets.token_hex(2)}"
    netns.add(name)
    try:
        yield name
    finally:
        netns.delete(name)


def one_line(result: subprocess.CompletedProcess[str], prefix: str) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(("prog", "flag", "env"), flag_cases())
def test_every_flag_and_its_variable_refuse_nonsense(
    prog: str, flag: str, env: str, quiet_ns: str, tmp_path: Path
) -> None:
    command = [str(BIN / "ka-exporter"), *prog.split()[1:]]
    if len(command) > 1:  # analyze takes a file
        command.append(str(tmp_path / "x.pcap"))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(cli.ENV_PREFIX)}
    for argv, environ in (([flag, NONSENSE], clean), ([], {**clean, env: NONSENSE})):
        result = subprocess.run(
            netns.exec_argv(quiet_ns, [*command, *argv]),
            capture_output=True, text=True, env=environ, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 2, (argv, env, result.stderr)
        line = one_line(result, "ka-exporter")
        assert NONSENSE in line or env in line or flag in line, line


# --- ka-notify's file -------------------------------------------------------------------------


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def full_config(directory: Path) -> dict[str, object]:
    """Every key ka-notify knows, each with a good value."""
    secret = directory / "secret"
    secret.write_text("s3cret\n")
    slack = directory / "slack-url"
    slack.write_text("https://hooks.slack.example/services/s3cret\n")
    common = {"timeout": 5, "ca_file": str(make_pki(directory).ca)}
    return {
        "cluster": "lb1",
        "state_dir": str(directory / "state"),
        "expected_peers": ["192.0.2.11"],
        "damping": {"window": 30, "threshold": 2},
        "sink": [
            {
                "name": "mail",
                "type": "smtp",
                "host": "mail.example",
                "tls": "starttls",
                "port": 587,
                "username": "u",
                "password_file": str(secret),
                "from": "ka@example.org",
                "to": ["ops@example.org"],
                "subject_prefix": "[ka]",
                "keepalived_config": "/etc/keepalived/keepalived.conf",
                "allow_plaintext": False,
                **common,
            },
            {
                "name": "hook",
                "type": "webhook",
                "url": "https://hooks.example/x",
                "secret_file": str(secret),
                "headers": {"X-Team": "net"},
                "authorization_env": "KA_TEST_AUTH",
                "external_url": "https://ka.example/",
                **common,
            },
            {
                "name": "am",
                "type": "alertmanager",
                "urls": ["https://am.example:9093"],
                "resend_interval": 60,
                "external_url": "https://ka.example/",
                **common,
            },
            {
                "name": "chat",
                "type": "slack",
                "url_file": str(slack),
                "channel": "#ops",
                "username": "ka",
                **common,
            },
        ],
        "route": [{"sinks": ["mail"], "alerts": ["VRRPSplitBrain"], "min_severity": "warning"}],
    }


def to_toml(config: dict[str, object]) -> str:
    top = [f"{k} = {toml_value(v)}\n" for k, v in config.items() if not isinstance(v, dict | list)
           or (isinstance(v, list) and not all(isinstance(i, dict) for i in v))]  # fmt: skip
    text = "".join(top)
    for key, value in config.items():
        if isinstance(value, dict):
            text += f"[{key}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in value.items())
        elif isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
            for table in value:
                text += f"[[{key}]]\n" + "".join(
                    f"{k} = {toml_value(v)}\n" for k, v in table.items()
                )
    return text


def wrong(value: object) -> list[object]:
    """Values of another type than `value` (for a list: also a list of the wrong items)."""
    if isinstance(value, bool):
        return ["yes"]
    if isinstance(value, int | float):
        return ["lots"]
    if isinstance(value, str):
        return [12]
    if isinstance(value, list) and value:
        return [7, [wrong(value[0])[0]]]
    return [7]


def key_paths(config: dict[str, object]) -> Iterator[tuple[str, ...]]:
    for key, value in config.items():
        yield (key,)
        if isinstance(value, dict):
            yield from ((key, k) for k in value)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for index, table in enumerate(value):
                yield from ((key, str(index), k) for k in table if k not in ("name", "type"))


def replaced(config: dict[str, object], path: tuple[str, ...]) -> Iterator[dict[str, object]]:
    """`config` with the value at `path` replaced by each of its wrong values."""
    config = {k: (list(v) if isinstance(v, list) else v) for k, v in config.items()}
    if path == ("sink",):  # no sinks: the route naming one would be a second, true, error
        del config["route"]
    if len(path) == 1:
        for bad in wrong(config[path[0]]):
            yield {**config, path[0]: bad}
    elif len(path) == 2:
        table: dict[str, object] = config[path[0]]  # type: ignore[assignment]
        for bad in wrong(table[path[1]]):
            yield {**config, path[0]: {**table, path[1]: bad}}
    else:
        tables: list[dict[str, object]] = config[path[0]]  # type: ignore[assignment]
        index = int(path[1])
        for bad in wrong(tables[index][path[2]]):
            changed = {**tables[index], path[2]: bad}
            yield {**config, path[0]: [*tables[:index], changed, *tables[index + 1 :]]}


def test_every_notify_key_refuses_a_wrong_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KA_TEST_AUTH", "Bearer t")
    good = full_config(tmp_path)
    path = tmp_path / "ka.toml"
    path.write_text(to_toml(good))
    assert notify_cli.main(["check-config", str(path)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    paths = list(key_paths(good))
    assert len(paths) > 35  # every sink's options are in
    for key_path in paths:
        for bad in replaced(good, key_path):
            path.write_text(to_toml(bad))
            with pytest.raises(SystemExit) as exit_:
                notify_cli.main(["check-config", str(path)])
            err = capsys.readouterr().err
            assert exit_.value.code == 2, (key_path, err)
            lines = err.splitlines()
            assert len(lines) == 1 and lines[0].startswith(str(path)), (key_path, err)
            assert key_path[-1].split("_")[0] in lines[0], (key_path, err)
            assert "s3cret" not in err


# --- the environment ---------------------------------------------------------------------------


def hook_in_private_mount(tmp_path: Path, prepare: str) -> subprocess.CompletedProcess[str]:
    """ka-notify as keepalived runs it, its state_dir on a small tmpfs in a mount namespace of
    its own (gone when it exits); `prepare` runs in that namespace first."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    config = tmp_path / "ka.toml"
    config.write_text(f'cluster = "c"\nstate_dir = "{mount / "state"}"\n')
    hook = f"{BIN / 'ka-notify'} --config {config}"
    script = f"mount -t tmpfs -o size=64k tmpfs {mount} && cd {mount} && {prepare} && " \
             f"exec {hook} INSTANCE VI_1 BACKUP 100"  # fmt: skip
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec", script],
        capture_output=True, text=True, timeout=30, check=False, env={**os.environ, "HOOK": hook},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        ("mkdir state && mount -o remount,ro .", "not writable"),
        (
            "$HOOK INSTANCE VI_1 MASTER 100 && (dd if=/dev/zero of=fill bs=4k 2>/dev/null || :)",
            "disk full",
        ),
    ],
    ids=["read-only", "full"],
)
def test_hook_on_a_bad_filesystem(tmp_path: Path, prepare: str, message: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount")
    result = hook_in_private_mount(tmp_path, prepare)
    assert result.returncode == 1, result.stderr
    assert message in one_line(result, "ka-notify: error: ")


def test_interface_without_ipv6(wire: tuple[str, str]) -> None:
    a, b = wire
    netns.run(["ip", "netns", "exec", b, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1"])
    netns.run(["ip", "-n", b, "addr", "add", "192.0.2.9/24", "dev", "eth0"])
    with exporter(b, 9743, "--interface", "eth0"):
        assert "ka_exporter_netlink_up 1.0" in get(b, 9743, "/metrics")[1].splitlines()

        def seen() -> bool:
            send(a, [bytes(frames.advert(3, vrid=5, priority=150, addrlist=["192.0.2.9"]))])
            lines = get(b, 9743, "/metrics")[1].splitlines()
            return any(
                line.startswith("vrrp_local_vip{") and 'vrid="5"' in line and line.endswith(" 1.0")
                for line in lines
            )

        wait_for(seen, 5, interval=0.2, what="IPv4 advert and local VIP")
