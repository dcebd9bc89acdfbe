"""The Grafana dashboard and its provisioning files, checked without Grafana.

Grafana is not packaged here, so the dashboard is held to the rules Grafana's dashboard linter
applies (a datasource variable every panel uses, `$__rate_interval`, units, unique panel ids, no
hard-coded datasource uid), and every query in it, panel or variable, is run against a real
Prometheus that has scraped real exporters watching a real keepalived lab; each must return data.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from scapy.layers.l2 import ARP, Ether

from lab import Flavour, Instance, Lab, double_master, wait_for
from lab import prometheus as prom
from tests.frames import advert, set_checksum
from tests.lab_fixtures import MakeLab
from tests.notify_servers import alertmanager, free_port
from tests.running import process, ready
from tests.segments import carp

ROOT = Path(__file__).parents[1]
GRAFANA = ROOT / "grafana"
DASHBOARD = GRAFANA / "ka-exporter.json"
BIN = Path(sys.executable).parent
CLUSTER = "lab-a"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's own macros, as Grafana would fill them for a 1 s scrape interval
MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
RANGE = re.compile(r"\[([^\]]*)\]")
LABEL_VALUES = re.compile(r"^label_values\((?:(.*),\s*)?(\w+)\)$", re.DOTALL)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' collapsed panels included."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return found


def targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in panels(board) for t in p.get("targets", [])]


def variables(board: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = board["templating"]["list"]
    return found


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


# -- structure: the dashboard linter's rules ---------------------------------------------------


def test_uid_and_schema_are_fixed_for_provisioning() -> None:
    board = dashboard()
    assert board["uid"] == "ka-exporter-vrrp"
    assert 39 <= board["schemaVersion"] <= 42
    assert board["id"] is None
    assert "__inputs" not in board and "__requires" not in board  # import-only sections


def test_datasource_variable_is_used_by_every_panel_target_and_variable() -> None:
    board = dashboard()
    (source,) = [v for v in variables(board) if v["type"] == "datasource"]
    assert (source["name"], source["query"]) == ("datasource", "prometheus")
    for panel in panels(board):
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE, panel["title"]
    for title, target in targets(board):
        assert target["datasource"] == DATASOURCE, title
    for variable in variables(board):
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]


def test_no_datasource_uid_is_hard_coded() -> None:
    def uids(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            source = node.get("datasource")
            if isinstance(source, dict) and source.get("type") != "grafana":  # built-in source
                yield str(source.get("uid"))
            for value in node.values():
                yield from uids(value)
        elif isinstance(node, list):
            for value in node:
                yield from uids(value)

    found = set(uids(dashboard()))
    assert found == {"${datasource}"}


def test_chained_variables_cluster_instance_vrid() -> None:
    board = dashboard()
    by_name = {v["name"]: v for v in variables(board) if v["type"] == "query"}
    assert list(by_name) == ["cluster", "instance", "vrid"]
    assert '$cluster"' in variable_query(by_name["instance"])
    assert '$cluster"' in variable_query(by_name["vrid"])
    assert '$instance"' in variable_query(by_name["vrid"])
    for variable in by_name.values():
        assert LABEL_VALUES.match(variable_query(variable)), variable["name"]
        assert variable["includeAll"] and variable["multi"] and variable["allValue"]


# A series born within the interval has no increase there (increase needs two samples of it), and
# the failover and announcement series are born with their first event: `(increase(X[i]) and X
# offset i) or (X unless X offset i)` counts such a series from its first sample instead.
BORN = re.compile(
    r"\(increase\((?P<c>\w+\{[^}]*\})\[\$__rate_interval\]\) and (?P=c) offset \$__rate_interval\)"
    r" or \((?P=c) unless (?P=c) offset \$__rate_interval\)"
)


def test_rates_use_rate_interval_and_counters_are_only_rated() -> None:
    for title, target in targets(dashboard()):
        expr = BORN.sub(r"increase(\g<c>[$__rate_interval])", target["expr"])
        assert set(RANGE.findall(expr)) <= {"$__rate_interval"}, title
        assert "offset" not in expr, title
        for call in re.finditer(r"\b(?:rate|irate|increase)\(", expr):
            assert expr[call.end() :].split(")")[0].endswith("[$__rate_interval]"), title
        for counter in re.finditer(r"\b\w+_(?:total|bucket|count|sum)\b", expr):
            assert re.search(r"(?:rate|increase)\(\s*$", expr[: counter.start()]), title


def test_every_query_is_scoped_to_the_cluster() -> None:
    for title, target in targets(dashboard()):
        for selector in re.findall(r"\{([^}]*)\}", target["expr"]):
            assert 'cluster=~"$cluster"' in selector, title


def test_every_panel_has_a_unit_a_description_and_a_unique_id() -> None:
    board = dashboard()
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["description"], panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def mapping_texts(mappings: list[dict[str, Any]]) -> dict[str, str]:
    texts = {}
    for mapping in mappings:
        if mapping["type"] == "value":
            texts |= {value: result["text"] for value, result in mapping["options"].items()}
    return texts


def test_states_are_value_mapped() -> None:
    board = {p["title"]: p for p in panels(dashboard())}
    keepalived = board["keepalived state"]["fieldConfig"]["defaults"]["mappings"]
    assert mapping_texts(keepalived) == {"0": "INIT", "1": "BACKUP", "2": "MASTER", "3": "FAULT"}
    split = board["Split-brain"]["fieldConfig"]["defaults"]["mappings"]
    assert mapping_texts(split) == {"0": "OK", "1": "SPLIT-BRAIN"}
    columns = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in board["VRIDs"]["fieldConfig"]["overrides"]
    }
    assert mapping_texts(columns["split-brain"]["mappings"]) == {"0": "OK", "1": "SPLIT-BRAIN"}
    roles = board["Routers"]["fieldConfig"]["overrides"][0]["properties"][0]["value"]
    assert mapping_texts(roles) == {"0": "BACKUP", "1": "MASTER"}
    conflict = board["VIP conflict"]["fieldConfig"]["defaults"]["mappings"]
    assert mapping_texts(conflict) == {"0": "OK", "1": "CONFLICT"}
    columns = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in board["Who answers for each VIP"]["fieldConfig"]["overrides"]
    }
    assert mapping_texts(columns["conflict"]["mappings"]) == {"0": "OK", "1": "CONFLICT"}


def test_provisioning_files() -> None:
    provisioning = GRAFANA / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources/ka-exporter.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["access"] == "proxy"
    (provider,) = yaml.safe_load((provisioning / "dashboards/ka-exporter.yml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


# -- every query against a real Prometheus scraping the real lab -------------------------------


def substitute(text: str, values: dict[str, str]) -> str:
    for name, value in {**MACROS, **values}.items():
        text = text.replace("${" + name.lstrip("$") + "}", value).replace(name, value)
    return text


def label_values(prometheus: prom.Prometheus, query: str) -> list[str]:
    """Grafana's `label_values(expr, label)`, as Grafana asks Prometheus for it."""
    match = LABEL_VALUES.match(query)
    assert match, query
    expr, label = match.groups()
    params = urllib.parse.urlencode({"match[]": expr} if expr else {})
    body = prometheus.get(f"/api/v1/label/{label}/values?{params}")
    assert body["status"] == "success", body
    return sorted(body["data"])


