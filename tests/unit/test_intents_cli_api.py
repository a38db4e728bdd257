"""The CLI and the REST API refuse exactly the same requests, with the same message (pgha.intents).

Each case is one cluster situation and one request, sent once through the CLI (click's runner
over an in-memory DCS) and once through the API handler of the node it concerns, each on
its own copy of the cluster.  Both must refuse it with the same line, or both record the same
thing in the DCS.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pgha.api.handle import NodeSnapshot
from pgha.api.request import Request
from pgha.api.routes import BY_PATH
from pgha.cli import context
from pgha.cli.main import _register
from pgha.core.model import ClusterConfig, MemberIntent, Role, Switchover
from pgha.core.standby import StandbyCluster
from pgha.dcs.memory import MemoryKV
from tests.unit.test_api_helpers import FakeHandle, node_config
from tests.unit.test_cli_world import MIB, World, refusal

PAST = "2001-01-01T00:00:00+00:00"


def _pending_restart(w: World) -> None:
    w.store.set_intent("node2", MemberIntent("restart", "r1"))


SITUATIONS: dict[str, Callable[[World], Any]] = {
    "healthy": lambda w: None,
    "replica-starting": lambda w: w.change("node2", state="starting"),
    "replica-lagging": lambda w: w.change("node2", received_lsn=70 * MIB, replayed_lsn=70 * MIB),
    "no-leader": lambda w: w.store.release_leader("node1"),
    "leader-crashed": lambda w: w.change("node1", role=Role.UNINITIALIZED, state="crashed"),
    "switchover-pending": lambda w: w.store.set_switchover(Switchover(id="x", leader="node1", candidate="node3")),
    "paused": lambda w: w.store.set_config(ClusterConfig(pause=True)),
    "restart-pending": _pending_restart,
    "standby-cluster": lambda w: w.store.set_config(ClusterConfig(standby_cluster=StandbyCluster(host="site-a"))),
}

# (CLI arguments, the node whose API is asked, method, path, JSON body)
Call = tuple[list[str], str, str, str, dict[str, Any]]
REQUESTS: dict[str, Call] = {
    "switchover": (["switchover", "--no-wait"], "node2", "POST", "/switchover", {}),
    "switchover-node2": (["switchover", "--candidate", "node2", "--no-wait"], "node2", "POST", "/switchover",
                         {"candidate": "node2"}),
    "switchover-node3": (["switchover", "--candidate", "node3", "--no-wait"], "node3", "POST", "/switchover",
                         {"candidate": "node3"}),
    "switchover-self": (["switchover", "--candidate", "node1", "--no-wait"], "node1", "POST", "/switchover",
                        {"candidate": "node1"}),
    "switchover-nobody": (["switchover", "--candidate", "node9", "--no-wait"], "node1", "POST", "/switchover",
                          {"candidate": "node9"}),
    "switchover-wrong-leader": (["switchover", "--leader", "node2", "--no-wait"], "node2", "POST", "/switchover",
                                {"leader": "node2"}),
    "switchover-past": (["switchover", "--candidate", "node2", "--scheduled", PAST, "--no-wait"], "node2", "POST",
                        "/switchover", {"candidate": "node2", "scheduled_at": PAST}),
    "failover-node2": (["failover", "--candidate", "node2", "--no-wait"], "node2", "POST", "/failover",
                       {"candidate": "node2"}),
    "failover-node3": (["failover", "--candidate", "node3", "--no-wait"], "node3", "POST", "/failover",
                       {"candidate": "node3"}),
    "failover-leader": (["failover", "--candidate", "node1", "--no-wait"], "node1", "POST", "/failover",
                        {"candidate": "node1"}),
    "restart-node2": (["restart", "node2"], "node2", "POST", "/restart", {}),
    "restart-node2-past": (["restart", "node2", "--scheduled", PAST], "node2", "POST", "/restart",
                           {"schedule": PAST}),
    "reload-node2": (["reload", "node2"], "node2", "POST", "/reload", {}),
    "reinit-node2": (["reinit", "node2"], "node2", "POST", "/reinitialize", {}),
    "reinit-leader": (["reinit", "node1"], "node1", "POST", "/reinitialize", {}),
    "promote-cluster": (["promote-cluster", "--no-wait"], "node2", "POST", "/promote-cluster", {}),
    "demote-cluster": (["demote-cluster", "--host", "b1:5433,b2", "--slot", "site_a", "--no-wait"], "node1", "POST",
                       "/demote-cluster", {"host": "b1:5433,b2", "slot": "site_a"}),
    "demote-cluster-bad-host": (["demote-cluster", "--host", "b1 dbname=x", "--no-wait"], "node1", "POST",
                                "/demote-cluster", {"host": "b1 dbname=x"}),
    "demote-cluster-no-source": (["demote-cluster", "--no-wait"], "node1", "POST", "/demote-cluster", {}),
}


@pytest.fixture(name="fresh")
def fresh_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], World]]:
    """A new copy of the cluster in a given situation (the CLI's DCS is the last one made)."""
    _register()

    def make(situation: str) -> World:
        kv = MemoryKV()
        w = World(kv)
        SITUATIONS[situation](w)
        monkeypatch.setattr(context, "KV_FACTORY", lambda dcs: kv)
        return w

    yield make


def _written(w: World) -> tuple[Any, ...]:
    """What a request left in the DCS, without its random ids."""
    view = w.store.read()
    sw = view.switchover
    return ((sw.kind, sw.leader, sw.candidate, sw.scheduled_at, sw.phase) if sw else None,
            sorted((n, i.action, i.from_leader, i.role, i.only_if_pending, i.scheduled_at)
                   for n, i in view.intents.items()), view.config.standby_cluster)


def _api(w: World, node: str, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    view = w.store.read()
    snap = NodeSnapshot(view=view, local=None, decision=None, member=view.members[node],
                        cluster_config=view.config, holds_lease=view.leader is not None and view.leader.name == node,
                        at=time.monotonic())
    handle = FakeHandle(node_config(node, auth=True), w.store, None, snap)  # type: ignore[arg-type]
    reply = BY_PATH[path][method].handler(Request(handle, method, path, body=body))
    return reply.status, reply.body


@pytest.mark.parametrize("request_name", list(REQUESTS))
@pytest.mark.parametrize("situation", list(SITUATIONS))
def test_cli_and_api_answer_alike(fresh: Callable[[str], World], situation: str, request_name: str) -> None:
    args, node, method, path, body = REQUESTS[request_name]
    api_world = fresh(situation)
    before = _written(api_world)
    status, reply = _api(api_world, node, method, path, body)
    cli_world = fresh(situation)
    r = cli_world.run(*args, *(["--force"] if args[0] != "reload" else []))
    if status >= 400:
        assert status in (404, 409, 412, 503), reply
        assert r.exit_code == 1, f"the API refused ({reply['error']}), the CLI did not:\n{r.output}"
        assert refusal(r) == f"pgha: {reply['error']}"
        assert _written(api_world) == before == _written(cli_world)
    else:
        assert r.exit_code == 0, f"the API accepted ({reply}), the CLI refused:\n{r.output}"
        assert _written(api_world) == _written(cli_world) != before


def test_the_table_covers_refusals_of_every_kind(fresh: Callable[[str], World]) -> None:
    statuses = set()
    for situation in SITUATIONS:
        for _args, node, method, path, body in REQUESTS.values():
            statuses.add(_api(fresh(situation), node, method, path, body)[0])
    assert {200, 202, 409, 412} <= statuses
