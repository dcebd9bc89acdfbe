"""The container image, without a container engine: the Dockerfile's promises, then what the
image does, done here: build the wheel, install only it into a clean venv of a stock Python 3.11,
and run the console script as user 65534 with nothing but CAP_NET_RAW, as `docker run
--cap-drop ALL --cap-add NET_RAW --user 65534` would.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import netns, wait_for

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# the Python of the slim image; the test venv is made from the same minor version
STOCK_PYTHON = Path("/usr/bin/python3.11")
NOBODY = "65534"
CAP_NET_RAW = 13

Instruction = tuple[str, str]


def instructions(text: str) -> list[Instruction]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            out.append((keyword.upper(), " ".join(args.split())))
    return out


def stages() -> list[list[Instruction]]:
    parsed: list[list[Instruction]] = []
    for keyword, args in instructions((ROOT / "Dockerfile").read_text()):
        if keyword == "FROM":
            parsed.append([])
        parsed[-1].append((keyword, args))
    return parsed


def args_of(stage: list[Instruction], keyword: str) -> list[str]:
    return [args for kw, args in stage if kw == keyword]


def test_two_stages_on_python_slim() -> None:
    builder, final = stages()
    assert args_of(builder, "FROM") == ["python:3.11-slim AS builder"]
    assert args_of(final, "FROM") == ["python:3.11-slim"]
    assert any("pip wheel" in run and "--no-deps" in run for run in args_of(builder, "RUN"))


def test_final_stage_installs_the_wheel_only() -> None:
    _, final = stages()
    assert args_of(final, "COPY") == [], "no sources in the image"
    (install,) = args_of(final, "RUN")
    assert "from=builder" in install and "python -m venv /opt/ka-exporter" in install
    assert "/opt/ka-exporter/bin/pip install --no-cache-dir /wheels/*.whl" in install
    assert any(env.startswith('PATH="/opt/ka-exporter/bin:') for env in args_of(final, "ENV"))


def test_runtime_settings() -> None:
    _, final = stages()
    assert args_of(final, "USER") == [f"{NOBODY}:{NOBODY}"]
    assert args_of(final, "EXPOSE") == ["9743"]
    assert [json.loads(a) for a in args_of(final, "ENTRYPOINT")] == [["ka-exporter"]]
    assert "ka-exporter" in PROJECT["scripts"]


def test_oci_labels_follow_the_project() -> None:
    _, final = stages()
    (labels,) = args_of(final, "LABEL")
    found = dict(re.findall(r'org\.opencontainers\.image\.(\w+)="([^"]*)"', labels))
    assert found.keys() == {"title", "description", "source", "licenses", "version"}
    assert found["title"] == PROJECT["name"]
    assert found["description"] == PROJECT["description"]
    assert found["licenses"] == PROJECT["license"]
    assert found["version"] == "${VERSION}"
    assert f"VERSION={PROJECT['version']}" in args_of(final, "ARG")


def healthcheck() -> list[str]:
    _, final = stages()
    (check,) = args_of(final, "HEALTHCHECK")
    argv = json.loads(check.split(" CMD ", 1)[1])
    assert isinstance(argv, list)
    return [str(arg) for arg in argv]


def test_healthcheck_needs_no_curl() -> None:
    argv = healthcheck()
    assert argv[:2] == ["python", "-c"]
    assert "urllib" in argv[2] and "http://127.0.0.1:9743/-/healthy" in argv[2]


def builder_sources() -> list[str]:
    builder, _ = stages()
    return [p.rstrip("/") for copy in args_of(builder, "COPY") for p in copy.split()[:-1]]


def test_dockerignore_lets_in_exactly_what_the_builder_copies() -> None:
    sources = set(builder_sources())
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert rules[0] == "*" and sources == allowed
    assert all((ROOT / source).exists() for source in sources)


def as_nobody(*argv: str, caps: str = "") -> list[str]:
    """setpriv as `--user 65534` with no capabilities, or with `caps` ambient and bounding."""
    keep = f",+{caps}" if caps else ""
    ambient = ["--ambient-caps", f"+{caps}"] if caps else []
    return ["setpriv", "--reuid", NOBODY, "--regid", NOBODY, "--clear-groups",
            "--inh-caps", f"-all{keep}", *ambient, "--bounding-set", f"-all{keep}",
            "--", *argv]  # fmt: skip


@pytest.fixture(scope="module")
def image_venv() -> Iterator[Path]:
    """/opt/ka-exporter as the image has it, in a directory user 65534 can reach."""
    if not STOCK_PYTHON.exists() or shutil.which("setpriv") is None:
        pytest.skip(f"needs {STOCK_PYTHON} and setpriv")
    top = Path(tempfile.mkdtemp(prefix="ka-image-"))
    try:
        top.chmod(0o755)
        src, wheels, venv = top / "src", top / "wheels", top / "opt-ka-exporter"
        src.mkdir()
        # the builder's COPY, from the last commit: what a release build sees
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "HEAD", *builder_sources()],
            capture_output=True,
            timeout=60,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, timeout=60, check=True)
        run_ok(["pip", "wheel", "--no-cache-dir", "--no-deps", str(src), "-w", str(wheels)])
        (wheel,) = wheels.glob("ka_exporter-*.whl")
        run_ok([str(STOCK_PYTHON), "-m", "venv", str(venv)])
        run_ok([str(venv / "bin" / "pip"), "install", "--no-cache-dir", str(wheel)])
        yield venv
    finally:
        shutil.rmtree(top)


def run_ok(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, f"{shlex.join(argv)}:\n{result.stderr[-2000:]}"
    return result.stdout


def test_wheel_holds_the_package_and_both_console_scripts(image_venv: Path) -> None:
    for script in PROJECT["scripts"]:
        assert (image_venv / "bin" / script).exists()
    assert "usage: ka-exporter" in run_ok(as_nobody(str(image_venv / "bin" / "ka-exporter"), "-h"))
    assert "usage: ka-notify" in run_ok(as_nobody(str(image_venv / "bin" / "ka-notify"), "-h"))


@pytest.mark.lab
def test_runs_as_nobody_with_net_raw_and_passes_its_healthcheck(
    image_venv: Path, wire: tuple[str, str]
) -> None:
    ns = wire[0]
    netns.run(["ip", "-n", ns, "link", "set", "lo", "up"])
    exporter = [str(image_venv / "bin" / "ka-exporter"), "--interface", "eth0"]
    exporter += ["--web.listen-address", "127.0.0.1:9743"]
    probe = healthcheck()
    probe[0] = str(image_venv / "bin" / probe[0])  # PATH in the image puts the venv first

    def check() -> bool:
        argv = netns.exec_argv(ns, as_nobody(*probe))
        return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0

    assert not check(), "the healthcheck must fail while nothing listens"
    proc = subprocess.Popen(
        netns.exec_argv(ns, as_nobody(*exporter, caps="net_raw")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: proc.poll() is not None or check(), 20, what="healthcheck")
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        metrics = run_ok(netns.exec_argv(ns, ["curl", "-fsS", "http://127.0.0.1:9743/metrics"]))
        assert 'ka_exporter_capture_up{interface="eth0"} 1.0' in metrics
        status = dict(
            line.split(":\t", 1)
            for line in (Path("/proc") / str(proc.pid) / "status").read_text().splitlines()
        )
        assert status["Uid"].split() == [NOBODY] * 4 and status["Gid"].split() == [NOBODY] * 4
        assert int(status["CapEff"], 16) == 1 << CAP_NET_RAW
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