def missing(prometheus: prom.Prometheus, first: bool) -> list[str]:
    """Variable and panel queries without data, with each variable set, in dashboard order, to
    "All" (its allValue) or to its first option (a chained variable sees those before it)."""
    values: dict[str, str] = {}
    for variable in variables(dashboard()):
        if variable["type"] != "query":
            continue
        options = label_values(prometheus, substitute(variable_query(variable), values))
        if not options:
            return [f"variable {variable['name']}: no options"]
        # Grafana escapes a single value for the regex matcher, and again for the PromQL string
        one = re.escape(options[0]).replace("\\", "\\\\")
        values["$" + variable["name"]] = one if first else variable["allValue"]
    empty = []
    for title, target in targets(dashboard()):
        expr = substitute(target["expr"], values)
        try:
            result = prometheus.query(expr)
        except urllib.error.HTTPError as exc:  # Prometheus says why a query is bad in the body
            raise AssertionError(f"{title}: {expr}: {exc.read().decode()}") from None
        if not result:
            empty.append(f"{title} [{target['refId']}]: {expr}")
    return empty


def label_targets(prometheus: prom.Prometheus, labels: dict[str, str]) -> None:
    """Gives every scrape target `labels`, as a user's scrape config sets `cluster`.

    The runner writes no target labels, so its config is amended and reloaded (it runs with
    --web.enable-lifecycle)."""
    assert prometheus._dir is not None
    path = Path(prometheus._dir.name) / "prometheus.yml"
    config = json.loads(path.read_text())
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["labels"] = labels
    path.write_text(json.dumps(config))
    request = urllib.request.Request(f"http://127.0.0.1:{prometheus.port}/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


SEND = (
    "import socket, sys\n"
    "with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:\n"
    "    s.bind(('eth0', 0))\n"
    "    s.send(bytes.fromhex(sys.argv[1]))\n"
)


def corrupt_advert(lab: Lab) -> None:
    """One advert with a bad checksum onto the segment, so every exporter rejects a frame.

    Sent by a process inside the monitor namespace: a fork of this process (which
    `tests.conftest.send` makes, through pyroute2) would run the lab's exit handler and stop it.
    """
    frame = set_checksum(advert(vrid=200, priority=100, addrlist=["192.0.2.200"]), None)
    lab.run_in("mon", [sys.executable, "-c", SEND, bytes(frame).hex()])


REPEAT = (
    "import socket, sys, time\n"
    "frames = [bytes.fromhex(h) for h in sys.argv[1:]]\n"
    "with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:\n"
    "    s.bind(('eth0', 0))\n"
    "    while True:\n"
    "        for frame in frames:\n"
    "            s.send(frame)\n"
    "        time.sleep(0.5)\n"
)
CARP_VHID, COLLIDING = 13, 63  # no VRRP VRID 13 in the lab; VRRP and CARP both on 63


def carp_neighbours(lab: Lab) -> None:
    """CARP beside the lab's keepalived, from the monitor namespace until the lab stops: a group
    whose vhid is no VRID, and a VRRP router and a CARP group sharing number 63 (a collision).
    Neither number is one of keepalived's VRIDs, which keeps its elections out of it."""
    frames = [
        carp(CARP_VHID, src="192.0.2.91", mac="00:00:5e:00:01:0d"),
        carp(COLLIDING, src="192.0.2.92", mac="00:00:5e:00:01:3f"),
        bytes(advert(vrid=COLLIDING, priority=100, src="192.0.2.90", addrlist=["192.0.2.163"])),
    ]
    lab.exec_in("mon", [sys.executable, "-c", REPEAT, *(frame.hex() for frame in frames)])


CONFLICT_VIP = "192.0.2.163"  # the VIP of the VRRP router on 63 above; no keepalived holds it
TAKEN_VIP6 = "2001:db8:0:1::1:12"  # VRID 12's, which node 2 takes over with VRID 10's
CONFLICT_MACS = ("00:00:5e:00:53:01", "00:00:5e:00:53:02")  # RFC 7042's documentation MACs
TURNS = (
    "import socket, sys, time\n"
    "frames = [bytes.fromhex(h) for h in sys.argv[2:]]\n"
    "with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:\n"
    "    s.bind(('eth0', 0))\n"
    "    for i in range(int(sys.argv[1])):\n"
    "        s.send(frames[i % len(frames)])\n"
    "        time.sleep(0.5)\n"
)


def gratuitous_arp(vip: str, mac: str) -> bytes:
    """An ARP request for `vip` from `vip`, broadcast: how keepalived announces an IPv4 VIP."""
    arp = ARP(op=1, hwsrc=mac, psrc=vip, hwdst="00:00:00:00:00:00", pdst=vip)
    return bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / arp)


