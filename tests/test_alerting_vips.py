"""The VIPs a mail names, read from keepalived.conf files on disk: blocks, includes, groups."""

from __future__ import annotations

from pathlib import Path

from ka_exporter.alerting import vips
from ka_exporter.alerting.alert import Alert, Severity, Source, Status

MAIN = """\
global_defs {
    router_id lb-a   # vrrp_instance in a comment is not one
}
include conf.d/*.conf
vrrp_sync_group G1 {
    group { VI_1 VI_2 }
}
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        192.0.2.101/24 dev eth0 label eth0:vip
        198.51.100.10/32
    }
    virtual_ipaddress_excluded { 2001:db8::101/64 }
    track_script {
        chk_nginx
    }
}
"""
INCLUDED = """\
vrrp_instance "VI_2" {
    interface eth1
    virtual_router_id 52
    virtual_ipaddress {
        203.0.113.5
    }
}
"""


def alert(**labels: str) -> Alert:
    return Alert("X", Severity.INFO, Status.FIRING, Source.TEST, 0.0, labels=labels)


def test_instances_groups_includes_and_vrids(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "vi2.conf").write_text(INCLUDED)
    (tmp_path / "keepalived.conf").write_text(MAIN)
    conf = vips.read(str(tmp_path / "keepalived.conf"))
    vi_1 = ["192.0.2.101/24", "198.51.100.10/32", "2001:db8::101/64"]
    assert conf.vips_for(alert(iname="VI_1", type="instance")) == vi_1
    assert conf.vips_for(alert(iname="G1", type="group")) == [*vi_1, "203.0.113.5"]
    assert conf.vips_for(alert(vrid="52", interface="eth1")) == ["203.0.113.5"]  # the exporter's
    assert conf.vips_for(alert(vrid="52", interface="eth0")) == []
    assert conf.vips_for(alert(iname="VI_9", type="instance")) == []


def test_an_unreadable_file_names_no_vip(tmp_path: Path) -> None:
    assert vips.read(str(tmp_path / "missing.conf")).vips_for(alert(iname="VI_1")) == []
