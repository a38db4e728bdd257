"""patronictl's habits in pgha's CLI (issue 18, item 4): several members, --role, --any, --pending,
--pg-version, --timeout; flush restart|switchover; list -f/-e/-t/-W; topology -w; --primary."""

from __future__ import annotations

import json
import time

import yaml

from pgha.core.model import Switchover
from tests.unit.test_cli_world import World, refusal, world_fixture  # noqa: F401


def pending(world: World) -> dict[str, str]:
    return {n: i.action for n, i in world.store.read().intents.items()}


def future() -> str:
    return time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() + 7200))


def test_restart_several_members_and_roles(world: World) -> None:
    assert world.run("restart", "node2", "node3", "--force").exit_code == 0
    assert pending(world) == {"node2": "restart", "node3": "restart"}
    for n in ("node2", "node3"):
        world.store.clear_intent(n, world.store.read().intents[n].id)
    for role, want in (("leader", ["node1"]), ("primary", ["node1"]), ("standby", ["node2", "node3"])):
        r = world.run("restart", "--role", role, "--force")
        assert r.exit_code == 0, r.output
        assert sorted(pending(world)) == want, role
        for n in want:
            world.store.clear_intent(n, world.store.read().intents[n].id)


def test_restart_any_picks_one(world: World) -> None:
    r = world.run("restart", "--role", "replica", "--any", "--force")
    assert r.exit_code == 0, r.output
    assert len(pending(world)) == 1 and set(pending(world)) <= {"node2", "node3"}


def test_restart_pg_version(world: World) -> None:
    world.change("node2", server_version=150003)
    world.change("node3", server_version=150010)
    r = world.run("restart", "--pg-version", "15.4", "--force")
    assert r.exit_code == 0, r.output
    assert pending(world) == {"node2": "restart"}
    r = world.run("restart", "node3", "--pg-version", "15.4", "--force")
    assert r.exit_code == 0 and "No running member has a PostgreSQL older than 15.4." in r.output
    r = world.run("restart", "--pg-version", "fifteen", "--force")
    assert r.exit_code == 2 and "is not a PostgreSQL version" in r.output


def test_restart_timeout_waits_for_the_result(world: World) -> None:
    def agent() -> None:  # node2's agent carries the restart out
        intents = world.store.read().intents
        if "node2" in intents:
            world.store.clear_intent("node2", intents["node2"].id)

    world.agent = agent
    r = world.run("restart", "node2", "--timeout", "30", "--force")
    assert r.exit_code == 0, r.output
    assert r.output.rstrip().endswith("Done.")
    world.agent = lambda: None
    r = world.run("restart", "node3", "--timeout", "1", "--force")
    assert r.exit_code == 1 and "restart not done after 1 s" in r.output
    r = world.run("restart", "node2", "--timeout", "5", "--scheduled", future(), "--force")
    assert r.exit_code == 2 and "cannot wait for a --scheduled one" in r.output


def test_reload_and_reinit_take_several_members(world: World) -> None:
    assert world.run("reload", "node1", "node3", "--force").exit_code == 0
    assert pending(world) == {"node1": "reload", "node3": "reload"}
    world.store.clear_intent("node3", world.store.read().intents["node3"].id)
    world.store.clear_intent("node1", world.store.read().intents["node1"].id)
    # Every member is checked before any request is written.
    assert refusal(world.run("reinit", "node3", "node1", "--force")).startswith("pgha: node1 is the leader")
    assert pending(world) == {}
    r = world.run("reinit", "node2", "node3", input="y\n")
    assert r.exit_code == 0, r.output
    assert "Reinitialize node2, node3? Their data directories are wiped" in r.output
    assert pending(world) == {"node2": "reinitialize", "node3": "reinitialize"}
    assert refusal(world.run("reload", "--role", "leader", "node2")) == "pgha: no such member runs as leader"


def test_flush_restart(world: World) -> None:
    assert world.run("restart", "--scheduled", future(), "--force").exit_code == 0
    assert world.run("reload", "node1").exit_code == 1  # node1 has its restart pending
    r = world.run("flush", "node2", "restart", "--force")
    assert r.exit_code == 0 and "Cancelled the restart of node2." in r.output
    assert sorted(pending(world)) == ["node1", "node3"]
    r = world.run("flush", "restart", "--role", "replica", "--force")
    assert r.exit_code == 0 and sorted(pending(world)) == ["node1"]
    r = world.run("flush", "restart", input="y\n")
    assert r.exit_code == 0 and pending(world) == {}
    r = world.run("flush", "restart", "--force")
    assert r.exit_code == 0 and "No pending restart on any member." in r.output


def test_flush_switchover(world: World) -> None:
    r = world.run("flush", "switchover", "--force")
    assert r.exit_code == 0 and "No pending switchover or failover." in r.output
    assert world.store.set_switchover(Switchover("abcdef123456", leader="node1", candidate="node2",
                                                 scheduled_at=time.time() + 3600))
    r = world.run("flush", "switchover", "--force")
    assert r.exit_code == 0 and "Cancelled switchover abcdef12." in r.output
    assert world.store.read().switchover is None
    assert world.run("flush", "node2", "switchover").exit_code == 2


def test_switchover_primary_is_leader(world: World) -> None:
    r = world.run("switchover", "--primary", "node2", "--candidate", "node3", "--force", "--no-wait")
    assert r.exit_code == 1 and "node2" in refusal(r)
    r = world.run("switchover", "--primary", "node1", "--candidate", "node2", "--force", "--no-wait")
    assert r.exit_code == 0, r.output


def test_list_formats(world: World) -> None:
    tsv = world.run("list", "-f", "tsv")
    assert tsv.exit_code == 0, tsv.output
    lines = tsv.output.splitlines()
    assert lines[0].split("\t")[:3] == ["Member", "Host", "Role"] and len(lines) == 4
    assert lines[1].split("\t")[:3] == ["node1", "127.0.0.1:5432", "Leader"]
    as_yaml = yaml.safe_load(world.run("list", "-f", "yaml").output)
    as_json = json.loads(world.run("list", "-f", "json").output)
    assert as_yaml == as_json == json.loads(world.run("list", "--json").output)
    assert [m["member"] for m in as_yaml] == ["node1", "node2", "node3"]
    assert world.run("list", "-f", "xml").exit_code == 2


def test_list_extended_and_timestamp(world: World) -> None:
    assert world.run("restart", "node3", "--scheduled", future(), "--force").exit_code == 0
    r = world.run("list", "-e", "-t")
    assert r.exit_code == 0, r.output
    first, rest = r.output.split("\n", 1)
    assert first.startswith(time.strftime("%Y-"))
    assert "Scheduled restart" in rest and "Rule" in rest and "leader-steady" in rest
    row = next(line for line in rest.splitlines() if line.startswith("| node3"))
    assert future()[:13] in row


def test_watch_every_two_seconds_and_topology_watch(world: World) -> None:
    for args in (("list", "-W"), ("topology", "-w", "1")):
        draws: list[int] = []

        def agent(draws: list[int] = draws) -> None:
            draws.append(1)
            if len(draws) == 2:
                raise KeyboardInterrupt

        world.agent = agent
        r = world.run(*args)
        assert r.exit_code == 0, r.output
        assert r.output.count("Cluster: main") == 2, args
