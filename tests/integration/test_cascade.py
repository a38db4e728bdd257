"""Issue 17 item 4: cascading replicas.  A member tagged ``replicatefrom: UPSTREAM`` streams from that
replica while it streams; when the upstream's host dies it follows the leader, and it goes back once
the upstream streams again.  Checked where PostgreSQL says it: pg_stat_wal_receiver on the member
(the sender's port) and pg_stat_replication on the node it streams from.  Three real agents,
PostgreSQL 15 and etcd, one cluster for the whole file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pgha.cli.main import _register, cli
from pgha.core.slots import slot_name
from pgha.demo import DemoCluster
from pgha.faults.procs import freeze_host, kill_frozen, kill_host, restart_node
from tests.support.cluster import connect, leader_name, replicas, running_cluster, wait_for

pytestmark = pytest.mark.integration

TTL = 6.0


@dataclass(frozen=True)
class Cascade:
    demo: DemoCluster
    leader: str
    upstream: str
    member: str


@pytest.fixture(scope="module")
def cascade() -> Iterator[Cascade]:
    """A healthy 3-node cluster where one replica is tagged replicatefrom the other."""
    with running_cluster(nodes=3, ttl=TTL) as demo:
        lead = leader_name(demo)
        upstream, member = sorted(replicas(demo))
        path = Path(demo.node(member).config)
        cfg = yaml.safe_load(path.read_text())
        cfg.setdefault("tags", {})["replicatefrom"] = upstream
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))  # the file keeps its owner and mode
        restart_node(demo, member)
        demo.wait_healthy(timeout=90)
        yield Cascade(demo, lead, upstream, member)


def sender_port(demo: DemoCluster, name: str) -> int | None:
    """The port ``name``'s WAL receiver streams from (None: not streaming)."""
    with connect(demo, name) as conn:
        row = conn.execute("SELECT status, sender_port FROM pg_stat_wal_receiver").fetchone()
    return int(row[1]) if row is not None and row[0] == "streaming" and row[1] is not None else None


def streams_from(demo: DemoCluster, name: str, source: str) -> bool:
    """``name`` streams from ``source``: by its WAL receiver and by ``source``'s walsenders."""
    if sender_port(demo, name) != demo.node(source).pg_port:
        return False
    with connect(demo, source) as conn:
        rows = conn.execute("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'").fetchall()
    return name in {r[0] for r in rows}


def walsenders(demo: DemoCluster, name: str) -> set[str]:
    with connect(demo, name) as conn:
        return {r[0] for r in conn.execute("SELECT application_name FROM pg_stat_replication").fetchall()}


def slots(demo: DemoCluster, name: str) -> dict[str, bool]:
    with connect(demo, name) as conn:
        rows = conn.execute("SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'physical'")
        return {str(n): bool(a) for n, a in rows.fetchall()}


def test_replicatefrom_holds_while_both_are_healthy(cascade: Cascade) -> None:
    demo, lead, up, member = cascade.demo, cascade.leader, cascade.upstream, cascade.member
    wait_for(f"{member} to stream from {up}", lambda: streams_from(demo, member, up), timeout=90)
    assert streams_from(demo, up, lead)
    assert member not in walsenders(demo, lead), "the cascaded member must not stream from the leader"
    # Its slot is on the replica it streams from, not on the primary (it would keep WAL there for ever).
    wait_for(f"{up} to hold {member}'s slot, in use", lambda: slots(demo, up).get(slot_name(member)))
    wait_for(f"the leader to keep no slot for {member}", lambda: slot_name(member) not in slots(demo, lead))

    def published() -> bool:
        m = demo.view().members[member]
        return m.following == up and m.rule_id == "replica-steady" and f"replicatefrom {up}" in m.reason
    wait_for(f"{member}'s member key to say it streams from {up} (replica-steady)", published, timeout=30)
    # A row written on the primary arrives through the chain.
    with connect(demo, lead) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS cascade_t (x int)")
        conn.execute("INSERT INTO cascade_t VALUES (17)")

    def arrived() -> bool:
        with connect(demo, member) as conn:
            return conn.execute("SELECT count(*) FROM cascade_t WHERE x = 17").fetchone() == (1,)
    wait_for(f"the row on {member}", arrived, timeout=30)
    # Still from the upstream afterwards: nothing flapped.
    assert streams_from(demo, member, up)


