"""`make demo`: the lab, an exporter watching each of its namespaces, ka-notify, and Prometheus.

The exporters run in the root namespace and watch the lab's namespaces with `--netns`, so the
metrics, status pages and Prometheus are on this host's loopback, where a browser (or an ssh
tunnel) reaches them; no lab traffic leaves the lab's namespaces. Each node is set up as a real
one would be: its exporter asks the other nodes' exporters who they think is master
(`--cluster.peer`) and alerts through ka-notify (`--notify.config`), and a `ka-notify daemon`
reads its keepalived's notify FIFO; both deliver to an SMTP server of the demo's own on
loopback, which prints the subject of every mail it receives.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lab.lab import Lab, LabError, wait_for
from lab.procs import Processes
from lab.prometheus import Prometheus
from lab.running import free_port

FIRST_PORT = 9743  # exporters: the monitor, then node 1, 2, ...
NOTIFY_FIRST_PORT = 9753  # ka-notify daemons' /metrics: node 1, 2, ...
PROMETHEUS_PORT = 9090
CLUSTER = "demo"
RULES = Path(__file__).parents[1] / "deploy" / "prometheus" / "rules.yml"


def _program(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def _ready(port: int, path: str = "/-/ready") -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class _Started:
    """A server the demo started: what it is, its process, log and port."""

    what: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int
    path: str = "/-/ready"

    def up(self) -> bool:
        if self.proc.poll() is not None:
            raise LabError(f"{self.what} exited with status {self.proc.returncode}{self._tail()}")
        return _ready(self.port, self.path)

    def wait(self, timeout: float = 30) -> None:
        try:
            wait_for(self.up, timeout, interval=0.1, what=f"{self.what} on port {self.port}")
        except TimeoutError as exc:
            raise LabError(f"{exc}{self._tail()}") from None

    def _tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()[-5:]
        except FileNotFoundError:
            return ""
        return "".join(f"\n  {self.log.name}: {line}" for line in lines)


def _spawn(
    procs: Processes, what: str, argv: list[str], log: Path, port: int, path: str
) -> _Started:
    with log.open("ab") as out:
        proc = procs.spawn(argv, stdout=out, stderr=out)
    return _Started(what, proc, log, port, path)


class _Mailbox:
    """What aiosmtpd hands over: print the subject of each mail as it arrives."""

    def __init__(self, show: Callable[[str], None]) -> None:
        self.show = show

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        content = getattr(envelope, "content", b"")
        raw = content if isinstance(content, bytes) else str(content).encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        self.show(f"{time.strftime('%H:%M:%S')}  mail: {message.get('Subject', '(no subject)')}")
        return "250 OK"


def _print(line: str) -> None:
    print(line, flush=True)


@contextlib.contextmanager
def mail_server(show: Callable[[str], None] = _print) -> Iterator[int]:
    """An SMTP server on loopback (aiosmtpd, in a thread of this process); yields its port."""
    from aiosmtpd.controller import Controller  # noqa: PLC0415 -- a dev extra, only the demo's

    port = free_port()
    controller = Controller(_Mailbox(show), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def notify_config(lab: Lab, node: int, smtp_port: int) -> Path:
    """Node `node`'s ka-notify config, shared by its daemon and its exporter (one spool)."""
    n = lab.node(node)
    path = lab.workdir / f"{n.name}.ka-notify.toml"
    path.write_text(
        f"# ka-notify for {n.name} of the demo: keepalived's FIFO and the exporter's alerts,\n"
        "# delivered by mail to the demo's SMTP server on loopback\n"
        f'cluster = "{CLUSTER}"\n'
        f'state_dir = "{lab.workdir / f"{n.name}.ka-notify"}"\n'
        "\n"
        "[damping]  # let a few failovers a minute through as mails; more become a digest\n"
        "window = 60\n"
        "threshold = 4\n"
        "\n"
        "[[sink]]\n"
        'name = "mail"\n'
        'type = "smtp"\n'
        'host = "127.0.0.1"\n'
        f"port = {smtp_port}\n"
        'tls = "none"\n'
        "allow_plaintext = true  # loopback only\n"
        f'from = "ka-notify-{n.name}@example.org"\n'
        'to = ["oncall@example.org"]\n'
        f'subject_prefix = "[{n.name}]"  # every node is this host: say whose mail it is\n'
        f'keepalived_config = "{n.file("conf")}"  # the VIPs in each mail\n'
    )
    return path


@dataclass
class Alerting:
    """What `alerting` started: the mail server's port, and per node its ka-notify config
    and the port of its daemon's /metrics."""

    smtp_port: int
    configs: dict[int, Path] = field(default_factory=dict)
    notify_ports: dict[int, int] = field(default_factory=dict)


@contextlib.contextmanager
def alerting(
    lab: Lab, procs: Processes, show: Callable[[str], None] = _print
) -> Iterator[Alerting]:
    """The SMTP server and a `ka-notify daemon` per node on its keepalived's FIFO. Before
    keepalived starts: it opens the FIFO for writing only once there is a reader."""
    with mail_server(show) as smtp_port:
        started = Alerting(smtp_port)
        servers = []
        for offset, node in enumerate(lab.nodes):
            n = lab.node(node)
            config = notify_config(lab, node, smtp_port)
            port = NOTIFY_FIRST_PORT + offset
            argv = [_program("ka-notify"), "daemon", "--config", str(config),
                    "--keepalived.notify-fifo", str(n.file("fifo")),
                    "--web.listen-address", f"127.0.0.1:{port}"]  # fmt: skip
            log = lab.workdir / f"{n.name}.ka-notify.log"
            servers.append(_spawn(procs, f"ka-notify of {n.name}", argv, log, port, "/metrics"))
            started.configs[node], started.notify_ports[node] = config, port
        for server in servers:
            server.wait()
        yield started


