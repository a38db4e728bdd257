"""`pgha demo up --etcd-members`: bad values are refused in one line before anything is created, and
demo.json records the members so `pgha demo down` (another process) finds them and their namespaces."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pgha.cli.main import _register, cli
from pgha.demo import DemoState, _recorded_lab
from pgha.demo.state import DemoEtcdMember, DemoNode


@pytest.mark.parametrize(("args", "message"), [
    (["--etcd-members", "2", "--netns"], "--etcd-members 2: use an odd number"),
    (["--etcd-members", "3"], "--etcd-members 3 needs --netns"),
])
def test_bad_etcd_members_is_one_line_and_creates_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    directory = tmp_path / "demo"
    _register()
    res = CliRunner().invoke(cli, ["demo", "up", "--dir", str(directory), *args])
    assert res.exit_code == 1
    assert res.output.strip().startswith(f"pgha: {message}") and len(res.output.strip().splitlines()) == 1
    assert not directory.exists()


def test_demo_json_records_the_members_and_down_finds_their_namespaces() -> None:
    node = DemoNode(name="node1", pg_port=1, api_port=2, config="/x.yaml", data_dir="/d", dsn="",
                    netns="pgdemo1007-node1", address="198.19.7.11")
    member = DemoEtcdMember(name="etcd1", netns="pgdemo1007-etcd1", address="198.19.7.201",
                            data_dir="/d/etcd1/data", pid=42)
    state = DemoState(cluster="c", etcd="https://198.19.7.201:2379", etcd_pid=0, dir="/d", nodes=[node],
                      client_netns="pgdemo1007-client", etcd_members=[member], port_base=24000)
    again = DemoState.from_json(state.to_json())
    assert again == state
    lab = _recorded_lab(again)
    assert lab is not None and lab.namespaces == ["pgdemo1007-node1", "pgdemo1007-client", "pgdemo1007-etcd1"]
    # A demo without members keeps its old demo.json.
    assert "etcd_members" not in DemoState(cluster="c", etcd="http://x:1", etcd_pid=1, dir="/d").to_json()
