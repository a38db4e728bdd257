"""Issue 18 acceptance: a change-data-capture consumer keeps its place through a failover and a
switchover.  A permanent logical slot (``slots:``), a real 3-node cluster (PostgreSQL 15, etcd),
``pg_recvlogical`` (test_decoding) reconnecting to whichever member is primary through a
multi-host DSN (target_session_attrs=read-write), and a writer recording every acknowledged
insert.  At-least-once: every acknowledged row reaches the consumer; duplicates are counted."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from pgha.cli.main import _register, cli
from pgha.core.model import IgnoreSlot
from pgha.demo import DemoCluster
from pgha.demo.state import PG_BIN
from tests.support.cluster import connect, leader_name, replicas, running_cluster, wait_for
from tests.support.faults import kill_host, multi_host_dsn, restart_node, wait_new_leader

pytestmark = pytest.mark.integration

TTL = 6.0
SLOT = "cdc"
ROW = re.compile(r"table public\.cdc_rows: INSERT: id\[integer\]:(\d+)")


class Writer(threading.Thread):
    """Inserts rows one by one through the multi-host DSN; remembers the acknowledged ids."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.acked: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=2,
                                     options="-c statement_timeout=3000") as conn:
                    while not self.stop.is_set():
                        n += 1
                        conn.execute("INSERT INTO cdc_rows (id) VALUES (%s)", (n,))
                        self.acked.append(n)
                        time.sleep(0.01)
            except psycopg.Error:
                time.sleep(0.2)


