"""A realistic cluster in a MemoryKV for the CLI tests, and the runner that points pgha at it.

Three members publish (node1 leads on timeline 2; node2 is the synchronous standby,
1 MiB behind; node3 cascades from node2, 32 MiB behind, tagged nofailover, with a
pending restart), plus one history entry.  ``World.run`` invokes the CLI with
``--dcs URL --cluster main``; the DCS it reaches is this MemoryKV.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner, Result

from pgha.cli import context
from pgha.cli.main import _register, cli
from pgha.core.model import ClusterConfig, MemberInfo, Role, Tags
from pgha.dcs.memory import MemoryKV
from pgha.dcs.store import ClusterStore, HistoryEntry

URL = "http://127.0.0.1:2379"
SYSTEM_ID = "7312345678901234567"
MIB = 1024 * 1024


def members() -> dict[str, MemberInfo]:
    return {
        "node1": MemberInfo("node1", Role.PRIMARY, "running", 2, wal_lsn=80 * MIB, host="127.0.0.1",
                            port=5432, rule_id="leader-steady", version="0.1.0"),
        "node2": MemberInfo("node2", Role.REPLICA, "streaming", 2, received_lsn=79 * MIB,
                            replayed_lsn=79 * MIB, host="127.0.0.1", port=5433, following="node1",
                            rule_id="replica-steady", version="0.1.0"),
        "node3": MemberInfo("node3", Role.REPLICA, "streaming", 2, received_lsn=48 * MIB, host="127.0.0.2",
                            port=5434, following="node2", pending_restart=True, rule_id="replica-steady",
                            tags=Tags(nofailover=True, extra={"dc": "b"})),
    }


class World:
    def __init__(self, kv: MemoryKV) -> None:
        self.kv = kv
        self.store = ClusterStore(kv, "main")
        self.lease = kv.grant(3600)
        self.runner = CliRunner()
        # What the agents do while a command sleeps in a wait loop (see context.SLEEP).
        self.agent: Callable[[], None] = lambda: None
        self.store.claim_initialize("node1", self.lease)
        self.store.publish_initialized(SYSTEM_ID, "node1")
        self.store.seed_config(ClusterConfig(parameters={"max_connections": 100}))
        assert self.store.acquire_leader("node1", self.lease)
        for m in members().values():
            self.publish(m)
        self.store.publish_sync("node1", ("node2",), 1)
        self.store.append_history(HistoryEntry(1, 0x3000060, time.time() - 3600, "switchover to node1",
                                               "node1", "node2", "switchover"))

    def publish(self, m: MemberInfo) -> None:
        self.store.publish_member(m, self.lease)

    def change(self, name: str, **fields: object) -> None:
        """Republish one member with some fields changed."""
        self.publish(dataclasses.replace(self.store.read().members[name], **fields))  # type: ignore[arg-type]

    def run(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(cli, [*args, "--dcs", URL, "--cluster", "main"], input=input)


@pytest.fixture(name="world")
def world_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    _register()
    kv = MemoryKV()
    w = World(kv)
    monkeypatch.setattr(context, "KV_FACTORY", lambda dcs: kv)
    monkeypatch.setattr(context, "SLEEP", lambda seconds: w.agent())
    yield w


def refusal(result: Result) -> str:
    """The one line a refused command printed (stderr is merged into output by CliRunner)."""
    lines = [line for line in result.output.splitlines() if line.startswith("pgha: ")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_world_reads_back(world: World) -> None:
    view = world.store.read()
    assert view.leader is not None and view.leader.name == "node1"
    assert sorted(view.members) == ["node1", "node2", "node3"]
    assert view.system_id == SYSTEM_ID
