"""The Prometheus rules, the scrape fragment and the Alertmanager config of deploy/.

Checked with the tools that load them (promtool, amtool), the rules against their own unit tests
(deploy/prometheus/rules_test.yml), and end to end: a real Prometheus evaluating the shipped
rules over real exporters watching a real keepalived pair through a partition and a crash, and
a real Alertmanager applying the shipped routing and inhibit rules to what Prometheus sends it.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import json
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import Flavour, Instance, wait_for
from lab import prometheus as prom
from tests.lab_fixtures import MakeLab
from tests.notify_servers import alertmanager, free_port
from tests.running import process, ready

ROOT = Path(__file__).parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules.yml"
RULES_TEST = PROMETHEUS / "rules_test.yml"
SCRAPE = PROMETHEUS / "scrape.yml"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_BASE = "{{ with $externalLabels.runbook_base }}{{ . }}/{{ end }}"
BIN = Path(sys.executable).parent
CLUSTER = "lab-a"
SERIES = re.compile(r"^(\w+)\{(.*)\}$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def tool(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Runs promtool or amtool; skips the test if it is not installed."""
    if shutil.which(name) is None:
        pytest.skip(f"not installed: {name}")
    return subprocess.run([name, *args], capture_output=True, text=True, cwd=cwd, check=False)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


