"""A real Prometheus (Debian's package) for the tests and the demo: own temp dir, loopback only.

Optionally started inside a lab namespace, where it scrapes exporters over the lab's own
addresses; queries then go through `ip netns exec` as well.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from lab.netns import exec_argv


class PrometheusError(RuntimeError):
    pass


def available() -> str | None:
    """Why Prometheus cannot run here, or None."""
    return None if shutil.which("prometheus") else "needs prometheus (Debian: prometheus)"


class Prometheus:
    def __init__(
        self,
        targets: dict[str, list[str]],
        port: int = 9090,
        ns: str | None = None,
        interval: str = "1s",
        rule_files: list[Path] | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        """`targets`: job name -> host:port list; `labels` are put on every target (`cluster`,
        as the shipped rules expect)."""
        self.targets = targets
        self.labels = labels or {}
        self.port = port
        self.ns = ns
        self.interval = interval
        self.rule_files = rule_files or []
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self._dir = tempfile.TemporaryDirectory(prefix="ka-prometheus-")
        root = Path(self._dir.name)
        config = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": hosts, "labels": self.labels}]}
                for job, hosts in self.targets.items()
            ],
        }
        (root / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        argv = [
            "prometheus",
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ]
        log = (root / "prometheus.log").open("wb")
        try:
            self._proc = subprocess.Popen(exec_argv(self.ns, argv) if self.ns else argv,
                                          stdout=log, stderr=log)  # fmt: skip
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def version(self) -> str:
        """What the running Prometheus says it is, e.g. `2.42.0+ds` (Debian's build)."""
        return str(self.get("/api/v1/status/buildinfo")["data"]["version"])

    def page(self, *paths: str) -> str | None:
        """The first of `paths` this Prometheus serves a page on. Builds differ: Debian's (the
        version ends in `+ds`) has only the classic UI, under /classic/ (/alerts is a 404);
        upstream's 2.x has the React UI on /alerts, and 3.x only that."""
        for path in paths:
            if self._status(path) == 200:
                return path
        return None

    def alerts_page(self) -> str | None:
        return self.page("/alerts", "/classic/alerts")

    def _status(self, path: str) -> int:
        url = f"http://127.0.0.1:{self.port}{path}"
        if self.ns:
            out = subprocess.run(
                exec_argv(self.ns, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                    "--max-time", "5", url]),
                capture_output=True,
                text=True,
                check=False,
            )  # fmt: skip
            return int(out.stdout or 0)
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if self.ns:
            out = subprocess.run(
                exec_argv(self.ns, ["curl", "-sf", "--max-time", "5", url]),
                capture_output=True,
                check=False,
            )
            if out.returncode:
                raise PrometheusError(f"GET {path} failed (curl exit {out.returncode})")
            return json.loads(out.stdout)
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the result vector."""
        body = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if body.get("status") != "success":
            raise PrometheusError(f"query {expr!r}: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def targets_up(self) -> bool:
        active = self.get("/api/v1/targets")["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with status {self._proc.returncode}")
            try:
                self.get("/api/v1/status/buildinfo")
                return
            except (OSError, PrometheusError, ValueError):
                time.sleep(0.2)
        raise PrometheusError("prometheus did not become ready")