def test_upstream_dies_member_follows_the_leader_then_returns(cascade: Cascade) -> None:
    demo, lead, up, member = cascade.demo, cascade.leader, cascade.upstream, cascade.member
    wait_for(f"{member} to stream from {up}", lambda: streams_from(demo, member, up), timeout=90)
    kill_host(demo, up)
    # Its member key expires with its lease (ttl); then the member falls back to the leader.
    wait_for(f"{member} to stream from the leader {lead} after {up} died",
             lambda: streams_from(demo, member, lead), timeout=60)
    wait_for(f"{member}'s member key to say it follows {lead}",
             lambda: demo.view().members[member].following == lead, timeout=30)
    wait_for(f"the leader to keep a slot for {member} while it streams from it",
             lambda: slots(demo, lead).get(slot_name(member)), timeout=30)
    restart_node(demo, up)
    wait_for(f"{up} to stream again", lambda: streams_from(demo, up, lead), timeout=90)
    wait_for(f"{member} to go back to {up}", lambda: streams_from(demo, member, up), timeout=60)
    wait_for(f"the leader's walsender for {member} to end", lambda: member not in walsenders(demo, lead))
    wait_for(f"the leader to drop {member}'s slot once it cascades again",
             lambda: slot_name(member) not in slots(demo, lead), timeout=30)
    demo.wait_healthy(timeout=60)


def test_reinitialized_member_clones_from_its_upstream_and_topology_shows_the_tree(cascade: Cascade) -> None:
    demo, lead, up, member = cascade.demo, cascade.leader, cascade.upstream, cascade.member
    wait_for(f"{member} to stream from {up}", lambda: streams_from(demo, member, up), timeout=90)
    agent_log = Path(demo.node(member).config).parent / "agent.log"
    offset = agent_log.stat().st_size
    _register()
    result = CliRunner().invoke(cli, ["reinit", member, "--force", "--dcs", demo.etcd_url, "--cluster", demo.cluster])
    assert result.exit_code == 0, result.output
    wait_for(f"{member} cloned again", lambda: b"clone finished: cloned from" in agent_log.read_bytes()[offset:],
             timeout=120)
    assert f"clone finished: cloned from {up}".encode() in agent_log.read_bytes()[offset:]
    wait_for(f"{member} to stream from {up} after the clone", lambda: streams_from(demo, member, up), timeout=60)
    demo.wait_healthy(timeout=60)
    result = CliRunner().invoke(cli, ["topology", "--dcs", demo.etcd_url, "--cluster", demo.cluster])
    assert result.exit_code == 0, result.output
    rows = [ln for ln in result.output.splitlines() if ln.startswith("| ") and "Member" not in ln]
    names = [ln.split("|")[1].rstrip() for ln in rows]
    assert names == [f" {lead}", f" + {up}", f"   + {member}"], result.output


def test_frozen_upstream_member_follows_the_leader_then_returns(cascade: Cascade) -> None:
    """A host that vanishes refuses nothing: the upstream frozen (SIGSTOP), its key expires, the member
    moves to the leader although its WAL receiver's connection to the frozen host never breaks."""
    demo, lead, up, member = cascade.demo, cascade.leader, cascade.upstream, cascade.member
    wait_for(f"{member} to stream from {up}", lambda: streams_from(demo, member, up), timeout=90)
    pids = freeze_host(demo, up)
    try:
        wait_for(f"{member} to stream from the leader {lead} while {up} is frozen",
                 lambda: streams_from(demo, member, lead), timeout=60)
    finally:
        kill_frozen(demo, up, pids)
    restart_node(demo, up)
    wait_for(f"{member} to go back to {up}", lambda: streams_from(demo, member, up), timeout=90)
    demo.wait_healthy(timeout=60)
