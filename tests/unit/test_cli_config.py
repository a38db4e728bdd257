"""edit-config, pause/resume, remove and query."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pgha.cli import context
from pgha.cli.main import cli
from pgha.core.model import ClusterConfig
from pgha.dcs.memory import MemoryKV
from tests.support.procs import free_port
from tests.unit.test_cli_world import World, refusal, world_fixture  # noqa: F401


def stored(world: World) -> ClusterConfig:
    return world.store.get_config()[0]


# --- edit-config --------------------------------------------------------------------------------
def test_edit_config_sets_keys_and_parameters(world: World) -> None:
    r = world.run("edit-config", "-s", "ttl=20", "-s", "synchronous_mode=on", "-p", "work_mem=64MB",
                  "-p", "wal_log_hints=on", "-p", "max_connections=200", input="y\n")
    assert r.exit_code == 0, r.output
    assert f"-ttl: {ClusterConfig().ttl}\n+ttl: 20.0" in r.output
    assert "+  work_mem: 64MB" in r.output
    assert "Apply these changes? [y/N]" in r.output
    cfg = stored(world)
    assert cfg.ttl == 20 and cfg.synchronous_mode == "on"
    assert dict(cfg.parameters) == {"max_connections": 200, "work_mem": "64MB", "wal_log_hints": "on"}


def test_edit_config_yaml_scalars_and_resets(world: World) -> None:
    r = world.run("edit-config", "-s", "failsafe_mode=true", "-s", "maximum_lag_on_failover=0",
                  "-p", "max_connections=", "--force")
    assert r.exit_code == 0, r.output
    cfg = stored(world)
    assert cfg.failsafe_mode is True and cfg.maximum_lag_on_failover == 0 and dict(cfg.parameters) == {}
    assert world.run("edit-config", "-s", "failsafe_mode=", "--force").exit_code == 0
    assert stored(world).failsafe_mode is False


def test_edit_config_no_changes(world: World) -> None:
    r = world.run("edit-config", "-s", f"ttl={ClusterConfig().ttl:g}", "-p", "max_connections=100")
    assert r.exit_code == 0
    assert r.output.strip() == "No changes."
    r = world.run("edit-config")
    assert r.exit_code == 0 and r.output.strip() == "No changes."


def test_edit_config_declined_changes_nothing(world: World) -> None:
    r = world.run("edit-config", "-s", "ttl=40", input="n\n")
    assert r.exit_code == 1
    assert refusal(r) == "pgha: aborted; nothing was changed"
    assert stored(world).ttl == ClusterConfig().ttl


def test_edit_config_bad_values(world: World) -> None:
    cases = {
        ("-s", "ttl=abc"): "pgha: invalid configuration: ttl: expected a number, got 'abc'",
        ("-s", "ttl=1"): "pgha: invalid configuration: ttl: 1.0 is too short; use at least 2 seconds",
        ("-s", "synchronous_mode=sometimes"):
            "pgha: invalid configuration: synchronous_mode: must be 'off' or 'on' or 'strict' or 'quorum', "
            "got 'sometimes'",
        ("-s", "bogus=1"): "pgha: invalid configuration: bogus: unknown key; remove it or use one of: ",
        ("-s", "pause=yes"): "pgha: invalid configuration: pause: expected true or false, got 'yes'",
        ("-s", "ttl=[1, 2"): "pgha: -s ttl=[1, 2: not a valid YAML value",
        ("-s", "ttl={a: 1}"): "pgha: -s ttl={a: 1}: expected a single value, not a dict",
        ("-p", "work-mem=1MB"): "pgha: invalid configuration: parameters: parameter name 'work-mem' is not "
                                "allowed",
        ("-p", "log_line_prefix=\"x\\ny\""): "pgha: invalid configuration: parameters: parameter "
                                               "log_line_prefix's value holds a control character",
    }
    for args, message in cases.items():
        r = world.run("edit-config", *args, "--force")
        assert r.exit_code == 1, (args, r.output)
        assert refusal(r).startswith(message), (args, r.output)
    assert stored(world) == ClusterConfig(parameters={"max_connections": 100})


def test_edit_config_usage_errors(world: World) -> None:
    r = world.run("edit-config", "-s", "ttl", "--force")
    assert r.exit_code == 2 and "expected KEY=VALUE" in r.output


def test_edit_config_apply_file_merges(world: World, tmp_path: Path) -> None:
    f = tmp_path / "patch.yaml"
    f.write_text(yaml.safe_dump({"loop_wait": 2, "parameters": {"shared_buffers": "256MB"}}))
    r = world.run("edit-config", "--apply", str(f), "-s", "ttl=30", "--force")
    assert r.exit_code == 0, r.output
    cfg = stored(world)
    assert cfg.loop_wait == 2 and cfg.ttl == 30
    assert dict(cfg.parameters) == {"max_connections": 100, "shared_buffers": "256MB"}
    f.write_text("- not\n- a mapping\n")
    r = world.run("edit-config", "--apply", str(f), "--force")
    assert r.exit_code == 1 and "expected a mapping of settings" in refusal(r)
    f.write_text("ttl: [\n")
    r = world.run("edit-config", "--apply", str(f), "--force")
    assert r.exit_code == 1 and "not valid YAML at line" in refusal(r)
    f.write_text("ttl: !!python/object/apply:os.system ['true']\n")
    r = world.run("edit-config", "--apply", str(f), "--force")
    assert r.exit_code == 1 and "a YAML tag that is not allowed at line 1" in refusal(r)
    f.write_text("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcd", "bcde", strict=True)) + "x: *e\n")
    r = world.run("edit-config", "--apply", str(f), "--force")
    assert r.exit_code == 1 and "alias bomb" in refusal(r)


class RacingKV(MemoryKV):
    """Another operator edits /config between our read and our write."""

    def replace(self, key: str, value: bytes, mod_revision: int, lease: int = 0) -> bool:
        if key.endswith("/config"):
            self.put(key, value)
        return super().replace(key, value, mod_revision, lease)


def test_edit_config_conflict_is_refused(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    kv = RacingKV()
    monkeypatch.setattr(context, "KV_FACTORY", lambda dcs: kv)
    kv.put("/pgha/main/config", b'{"ttl": 25}')
    r = world.run("edit-config", "-s", "ttl=20", "--force")
    assert r.exit_code == 1
    assert refusal(r) == ("pgha: the configuration was changed by someone else meanwhile; "
                          "nothing was written, run again")


def test_show_and_edit_an_invalid_stored_config(world: World) -> None:
    world.kv.put("/pgha/main/config", b'{"ttl": 1, "loop_wait": 0.5, "retry_timeout": "x"}')
    r = world.run("show-config")
    assert r.exit_code == 0
    assert "pgha: warning: invalid cluster config" in r.output
    r = world.run("edit-config", "-s", "ttl=12", "--force")
    assert r.exit_code == 0, r.output
    assert stored(world).ttl == 12


# --- pause / resume -------------------------------------------------------------------------------
def test_pause_and_resume(world: World) -> None:
    r = world.run("pause")
    assert r.exit_code == 0, r.output
    assert stored(world).pause is True
    assert refusal(world.run("pause")) == "pgha: the cluster is already paused"
    assert world.run("resume").exit_code == 0
    assert stored(world).pause is False
    assert refusal(world.run("resume")) == "pgha: the cluster is not paused"


def one_by_one(world: World, rule_id: str) -> None:
    """Let the agents publish ``rule_id``, one member per wait-loop sleep."""
    names = iter(["node1", "node2", "node3"])

    def agent() -> None:
        name = next(names, None)
        if name:
            world.change(name, rule_id=rule_id)

    world.agent = agent


def test_pause_wait_until_every_member_reports_it(world: World) -> None:
    one_by_one(world, "paused")
    r = world.run("pause", "--wait")
    assert r.exit_code == 0, r.output
    assert "waiting for node1, node2, node3 to pause" in r.output
    assert "Every member has paused." in r.output
    one_by_one(world, "replica-steady")
    r = world.run("resume", "--wait")
    assert r.exit_code == 0, r.output
    assert "waiting for node1, node2, node3 to resume" in r.output
    assert "Every member has resumed." in r.output


def test_pause_wait_ignores_members_that_have_not_seen_the_change(world: World) -> None:
    """Right after a resume, members may still publish the previous pause's 'paused'."""
    for name in ("node1", "node2", "node3"):
        world.change(name, rule_id="paused", config_revision=1)
    names = iter(["node1", "node2", "node3"])

    def agent() -> None:
        name = next(names, None)
        if name:
            world.change(name, rule_id="paused", config_revision=world.store.get_config()[1])

    world.agent = agent
    r = world.run("pause", "--wait")
    assert r.exit_code == 0, r.output
    assert "waiting for node1, node2, node3 to pause" in r.output
    assert "Every member has paused." in r.output


