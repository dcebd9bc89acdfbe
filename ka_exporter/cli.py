"""Command line of `ka-exporter` and `ka-exporter analyze`: flags to settings, nothing more.

Every mistake a person can make here ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence

from ka_exporter import analyze, capture, daemon, pcap, version, web, webconfig
from ka_exporter.alerting import config as notify_config
from ka_exporter.flags import Parser, dest
from ka_exporter.model import ModelConfig
from ka_exporter.peers import metrics_url
from ka_exporter.status import Names

PROG = "ka-exporter"
ENV_PREFIX = "KA_EXPORTER_"


def make_parser(prog: str, description: str) -> Parser:
    return Parser(prog=prog, description=description, env_prefix=ENV_PREFIX)


def positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
        return value

    convert.__name__ = kind.__name__
    return convert


# flag -> (ModelConfig field, type, help)
MODEL_FLAGS = {
    "vrrp.master-tolerance": (
        "master_tolerance",
        float,
        "a router is master while its last advert is younger than this many intervals (below 3)",
    ),
    "vrrp.split-brain-debounce": (
        "split_brain_debounce",
        float,
        "intervals two masters must overlap before it counts as split-brain",
    ),
    "vrrp.expire-after": (
        "expire_after",
        float,
        "forget a silent router after this many master-down intervals (at least 2)",
    ),
    "vrrp.max-routers": (
        "max_routers",
        int,
        "routers tracked at most; adverts from more sources are counted, not tracked",
    ),
    "vrrp.claim-window": (
        "claim_window",
        float,
        "seconds within which two MACs announcing one VIP in turns (gratuitous ARP, "
        "unsolicited NA) is a conflict; at least keepalived's garp_master_delay",
    ),
    "vrrp.max-claims": (
        "max_claims",
        int,
        "addresses whose announcements are tracked at most; more are counted, not tracked",
    ),
}


def add_model_flags(parser: Parser) -> None:
    defaults = ModelConfig()
    for flag, (name, kind, help_text) in MODEL_FLAGS.items():
        parser.flag(flag, type=positive(kind), default=getattr(defaults, name), help=help_text)
    parser.flag(
        "vrrp.vip",
        action="append",
        type=ip_address,
        help="a VIP to watch for conflicting announcements where its adverts are not heard "
        "(unicast VRRP); repeatable. With none known, any address two MACs announce is watched",
    )


def model_config(parser: Parser, args: argparse.Namespace) -> ModelConfig:
    values = {name: getattr(args, dest(flag)) for flag, (name, _, _) in MODEL_FLAGS.items()}
    try:
        return ModelConfig(**values, vips=frozenset(args.vrrp_vip))
    except ValueError as exc:
        parser.error(str(exc))


def analyze_main(argv: Sequence[str]) -> int:
    parser = make_parser(
        f"{PROG} analyze", "Replay a pcap/pcapng capture through the exporter's decoder and model."
    )
    parser.add_argument("file", help="capture file (tcpdump, tshark, -i any)")
    parser.flag(
        "format",
        choices=("table", "json", "html"),
        default="table",
        help="output format; html is a self-contained report with a timeline per VRID",
    )
    parser.flag(
        "time",
        choices=("wall", "relative"),
        default="wall",
        help="event times as UTC time of day, or as seconds since the first frame",
    )
    add_peer_name_flag(parser)
    add_model_flags(parser)
    args = parser.parse_args(argv)
    names = Names(dict(args.vrrp_peer_name))
    relative = args.time == "relative"
    try:
        with open(args.file, "rb") as stream:
            result = analyze.replay(stream, model_config(parser, args))
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: cannot read {args.file}: {exc.strerror}\n")
    except pcap.PcapError as exc:
        parser.exit(2, f"{parser.prog}: error: {args.file}: {exc}\n")
    name = os.path.basename(args.file)
    if args.format == "json":
        sys.stdout.write(analyze.to_json(result) + "\n")
    elif args.format == "html":
        sys.stdout.write(analyze.to_html(result, name, relative, names))
    else:
        colour = analyze.use_colour(sys.stdout)
        sys.stdout.write(analyze.to_table(result, colour, name, relative, names))
    return 0


def listen_address(text: str) -> tuple[str | None, int]:
    try:
        return web.parse_listen_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def telemetry_path(text: str) -> str:
    if not text.startswith("/") or text in ("/", "/-/healthy", "/-/ready"):
        raise argparse.ArgumentTypeError(f"must be a path of its own, like /metrics: {text!r}")
    return text


SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def ring_size(text: str) -> int:
    """Bytes, with an optional KiB/MiB/GiB unit; whole 256 KiB blocks, up to 1 GiB."""
    number, unit = text.rstrip("BKMGi"), text[len(text.rstrip("BKMGi")) :] or "B"
    try:
        size = int(number) * SIZE_UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size like 8MiB: {text!r}") from None
    if not capture.BLOCK_SIZE <= size <= SIZE_UNITS["GiB"] or size % capture.BLOCK_SIZE:
        raise argparse.ArgumentTypeError(f"must be a multiple of 256KiB up to 1GiB: {text!r}")
    return size


def ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def peer(text: str) -> tuple[str, str]:
    """ADDRESS, or ADDRESS=NAME: the address normalised, the name as given ("" for none)."""
    address, _, name = text.partition("=")
    return ip_address(address.strip()), name.strip()


def peer_name(text: str) -> tuple[str, str]:
    address, name = peer(text)
    if not name:
        raise argparse.ArgumentTypeError(f"not ADDRESS=NAME: {text!r}")
    return address, name


def add_peer_name_flag(parser: Parser) -> None:
    parser.flag(
        "vrrp.peer-name",
        action="append",
        type=peer_name,
        help="a name to show beside a router address, ADDRESS=NAME (repeatable)",
    )


def peer_url(text: str) -> str:
    try:
        return metrics_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def exporter_main(argv: Sequence[str]) -> int:
    parser = make_parser(
        PROG,
        "Watch VRRP (keepalived) on the wire and serve Prometheus metrics. "
        "Subcommand: `ka-exporter analyze FILE` replays a capture.",
    )
    version.add_flag(parser)
    parser.flag(
        "web.listen-address",
        type=listen_address,
        default=daemon.Settings().listen,
        help="address to serve metrics and the status page on, host:port (default :9743)",
    )
    parser.flag(
        "web.telemetry-path",
        type=telemetry_path,
        default="/metrics",
        help="path of the metrics",
    )
    parser.flag(
        "web.config.file",
        type=webconfig.from_flag,
        help="TLS and basic auth from this exporter-toolkit web config file (re-read on change)",
    )
    parser.flag(
        "capture.interface",
        "interface",
        action="append",
        help="capture only interfaces matching this glob (repeatable; NETNS/NAME for "
        "another namespace); default: every interface but loopback",
    )
    parser.flag(
        "capture.netns",
        "netns",
        action="append",
        help="also watch this network namespace (repeatable)",
    )
    parser.flag(
        "log.level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="log level",
    )
    parser.flag(
        "notify.config",
        help="alert on what the exporter sees through the sinks of this ka-notify TOML file",
    )
    parser.flag(
        "vrrp.expected-peer",
        action="append",
        type=peer,
        help="a router address expected on the wire, ADDRESS or ADDRESS=NAME (repeatable); "
        "with --notify.config, any other source is alerted as an unknown router",
    )
    add_peer_name_flag(parser)
    parser.flag(
        "cluster.peer",
        "peer",
        action="append",
        type=peer_url,
        help="another host's exporter, http(s)://host:port (repeatable); two hosts claiming "
        "master of one VRID is split-brain even when VRRP between them is blocked",
    )
    parser.flag(
        "capture.ring-size",
        type=ring_size,
        default=capture.DEFAULT_RING_SIZE,
        help="capture ring per interface, held in memory (default 8MiB, ~50k adverts of burst)",
    )
    add_model_flags(parser)
    args = parser.parse_args(argv)
    notify = None
    if args.notify_config is not None:
        try:
            notify = notify_config.load(args.notify_config, check_sinks=True)
        except notify_config.ConfigError as exc:
            parser.exit(2, "".join(f"{PROG}: error: {line}\n" for line in exc.lines))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s level=%(levelname)s %(message)s"
    )
    settings = daemon.Settings(
        listen=args.web_listen_address,
        telemetry_path=args.web_telemetry_path,
        web_config=args.web_config_file,
        interfaces=tuple(args.capture_interface),
        netns=tuple(args.capture_netns),
        model=model_config(parser, args),
        notify=notify,
        expected_peers=tuple(address for address, _ in args.vrrp_expected_peer),
        peer_names={a: n for a, n in [*args.vrrp_expected_peer, *args.vrrp_peer_name] if n},
        peers=tuple(args.cluster_peer),
        ring_size=args.capture_ring_size,
    )
    try:
        return asyncio.run(daemon.run(settings))
    except daemon.StartupError as exc:
        parser.exit(2, f"{PROG}: error: {exc}\n")


COMMANDS = {"analyze": analyze_main}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        return COMMANDS[args[0]](args[1:])
    return exporter_main(args)


if __name__ == "__main__":
    sys.exit(main())
