"""A host firewall that eats VRRP: the classic real-world cause of split brain.

The node keeps sending adverts but hears none, so it and its peer both become MASTER while a
monitor on the segment sees two advertisers for one VRID.
"""

from __future__ import annotations

from lab import netns

TABLE = "ka_lab"
RULES = (
    f"table inet {TABLE} {{ chain input {{ type filter hook input priority filter; policy accept; "
    "ip protocol { 51, 112 } drop; ip6 nexthdr 112 drop; }; }"
)


def drop_vrrp(ns: str) -> None:
    # Declaring, deleting and re-adding the table in one transaction makes this idempotent.
    ruleset = f"table inet {TABLE}\ndelete table inet {TABLE}\n{RULES}\n"
    netns.run(netns.exec_argv(ns, ["nft", "-f", "-"]), input=ruleset)


def allow(ns: str) -> None:
    netns.run(netns.exec_argv(ns, ["nft", "delete", "table", "inet", TABLE]))
