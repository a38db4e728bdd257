"""`pgha demo up --netns --vip`: node configuration in a lab, what demo.json records, bad input."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from pgha.demo import DemoCluster, DemoError, DemoNode, DemoState, _recorded_lab, netlab

SUBNET = ipaddress.IPv4Network("198.19.5.0/24")


def lab_demo(tmp_path: Path, **kw: object) -> DemoCluster:
    demo = DemoCluster(tmp_path / "d", port_base=24000, netns=True, vip="198.19.5.100", say=lambda s: None,
                       **kw)  # type: ignore[arg-type]
    demo.lab = netlab.Lab(SUBNET, bridge=netlab.bridge_name(SUBNET))
    return demo


def test_node_config_inside_a_namespace(tmp_path: Path) -> None:
    demo = lab_demo(tmp_path)
    cfg = demo._node_config(2, "pw", "rpw")
    pg = cfg["postgresql"]
    # Every node on one port (the VIP's port must not depend on the holder), on its own address.
    assert pg["port"] == demo._node_config(1, "pw", "rpw")["postgresql"]["port"] == 24010
    assert pg["listen"] == "198.19.5.12,198.19.5.100"
    assert pg["connect_address"] == "198.19.5.12:24010"
    assert cfg["api"]["listen"] == "198.19.5.12:24021"
    assert cfg["vip"] == {"address": "198.19.5.100", "prefix": 24, "interface": "eth0"}
    assert cfg["dcs"] == {"type": "etcd", "etcd": {"endpoints": ["http://198.19.5.1:24000"]}}


def test_extra_node_config_merges_per_node(tmp_path: Path) -> None:
    extra = {"*": {"log": {"level": "DEBUG"}}, "node2": {"callbacks": {"on_start": "/bin/true"}}}
    demo = lab_demo(tmp_path, extra_node_config=extra)
    one, two = demo._node_config(1, "p", "r"), demo._node_config(2, "p", "r")
    assert one["log"] == two["log"] == {"level": "DEBUG"}
    assert "callbacks" not in one and two["callbacks"] == {"on_start": "/bin/true"}
    assert two["postgresql"]["superuser"]["password"] == "p"  # merged, not replaced


def test_demo_json_names_everything_down_needs(tmp_path: Path) -> None:
    nodes = [DemoNode(f"node{i}", 24010, 24001 + 10 * i, "c", "d", "dsn", netns=f"pgdemo1005-node{i}",
                      address=f"198.19.5.{10 + i}") for i in (1, 2, 3)]
    state = DemoState("demo", "http://198.19.5.1:24000", 1, str(tmp_path), nodes, client_netns="pgdemo1005-client",
                      vip="198.19.5.100")
    again = DemoState.from_json(state.to_json())
    assert again == state
    lab = _recorded_lab(again)
    assert lab is not None and lab.bridge == "pgdbr1005" and lab.subnet == SUBNET
    assert lab.namespaces == ["pgdemo1005-node1", "pgdemo1005-node2", "pgdemo1005-node3", "pgdemo1005-client"]
    plain = DemoState("demo", "http://127.0.0.1:15400", 1, str(tmp_path), [DemoNode("node1", 1, 2, "c", "d", "x")])
    assert "vip" not in plain.to_json() and _recorded_lab(plain) is None


@pytest.mark.parametrize(("kw", "message"), [
    ({"vip": "198.19.5.100"}, "--vip needs --netns"),
    ({"netns": True, "external_etcd": "http://127.0.0.1:2379"}, "cannot share an external etcd"),
    ({"netns": True, "pgbouncer": True}, "--pgbouncer does not combine with --netns yet"),
])
def test_bad_lab_options_are_one_line(tmp_path: Path, kw: dict[str, object], message: str) -> None:
    demo = DemoCluster(tmp_path / "d", say=lambda s: None, **kw)  # type: ignore[arg-type]
    with pytest.raises(DemoError) as err:
        demo._check_lab()
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "d").exists()


def test_vip_outside_the_lab_range_or_taken(tmp_path: Path) -> None:
    # Checked before anything on the machine is touched (no root needed for these errors).
    for vip, message in (("10.0.0.5", "outside 198.18.0.0/15"), ("198.19.5.11", "a node or the client"),
                         ("nonsense", "not an IPv4 address")):
        with pytest.raises(DemoError) as err:
            DemoCluster(tmp_path / "d", netns=True, vip=vip, say=lambda s: None)._check_lab()
        assert message in str(err.value) and "\n" not in str(err.value)