@contextlib.contextmanager
def watching(lab: Lab, procs: Processes, alerts: Alerting | None = None) -> Iterator[list[str]]:
    """Starts the exporters and Prometheus; yields the lines that tell where they are.

    The monitor's exporter is the neutral observer on the segment; each node's exporter asks
    the other nodes' (`--cluster.peer`) and, with `alerts`, alerts through its ka-notify."""
    ports = {"monitor": FIRST_PORT} | {
        f"node {i}": FIRST_PORT + offset + 1 for offset, i in enumerate(lab.nodes)
    }
    node_ports = {i: ports[f"node {i}"] for i in lab.nodes}
    servers = []
    for name, port in ports.items():
        ns = lab.ns("mon") if name == "monitor" else lab.ns(int(name.split()[1]))
        argv = [_program("ka-exporter"), "--web.listen-address", f"127.0.0.1:{port}",
                "--netns", ns, "--interface", f"{ns}/eth0"]  # fmt: skip
        if name != "monitor":
            node = int(name.split()[1])
            for other, other_port in node_ports.items():
                if other != node:
                    argv += ["--cluster.peer", f"http://127.0.0.1:{other_port}"]
            if alerts is not None:
                argv += ["--notify.config", str(alerts.configs[node])]
        log = lab.workdir / f"exporter-{ns}.log"
        servers.append(_spawn(procs, f"the exporter of {name}", argv, log, port, "/-/ready"))
    for server in servers:
        server.wait()
    targets = {"ka-exporter": [f"127.0.0.1:{p}" for p in ports.values()]}
    if alerts is not None:
        targets["ka-notify"] = [f"127.0.0.1:{p}" for p in alerts.notify_ports.values()]
    with Prometheus(
        targets,
        port=PROMETHEUS_PORT,
        interval="2s",
        rule_files=[RULES],
        labels={"cluster": CLUSTER},
    ) as prometheus:
        lines = [f"  {name:10} http://127.0.0.1:{port}/   (metrics: /metrics)"
                 for name, port in ports.items()]  # fmt: skip
        if alerts is not None:
            lines += [f"  ka-notify  http://127.0.0.1:{port}/metrics   (node {node}: "
                      "keepalived_vrrp_state, deliveries)"
                      for node, port in alerts.notify_ports.items()]  # fmt: skip
            lines.append(f"  mail       smtp://127.0.0.1:{alerts.smtp_port}   every mail's "
                         "subject is printed below, prefixed by its node")  # fmt: skip
        lines.append(f"  prometheus http://127.0.0.1:{PROMETHEUS_PORT}/   "
                     "try: vrrp_masters, cluster_vrid:vrrp_local_master:sum")  # fmt: skip
        lines.append(alerts_line(prometheus))
        yield lines


def alerts_line(prometheus: Prometheus) -> str:
    """Where this Prometheus shows its alerts: Debian's build has only the classic UI."""
    version = prometheus.version()
    page = prometheus.alerts_page()
    if page is None:
        return f"  alerts     (Prometheus {version} serves no alerts page; try /api/v1/alerts)"
    return (
        f"  alerts     http://127.0.0.1:{PROMETHEUS_PORT}{page}   "
        f"(Prometheus {version}; the rules of deploy/prometheus/rules.yml, target label "
        f"cluster={CLUSTER})"
    )


@contextlib.contextmanager
def started(lab: Lab, show: Callable[[str], None] = _print) -> Iterator[list[str]]:
    """Everything of the demo around `lab`, whose keepalived is not running yet: ka-notify
    first (it reads the FIFOs), then keepalived, then the exporters and Prometheus. Every
    process is tracked by PID; on the way out Prometheus stops, then the exporters and ka-notify
    (SIGTERM, SIGKILL after 5 s) and the mail server; the caller's lab stops keepalived."""
    procs = Processes()
    try:
        with alerting(lab, procs, show) as alerts:
            lab.start_all()
            with watching(lab, procs, alerts) as lines:
                yield lines
    finally:
        procs.stop_all()


def keepalived_pid(lab: Lab, node: int) -> int | None:
    """The PID of the keepalived running on `node`, whoever started it: the lab, or someone
    with the printed command (which writes the same pid file). None while it is not running."""
    lab.running(node)  # reaps the lab's own keepalived if it died
    try:
        pid = int(lab.node(node).file("pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            name, _, rest = stat.read().partition(b") ")
    except FileNotFoundError:
        return None
    if not name.endswith(b"(keepalived") or rest[:1] in (b"Z", b"X"):
        return None  # gone, a zombie, or the PID reused by something else
    return pid


def holders(lab: Lab, vrid: int, running: set[int]) -> set[int]:
    """Nodes among `running` that hold the VRID's first VIP (a crashed keepalived leaves its
    VIPs behind, which says nothing about who is master)."""
    inst = lab.instance(vrid)
    vip = inst.vip_addresses[0]
    return {n for n in inst.priorities if n in running and vip in lab.vips(n, inst.segment)}
