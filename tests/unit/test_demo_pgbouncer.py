"""`pgha demo up --pgbouncer`: what it writes and refuses, without starting anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pgha.cli.main import _register, cli
from pgha.config import parse
from pgha.demo import DemoCluster, DemoNode, DemoState


def test_node_config_names_the_pgbouncer_the_agent_manages(tmp_path: Path) -> None:
    demo = DemoCluster(tmp_path / "d", port_base=20000, pgbouncer=True)
    demo.bouncer_admin_password = "admin-pw"
    cfg = parse(demo._node_config(2, "pw", "rpw"))
    assert cfg.pgbouncer is not None
    assert cfg.pgbouncer.config == str(tmp_path / "d" / "node2" / "pgbouncer" / "pgbouncer.ini")
    assert (cfg.pgbouncer.admin_port, cfg.pgbouncer.admin_user) == (20022, "pgbouncer")
    assert cfg.pgbouncer.databases == ("postgres", "*")
    assert "admin-pw" not in repr(cfg.pgbouncer)
    assert parse(DemoCluster(tmp_path / "d", port_base=20000)._node_config(2, "pw", "rpw")).pgbouncer is None


def test_demo_json_keeps_the_pgbouncer_port_and_pid(tmp_path: Path) -> None:
    node = DemoNode("node1", 20010, 20011, "c", "d", "dsn", agent_pid=5, pgbouncer_port=20012, pgbouncer_pid=7)
    other = DemoNode("node2", 1, 2, "c", "d", "x")
    state = DemoState("demo", "http://127.0.0.1:20000", 3, str(tmp_path), [node, other])
    data = json.loads(json.dumps(state.to_json()))
    assert data["nodes"][0]["pgbouncer_port"] == 20012 and data["nodes"][0]["pgbouncer_pid"] == 7
    assert "pgbouncer_port" not in data["nodes"][1] and "pgbouncer_pid" not in data["nodes"][1]
    assert DemoState.from_json(data).nodes == state.nodes


def test_missing_pgbouncer_is_one_line_naming_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pgha.routing.pgbouncer

    monkeypatch.setattr(pgha.routing.pgbouncer, "PGBOUNCER_BIN", str(tmp_path / "no-pgbouncer"))
    _register()
    r = CliRunner().invoke(cli, ["demo", "up", "--pgbouncer", "--dir", str(tmp_path / "d")])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        f"pgha: {tmp_path / 'no-pgbouncer'} not found; install the Debian package pgbouncer (or run 'make demo')"]
    assert not (tmp_path / "d").exists()


def ini_for(version: tuple[int, int] | None) -> str:
    from pgha.demo.pgbouncer_process import render_pgbouncer_ini

    return render_pgbouncer_ini(listen_port=6432, target_host="127.0.0.1", target_port=5432, dir="/run/b",
                                version=version)


@pytest.mark.parametrize("version", [(1, 21), (1, 22), (2, 0)])
def test_pgbouncer_1_21_and_later_keep_prepared_statements(version: tuple[int, int]) -> None:
    lines = ini_for(version).splitlines()
    assert "max_prepared_statements = 200" in lines
    assert lines.index("max_prepared_statements = 200") > lines.index("[pgbouncer]")


@pytest.mark.parametrize("version", [(1, 18), (1, 20), None])
def test_older_or_unknown_pgbouncer_gets_no_max_prepared_statements(version: tuple[int, int] | None) -> None:
    ini = ini_for(version)
    assert "max_prepared_statements" not in ini  # 1.18 refuses to start on an unknown key
    assert "docs/configuration.md#pgbouncer names each client's setting" in ini


def test_the_version_comes_from_pgbouncer_version(tmp_path: Path) -> None:
    from pgha.demo.pgbouncer_process import pgbouncer_version

    fake = tmp_path / "pgbouncer"
    fake.write_text("#!/bin/sh\necho 'PgBouncer 1.22.1'\necho 'libevent 2.1.12-stable'\n")
    fake.chmod(0o755)
    assert pgbouncer_version(str(fake)) == (1, 22)
    assert pgbouncer_version(str(tmp_path / "missing")) is None
