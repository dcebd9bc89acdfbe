"""`ka-notify daemon`'s lifecycle, the exporter's runtime: a background task that fails or ends
is said once, with its traceback, and the process exits 1; SIGTERM is a clean exit 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

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