# --- remove ---------------------------------------------------------------------------------------
def test_remove_refuses_while_members_run(world: World) -> None:
    r = world.run("remove", "main")
    assert r.exit_code == 1
    assert refusal(r) == ("pgha: 3 member(s) still running (node1, node2, node3); "
                          "stop their agents first, or use --force")
    assert world.store.read().system_id is not None


def test_remove_asks_for_the_name(world: World) -> None:
    world.kv.revoke(world.lease)
    r = world.run("remove", "main", input="maim\n")
    assert r.exit_code == 1
    assert refusal(r) == "pgha: the name typed does not match; nothing was removed"
    assert world.store.read().system_id is not None
    r = world.run("remove", "main", input="main\n")
    assert r.exit_code == 0, r.output
    assert "Type the cluster name to confirm" in r.output
    assert world.kv.get_prefix("/pgha/main/")[1] == []


def test_remove_force_and_refusals(world: World) -> None:
    r = world.runner.invoke(cli, ["remove", "other", "--dcs", "http://127.0.0.1:2379"])
    assert r.exit_code == 1 and refusal(r) == "pgha: cluster other not found under /pgha at http://127.0.0.1:2379"
    r = world.run("remove", "other")
    assert refusal(r) == "pgha: CLUSTER is other but -c/--cluster names main; they must match"
    r = world.run("remove", "main", "--force")
    assert r.exit_code == 0, r.output
    assert world.kv.get_prefix("/pgha/main/")[1] == []


