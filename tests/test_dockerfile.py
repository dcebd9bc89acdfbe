"""The container image, without a container engine: the Dockerfile's promises, then what the
image does, done here: build the wheel, install only it into a clean `--copies` venv of a stock
Python 3.11, give its interpreter the file capability, and start the console script the way
runc starts a non-root container with only NET_RAW added (see `container`).

That start matters: a non-root process loses added capabilities at exec unless they are ambient,
which neither Docker nor Kubernetes sets, so CAP_NET_RAW has to come from the file capability.
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
from tests.running import stop

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
    assert "from=builder" in install and "python -m venv --copies /opt/ka-exporter" in install
    assert "/opt/ka-exporter/bin/pip install --no-cache-dir /wheels/*.whl" in install
    assert "find / -xdev -type f -perm /6000 -exec chmod a-s {} +" in install
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
    assert argv[:2] == ["/usr/local/bin/python3", "-c"], "the image's Python, not the venv's"
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


def file_capability_step() -> str:
    """The Python code of the final RUN that gives the venv's interpreter cap_net_raw=ep."""
    _, final = stages()
    (install,) = args_of(final, "RUN")
    match = re.search(r"python -c '([^']*security\.capability[^']*)'", install)
    assert match, "no file capability step"
    return match.group(1)


def all_capabilities() -> set[str]:
    out = subprocess.run(["capsh", "--print"], capture_output=True, text=True, check=True)
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("Bounding set =")]
    return set(line.split("=", 1)[1].strip().split(","))


def container(*argv: str, cap_add: bool = True) -> list[str]:
    """`argv` started the way runc starts a non-root container process, e.g. for `docker run
    --user 65534 --cap-drop ALL --cap-add NET_RAW --security-opt no-new-privileges` or the
    DaemonSet's securityContext: bounding, permitted and effective sets are the added
    capabilities, inheritable and ambient empty, uid and gid 65534, no_new_privs, then exec."""
    added = {"cap_net_raw"} if cap_add else set()
    return ["capsh", f"--drop={','.join(sorted(all_capabilities() - added))}", "--keep=1",
            f"--groups={NOBODY}", f"--gid={NOBODY}", f"--uid={NOBODY}",
            f"--caps={','.join(sorted(added))}{'+ep' if added else ''}", "--inh=",
            "--no-new-privs", f"--shell={argv[0]}", "--", *argv[1:]]  # fmt: skip


@pytest.fixture(scope="module")
def image_venv() -> Iterator[Path]:
    """/opt/ka-exporter as the image has it, in a directory user 65534 can reach."""
    if not STOCK_PYTHON.exists() or shutil.which("capsh") is None:
        pytest.skip(f"needs {STOCK_PYTHON} and capsh")
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
        run_ok([str(STOCK_PYTHON), "-m", "venv", "--copies", str(venv)])
        run_ok([str(venv / "bin" / "pip"), "install", "--no-cache-dir", str(wheel)])
        step = file_capability_step().replace("/opt/ka-exporter", str(venv))
        run_ok([str(STOCK_PYTHON), "-c", step])
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
        assert f"usage: {script}" in run_ok(container(str(image_venv / "bin" / script), "-h"))


def exporter(venv: Path) -> list[str]:
    return [str(venv / "bin" / "ka-exporter"), "--interface", "eth0",
            "--web.listen-address", "127.0.0.1:9743"]  # fmt: skip


@pytest.mark.lab
@pytest.mark.parametrize("missing", ["file-capability", "cap-add"])
def test_cannot_capture_without_the_file_capability_or_cap_add(
    image_venv: Path, wire: tuple[str, str], missing: str
) -> None:
    """Each of the two is needed: an interpreter without the file capability gets no
    CAP_NET_RAW from --cap-add alone, and without --cap-add the kernel will not even run the
    capability-carrying interpreter."""
    argv = exporter(image_venv)
    if missing == "file-capability":
        plain = image_venv / "bin" / "python-plain"
        shutil.copyfile(image_venv / "bin" / "python3.11", plain)  # xattrs are not copied
        plain.chmod(0o755)
        argv = [str(plain), *argv]
    command = netns.exec_argv(wire[0], container(*argv, cap_add=missing != "cap-add"))
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0, result.stderr
    if missing == "file-capability":
        assert result.returncode == 2 and "CAP_NET_RAW" in result.stderr, result.stderr


@pytest.mark.lab
def test_runs_as_nobody_with_net_raw_and_passes_its_healthcheck(
    image_venv: Path, wire: tuple[str, str]
) -> None:
    ns = wire[0]
    netns.run(["ip", "-n", ns, "link", "set", "lo", "up"])
    probe = healthcheck()
    probe[0] = str(STOCK_PYTHON)

    def check() -> bool:
        argv = netns.exec_argv(ns, container(*probe))
        return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0

    assert not check(), "the healthcheck must fail while nothing listens"
    proc = subprocess.Popen(
        netns.exec_argv(ns, container(*exporter(image_venv))),
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
        # from the file capability: nothing is inherited, and no_new_privs holds
        assert int(status["CapEff"], 16) == 1 << CAP_NET_RAW
        assert int(status["CapAmb"], 16) == 0 and int(status["CapInh"], 16) == 0
        assert status["NoNewPrivs"].strip() == "1"
    finally:
        stop(proc)