def vip_conflict(lab: Lab) -> None:
    """Two MACs announcing the VIP of the VRRP router on 63 in turns from the monitor namespace,
    every half second for a minute at most: a VIP conflict for every exporter (the third
    announcement starts it), as two masters' gratuitous ARPs make one."""
    frames = [gratuitous_arp(CONFLICT_VIP, mac).hex() for mac in CONFLICT_MACS]
    lab.exec_in("mon", [sys.executable, "-c", TURNS, "120", *frames])


def node_mac(lab: Lab, node: int) -> str:
    return lab.run_in(node, ["cat", "/sys/class/net/eth0/address"]).stdout.strip()


def shown(prometheus: prom.Prometheus, title: str, ref_id: str) -> list[dict[str, Any]]:
    """What a panel's query returns with every variable set to "All"."""
    board = dashboard()
    every = {"$" + v["name"]: v["allValue"] for v in variables(board) if "allValue" in v}
    (panel,) = [p for p in panels(board) if p["title"] == title and p["type"] != "stat"]
    (target,) = [t for t in panel["targets"] if t["refId"] == ref_id]
    result: list[dict[str, Any]] = prometheus.query(substitute(target["expr"], every))
    return result


@pytest.mark.lab
def test_every_panel_and_variable_query_returns_data(make_lab: MakeLab, tmp_path: Path) -> None:
    absent = [t for t in ("prometheus", "prometheus-alertmanager") if not shutil.which(t)]
    if absent:
        pytest.skip(f"not installed: {', '.join(absent)}")
    deadline = time.monotonic() + 90
    config = tmp_path / "ka-notify.toml"
    with contextlib.ExitStack() as stack:
        am_dir = tmp_path / "alertmanager"
        am_dir.mkdir()
        am_url = stack.enter_context(alertmanager(am_dir))
        config.write_text(
            f'cluster = "{CLUSTER}"\nstate_dir = "{tmp_path / "spool"}"\n'
            f'[[sink]]\nname = "am"\ntype = "alertmanager"\nurls = ["{am_url}"]\n'
        )
        notify_port = free_port()
        notify = [str(BIN / "ka-notify"), "daemon", "--config", str(config),
                  "--web.listen-address", f"127.0.0.1:{notify_port}"]  # fmt: skip
        stack.enter_context(process(notify, tmp_path / "ka-notify.log"))
        wait_for(lambda: ready(notify_port, "/metrics"), 15, what="ka-notify daemon")

        # keepalived's notify hook is ka-notify itself; the daemon holds the drain lock
        hook = f"{BIN / 'ka-notify'} --config {config}"
        instances = [*double_master(10, 11), Instance(12, Flavour.V3_V6)]
        lab = make_lab(instances, notify=hook)
        stack.callback(lab.close)  # its last hooks run while the daemon holds the lock
        ports = {}
        for who in ("mon", *lab.nodes):
            ns, port = lab.ns(who), free_port()
            argv = [str(BIN / "ka-exporter"), "--web.listen-address", f"127.0.0.1:{port}",
                    "--netns", ns, "--interface", f"{ns}/eth0"]  # fmt: skip
            stack.enter_context(process(argv, tmp_path / f"exporter-{who}.log"))
            ports[who] = port
        scrape = [f"127.0.0.1:{p}" for p in ports.values()]
        prometheus = stack.enter_context(
            prom.Prometheus(
                {"ka-exporter": scrape, "ka-notify": [f"127.0.0.1:{notify_port}"]},
                port=free_port(),
            )
        )
        label_targets(prometheus, {"cluster": CLUSTER})
        for port in ports.values():
            wait_for(lambda port=port: ready(port), 20, what=f"exporter on port {port}")
        lab.start_all()
        wait_for(lambda: all(lab.master_of(i.vrid) for i in instances), 15, what="masters")

        # what the history panels show: one failover (node 1 stops; VRID 10 and 12 move), which
        # node 2 announces (keepalived's gratuitous ARP and unsolicited NA)
        lab.kill(1)
        wait_for(lambda: lab.master_of(10) == 2 and lab.master_of(12) == 2, 15, what="failover")
        corrupt_advert(lab)
        carp_neighbours(lab)
        vip_conflict(lab)

        # until every target is scraped and every query has data, with every option of the
        # variables and with the first one (one cluster, one exporter, the lowest VRID) alone;
        # a rate needs two scrapes after the frame, per exporter, so some come later
        while True:
            up = prometheus.query(f'up{{cluster="{CLUSTER}"}} == 1')
            empty = missing(prometheus, first=False) + missing(prometheus, first=True)
            if (len(up) == len(ports) + 1 and not empty) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert len(up) == len(ports) + 1, prometheus.get("/api/v1/targets")
        assert empty == []
        # and the data is what the lab did, not just present
        masters = prometheus.query(
            f'max by (vrid, address) (vrrp_master_info{{cluster="{CLUSTER}", vrid="10"}})'
        )
        assert {r["metric"]["address"] for r in masters} == {"192.0.2.12"}
        states = prometheus.query(f'keepalived_vrrp_state{{cluster="{CLUSTER}"}} == 2')
        assert states, "keepalived's MASTER reports did not reach ka-notify"
        # every exporter hears the CARP master of vhid 13 and the collision on 63, links are up
        carp_masters = prometheus.query(f'carp_masters{{cluster="{CLUSTER}", vhid="{CARP_VHID}"}}')
        assert [r["value"][1] for r in carp_masters] == ["1"] * len(ports), carp_masters
        collisions = prometheus.query(f'vrrp_carp_collision{{cluster="{CLUSTER}"}} == 1')
        assert {r["metric"]["vrid"] for r in collisions} == {str(COLLIDING)}
        assert len(collisions) == len(ports), collisions
        links = prometheus.query(f'ka_exporter_link_up{{cluster="{CLUSTER}"}} == 1')
        assert len(links) == len(ports), links
        # the CARP table's collision column joins the VRID's flag to the vhid of its number
        flags = shown(prometheus, "CARP groups", "C")
        assert sorted((r["metric"]["vhid"], r["value"][1]) for r in flags) == sorted(
            [(str(CARP_VHID), "0"), (str(COLLIDING), "1")] * len(ports)
        ), flags
        # the failover panels: VRIDs 10 and 12 changed once, their master resigned (SIGTERM),
        # and node 2 took over after its skew time, (256 - 100) / 256 s: counted though the
        # series were born with the change
        changes = shown(prometheus, "Master changes by reason", "A")
        by_reason = sorted((r["metric"]["vrid"], r["metric"]["reason"]) for r in changes)
        assert by_reason == [("10", "resigned"), ("12", "resigned")], changes
        assert all(r["value"][1] == "1" for r in changes), changes
        gaps = shown(prometheus, "Failover gap", "A")
        assert sorted(r["metric"]["vrid"] for r in gaps) == ["10", "12"], gaps
        assert all(0.3 < float(r["value"][1]) < 1.5 for r in gaps), gaps
        # who answers for each VIP: node 2 for those it took over, and it announced them at
        # once; the VIP announced by two MACs in turns is a conflict, the takeover is not
        vips = "Who answers for each VIP"
        claimants = shown(prometheus, vips, "A")
        taken = {r["metric"]["mac"] for r in claimants if r["metric"]["vip"] != CONFLICT_VIP}
        assert taken == {node_mac(lab, 2)}, claimants
        delays = [r for r in shown(prometheus, vips, "D") if r["metric"]["vrid"] in ("10", "12")]
        assert {r["metric"]["vip"] for r in delays} == {"192.0.2.110", TAKEN_VIP6}, delays
        assert all(float(r["value"][1]) < 5 for r in delays), delays

        def conflicts() -> set[tuple[str, str]]:
            flags = shown(prometheus, vips, "C")
            return {
                (r["metric"]["instance"], r["metric"]["vip"]) for r in flags if r["value"][1] == "1"
            }

        expected = {(f"127.0.0.1:{port}", CONFLICT_VIP) for port in ports.values()}
        wait_for(lambda: conflicts() == expected, 10, 0.5, what="the VIP conflict")
