"""Clients through PgBouncer and what the PgBouncers point at, for routing tests and bench/pgbouncer.

``TxnClient`` runs short write transactions back to back on ONE connection
through a PgBouncer, so every error a switchover causes is seen (there is no
reconnect that would hide it) and the longest time between two committed
transactions is the pause a client sees.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from pgha.core.model import Role, Switchover
from pgha.demo import DemoCluster
from pgha.routing.pgbouncer import PgBouncer, PgBouncerError
from tests.support.faults import kill_host

TABLE = "pgha_routing_probe"


def create_probe_table(demo: DemoCluster, leader: str) -> None:
    with psycopg.connect(demo.node(leader).dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, client text, "
                     "at timestamptz DEFAULT now())")


class TxnClient:
    """One connection through ``dsn``; INSERT + inet_server_port() in a transaction, back to back."""

    def __init__(self, dsn: str, name: str) -> None:
        self.dsn = dsn
        self.name = name
        # (monotonic time of the commit, server port) of every committed transaction.
        self.commits: list[tuple[float, int]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"client-{name}", daemon=True)

    def _connect(self) -> psycopg.Connection[Any]:
        # Transaction pooling: no server-side prepared statements.
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=5, prepare_threshold=None,
                               application_name=f"pgha-test-{self.name}")

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                with conn.transaction():
                    conn.execute(f"INSERT INTO {TABLE} (client) VALUES (%s)", (self.name,))
                    row = conn.execute("SELECT inet_server_port()").fetchone()
                assert row is not None
                self.commits.append((time.monotonic(), int(row[0])))
            except psycopg.Error as exc:
                self.errors.append(" ".join(str(exc).split()) or type(exc).__name__)
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def start(self) -> TxnClient:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def count_on(self, port: int) -> int:
        return sum(1 for _, p in self.commits if p == port)

    def max_gap(self) -> float:
        """Seconds: the longest time between two consecutive commits."""
        times = [t for t, _ in self.commits]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def wait_commits(clients: list[TxnClient], n: int, port: int | None = None, timeout: float = 30.0) -> None:
    """Until every client committed ``n`` more transactions (on ``port``, when given)."""
    def count(c: TxnClient) -> int:
        return len(c.commits) if port is None else c.count_on(port)

    goal = {c.name: count(c) + n for c in clients}
    deadline = time.monotonic() + timeout
    while any(count(c) < goal[c.name] for c in clients):
        if time.monotonic() > deadline:
            late = {c.name: (count(c), c.errors[-1:]) for c in clients if count(c) < goal[c.name]}
            raise AssertionError(f"clients did not commit {n} transactions in {timeout:g}s: {late}")
        time.sleep(0.02)


def request_switchover(demo: DemoCluster, leader: str) -> None:
    """What `pgha switchover --force --no-wait` records: the leader picks the best replica."""
    if not demo.store().set_switchover(Switchover(id=uuid.uuid4().hex, kind="switchover", leader=leader,
                                                  candidate=None)):
        raise AssertionError("a switchover is already pending")


def new_primary(demo: DemoCluster, old: str) -> str | None:
    """The member other than ``old`` that holds the key and publishes itself a running primary."""
    view = demo.view()
    if view.leader is None or view.leader.name == old:
        return None
    m = view.members.get(view.leader.name)
    return view.leader.name if m is not None and m.role == Role.PRIMARY and m.state == "running" else None


@dataclass(frozen=True)
class SwitchoverRun:
    old: str
    new: str
    clients: list[TxnClient]

    @property
    def errors(self) -> dict[str, list[str]]:
        return {c.name: c.errors for c in self.clients}

    @property
    def longest_pause(self) -> float:
        return max(c.max_gap() for c in self.clients)


def switchover_through_bouncers(demo: DemoCluster, commits: int = 20) -> SwitchoverRun:
    """One client per node's PgBouncer writing back to back while the leader hands over."""
    assert demo.state is not None
    demo.wait_healthy(timeout=120)
    demo.wait_bouncers_at_leader(timeout=30)
    view = demo.view()
    assert view.leader is not None
    old = view.leader.name
    clients = [TxnClient(demo.bouncer_dsn(n.name), n.name).start() for n in demo.state.nodes]
    try:
        wait_commits(clients, commits)
        request_switchover(demo, old)
        deadline = time.monotonic() + 60
        new = None
        while new is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no new primary 60 s after a switchover away from {old} was requested")
            new = new_primary(demo, old)
            time.sleep(0.05)
        wait_commits(clients, commits, port=demo.node(new).pg_port, timeout=30)
    finally:
        for c in clients:
            c.stop()
    return SwitchoverRun(old, new, clients)


def bouncer_targets(bouncer: PgBouncer) -> set[tuple[str, int]]:
    """Where PgBouncer's databases point right now (SHOW DATABASES, without the admin console)."""
    rows = bouncer.admin("SHOW DATABASES", timeout=2).dicts()
    return {(str(r["host"]), int(str(r["port"]))) for r in rows if r.get("name") != "pgbouncer"}


@dataclass(frozen=True)
class FailoverRepoint:
    old: str
    new: str
    # Seconds from the first sight of the new leader as a running primary to the moment the
    # last surviving PgBouncer pointed at it (negative: they pointed there before it finished
    # promoting, which they do as soon as it holds the leader key).
    delay: float
    # Seconds from the kill to the new leader running as primary.
    to_primary: float
    targets: dict[str, set[tuple[str, int]]]


def failover_repoint(demo: DemoCluster, timeout: float = 60.0) -> FailoverRepoint:
    """Kill the leader's host (agent, PostgreSQL, PgBouncer); time the surviving PgBouncers' repoint."""
    assert demo.state is not None
    view = demo.view()
    assert view.leader is not None
    old = view.leader.name
    old_target = ("127.0.0.1", demo.node(old).pg_port)
    survivors = {n.name: demo.bouncer(n.name) for n in demo.state.nodes if n.name != old}
    moved: dict[str, tuple[float, set[tuple[str, int]]]] = {}
    killed = time.monotonic()
    kill_host(demo, old)
    new: str | None = None
    promoted = 0.0
    deadline = killed + timeout
    while time.monotonic() < deadline:
        if new is None:
            new = new_primary(demo, old)
            promoted = time.monotonic()
        for name, bouncer in survivors.items():
            try:
                targets = bouncer_targets(bouncer)
            except PgBouncerError:
                continue
            now = time.monotonic()
            if targets and old_target not in targets and len(targets) == 1:
                if name not in moved or moved[name][1] != targets:
                    moved[name] = (now, targets)
            else:
                moved.pop(name, None)
        if new is not None:
            want = {("127.0.0.1", demo.node(new).pg_port)}
            if all(name in moved and moved[name][1] == want for name in survivors):
                last = max(moved[name][0] for name in survivors)
                return FailoverRepoint(old, new, last - promoted, promoted - killed,
                                       {n: moved[n][1] for n in survivors})
        time.sleep(0.02)
    raise AssertionError(f"after killing {old}: new primary {new}, PgBouncer targets {moved}")
