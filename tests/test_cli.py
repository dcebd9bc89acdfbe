"""The command line: output on success; on every mistake exit status 2 and one line on stderr."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ka_exporter import cli, daemon
from ka_exporter.version import installed

DATA = Path(__file__).parent / "data"
ALL = DATA / "vrrp-all.pcap"
CAPTURES = sorted(p.name for p in DATA.glob("vrrp-*.pcap"))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No KA_EXPORTER_* from the caller's shell; and never start the live exporter here."""
    for name in [n for n in os.environ if n.startswith(cli.ENV_PREFIX)]:
        monkeypatch.delenv(name)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the test would have started the exporter")

    monkeypatch.setattr(daemon, "run", refuse)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """main() returns on success and exits (argparse style) on errors: both give a status."""
    try:
        rc = cli.main(list(argv))
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, out: str, err: str) -> None:
    assert rc == 2
    assert out == ""
    assert err.startswith("ka-exporter") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err


def records(data: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) byte offsets of each record of a little-endian pcap file."""
    pos = 24
    while pos < len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        yield pos, pos + 16 + caplen
        pos += 16 + caplen


# --- success ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CAPTURES)
def test_analyze_table(capsys: pytest.CaptureFixture[str], name: str) -> None:
    rc, out, err = run(capsys, "analyze", str(DATA / name))
    assert (rc, err) == (0, "")
    assert out.startswith(f"{name}: ")
    assert " VRID " in out and "split-brain episodes" in out and "\ntimeline\n" in out
    assert "\x1b[" not in out  # not a terminal


@pytest.mark.parametrize("name", CAPTURES)
def test_analyze_json(capsys: pytest.CaptureFixture[str], name: str) -> None:
    rc, out, err = run(capsys, "analyze", str(DATA / name), "--format", "json")
    assert (rc, err) == (0, "")
    doc = json.loads(out)
    assert doc["packets"] > 0 and doc["vrids"] and doc["events"]


def test_model_flags_reach_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "analyze", str(ALL), "--format=json", "--vrrp.split-brain-debounce=50")
    assert rc == 0
    assert {v["split_brain_events"] for v in json.loads(out)["vrids"]} == {0}


def test_cut_between_records_is_a_shorter_capture(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = ALL.read_bytes()
    cut = tmp_path / "short.pcap"
    cut.write_bytes(data[: list(records(data))[9][1]])
    rc, out, err = run(capsys, "analyze", str(cut))
    assert (rc, err) == (0, "")
    assert out.startswith("short.pcap: 10 packets")


# --- mistakes --------------------------------------------------------------------------------


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert_one_line_error(*run(capsys, "analyze", str(tmp_path / "nope.pcap")))


def test_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert_one_line_error(*run(capsys, "analyze", str(tmp_path)))


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, this is not a capture\n", b"\x0a\x0d\x0d\x0a" + b"\xff" * 24],
    ids=["empty", "text", "bad-pcapng"],
)
def test_not_a_capture(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "file.pcap"
    path.write_bytes(content)
    assert_one_line_error(*run(capsys, "analyze", str(path)))


def truncations() -> Iterator[tuple[str, int]]:
    data = ALL.read_bytes()
    spans = list(records(data))
    yield "magic", 2
    yield "file-header", 10
    for n in (0, len(spans) // 2, len(spans) - 1):
        start, end = spans[n]
        yield f"record-{n}-header", start + 7
        yield f"record-{n}-data", end - 1


@pytest.mark.parametrize(("where", "size"), list(truncations()))
def test_truncated_capture(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str, size: int
) -> None:
    path = tmp_path / "cut.pcap"
    path.write_bytes(ALL.read_bytes()[:size])
    assert_one_line_error(*run(capsys, "analyze", str(path)))


@pytest.mark.parametrize(
    "flags",
    [
        ["--format", "xml"],
        ["--format"],
        ["--vrrp.master-tolerance", "0"],
        ["--vrrp.master-tolerance", "-1.5"],
        ["--vrrp.split-brain-debounce", "two"],
        ["--vrrp.expire-after", ""],
        ["--vrrp.max-routers", "1.5"],
        ["--vrrp.max-routers", "0"],
        ["--vrrp.master-tolerance", "nan"],
        ["--vrrp.split-brain-debounce", "inf"],
        ["--vrrp.master-tolerance", "3"],
        ["--vrrp.expire-after", "1"],
        ["--vrrp.peer-name", "192.0.2.11"],
        ["--vrrp.peer-name", "lb-a=192.0.2.11"],
        ["--time", "local"],
        ["--format", "pdf"],
    ],
    ids=" ".join,
)
def test_bad_flag_value(capsys: pytest.CaptureFixture[str], flags: list[str]) -> None:
    assert_one_line_error(*run(capsys, "analyze", str(ALL), *flags))


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", str(ALL), "--bogus"],
        ["analyze", str(ALL), "extra.pcap"],
        ["analyze"],
        ["analyse", str(ALL)],  # unknown command: the exporter's parser rejects it
        ["--bogus"],
    ],
    ids=["unknown-flag", "second-file", "no-file", "unknown-command", "exporter-unknown-flag"],
)
def test_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert_one_line_error(*run(capsys, *argv))


def test_real_process_prints_no_traceback() -> None:
    exe = Path(sys.executable).with_name("ka-exporter")
    if not exe.exists():
        pytest.skip(f"{exe} not installed")
    proc = subprocess.run(
        [str(exe), "analyze", "/nonexistent"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("command", ["ka-exporter", "ka-notify"])
def test_version(command: str) -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).with_name(command)), "--version"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == f"{command} {installed()}\n" and installed() != "0.0.0"


# --- environment -----------------------------------------------------------------------------


def test_analyze_names_times_and_html(capsys: pytest.CaptureFixture[str]) -> None:
    names = ["--vrrp.peer-name", "192.0.2.11=lb-a", "--vrrp.peer-name", "192.0.2.12 = lb-b"]
    rc, out, _ = run(capsys, "analyze", str(ALL), *names, "--time", "relative")
    assert rc == 0 and "lb-a (192.0.2.11) → lb-b (192.0.2.12)  resigned, gap" in out
    assert "\n       +0.000s  ipv4 VRID 52  router_appeared        lb-a (192.0.2.11)\n" in out
    rc, out, _ = run(capsys, "analyze", str(ALL), "--format", "html", *names)
    assert rc == 0 and out.startswith("<!doctype html>") and out.count('class="strip"') == 5


def test_expected_peers_may_be_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[daemon.Settings] = []

    async def started(settings: daemon.Settings) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(daemon, "run", started)
    monkeypatch.setenv("KA_EXPORTER_VRRP_PEER_NAME", "fe80::0:1=lb-c")
    peers = ["--vrrp.expected-peer", "192.0.2.11=lb-a", "--vrrp.expected-peer", "192.0.2.12"]
    assert run(capsys, *peers)[0] == 0
    (settings,) = seen
    assert settings.expected_peers == ("192.0.2.11", "192.0.2.12")
    assert settings.peer_names == {"192.0.2.11": "lb-a", "fe80::1": "lb-c"}


def test_environment_sets_the_format(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KA_EXPORTER_FORMAT", "json")
    rc, out, _ = run(capsys, "analyze", str(ALL))
    assert rc == 0 and json.loads(out)["packets"] == 751
    rc, out, _ = run(capsys, "analyze", str(ALL), "--format", "table")  # the flag wins
    assert rc == 0 and out.startswith("vrrp-all.pcap: 751 packets")


def test_environment_sets_model_flags(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KA_EXPORTER_VRRP_SPLIT_BRAIN_DEBOUNCE", "50")
    rc, out, _ = run(capsys, "analyze", str(ALL), "--format", "json")
    assert rc == 0
    assert {v["split_brain_events"] for v in json.loads(out)["vrids"]} == {0}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KA_EXPORTER_FORMAT", "xml"),
        ("KA_EXPORTER_VRRP_MASTER_TOLERANCE", "abc"),
        ("KA_EXPORTER_VRRP_MAX_ROUTERS", "0"),
        ("KA_EXPORTER_VRRP_EXPIRE_AFTER", "-3"),
    ],
)
def test_bad_environment_value(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    rc, out, err = run(capsys, "analyze", str(ALL))
    assert_one_line_error(rc, out, err)
    assert name in err