# --- query (error paths; a real PostgreSQL is in tests/integration/test_cli_etcd.py) --------------
def test_query_refusals(world: World, tmp_path: Path) -> None:
    r = world.run("query", "select 1", "--member", "node9")
    assert refusal(r).startswith("pgha: node9 is not a member of cluster main")
    r = world.run("query", "select 1", "--member", "node1", "--role", "replica")
    assert r.exit_code == 2
    world.change("node2", state="starting")
    world.change("node3", state="starting")
    r = world.run("query", "select 1", "--role", "replica")
    assert refusal(r) == "pgha: no replica is streaming right now; name a member with --member"
    assert world.store.release_leader("node1")
    r = world.run("query", "select 1")
    assert refusal(r) == "pgha: the cluster has no leader right now; name a member with --member"


def test_query_connection_refused_never_prints_the_password(world: World, tmp_path: Path) -> None:
    port = free_port()
    world.change("node1", port=port)
    cfg = tmp_path / "node.yaml"
    cfg.write_text(yaml.safe_dump({
        "cluster": "main", "name": "node1",
        "postgresql": {"data_dir": str(tmp_path / "d"),
                       "superuser": {"username": "admin", "password": "s3cret"}},
        "etcd": {"endpoints": ["http://127.0.0.1:2379"]}, "api": {"auth": "none"}}))
    r = world.runner.invoke(cli, ["query", "select 1", "-c", str(cfg)])
    assert r.exit_code == 1
    assert refusal(r).startswith(f"pgha: cannot connect to node1 at 127.0.0.1:{port}: ")
    assert "s3cret" not in r.output
