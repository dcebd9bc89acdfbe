"""The example keepalived.conf files under deploy/keepalived, run as shipped.

Every file passes keepalived's own config test. In the lab, the two nodes of each variant run
the files with only what cannot work on a test host substituted: the nginx check becomes a test
for a flag file, and ka-notify gets a config of the test's own; interface, addresses and VIPs
are the lab's already. Each node must master its own instance, tell ka-notify so through the
FIFO (keepalived writes it in event order), and give its instance up when nginx "fails";
the wire must show VRRPv3 to the multicast group, or only to the peer for the unicast files.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.layers.vrrp import VRRPv3
from scapy.utils import rdpcap

from lab import Lab, double_master, wait_for
from lab.running import free_port
from tests.lab_fixtures import MakeLab
from tests.notify_servers import Receiver
from tests.running import process, ready

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "deploy" / "keepalived"
BIN = Path(sys.executable).parent
FILES = sorted(EXAMPLES.glob("*/*.conf"))
HOOK = "/usr/local/bin/ka-notify"
FIFO = "/run/ka-notify/notify.fifo"
NGINX_CHECK = 'script "/usr/bin/pidof nginx"'
NODES = {1: "a", 2: "b"}  # lab node number -> example node
VIPS = {"VI_1": ("192.0.2.101", "198.51.100.10"), "VI_2": ("192.0.2.102", "198.51.100.20")}
OWNER = {"VI_1": 1, "VI_2": 2}
ADDRESSES = ("192.0.2.11", "192.0.2.12")  # node A, node B: the lab's n1 and n2 as well
GROUP = "224.0.0.18"


def test_there_are_four_examples() -> None:
    assert [f.relative_to(EXAMPLES).as_posix() for f in FILES] == [
        "multicast/node-a.conf", "multicast/node-b.conf",
        "unicast/node-a.conf", "unicast/node-b.conf",
    ]  # fmt: skip


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_keepalived_accepts_the_example(path: Path) -> None:
    result = subprocess.run(
        ["keepalived", "--config-test", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_wiring(path: Path) -> None:
    """The FIFO is active, as keepalived's manual recommends (notify scripts run concurrently,
    the FIFO keeps the order); the hook is shown, commented out (both would alert twice)."""
    text = path.read_text()
    active = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert NGINX_CHECK in active and "weight -60" in active
    hooks = sum(line == f'notify "{HOOK}"' for line in active)
    fifos = sum(line == f"vrrp_notify_fifo {FIFO}" for line in active)
    assert (hooks, fifos) == (0, 1)
    assert f'notify "{HOOK}"' in text and f"vrrp_notify_fifo {FIFO}" in text
    assert re.search(r"^\s*#\s*auth_pass CHANGEME$", text, re.MULTILINE)
    assert not any(line.startswith("auth_pass") for line in active)
    unit = (ROOT / "deploy" / "systemd" / "ka-notify.service").read_text()
    assert f"--keepalived.notify-fifo {FIFO}" in unit


def notify_config(directory: Path, node: int, receiver: Receiver) -> Path:
    """Webhook to `receiver`, no damping (damping has its own tests), `cluster` names the node."""
    path = directory / f"n{node}.toml"
    path.write_text(
        f'cluster = "node-{NODES[node]}"\nstate_dir = "{directory / f"n{node}"}"\n'
        "[damping]\nwindow = 60\nthreshold = 50\n"
        f'[[sink]]\nname = "hook"\ntype = "webhook"\nurl = "{receiver.url}"\n'
    )
    return path


@contextmanager
def notify_daemon(config: Path, *extra: str) -> Iterator[None]:
    """`ka-notify daemon` on loopback of this namespace, beside the node: it delivers the spool
    the hook fills (the hook in the node's namespace cannot reach loopback here)."""
    port = free_port()
    argv = [str(BIN / "ka-notify"), "daemon", "--config", str(config), *extra]
    argv += ["--web.listen-address", f"127.0.0.1:{port}"]
    with process(argv, config.with_suffix(".log")) as proc:
        wait_for(
            lambda: proc.poll() is not None or ready(port, "/metrics"), 10, what="ka-notify daemon"
        )
        assert proc.poll() is None, config.with_suffix(".log").read_text()
        yield


def masters(receiver: Receiver) -> set[tuple[str, str]]:
    """(cluster, iname) of every MASTER state change the webhook received."""
    with receiver.lock:
        bodies = list(receiver.bodies)
    return {
        (alert["labels"]["cluster"], alert["labels"]["iname"])
        for body in bodies
        for alert in json.loads(body)["alerts"]
        if alert["labels"].get("state") == "MASTER"
    }


def holders(lab: Lab, instance: str) -> dict[int, set[str]]:
    """Which node holds which of the instance's VIPs; a settled master holds them all."""
    held = {node: set(VIPS[instance]) & lab.vips(node) for node in NODES}
    return {node: vips for node, vips in held.items() if vips}


def mastered_by(node: int, instance: str) -> dict[int, set[str]]:
    return {node: set(VIPS[instance])}


def start(lab: Lab, node: int, variant: str, notify: Path) -> None:
    n = lab.node(node)
    text = (EXAMPLES / variant / f"node-{NODES[node]}.conf").read_text()
    for old, new in (
        (NGINX_CHECK, f'script "/usr/bin/test -e {n.file("nginx")}"'),
        (f'notify "{HOOK}"', f'notify "{BIN / "ka-notify"} --config {notify}"'),
        (f"vrrp_notify_fifo {FIFO}", f"vrrp_notify_fifo {n.file('fifo')}"),
    ):
        text = text.replace(old, new)
    n.file("conf").write_text(text)
    n.file("nginx").touch()
    argv = ["keepalived", "-n", "-l", "-D", "-G", "-P", "-f", str(n.file("conf"))]
    argv += ["-p", str(n.file("pid")), "-r", str(n.file("vrrp.pid"))]
    with n.file("log").open("ab") as log:
        lab.exec_in(node, argv, stdout=log, stderr=log)


@pytest.mark.lab
@pytest.mark.parametrize("variant", ["multicast", "unicast"])
def test_pair_runs_the_examples(make_lab: MakeLab, variant: str) -> None:
    # the lab's own instances only size it; keepalived runs the example files
    lab = make_lab(double_master(51, 52), fifo_reader=False)
    receiver = Receiver()
    with ExitStack() as stack:
        stack.callback(receiver.close)
        pcap = stack.enter_context(lab.capture(lab.workdir / "vrrp.pcap"))
        for node in NODES:
            config = notify_config(lab.workdir, node, receiver)
            fifo = ["--keepalived.notify-fifo", str(lab.node(node).file("fifo"))]
            stack.enter_context(notify_daemon(config, *fifo))
            start(lab, node, variant, config)

        def converged() -> bool:
            return all(
                holders(lab, name) == mastered_by(node, name) for name, node in OWNER.items()
            )

        wait_for(converged, 20, what="each node master of its instance")
        wait_for(
            lambda: masters(receiver) >= {("node-a", "VI_1"), ("node-b", "VI_2")},
            15,
            what="MASTER alerts from ka-notify",
        )

        lab.node(1).file("nginx").unlink()  # nginx "dies" on node A: 150 - 60 < 100
        wait_for(lambda: holders(lab, "VI_1") == mastered_by(2, "VI_1"), 20, what="B takes VI_1")
        assert holders(lab, "VI_2") == mastered_by(2, "VI_2")
        wait_for(lambda: ("node-b", "VI_1") in masters(receiver), 15, what="VI_1 MASTER on B")
        assert ("node-b", "VI_2") in masters(receiver)
    # what went over the wire: VRRPv3 for VRIDs 51 and 52, to the group or to the peer only
    adverts = [(p[IP].src, p[IP].dst, p[VRRPv3].vrid) for p in rdpcap(str(pcap)) if VRRPv3 in p]
    assert {vrid for _, _, vrid in adverts} == {51, 52}
    routes = {(src, dst) for src, dst, _ in adverts}
    a, b = ADDRESSES
    assert routes == ({(a, b), (b, a)} if variant == "unicast" else {(a, GROUP), (b, GROUP)})
