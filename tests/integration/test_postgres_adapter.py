"""The PostgreSQL adapter against real PostgreSQL 15: lifecycle, replication, promotion, rewind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgha.core.model import DataDir, LocalPostgres, PgRunState
from pgha.postgres import rewind
from pgha.postgres.node import PostgresError, PostgresNode, Upstream
from pgha.postgres.processes import children_of
from tests.support.pg import PgSandbox

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.access("/usr/lib/postgresql/15/bin/postgres", os.X_OK),
                       reason="needs PostgreSQL 15 (/usr/lib/postgresql/15/bin)"),
]


def upstream(node: PostgresNode) -> Upstream:
    return Upstream(node.config.name, node.config.postgresql.listen, node.config.postgresql.port)


def sql(node: PostgresNode, query: str, *args: Any) -> list[tuple[Any, ...]]:
    layout = node.layout
    with psycopg.connect(host=str(layout.socket_dir), port=node.config.postgresql.port, user="postgres",
                         dbname="postgres", autocommit=True, connect_timeout=3) as conn:
        cur = conn.execute(query, args or None)
        return cur.fetchall() if cur.description else []


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def streaming(node: PostgresNode, timeline: int | None = None) -> Callable[[], LocalPostgres | None]:
    def check() -> LocalPostgres | None:
        pg = node.observe()
        ok = pg.receiver_status == "streaming" and (timeline is None or pg.timeline == timeline)
        return pg if ok else None
    return check


def test_primary_initdb_start_observe_and_roles(pg_sandbox: PgSandbox) -> None:
    node = pg_sandbox.node("node1")
    sid = node.initdb()
    assert sid.isdigit()
    data = node.layout.data
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert (data / "postgresql.base.conf").is_file()
    assert node.configure({"work_mem": "8MB"}, None) is False
    assert not (data / "standby.signal").exists()
    hba = (data / "pg_hba.conf").read_text()
    assert hba.index("local all all trust") < hba.index("host all all all scram-sha-256")
    node.start(60)
    pg_sandbox.track(node)

    pg = node.observe()
    assert pg.data_dir == DataDir.VALID and pg.run_state == PgRunState.RUNNING
    assert pg.system_id == sid and pg.control_state == "in production"
    assert pg.in_recovery is False and pg.timeline == 1
    assert pg.wal_lsn is not None and pg.wal_lsn > 0
    assert pg.received_lsn is None and pg.configured_upstream is None and pg.pending_restart is False
    assert node.postmaster_pid() == int((data / "postmaster.pid").read_text().split()[0])
    assert node.log_path.is_file()

    node.bootstrap_roles()
    node.bootstrap_roles()  # idempotent
    assert sql(node, "SELECT rolreplication, rolcanlogin FROM pg_roles WHERE rolname = 'replicator'") == \
        [(True, True)]
    cfg = node.config.postgresql
    # The passwords work over TCP (scram); they never appear in the server log.
    for cred in (cfg.replication, cfg.superuser):
        with psycopg.connect(host="127.0.0.1", port=cfg.port, user=cred.username, password=cred.password,
                             dbname="postgres", connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    log_text = node.log_path.read_text()
    assert cfg.replication.password not in log_text and cfg.superuser.password not in log_text

    node.checkpoint()
    node.stop("fast", 30)
    node.stop("fast", 30)  # already stopped: no error
    pg = node.observe()
    assert pg.run_state == PgRunState.STOPPED and pg.control_state == "shut down"
    assert pg.timeline == 1 and pg.wal_lsn is not None and pg.system_id == sid


def test_clone_stream_slots_promote_and_rewind(pg_sandbox: PgSandbox) -> None:
    primary = pg_sandbox.primary("node1")
    replica = pg_sandbox.node("node-2")
    slot = "node_2"
    primary.sync_slots(("node1", "node-2", "node3"))
    assert sorted(r[0] for r in sql(primary, "SELECT slot_name FROM pg_replication_slots")) == ["node3", slot]
    sql(primary, "CREATE TABLE t (x int)")
    sql(primary, "INSERT INTO t SELECT generate_series(1, 1000)")

    calls: list[tuple[int, int | None, str]] = []
    replica.clone(upstream(primary), lambda done, total, msg: calls.append((done, total, msg)))
    assert calls and any(total for _, total, _ in calls)
    done, total, _ = calls[-1]
    assert total is not None and done == total
    assert (replica.layout.data / "standby.signal").exists()
    conf = (replica.layout.data / "postgresql.conf").read_text()
    assert "# pgha upstream: node1" in conf and "primary_slot_name = 'node_2'" in conf
    assert primary.config.postgresql.replication.password not in conf
    assert replica.observe().configured_upstream == "node1"

    replica.start(60)
    pg_sandbox.track(replica)
    pg = wait_for("the replica to stream", streaming(replica))
    assert pg.in_recovery is True and pg.following == "node1" and pg.timeline == 1
    assert pg.received_lsn and pg.replayed_lsn and pg.wal_lsn is None
    assert sql(primary, "SELECT active FROM pg_replication_slots WHERE slot_name = %s", slot) == [(True,)]
    # flush_lsn is NULL until the walsender has its first reply: wait for that too.
    rows = wait_for("the primary to list the replica",
                    lambda: [r for r in primary.observe().replication if r.flush_lsn])
    assert rows[0].application_name == "node-2" and rows[0].state == "streaming"
    assert rows[0].sync_state == "async" and rows[0].flush_lsn

    # Slots: only pgha's are dropped; an active one is kept until its walsender is gone.
    sql(primary, "SELECT pg_create_physical_replication_slot('operator_slot')")
    primary.sync_slots(("node1",))
    names = sorted(r[0] for r in sql(primary, "SELECT slot_name FROM pg_replication_slots"))
    assert names == [slot, "operator_slot"]
    primary.sync_slots(("node1", "node-2"))

    # Promote the replica: timeline 2, a primary's files.
    sql(primary, "INSERT INTO t VALUES (1001)")
    wait_for("replay", lambda: sql(replica, "SELECT count(*) FROM t") == [(1001,)])
    replica.promote(30)
    pg = replica.observe()
    assert pg.in_recovery is False and pg.timeline == 2 and pg.configured_upstream is None
    assert not (replica.layout.data / "standby.signal").exists()
    assert "primary_conninfo" not in (replica.layout.data / "postgresql.conf").read_text()
    replica.sync_slots(("node1", "node-2"))
    assert sql(replica, "SELECT slot_name FROM pg_replication_slots") == [("node1",)]

    # The old primary diverges, then is rewound onto the new one and follows it on timeline 2.
    sql(primary, "INSERT INTO t SELECT generate_series(1, 5000)")
    primary.stop("immediate", 30)
    # pg_rewind 15 reads the source's timeline from its pg_control: the new primary checkpoints
    # on timeline 2 first (else "no rewind required", and the old primary cannot follow).
    rewind.checkpoint_source(primary.config, primary.layout, upstream(replica), True)
    assert sql(replica, "SELECT timeline_id FROM pg_control_checkpoint()") == [(2,)]
    assert primary.observe().control_state == "in production"
    primary.rewind(upstream(replica))
    assert primary.configure(primary.config.postgresql.parameters, upstream(replica)) is False
    conf = (primary.layout.data / "postgresql.conf").read_text()
    assert "# pgha upstream: node-2" in conf and "primary_slot_name = 'node1'" in conf
    primary.start(60)
    pg_sandbox.track(primary)
    pg = wait_for("the old primary to stream on timeline 2", streaming(primary, timeline=2))
    assert pg.following == "node-2" and pg.in_recovery is True
    sql(replica, "INSERT INTO t VALUES (-1)")
    wait_for("replay on the rewound node", lambda: sql(primary, "SELECT count(*) FROM t") == [(1002,)])


def test_configure_detects_restart(pg_sandbox: PgSandbox) -> None:
    node = pg_sandbox.primary("node1")
    params: dict[str, str | int | float | bool] = dict(node.config.postgresql.parameters)
    assert node.configure(params, None) is False
    assert node.configure({**params, "work_mem": "16MB"}, None, "node2") is False
    node.reload()
    wait_for("reload", lambda: node.observe().synchronous_standby_names == "node2")
    # A running primary told to become a standby needs a restart.
    assert node.configure(params, None, standby=True) is True
    assert node.configure(params, None) is False
    # Other settings that need one do not force it: they show as pending (an adopted server,
    # an edit-config) until the operator's `pgha restart`.
    assert node.configure({**params, "shared_buffers": "32MB"}, None) is False
    node.reload()
    wait_for("pending_restart", lambda: node.observe().pending_restart)


def test_missing_binary_is_one_clear_line(pg_sandbox: PgSandbox, tmp_path: Path) -> None:
    node = pg_sandbox.node("node1", bin_dir="/nonexistent/bin")
    with pytest.raises(PostgresError) as err:
        node.initdb()
    assert str(err.value) == ("postgresql.bin_dir: /nonexistent/bin/initdb not found; "
                              "install postgresql-15 or fix bin_dir")
    assert node.observe().data_dir == DataDir.EMPTY


def test_port_in_use(pg_sandbox: PgSandbox) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        node = pg_sandbox.node("node1", port=port)
        node.initdb()
        node.configure({}, None)
        with pytest.raises(PostgresError) as err:
            node.start(20)
        msg = str(err.value)
        assert f"127.0.0.1:{port} is already in use" in msg and "\n" not in msg
        assert node.observe().run_state == PgRunState.STOPPED
    finally:
        blocker.close()


def test_observe_stopped_empty_invalid_and_crashed(pg_sandbox: PgSandbox) -> None:
    node = pg_sandbox.node("node1")
    assert node.observe() == LocalPostgres(data_dir=DataDir.EMPTY)  # missing
    node.layout.data.mkdir(mode=0o700)
    assert node.observe().data_dir == DataDir.EMPTY  # empty
    (node.layout.data / "junk").write_text("x")
    pg = node.observe()
    assert pg.data_dir == DataDir.INVALID and pg.run_state == PgRunState.STOPPED
    assert node.postmaster_pid() is None
    node.stop("fast", 5)  # nothing to stop
    shutil.rmtree(node.layout.data)

    node.initdb()
    node.configure({}, None)
    started = time.monotonic()
    pg = node.observe()
    assert time.monotonic() - started < 2
    assert pg.data_dir == DataDir.VALID and pg.run_state == PgRunState.STOPPED and pg.in_recovery is None
    node.start(60)
    pg_sandbox.track(node)
    pid = node.postmaster_pid()
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for("the postmaster to die", lambda: not os.path.exists(f"/proc/{pid}"))
    pg = node.observe()
    assert pg.run_state == PgRunState.CRASHED and pg.control_state == "in production"
    assert node.postmaster_pid() is None
    # The stale postmaster.pid does not prevent a restart (crash recovery runs at start).
    node.start(60)
    pg_sandbox.track(node)
    assert node.observe().run_state == PgRunState.RUNNING

    # Nor does one that names a process which still exists but is no running postgres: a killed
    # postmaster not reaped yet (a zombie; PostgreSQL itself refuses to start while its PID
    # exists), or after a reboot another program.
    pid = node.postmaster_pid()
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for("the postmaster to die", lambda: not os.path.exists(f"/proc/{pid}"))
    # Owned by the postgres user, as a dead postmaster is: PostgreSQL ignores PIDs it may not signal.
    zombie = subprocess.Popen(["setpriv", "--reuid", "postgres", "--regid", "postgres", "--clear-groups", "true"])
    try:
        wait_for("a zombie", lambda: Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")
        socket_lock = node.layout.socket_dir / f".s.PGSQL.{node.config.postgresql.port}.lock"
        for lock in (node.layout.pid_file, socket_lock):  # both name the dead postmaster
            lines = lock.read_text().split("\n")
            lock.write_text("\n".join([str(zombie.pid), *lines[1:]]))
        assert node.observe().run_state == PgRunState.CRASHED
        node.start(60)
        pg_sandbox.track(node)
        assert node.observe().run_state == PgRunState.RUNNING
    finally:
        zombie.wait()


def test_wipe_keeps_one_old_copy(pg_sandbox: PgSandbox) -> None:
    node = pg_sandbox.node("node1")
    assert node.wipe() == ""
    for i in range(2):
        node.layout.data.mkdir(mode=0o700)
        (node.layout.data / "PG_VERSION").write_text("15\n")
        where = node.wipe()
        assert Path(where).is_dir() and not node.layout.data.exists()
        if i == 0:
            time.sleep(1.1)
    olds = list(node.layout.parent.glob("data.failed-*"))
    assert [str(p) for p in olds] == [where]


def test_clone_and_rewind_failures_are_clear(pg_sandbox: PgSandbox) -> None:
    from tests.support.pg import free_port

    nowhere = Upstream("ghost", "127.0.0.1", free_port())
    node = pg_sandbox.node("node1")
    with pytest.raises(PostgresError) as err:
        node.clone(nowhere, lambda done, total, msg: None)
    assert str(err.value).startswith("clone from ghost failed: ") and "\n" not in str(err.value)
    assert not node.layout.data.exists()

    node.initdb()
    node.configure({}, None, standby=True)
    before = (node.layout.data / "postgresql.conf").read_text()
    with pytest.raises(PostgresError) as err:
        node.rewind(nowhere)
    assert str(err.value).startswith("rewind against ghost failed: ") and "\n" not in str(err.value)
    assert (node.layout.data / "postgresql.conf").read_text() == before
    assert (node.layout.data / "standby.signal").exists()


def _running_primary(pg_sandbox: PgSandbox) -> tuple[PostgresNode, int]:
    node = pg_sandbox.node("node1")
    node.initdb()
    node.configure({}, None)
    node.start(60)
    pg_sandbox.track(node)
    pid = node.postmaster_pid()
    assert pid
    return node, pid


def test_a_hung_fast_shutdown_ends_immediately_and_says_what_hung(pg_sandbox: PgSandbox) -> None:
    """A fast shutdown cannot be called off: PostgreSQL refuses every connection until it ends.  One
    that hangs (here the checkpointer is stopped, so the shutdown checkpoint never comes) is finished
    as -m immediate would, and the error names each process with its state (T: stopped)."""
    node, pid = _running_primary(pg_sandbox)
    checkpointer = next(c for c in children_of(pid)
                        if "checkpointer" in Path(f"/proc/{c}/cmdline").read_text(errors="replace"))
    os.kill(checkpointer, signal.SIGSTOP)
    try:
        with pytest.raises(PostgresError) as err:
            node.stop("fast", 2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(checkpointer, signal.SIGCONT)
    msg = str(err.value)
    assert "still ran after 2 s, so it was stopped at once" in msg and "checkpointer (T)" in msg, msg
    pg = node.observe()
    # Stopped either way, and not cleanly: PostgreSQL's own immediate shutdown SIGKILLs a child that
    # ignores SIGQUIT after 5 s and removes postmaster.pid (stopped); our kill leaves it (crashed).
    assert pg.run_state in (PgRunState.STOPPED, PgRunState.CRASHED), pg.run_state
    assert pg.control_state == "in production"
    node.start(60)  # crash recovery
    pg_sandbox.track(node)
    assert node.observe().run_state == PgRunState.RUNNING


def test_an_immediate_stop_that_hangs_is_killed_without_a_second_wait(pg_sandbox: PgSandbox) -> None:
    """Fencing stops PostgreSQL with -m immediate; when even that does not end (here the postmaster is
    SIGSTOPped), it is killed at once: a fence must not wait out a second timeout."""
    node, pid = _running_primary(pg_sandbox)
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(PostgresError, match="stopped at once"):
        node.stop("immediate", 1)
    assert time.monotonic() - started < 5  # 1 s, then the kill; never 1 + 5
    assert node.observe().run_state in (PgRunState.STOPPED, PgRunState.CRASHED)
