"""`ka-notify daemon`'s lifecycle, the exporter's runtime: a background task that fails or ends
is said once, with its traceback, and the process exits 1; SIGTERM is a clean exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ka_exporter.notify import cli
from tests.notify_servers import free_port

# the daemon as `ka-notify daemon` runs it, one of its tasks replaced by one that breaks
BROKEN = """
import asyncio, sys
from ka_exporter.notify import cli, service

async def broken(self, *_):
    await asyncio.sleep(0.5)
    {body}

service.{target} = broken
sys.exit(cli.main(sys.argv[1:]))
"""


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "ka.toml"
    path.write_text(f'cluster = "lb1"\nstate_dir = "{tmp_path / "state"}"\n')
    return path


def start(tmp_path: Path, code: str, port: int) -> subprocess.Popen[str]:
    argv = ["daemon", "--config", str(write_config(tmp_path)),
            "--keepalived.notify-fifo", str(tmp_path / "notify.fifo"),
            "--web.listen-address", f"127.0.0.1:{port}"]  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", code, *argv], stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(
    ("target", "body", "name", "said"),
    [
        ("Worker.run", "raise RuntimeError('boom')", "delivery worker", "failed; stopping: boom"),
        ("Feed.flush_loop", "return", "digest loop", "ended, which it never should; stopping"),
    ],
)
def test_a_task_that_breaks_is_said_once_and_the_daemon_exits_1(
    tmp_path: Path, target: str, body: str, name: str, said: str
) -> None:
    port = free_port()
    proc = start(tmp_path, BROKEN.format(target=target, body=body), port)
    try:
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr
    lines = [line for line in stderr.splitlines() if "level=ERROR" in line]
    assert len(lines) == 1 and lines[0].endswith(f"{name} {said}"), stderr
    assert ("Traceback" in stderr) == ("raise" in body)
    assert stderr.count("Traceback") <= 1


def test_sigterm_still_stops_it_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = start(tmp_path, BROKEN.format(target="Worker.__doc__", body="pass"), port)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "ERROR" not in stderr, stderr


def test_every_flag_has_its_variable_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "KA_NOTIFY_CONFIG": str(write_config(tmp_path)),
           "KA_NOTIFY_LOG_LEVEL": "loud"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "ka_exporter.notify.cli", "daemon"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "ka-notify daemon: error: KA_NOTIFY_LOG_LEVEL='loud': "
        "choose from debug, info, warning, error\n"
    )


def test_the_renamed_flags_keep_their_old_spellings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    for flag in ("--sink.name", "--sink"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["test", "--config", config, flag, "nope"])
        assert exit_.value.code == 2
        assert f"no sink named 'nope' in {config}" in capsys.readouterr().err