# -- the files as their tools load them ----------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    result = tool("promtool", "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_pass_their_unit_tests() -> None:
    result = tool("promtool", "test", "rules", RULES_TEST.name, cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_prometheus_yml_built_from_the_fragment_passes_promtool(tmp_path: Path) -> None:
    fragment = load(SCRAPE)
    jobs = {job["job_name"]: job for job in fragment["scrape_configs"]}
    assert set(jobs) == {"ka-exporter", "ka-notify"}
    for name, port in (("ka-exporter", 9743), ("ka-notify", 9744)):
        statics = jobs[name]["static_configs"]
        assert len(statics) == 2 and {s["labels"]["cluster"] for s in statics} == {"lb1", "lb2"}
        assert all(t.endswith(f":{port}") for s in statics for t in s["targets"])
    config = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": [str(RULES)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": ["localhost:9093"]}]}]},
        **fragment,
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = tool("promtool", "check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    rules = sum(len(group["rules"]) for group in load(RULES)["groups"])
    assert f"{rules} rules found" in result.stdout  # the rule file was loaded with it


def test_amtool_checks_the_alertmanager_config() -> None:
    result = tool("amtool", "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=VRRPSplitBrain", "severity=critical", "cluster=lb1", "vrid=51"], "page"),
        (["alertname=VRRPConfigMismatch", "severity=warning", "cluster=lb1"], "ticket"),
        (["alertname=KaNotifyQueueStuck", "severity=warning"], "ticket"),
        (["alertname=KeepalivedStateChange", "severity=info"], "discard"),
        (["alertname=SomethingElse"], "ticket"),
    ],
)
def test_alerts_route_by_severity(labels: list[str], receiver: str) -> None:
    result = tool("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                  f"--verify.receivers={receiver}", *labels)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_severity_the_routes_know() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]


def test_alertmanager_secrets_are_read_from_files() -> None:
    """No password, token or key inline: only their `*_file` options."""
    secret = re.compile(r"(password|credentials|token|secret|api_key|key)$")

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                assert not secret.search(str(key)), f"{path}.{key} is inline"
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    config = load(ALERTMANAGER)
    walk(config, "")
    assert config["global"]["smtp_auth_password_file"].startswith("/")
    assert config["route"]["group_by"] == ["alertname", "cluster", "vrid"]


# Each inhibit rule of the shipped config, as (alert, labels): a source, the targets it must mute
# and look-alikes that differ in one label of the rule's `equal` and must stay active.
INHIBITIONS = [
    (
        ("KaExporterDown", {"instance": "a:9743"}),
        [("VRRPNoMaster", {"instance": "a:9743", "vrid": "51"}),
         ("VRRPCaptureDropping", {"instance": "a:9743", "interface": "eth0"})],
        [("VRRPNoMaster", {"instance": "b:9743", "vrid": "51"})],
    ),
    (
        ("VRRPSplitBrain", {"instance": "mon:9743", "family": "ipv4", "vrid": "51"}),
        [("VRRPClusterSplitBrain", {"family": "ipv4", "vrid": "51"}),
         ("VRRPDuplicateVIP", {"instance": "a:9743", "family": "ipv4", "vrid": "51"})],
        [("VRRPClusterSplitBrain", {"family": "ipv4", "vrid": "52"})],
    ),
    (
        ("VRRPClusterSplitBrain", {"family": "ipv6", "vrid": "53"}),
        [("VRRPDuplicateVIP", {"instance": "a:9743", "family": "ipv6", "vrid": "53"})],
        [("VRRPDuplicateVIP", {"instance": "a:9743", "family": "ipv4", "vrid": "53"})],
    ),
    (
        ("VRRPSplitBrain", {"instance": "mon:9743", "vlan": "100", "family": "ipv4",
                            "vrid": "55"}),
        [("VRRPClusterSplitBrain", {"vlan": "100", "family": "ipv4", "vrid": "55"}),
         ("VRRPDuplicateVIP", {"instance": "a:9743", "vlan": "100", "family": "ipv4",
                               "vrid": "55"})],
        [("VRRPClusterSplitBrain", {"vlan": "200", "family": "ipv4", "vrid": "55"}),
         ("VRRPDuplicateVIP", {"instance": "a:9743", "vlan": "300", "family": "ipv4",
                               "vrid": "55"})],
    ),
    (
        ("VRRPCarpCollision", {"instance": "mon:9743", "interface": "eth0", "vlan": "100",
                               "family": "ipv4", "vrid": "63"}),
        [("VRRPNoMaster", {"instance": "mon:9743", "interface": "eth0", "vlan": "100",
                           "family": "ipv4", "vrid": "63"}),
         ("VRRPMasterFlapping", {"instance": "mon:9743", "interface": "eth0", "vlan": "100",
                                 "family": "ipv4", "vrid": "63"})],
        [("VRRPNoMaster", {"instance": "mon:9743", "interface": "eth0", "vlan": "200",
                           "family": "ipv4", "vrid": "63"}),
         ("VRRPMasterFlapping", {"instance": "b:9743", "interface": "eth0", "vlan": "100",
                                 "family": "ipv4", "vrid": "63"})],
    ),
    (
        ("KaNotifyDeliveryFailing", {"instance": "a:9744", "sink": "ops"}),
        [("KaNotifyQueueStuck", {"instance": "a:9744"})],
        [("KaNotifyQueueStuck", {"instance": "b:9744"})],
    ),
]  # fmt: skip


def test_alertmanager_inhibits_what_the_config_says(tmp_path: Path) -> None:
    """Real Alertmanager, the shipped inhibit rules, alerts posted as Prometheus would."""
    if shutil.which("prometheus-alertmanager") is None:
        pytest.skip("not installed: prometheus-alertmanager")

    def key(name: str, labels: dict[str, str]) -> tuple[str, frozenset[tuple[str, str]]]:
        return name, frozenset((k, v) for k, v in labels.items() if k != "cluster")

    cases = [
        case for source, targets, others in INHIBITIONS for case in (source, *targets, *others)
    ]
    posted = [{"labels": {"alertname": name, "cluster": "lb1", **labels}} for name, labels in cases]
    muted = {key(name, labels) for _, targets, _ in INHIBITIONS for name, labels in targets}
    with alertmanager(tmp_path) as url:
        shipped_routing(url, tmp_path)
        post(f"{url}/api/v2/alerts", posted)

        def states() -> dict[tuple[str, frozenset[tuple[str, str]]], str] | None:
            """Each alert's state, once every alert is in and the inhibitions have applied."""
            found = {
                key(a["labels"].pop("alertname"), a["labels"]): a["status"]["state"]
                for a in get(f"{url}/api/v2/alerts")
            }
            suppressed = sum(state == "suppressed" for state in found.values())
            return found if len(found) == len(cases) and suppressed >= len(muted) else None

        found = wait_for(states, 10, what="the inhibitions to apply")
    assert {alert for alert, state in found.items() if state == "suppressed"} == muted
    assert {state for alert, state in found.items() if alert not in muted} == {"active"}


# -- the rules' own contract --------------------------------------------------------------------


def slug(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading (GitHub's rule)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_anchors() -> set[str]:
    return {
        slug(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines() if line.startswith("#")
    }


def test_every_alert_has_a_runbook_section_and_every_link_resolves() -> None:
    anchors = runbook_anchors()
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        # the base is the runbook_base external label, or nothing: a path of this repository
        assert url.split("#")[0] == RUNBOOK_BASE + "docs/runbook.md", rule["alert"]
        anchor = url.split("#")[1]
        assert anchor == slug(rule["alert"]), rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in runbook.md"
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


def sent_alert_names() -> set[str]:
    """Alert names ka-notify and the exporter's --notify.config send: the string constants of
    the package that look like one (VRRP..., Keepalived..., KaNotify...)."""
    name = re.compile(r"(?:VRRP|Keepalived|KaNotify|KaExporter)[A-Z]\w*")
    return {
        node.value
        for path in (ROOT / "ka_exporter").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and name.fullmatch(node.value)
    }  # fmt: skip


def test_every_alert_the_exporter_and_ka_notify_send_has_a_runbook_section() -> None:
    names = sent_alert_names()
    assert {"KeepalivedStateChange", "VRRPPeerSplitBrain", "VRRPMasterChanged"} <= names
    missing = sorted(n for n in names if slug(n) not in runbook_anchors())
    assert not missing, f"no section in runbook.md for: {', '.join(missing)}"


def series(text: str) -> tuple[str, dict[str, str]]:
    match = SERIES.match(text)
    assert match, text
    return match[1], dict(LABEL.findall(match[2]))


def quiet_look_alike(group: dict[str, Any], rule: dict[str, Any], fired: list[Any]) -> bool:
    """Whether the group feeds the alert's expression a series that does not come out as one
    of the alerts it expects: a case where the rule must stay quiet."""
    expected = [{k: v for k, v in e["exp_labels"].items() if k != "severity"} for e in fired]
    for given in group["input_series"]:
        name, labels = series(given["series"])
        if not re.search(rf"\b{name}\b", rule["expr"]):
            continue
        if not any(all(labels.get(k, v) == v for k, v in e.items()) for e in expected):
            return True
    return False


def test_every_alert_is_tested_firing_and_staying_quiet() -> None:
    groups = load(RULES_TEST)["tests"]
    for rule in alert_rules():
        cases = [
            (group, case)
            for group in groups
            for case in group.get("alert_rule_test", [])
            if case["alertname"] == rule["alert"]
        ]
        fired = [(group, case["exp_alerts"]) for group, case in cases if case["exp_alerts"]]
        assert fired, f"{rule['alert']} is never tested firing"
        quiet = any(not case["exp_alerts"] for _, case in cases) or any(
            quiet_look_alike(group, rule, alerts) for group, alerts in fired
        )
        assert quiet, f"{rule['alert']} is never tested staying quiet"


# -- end to end: a partition and a crash, through Prometheus and Alertmanager ------------------


def fast_rules(directory: Path, hold: str = "2s") -> Path:
    """rules.yml with every `for` cut to `hold`, so alerts fire within a short lab run; the
    expressions are the shipped ones."""
    rules = load(RULES)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = hold
    path = directory / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


def reconfigure(prometheus: prom.Prometheus, change: Callable[[dict[str, Any]], None]) -> None:
    """Edits the runner's config (it writes no target labels and no Alertmanager) and reloads
    it (it runs with --web.enable-lifecycle)."""
    assert prometheus._dir is not None
    path = Path(prometheus._dir.name) / "prometheus.yml"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
    post(f"http://127.0.0.1:{prometheus.port}/-/reload")


def post(url: str, body: Any = None) -> None:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def shipped_routing(am_url: str, directory: Path) -> None:
    """Loads deploy/alertmanager's routes and inhibit rules into the running Alertmanager, with
    receivers that send nowhere (the test reads the outcome from its API)."""
    config = load(ALERTMANAGER)
    del config["global"]  # only the receivers' mail settings
    config["receivers"] = [{"name": receiver["name"]} for receiver in config["receivers"]]
    (directory / "am.yml").write_text(yaml.safe_dump(config))
    post(f"{am_url}/-/reload")
    assert "VRRPClusterSplitBrain" in get(f"{am_url}/api/v2/status")["config"]["original"]


def firing(prometheus: prom.Prometheus, alertname: str) -> list[dict[str, str]]:
    query = f'ALERTS{{alertname="{alertname}", alertstate="firing", cluster="{CLUSTER}"}}'
    return [r["metric"] for r in prometheus.query(query)]


def am_alerts(am_url: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for alert in get(f"{am_url}/api/v2/alerts"):
        found.setdefault(alert["labels"]["alertname"], []).append(alert)
    return found


@pytest.mark.lab
def test_partition_and_crash_fire_alerts_and_alertmanager_inhibits(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    absent = [t for t in ("prometheus", "prometheus-alertmanager") if not shutil.which(t)]
    if absent:
        pytest.skip(f"not installed: {', '.join(absent)}")
    lab = make_lab([Instance(51, Flavour.V3, advert_int=0.5)])  # node 1 150, node 2 100
    with contextlib.ExitStack() as stack:
        ports: dict[int | str, int] = {}
        watchers: list[int | str] = ["mon", *lab.nodes]
        for who in watchers:
            ns, port = lab.ns(who), free_port()
            argv = [str(BIN / "ka-exporter"), "--web.listen-address", f"127.0.0.1:{port}",
                    "--netns", ns, "--interface", f"{ns}/eth0"]  # fmt: skip
            stack.enter_context(process(argv, tmp_path / f"exporter-{who}.log"))
            ports[who] = port
        am_dir = tmp_path / "alertmanager"
        am_dir.mkdir()
        am_url = stack.enter_context(alertmanager(am_dir))
        shipped_routing(am_url, am_dir)
        prometheus = stack.enter_context(
            prom.Prometheus(
                {"ka-exporter": [f"127.0.0.1:{p}" for p in ports.values()]},
                port=free_port(),
                rule_files=[fast_rules(tmp_path)],
            )
        )

        def cluster_and_alertmanager(config: dict[str, Any]) -> None:
            for static in config["scrape_configs"][0]["static_configs"]:
                static["labels"] = {"cluster": CLUSTER}
            target = am_url.removeprefix("http://")
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}

        reconfigure(prometheus, cluster_and_alertmanager)
        for port in ports.values():
            wait_for(functools.partial(ready, port), 20, what=f"exporter on port {port}")
        lab.start_all()
        wait_for(lambda: lab.master_of(51) == 1, 15, what="node 1 master of VRID 51")

        # converged: one host claims the VRID, and nothing of the pair fires
        claims = 'cluster_vrid:vrrp_local_master:sum{vrid="51"}'
        wait_for(
            lambda: (
                [r["value"][1] for r in prometheus.query(claims)] == ["1"]
                and len(prometheus.query(f'vrrp_local_master{{cluster="{CLUSTER}"}}')) == 3
            ),
            20,
            what="Prometheus to record one claim from the scraped nodes and monitor",
        )
        assert prometheus.query(f'ALERTS{{cluster="{CLUSTER}"}}') == []

        # partition: each node hears only itself and claims the VRID; the monitor hears both
        lab.partition()
        wait_for(
            lambda: (
                firing(prometheus, "VRRPClusterSplitBrain") and firing(prometheus, "VRRPSplitBrain")
            ),
            30,
            what="split-brain alerts to fire in Prometheus",
        )
        (cluster_wide,) = firing(prometheus, "VRRPClusterSplitBrain")
        assert (cluster_wide["family"], cluster_wide["vrid"]) == ("ipv4", "51")
        assert cluster_wide["severity"] == "critical"
        (sniffed,) = firing(prometheus, "VRRPSplitBrain")
        assert sniffed["instance"] == f"127.0.0.1:{ports['mon']}"

        # Alertmanager: the sniffer's alert is active, the cluster-wide one inhibited by it
        def inhibited() -> bool:
            alerts = am_alerts(am_url)
            sniffer = alerts.get("VRRPSplitBrain", [])
            cluster = alerts.get("VRRPClusterSplitBrain", [])
            return (
                len(sniffer) == 1
                and sniffer[0]["status"]["state"] == "active"
                and len(cluster) == 1
                and cluster[0]["status"]["state"] == "suppressed"
                and cluster[0]["status"]["inhibitedBy"] == [sniffer[0]["fingerprint"]]
            )

        wait_for(inhibited, 20, what="Alertmanager to inhibit the cluster-wide alert")
        cluster = am_alerts(am_url)["VRRPClusterSplitBrain"][0]
        assert cluster["receivers"] == [{"name": "page"}]
        assert cluster["annotations"]["runbook_url"].endswith("#vrrpclustersplitbrain")

        lab.heal()  # node 2 hears node 1 again and backs off
        wait_for(
            lambda: not firing(prometheus, "VRRPClusterSplitBrain"),
            20,
            what="the cluster split-brain to resolve after the heal",
        )

        # both nodes gone, the master by a crash that leaves its VIPs: no master, orphan VIPs
        lab.kill(2)
        lab.kill(1, signal.SIGKILL)
        wait_for(
            lambda: (
                len(firing(prometheus, "VRRPNoMaster")) == len(ports)
                and firing(prometheus, "VRRPOrphanVIP")
            ),
            30,
            what="no-master and orphan-VIP alerts to fire",
        )
        assert {a["instance"] for a in firing(prometheus, "VRRPNoMaster")} == {
            f"127.0.0.1:{p}" for p in ports.values()
        }
        (orphan,) = firing(prometheus, "VRRPOrphanVIP")
        assert orphan["instance"] == f"127.0.0.1:{ports[1]}"
        assert not firing(prometheus, "KaExporterDown")
