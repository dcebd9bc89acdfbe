"""The alerting path against real keepalived in the lab.

keepalived runs `ka-notify` as its notify hook, or writes its FIFO to `ka-notify daemon`; the
exporter, started per node with `--peer` and `--notify.config`, alerts on what the wire shows.
Everything listens on 127.0.0.1; the lab's namespaces carry the VRRP.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from lab import Flavour, Instance, wait_for
from lab.running import free_port
from tests.lab_fixtures import MakeLab
from tests.notify_servers import Receiver, alertmanager, make_pki, smtp_server
from tests.running import process, scrape

BIN = Path(sys.executable).parent
VRID = Instance(51, Flavour.V3, advert_int=0.5)  # n1 priority 150, n2 priority 100
KEY = b"0123456789abcdef0123456789abcdef"
USER, PASSWORD = "alerts", "correct-horse-battery"
NO_DAMPING = "[damping]\nwindow = 60\nthreshold = 50\n"  # damping has its own tests


def write_config(directory: Path, name: str, sinks: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(f'cluster = "lab"\nstate_dir = "{directory / name}"\n{NO_DAMPING}{sinks}')
    return path


def webhook_sink(directory: Path, receiver: Receiver) -> str:
    secret = directory / "whsec"
    secret.write_text("whsec_" + base64.b64encode(KEY).decode() + "\n")
    return (
        f'[[sink]]\nname = "hook"\ntype = "webhook"\nurl = "{receiver.url}"\n'
        f'secret_file = "{secret}"\n'
    )


@contextmanager
def daemon(config: Path, logs: Path, *extra: str) -> Iterator[int]:
    """`ka-notify daemon`, up when this returns the port of its /metrics."""
    port = free_port()
    argv = [str(BIN / "ka-notify"), "daemon", "--config", str(config), *extra]
    with process([*argv, "--web.listen-address", f"127.0.0.1:{port}"], logs / f"{config.stem}.log"):
        wait_for(lambda: scrape(port), 10, what="ka-notify daemon")
        yield port


def alerts_at(receiver: Receiver) -> list[dict[str, str]]:
    """Labels and status of every notification the webhook received once or more, in order."""
    with receiver.lock:
        received = list(zip(receiver.ids, receiver.bodies, strict=True))
    seen, out = set(), []
    for webhook_id, body in received:
        if webhook_id not in seen:
            seen.add(webhook_id)
            (alert,) = json.loads(body)["alerts"]
            out.append({**alert["labels"], "status": alert["status"]})
    return out


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def split_brain_at(am: str) -> bool:
    """Whether Alertmanager shows a peer split-brain alert as active (resolved ones it hides)."""
    with urllib.request.urlopen(f"{am}/api/v2/alerts", timeout=5) as r:
        return any(a["labels"]["alertname"] == "VRRPPeerSplitBrain" for a in json.load(r))


def test_failover_gives_the_same_alerts_at_every_sink(make_lab: MakeLab, tmp_path: Path) -> None:
    """Hook path: each transition is one mail, one signed webhook and one Alertmanager alert."""
    lab = make_lab([VRID], notify=f"{BIN / 'ka-notify'} --config {{dir}}/{{node}}.toml")
    for sub in ("pki", "am"):
        (tmp_path / sub).mkdir()
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "password").write_text(PASSWORD + "\n")
    receiver = Receiver(KEY)
    with ExitStack() as stack:
        stack.callback(receiver.close)
        port, mailbox = stack.enter_context(
            smtp_server(pki, implicit=False, user=USER, password=PASSWORD)
        )
        am = stack.enter_context(alertmanager(tmp_path / "am"))
        sinks = webhook_sink(tmp_path, receiver) + (
            f'[[sink]]\nname = "mail"\ntype = "smtp"\nhost = "127.0.0.1"\nport = {port}\n'
            f'username = "{USER}"\npassword_file = "{tmp_path / "password"}"\n'
            f'ca_file = "{pki.ca}"\nfrom = "ka@example.org"\nto = ["ops@example.org"]\n'
            f'[[sink]]\nname = "am"\ntype = "alertmanager"\nurls = ["{am}"]\n'
        )
        for node in (1, 2):
            # the hook runs in the node's namespace and only commits; the daemon beside it, on
            # the same spool, delivers to the receivers on this namespace's loopback
            stack.enter_context(daemon(write_config(lab.workdir, f"n{node}", sinks), tmp_path))
        lab.start_all()
        wait_for(lambda: lab.master_of(51) == 1, 15, what="n1 master")
        # start-up: n1 BACKUP then MASTER, n2 BACKUP; wait for all of it at every sink
        wait_for(lambda: len(alerts_at(receiver)) >= 3, 15, what="start-up alerts")
        wait_for(lambda: len(mailbox.messages) >= 3, 15, what="start-up mails")
        before_hook, before_mail = len(alerts_at(receiver)), len(mailbox.messages)

        lab.set_priority_offset(1, True)  # n1 150 -> 90: n2 (100) preempts
        wait_for(lambda: lab.master_of(51) == 2, 15, what="n2 master")
        wait_for(lambda: len(alerts_at(receiver)) >= before_hook + 2, 10, what="failover webhooks")
        wait_for(lambda: len(mailbox.messages) >= before_mail + 2, 10, what="failover mails")
        time.sleep(2)  # nothing more may come
        failover = alerts_at(receiver)[before_hook:]
        states = Counter((a["iname"], a["state"], a["status"]) for a in failover)
        assert states == {("V3_51", "BACKUP", "firing"): 1, ("V3_51", "MASTER", "firing"): 1}
        assert all(a["alertname"] == "KeepalivedStateChange" for a in failover)
        assert receiver.forged == 0
        subjects = [m["Subject"] for _, m in mailbox.messages[before_mail:]]
        assert len(subjects) == 2 and all("V3_51" in s for s in subjects), subjects
        assert any("MASTER" in s for s in subjects) and any("BACKUP" in s for s in subjects)
        with urllib.request.urlopen(f"{am}/api/v2/alerts", timeout=5) as r:
            shown = {(a["labels"]["iname"], a["labels"]["state"]) for a in json.load(r)}
        assert {("V3_51", "MASTER"), ("V3_51", "BACKUP")} <= shown


def test_partition_split_brain_from_peers_and_its_resolution(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    """FIFO path and the exporter's --peer: VRRP cut between the nodes, each node's sniffer sees
    only itself as master; the exporters compare claims, alert, and resolve after the heal."""
    lab = make_lab([VRID], fifo_reader=False)
    receiver = Receiver(KEY)
    ports = {1: free_port(), 2: free_port()}
    (tmp_path / "am").mkdir()
    with ExitStack() as stack:
        stack.callback(receiver.close)
        am = stack.enter_context(alertmanager(tmp_path / "am"))
        sinks = webhook_sink(tmp_path, receiver) + (
            f'[[sink]]\nname = "am"\ntype = "alertmanager"\nurls = ["{am}"]\n'
        )
        for node in (1, 2):
            ns = lab.ns(node)
            config = write_config(tmp_path, f"n{node}", sinks)
            fifo = lab.node(node).file("fifo")
            stack.enter_context(daemon(config, tmp_path, "--keepalived.notify-fifo", str(fifo)))
            other = ports[3 - node]
            stack.enter_context(
                process(
                    [str(BIN / "ka-exporter"), "--netns", ns, "--interface", f"{ns}/eth0",
                     "--web.listen-address", f"127.0.0.1:{ports[node]}",
                     "--peer", f"http://127.0.0.1:{other}", "--notify.config", str(config)],
                    tmp_path / f"exporter-n{node}.log",
                )
            )  # fmt: skip
        lab.start_all()
        wait_for(lambda: lab.master_of(51) == 1, 15, what="n1 master")

        def keepalived_states() -> Counter[tuple[str, str]]:
            return Counter(
                (a["iname"], a["state"])
                for a in alerts_at(receiver)
                if a["alertname"] == "KeepalivedStateChange"
            )

        wait_for(
            lambda: keepalived_states()[("V3_51", "MASTER")] == 1, 15, what="n1 MASTER from FIFO"
        )
        peer_alerts = [a for a in alerts_at(receiver) if a["alertname"] == "VRRPPeerSplitBrain"]
        assert peer_alerts == []

        lab.partition()
        wait_for(lambda: lab.holders(51) == {1, 2}, 15, what="both nodes master")
        wait_for(
            lambda: sum(a["alertname"] == "VRRPPeerSplitBrain" for a in alerts_at(receiver)) >= 2,
            15,
            what="split-brain alert from both exporters",
        )
        wait_for(lambda: split_brain_at(am), 15, what="split-brain alert in Alertmanager")
        lab.heal()
        wait_for(lambda: lab.master_of(51) == 1, 15, what="n1 sole master again")
        wait_for(lambda: not split_brain_at(am), 15, what="split-brain resolved in Alertmanager")
        wait_for(
            lambda: sum(a["alertname"] == "VRRPPeerSplitBrain" for a in alerts_at(receiver)) >= 4,
            15,
            what="split-brain resolved at both exporters",
        )
        peer_alerts = [a for a in alerts_at(receiver) if a["alertname"] == "VRRPPeerSplitBrain"]
        assert Counter(a["status"] for a in peer_alerts) == {"firing": 2, "resolved": 2}
        assert {a["vrid"] for a in peer_alerts} == {"51"} and receiver.forged == 0
        # the FIFO daemons reported n2's MASTER during the partition and its BACKUP after
        assert keepalived_states()[("V3_51", "MASTER")] == 2
        assert keepalived_states()[("V3_51", "BACKUP")] >= 2


def vrrp_states(port: int) -> dict[str, int]:
    """keepalived_vrrp_state by instance, from a daemon's /metrics."""
    found = re.findall(r'^keepalived_vrrp_state\{iname="([^"]+)"\} (\S+)$', scrape(port), re.M)
    return {name: int(float(value)) for name, value in found}


