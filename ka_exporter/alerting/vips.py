"""The virtual addresses keepalived.conf gives each VRRP instance, for the mail to name them.

An alert says which instance changed (or which VRID the wire shows); the operator reading it
wants to know which addresses moved. keepalived itself does not pass them to its notify hooks,
so they are read from its configuration: `vrrp_instance` blocks with their `virtual_router_id`,
`interface` and `virtual_ipaddress` / `virtual_ipaddress_excluded` lists (one address per line,
options after it), `vrrp_sync_group` blocks, and `include` files (globs, relative to the file
that includes them). Only what is needed is understood; anything unreadable gives no addresses
rather than an error, since the mail goes out either way.
"""

from __future__ import annotations

import glob
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ka_exporter.alerting.alert import Alert

DEFAULT_PATH = "/etc/keepalived/keepalived.conf"
_ADDRESS_BLOCKS = ("virtual_ipaddress", "virtual_ipaddress_excluded")
_MAX_INCLUDE_DEPTH = 8  # keepalived's own limit is lower; this only stops a loop


@dataclass(frozen=True, slots=True)
class Instance:
    vrid: str
    interface: str
    vips: tuple[str, ...]


@dataclass(slots=True)
class Keepalived:
    instances: dict[str, Instance] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def vips_for(self, alert: Alert) -> list[str]:
        """The addresses of the instance, sync group or VRID (and interface) the alert is
        about, in configuration order."""
        labels = alert.labels
        if "iname" in labels:
            names = self.groups.get(labels["iname"], ()) if labels.get("type") == "group" else ()
            chosen = [self.instances[n] for n in names or (labels["iname"],) if n in self.instances]
        else:
            chosen = [
                inst
                for inst in self.instances.values()
                if inst.vrid == labels.get("vrid")
                and labels.get("interface") in (None, inst.interface)
            ]
        return list(dict.fromkeys(vip for inst in chosen for vip in inst.vips))


def _lines(path: Path, depth: int = 0) -> Iterator[list[str]]:
    """The file's lines as tokens, comments dropped, braces apart, includes followed."""
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            tokens = shlex.split(raw.replace("{", " { ").replace("}", " } "), comments=False)
        except ValueError:  # an unbalanced quote: not a line that names addresses
            continue
        for i, token in enumerate(tokens):
            if token.startswith(("#", "!")):
                tokens = tokens[:i]
                break
        if tokens[:1] == ["include"] and len(tokens) > 1 and depth < _MAX_INCLUDE_DEPTH:
            pattern = Path(tokens[1]) if tokens[1].startswith("/") else path.parent / tokens[1]
            for name in sorted(glob.glob(str(pattern))):
                yield from _lines(Path(name), depth + 1)
        elif tokens:
            yield tokens


def parse(path: Path) -> Keepalived:
    """Reads the file (and its includes); raises OSError if the file itself cannot be read."""
    conf = Keepalived()
    stack: list[str] = []  # the keyword of each open block
    name, vrid, interface = "", "", ""
    vips: list[str] = []
    members: list[str] = []
    for tokens in _lines(path):
        words: list[str] = []  # since the last brace: a block's header or one statement
        for token in [*tokens, "\n"]:
            if token not in ("{", "}", "\n"):
                words.append(token)
                continue
            if token == "{":
                keyword = words[0] if words else ""
                if keyword in ("vrrp_instance", "vrrp_sync_group") and len(words) > 1:
                    name, vrid, interface, vips, members = words[1], "", "", [], []
                stack.append(keyword)
            elif words:  # a statement of the innermost block
                block = stack[-1] if stack else ""
                if block in _ADDRESS_BLOCKS:
                    vips.append(words[0])
                elif block == "group" and stack[-2:-1] == ["vrrp_sync_group"]:
                    members += words
                elif block == "vrrp_instance" and len(words) > 1:
                    vrid = words[1] if words[0] == "virtual_router_id" else vrid
                    interface = words[1] if words[0] == "interface" else interface
            if token == "}" and stack:
                closed = stack.pop()
                if closed == "vrrp_instance":
                    conf.instances[name] = Instance(vrid, interface, tuple(vips))
                elif closed == "vrrp_sync_group":
                    conf.groups[name] = tuple(members)
            words = []
    return conf


def read(path: str) -> Keepalived:
    """The configuration, or nothing known if it cannot be read (not installed, not readable
    by this user)."""
    try:
        return parse(Path(path))
    except OSError:
        return Keepalived()
