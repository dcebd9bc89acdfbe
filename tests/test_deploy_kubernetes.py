"""The Kubernetes manifests under deploy/kubernetes: schema-valid, least privilege, wired up.

Core objects go through kubernetes-validate (bundled OpenAPI schemas, strict: unknown fields
fail); the Prometheus Operator objects have no bundled schema, so their selectors and ports are
checked against the DaemonSet's pods directly.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES = "1.31.0"
MONITORING = "monitoring.coreos.com/v1"
PORT = 9743

Doc = dict[str, Any]


def load(name: str) -> Doc:
    (doc,) = yaml.safe_load_all((MANIFESTS / name).read_text())
    assert isinstance(doc, dict)
    return doc


def pod_spec() -> Doc:
    spec: Doc = load("daemonset.yaml")["spec"]["template"]["spec"]
    return spec


def container() -> Doc:
    (only,) = pod_spec()["containers"]
    assert isinstance(only, dict)
    return only


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = load("daemonset.yaml")["spec"]["template"]["metadata"]["labels"]
    return labels


def selects_pods(selector: Doc) -> bool:
    wanted = selector["matchLabels"].items()
    return bool(wanted) and wanted <= pod_labels().items()


def test_every_manifest_is_known() -> None:
    """A new manifest needs a test here; this keeps the lists honest."""
    assert {p.name for p in MANIFESTS.glob("*.yaml")} == {
        "daemonset.yaml", "service.yaml", "podmonitor.yaml", "servicemonitor.yaml",
    }  # fmt: skip


@pytest.mark.parametrize("name", ["daemonset.yaml", "service.yaml"])
def test_core_objects_validate_against_the_schema(name: str) -> None:
    kubernetes_validate.validate(load(name), KUBERNETES, strict=True)


def test_the_validator_rejects_a_misspelt_field() -> None:
    broken = copy.deepcopy(load("daemonset.yaml"))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonroot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_pod_runs_unprivileged_with_only_net_raw() -> None:
    pod = pod_spec()
    assert pod["hostNetwork"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65534
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}
    assert "privileged" not in security


def test_probes_resources_port_and_tolerations() -> None:
    c = container()
    assert c["ports"] == [{"name": "metrics", "containerPort": PORT, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics"}
    assert f"--web.listen-address=:{PORT}" in c["args"]
    assert {"cpu", "memory"} <= c["resources"]["requests"].keys()
    assert "memory" in c["resources"]["limits"]
    assert {t["effect"] for t in pod_spec()["tolerations"]} == {"NoSchedule", "NoExecute"}
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert c["image"] == f"ka-exporter:{version}"


def test_container_args_are_flags_the_exporter_has() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ka-exporter")), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    flags = {arg.split("=", 1)[0] for arg in container()["args"]}
    assert flags <= set(re.findall(r"--[\w.-]+", result.stdout))


def test_daemonset_selector_matches_its_pods() -> None:
    assert selects_pods(load("daemonset.yaml")["spec"]["selector"])


def test_service_is_headless_and_selects_the_pods() -> None:
    spec = load("service.yaml")["spec"]
    assert spec["clusterIP"] == "None"
    assert selects_pods({"matchLabels": spec["selector"]})
    assert spec["ports"] == [
        {"name": "metrics", "port": PORT, "targetPort": "metrics", "protocol": "TCP"}
    ]


@pytest.mark.parametrize(
    ("name", "kind", "endpoints", "targets"),
    [
        ("podmonitor.yaml", "PodMonitor", "podMetricsEndpoints", "daemonset.yaml"),
        ("servicemonitor.yaml", "ServiceMonitor", "endpoints", "service.yaml"),
    ],
)
def test_monitors_scrape_the_metrics_port(
    name: str, kind: str, endpoints: str, targets: str
) -> None:
    """A PodMonitor selects pods by their labels, a ServiceMonitor the Service by its own."""
    doc = load(name)
    assert (doc["apiVersion"], doc["kind"]) == (MONITORING, kind)
    assert doc["metadata"]["namespace"] == load(targets)["metadata"]["namespace"]
    selector = doc["spec"]["selector"]
    if kind == "PodMonitor":
        assert selects_pods(selector)
    else:
        assert selector["matchLabels"].items() <= load(targets)["metadata"]["labels"].items()
    (endpoint,) = doc["spec"][endpoints]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