class Consumer:
    """pg_recvlogical streaming the slot into a file; it reconnects by itself (every 5 s) after
    losing its server, through the multi-host DSN, from the slot's position on the new primary."""

    def __init__(self, dsn: str, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [f"{PG_BIN}/pg_recvlogical", "-d", dsn, "--slot", SLOT, "--start", "-f", str(out),
             "-F", "1", "-s", "1", "-o", "skip-empty-xacts=1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def ids(self) -> Counter[int]:
        try:
            text = self.out.read_text()
        except FileNotFoundError:
            return Counter()
        return Counter(int(m) for m in ROW.findall(text))

    def close(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None
        with self.proc.stderr:
            return self.proc.stderr.read()


def pgha(demo: DemoCluster, *args: str) -> str:
    _register()
    r = CliRunner().invoke(cli, [*args, "--dcs", demo.etcd_url, "--cluster", demo.cluster])
    assert r.exit_code == 0, r.output
    return r.output


def slot_position(demo: DemoCluster, name: str) -> int | None:
    with connect(demo, name) as conn:
        row = conn.execute("SELECT confirmed_flush_lsn - '0/0' FROM pg_replication_slots WHERE slot_name = %s",
                           (SLOT,)).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else None


def slot_names(demo: DemoCluster, name: str) -> set[str]:
    with connect(demo, name) as conn:
        return {str(r[0]) for r in conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall()}


def copies_in_step(demo: DemoCluster) -> bool:
    """Every replica holds the slot, advanced to where the primary last published it."""
    view = demo.view()
    lead = leader_name(demo)
    published = view.members[lead].slots.get(SLOT)
    if published is None:
        return False
    return all((slot_position(demo, r) or -1) >= published for r in replicas(demo))


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoCluster]:
    extra = {"parameters": {"wal_level": "logical"},
             "slots": {SLOT: {"type": "logical", "plugin": "test_decoding", "database": "postgres"},
                       "archiver": {"type": "physical"}},
             "ignore_slots": [{"name": "operator_slot"}]}
    with running_cluster(nodes=3, ttl=TTL, sync=True, extra_cluster_config=extra) as cluster:
        yield cluster


def test_permanent_slots_on_every_member(demo: DemoCluster) -> None:
    """The primary has both slots; each replica gets a copy (the logical one copied with its state
    file and a restart, then advanced); a slot matching ignore_slots is never dropped."""
    lead = leader_name(demo)
    with connect(demo, lead) as conn:
        conn.execute("SELECT pg_create_physical_replication_slot('operator_slot')")
    wait_for("permanent slots on the primary", lambda: {SLOT, "archiver"} <= slot_names(demo, lead), timeout=30)

    def consume_and_look() -> bool:
        # A replica copies the logical slot once its restart_lsn passed the replica's oldest WAL
        # (a clone has none older than itself): move it on as a consumer would.
        with connect(demo, lead) as conn:
            conn.execute("CHECKPOINT")
            conn.execute("SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())", (SLOT,))
        return all({SLOT, "archiver"} <= slot_names(demo, n) for n in replicas(demo))

    wait_for("permanent slots on every member", consume_and_look, timeout=60, interval=1.0)
    wait_for("replica copies in step", lambda: copies_in_step(demo), timeout=30)
    with connect(demo, lead) as conn:
        assert conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'operator_slot'").fetchone()
        conn.execute("SELECT pg_drop_replication_slot('operator_slot')")
    for r in replicas(demo):
        with connect(demo, r) as conn:
            assert conn.execute("SHOW hot_standby_feedback").fetchone() == ("on",)

    # A permanent slot taken out of the configuration stays while it matches ignore_slots, and is
    # dropped on every member (pgha made it) once it does not.
    store = demo.store()
    cfg, rev = store.get_config()
    slots = {n: s for n, s in cfg.slots.items() if n != "archiver"}
    ignore = cfg.ignore_slots
    assert store.set_config(replace(cfg, slots=slots, ignore_slots=(*ignore, IgnoreSlot(name="archiver"))), rev)
    time.sleep(3 * TTL / 6 + 1)  # a few loops
    assert all("archiver" in slot_names(demo, n) for n in [lead, *replicas(demo)])
    cfg, rev = store.get_config()
    assert store.set_config(replace(cfg, ignore_slots=ignore), rev)
    wait_for("archiver dropped on every member",
             lambda: all("archiver" not in slot_names(demo, n) for n in [lead, *replicas(demo)]), timeout=30)


def test_cdc_consumer_loses_nothing_across_failover_and_switchover(demo: DemoCluster, tmp_path: Path) -> None:
    with connect(demo, leader_name(demo)) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS cdc_rows (id int PRIMARY KEY)")
    dsn = multi_host_dsn(demo)
    writer = Writer(dsn)
    consumer = Consumer(dsn, tmp_path / "changes.txt")
    stderr = ""
    try:
        writer.start()
        wait_for("the consumer sees rows", lambda: len(consumer.ids()) > 50, timeout=30)
        wait_for("replica copies in step", lambda: copies_in_step(demo), timeout=30)

        old = leader_name(demo)
        kill_host(demo, old)  # failover
        new = wait_new_leader(demo, old)
        wait_for("writes on the new primary", lambda: writer.acked and writer.acked[-1] > len(writer.acked) - 5,
                 timeout=30)
        restart_node(demo, old)
        demo.wait_healthy(timeout=90)
        mark = len(writer.acked)
        wait_for("the consumer follows the new primary",
                 lambda: set(writer.acked[:mark]) <= set(consumer.ids()), timeout=60)
        wait_for("replica copies in step again", lambda: copies_in_step(demo), timeout=60)

        target = next(r for r in replicas(demo) if r != old)
        pgha(demo, "switchover", "--candidate", target, "--force")  # switchover
        assert leader_name(demo) == target != new
        demo.wait_healthy(timeout=90)
        time.sleep(2)
        writer.stop.set()
        writer.join(timeout=10)
        acked = set(writer.acked)
        wait_for("every acknowledged row at the consumer", lambda: acked <= set(consumer.ids()), timeout=60)
    finally:
        writer.stop.set()
        stderr = consumer.close()
    got = consumer.ids()
    duplicates = sum(c - 1 for c in got.values())
    lost = acked - set(got)
    print(f"\nacknowledged {len(acked)} rows; consumer got {len(got)} distinct, {duplicates} duplicates, "
          f"{len(lost)} lost")
    assert not lost, f"lost {sorted(lost)[:20]}; pg_recvlogical said: {stderr[-2000:]}"
    with contextlib.suppress(psycopg.Error), connect(demo, leader_name(demo)) as conn:
        in_table = {r[0] for r in conn.execute("SELECT id FROM cdc_rows").fetchall()}
        assert in_table <= set(got), "a row in the table never reached the consumer"