def test_a_burst_of_hook_runs_ends_on_every_instances_newest_state(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    """Many instances change at once, so keepalived runs their hooks concurrently and they
    commit in any order: each node's keepalived_vrrp_state and the last alert the receiver got
    per instance and node end on the state keepalived is in, never on an older one."""
    instances = [Instance(vrid, Flavour.V3, advert_int=0.5) for vrid in range(60, 76)]
    lab = make_lab(instances, notify=f"{BIN / 'ka-notify'} --config {{dir}}/{{node}}.toml")
    receiver = Receiver(KEY)
    with ExitStack() as stack:
        stack.callback(receiver.close)
        ports = {}
        for node in (1, 2):  # a cluster label per node, to tell their alerts apart
            config = write_config(lab.workdir, f"n{node}", webhook_sink(tmp_path, receiver))
            config.write_text(config.read_text().replace('"lab"', f'"n{node}"'))
            ports[node] = stack.enter_context(daemon(config, tmp_path))
        lab.start_all()
        names = [inst.name for inst in instances]

        def settled(master: int) -> bool:
            backup = 3 - master
            return all(lab.master_of(inst.vrid) == master for inst in instances) and (
                vrrp_states(ports[master]) == dict.fromkeys(names, 2)
                and vrrp_states(ports[backup]) == dict.fromkeys(names, 1)
            )

        wait_for(lambda: settled(1), 30, what="n1 master of all, in both daemons' metrics")
        lab.set_priority_offset(1, True)  # 150 -> 90 on n1: every instance fails over at once
        wait_for(lambda: settled(2), 30, what="n2 master of all, in both daemons' metrics")
        time.sleep(2)  # let every hook of the burst finish: nothing may change any more
        assert settled(2)

        def last_alerts() -> dict[tuple[str, str], str]:
            last = {}
            for alert in alerts_at(receiver):
                if alert["alertname"] == "KeepalivedStateChange" and alert["status"] == "firing":
                    last[(alert["cluster"], alert["iname"])] = alert["state"]
            return last

        expected = {(f"n{node}", name): state for node, state in ((1, "BACKUP"), (2, "MASTER"))
                    for name in names}  # fmt: skip
        wait_for(
            lambda: last_alerts() == expected, 15, what="the newest state last at the receiver"
        )
