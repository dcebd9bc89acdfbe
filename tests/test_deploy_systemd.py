"""The systemd units under deploy/systemd: hardening as documented, commands that exist; and
docs/install.md, whose commands name these files.

A unit that names a missing flag or binary fails only on the first start on a user's host, so
the units and the install guide are checked here against the console scripts and their CLIs.
"""

from __future__ import annotations

import configparser
import ctypes
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import pytest

from lab import wait_for
from tests.notify_servers import free_port
from tests.running import scrape, stop

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "deploy" / "systemd"
BIN = Path(sys.executable).parent
INSTALLED_BIN = "/usr/local/bin"

HARDENING = {
    "DynamicUser": "yes",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "SystemCallFilter": "@system-service",
    "MemoryDenyWriteExecute": "yes",
    "LockPersonality": "yes",
    "Restart": "on-failure",
}


def service(name: str) -> configparser.SectionProxy:
    parser = configparser.RawConfigParser(strict=True, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(UNITS / name)
    return parser["Service"]


def exec_start(name: str) -> list[str]:
    return shlex.split(service(name)["ExecStart"])


def help_text(*argv: str) -> str:
    result = subprocess.run(
        [str(BIN / argv[0]), *argv[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def flags(argv: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in argv if arg.startswith("--")]


@pytest.mark.parametrize("name", ["ka-exporter.service", "ka-notify.service"])
def test_hardening(name: str) -> None:
    unit = service(name)
    assert {key: unit.get(key) for key in HARDENING} == HARDENING
    assert unit["PrivateDevices"] == "yes" and unit["UMask"] == "0077"


def test_exporter_gets_only_cap_net_raw_and_the_socket_families_it_uses() -> None:
    unit = service("ka-exporter.service")
    assert unit["AmbientCapabilities"] == "CAP_NET_RAW"
    assert unit["CapabilityBoundingSet"] == "CAP_NET_RAW"
    assert set(unit["RestrictAddressFamilies"].split()) == {
        "AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET",
    }  # fmt: skip
    assert unit["EnvironmentFile"] == "-/etc/default/ka-exporter"


def test_notify_daemon_has_no_capabilities_and_keeps_its_spool() -> None:
    unit = service("ka-notify.service")
    assert unit["AmbientCapabilities"] == "" and unit["CapabilityBoundingSet"] == ""
    assert "AF_PACKET" not in unit["RestrictAddressFamilies"]
    assert unit["StateDirectory"] == "ka-notify"
    argv = exec_start("ka-notify.service")
    assert argv[argv.index("--keepalived.notify-fifo") + 1].startswith(
        f"/run/{unit['RuntimeDirectory']}/"
    )


@pytest.mark.parametrize(
    ("name", "command"),
    [("ka-exporter.service", ["ka-exporter"]), ("ka-notify.service", ["ka-notify", "daemon"])],
)
def test_exec_start_runs_a_console_script_with_flags_it_knows(
    name: str, command: list[str]
) -> None:
    argv = exec_start(name)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] == f"{INSTALLED_BIN}/{command[0]}" and command[0] in scripts
    assert argv[1 : len(command)] == command[1:]
    known = set(re.findall(r"--[\w.-]+", help_text(*command)))
    assert set(flags(argv)) <= known


def test_exporter_defaults_file_names_only_variables_the_cli_reads() -> None:
    """Every variable, commented-out examples too, is one the CLI reads and its value parses:
    the parser turns a bad value into exit status 2 even for --help."""
    text = (UNITS / "ka-exporter.default").read_text()
    assignments = dict(re.findall(r"^#?(KA_EXPORTER_\w+)=(.*)$", text, re.MULTILINE))
    assert "KA_EXPORTER_WEB_LISTEN_ADDRESS" in assignments
    env = {key: value for key, value in os.environ.items() if not key.startswith("KA_")}
    result = subprocess.run(
        [str(BIN / "ka-exporter"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env | assignments,
    )
    assert result.returncode == 0, result.stderr
    read = set(re.findall(r"\[env\s+(KA_EXPORTER_\w+)\]", result.stdout))
    assert set(assignments) <= read


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """The units as systemd reads them, with the --netns drop-in where the docs put it; the
    binaries point at this venv, which has them."""
    units = ["ka-exporter.service", "ka-notify.service"]
    for unit in units:
        text = (UNITS / unit).read_text().replace(f"{INSTALLED_BIN}/", f"{BIN}/")
        (tmp_path / unit).write_text(text)
    (tmp_path / "ka-exporter.service.d").mkdir()
    shutil.copy(UNITS / "ka-exporter-netns.conf", tmp_path / "ka-exporter.service.d/netns.conf")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / unit) for unit in units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=os.environ | {"SYSTEMD_UNIT_PATH": f"{tmp_path}:"},
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def dropin() -> configparser.SectionProxy:
    return service("ka-exporter-netns.conf")


def test_netns_dropin_adds_sys_admin_and_the_net_namespace_only() -> None:
    unit = dropin()
    assert unit["AmbientCapabilities"].split() == ["CAP_NET_RAW", "CAP_SYS_ADMIN"]
    assert unit["CapabilityBoundingSet"] == unit["AmbientCapabilities"]
    assert unit["RestrictNamespaces"] == "net"


def exporter_as_nobody(caps: list[str], *args: str) -> list[str]:
    """The exporter as a DynamicUser service runs it: another uid, only these capabilities."""
    names = ",".join(f"+{cap.removeprefix('CAP_').lower()}" for cap in caps)
    return ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
            "--inh-caps", f"-all,{names}", "--ambient-caps", names,
            "--bounding-set", f"-all,{names}", str(BIN / "ka-exporter"), *args]  # fmt: skip


@pytest.mark.lab
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_netns_needs_the_dropin_and_works_with_it(wire: tuple[str, str]) -> None:
    ns = wire[0]
    args = ["--netns", ns, "--interface", f"{ns}/eth0"]
    port = free_port()
    listen = ["--web.listen-address", f"127.0.0.1:{port}"]
    without = subprocess.run(
        exporter_as_nobody(["CAP_NET_RAW"], *args, *listen),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # refused with one line that names the missing capability
    assert without.returncode == 2, without.stderr
    assert without.stderr.count("\n") == 1 and "CAP_SYS_ADMIN" in without.stderr, without.stderr
    caps = dropin()["AmbientCapabilities"].split()
    argv = exporter_as_nobody(caps, *args, *listen)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        up = f'ka_exporter_capture_up{{interface="eth0",netns="{ns}"}} 1.0'
        wait_for(lambda: proc.poll() is not None or up in scrape(port), 20, what="capture up")
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        stop(proc)


INSTALL_DOC = ROOT / "docs" / "install.md"


def test_install_doc_names_only_files_that_exist() -> None:
    text = INSTALL_DOC.read_text()
    named = set(re.findall(r"\bdeploy/[\w./-]*[\w]", text)) | {"Dockerfile"}
    assert {"deploy/systemd/ka-exporter.service", "deploy/kubernetes/daemonset.yaml"} <= named
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing


def test_install_doc_puts_the_defaults_files_where_the_units_read_them() -> None:
    text = INSTALL_DOC.read_text()
    for unit, defaults in (
        ("ka-exporter", "ka-exporter.default"),
        ("ka-notify", "ka-notify.default"),
    ):
        target = service(f"{unit}.service")["EnvironmentFile"].removeprefix("-")
        assert re.search(rf"install -m 0\d\d\d deploy/systemd/{defaults} {target}\n", text)


def test_install_doc_uses_flags_the_clis_have() -> None:
    """Dotted flags are ours (docker and kubectl have none), and whatever follows the image
    name in `docker run` goes to ka-exporter."""
    text = INSTALL_DOC.read_text()
    helps = [("ka-exporter",), ("ka-notify",), ("ka-notify", "daemon"), ("ka-notify", "test")]
    known = set(re.findall(r"--[\w.-]+", "".join(help_text(*argv) for argv in helps)))
    assert set(re.findall(r"--\w+\.[\w.-]+", text)) <= known
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    (run,) = re.findall(rf"docker run [^\n]*\\\n[^\n]*ka-exporter:{version}([^\n]*)", text)
    assert run.split() and set(flags(run.split())) <= set(
        re.findall(r"--[\w.-]+", help_text("ka-exporter"))
    )


PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def deny_write_execute() -> None:
    """MemoryDenyWriteExecute=yes, as the kernel's own flag (kept across exec): no mapping may
    become writable and executable. Runs in the child before exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        os._exit(126)  # no such prctl before Linux 6.3: the test skips on exit status 126


def serving(proc: subprocess.Popen[bytes], port: int, metric: str) -> bool:
    """Whether `proc` serves `metric`; raises if it exited instead."""
    if proc.poll() is not None:
        if proc.returncode == 126:
            pytest.skip("the kernel has no PR_SET_MDWE")
        raise AssertionError(proc.stderr.read().decode() if proc.stderr else proc.returncode)
    return metric in scrape(port)


@pytest.mark.lab
def test_services_run_with_memory_deny_write_execute(wire: tuple[str, str], tmp_path: Path) -> None:
    """Python, its C extensions and ctypes must not need W+X memory, or the units' setting kills
    the services at the first such mapping; both serve their metrics under it."""
    ns = wire[0]
    config = tmp_path / "ka-notify.toml"
    config.write_text(  # a sink that is never called: nothing happens to alert on
        f'cluster = "test"\nstate_dir = "{tmp_path / "spool"}"\n'
        '[[sink]]\nname = "hook"\ntype = "webhook"\nurl = "http://127.0.0.1:9/"\n'
    )
    commands = {
        "ka-exporter": ["--netns", ns, "--interface", f"{ns}/eth0"],
        "ka-notify": ["daemon", "--config", str(config),
                      "--keepalived.notify-fifo", str(tmp_path / "notify.fifo")],
    }  # fmt: skip
    ports = {name: free_port() for name in commands}
    with ExitStack() as stack:
        for name, args in commands.items():
            argv = [str(BIN / name), *args, "--web.listen-address", f"127.0.0.1:{ports[name]}"]
            proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                preexec_fn=deny_write_execute,  # noqa: PLW1509 -- only prctl(2)
            )  # fmt: skip
            stack.callback(stop, proc)
            metric = f"{name.replace('-', '_')}_"  # ka_exporter_build_info, ka_notify_queue_depth
            wait_for(partial(serving, proc, ports[name], metric), 20, what=f"{name} metrics")
        up = f'ka_exporter_capture_up{{interface="eth0",netns="{ns}"}} 1.0'
        assert up in scrape(ports["ka-exporter"])
