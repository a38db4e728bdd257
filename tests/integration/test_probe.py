"""`pgha probe` against real PostgreSQL 15 servers this module starts and stops itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgha.cli.main import _register, cli
from pgha.probe import Probe, probe_each
from tests.support.probe_pg import ProbePG, pg_root, running_pg
from tests.support.procs import free_port, stop_pid

pytestmark = pytest.mark.integration

JSON_KEYS = {"acknowledged", "failed", "max_gap_ms", "max_gap_at", "missing", "duration_s", "errors",
             "run_id"}


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    with pg_root() as r:
        yield r


@pytest.fixture(scope="module")
def rw(root: Path) -> Iterator[ProbePG]:
    with running_pg(root, "rw") as pg:
        yield pg


@pytest.fixture(scope="module")
def ro(root: Path) -> Iterator[ProbePG]:
    with running_pg(root, "ro", "default_transaction_read_only = on\n") as pg:
        yield pg


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def rows_of(pg: ProbePG, run_id: str) -> list[int]:
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        try:
            rows = conn.execute("SELECT seq FROM pgha_probe WHERE run_id = %s ORDER BY seq", (run_id,))
        except psycopg.errors.UndefinedTable:
            return []  # the probe has not created its table yet
        return [r[0] for r in rows]


def test_acknowledged_writes_all_present_through_multi_host_dsn(rw: ProbePG, ro: ProbePG) -> None:
    # The read-only server comes first: target_session_attrs=read-write must skip it.
    dsn = (f"host=127.0.0.1,127.0.0.1 port={ro.port},{rw.port} user=postgres dbname=postgres"
           " target_session_attrs=read-write")
    p = Probe(dsn, interval=0.005)
    p.start()
    wait_until("20 acknowledged writes", lambda: p.acknowledged >= 20)
    report = p.stop()
    assert report.connected
    assert report.acknowledged >= 20
    assert report.missing == 0
    assert report.max_gap_ms > 0 and report.max_gap_at is not None
    assert report.mean_interval_ms is not None
    assert len(rows_of(rw, report.run_id)) >= report.acknowledged
    d = json.loads(report.to_json())
    assert set(d) >= JSON_KEYS
    assert d["acknowledged"] == report.acknowledged and d["run_id"] == report.run_id


def test_immediate_stop_and_restart_is_a_counted_gap_without_loss(rw: ProbePG) -> None:
    p = Probe(rw.dsn, interval=0.005)
    p.start()
    try:
        wait_until("writes before the crash", lambda: p.acknowledged >= 10)
        rw.crash()
        down_since = time.monotonic()
        before = p.acknowledged
        time.sleep(0.3)
        rw.start()
        down_for = time.monotonic() - down_since
        wait_until("writes after the restart", lambda: p.acknowledged >= before + 10)
    finally:
        report = p.stop()
    assert report.failed >= 1
    assert report.max_gap_ms >= down_for * 1000  # the server was down at least that long
    assert report.missing == 0
    assert report.errors and sum(c for _, c in report.errors) == report.failed


def test_deleted_acknowledged_row_is_reported_missing(rw: ProbePG) -> None:
    p = Probe(rw.dsn, interval=0.005)
    p.start()
    try:
        wait_until("writes to lose", lambda: p.acknowledged >= 10)
        with psycopg.connect(rw.dsn, autocommit=True) as conn:
            lost = sorted(r[0] for r in conn.execute(
                "DELETE FROM pgha_probe WHERE run_id = %s AND seq IN"
                " (SELECT seq FROM pgha_probe WHERE run_id = %s ORDER BY seq LIMIT 2) RETURNING seq",
                (p.run_id, p.run_id)))
    finally:
        report = p.stop()
    assert len(lost) == 2
    assert report.missing == 2
    assert list(report.missing_seqs) == lost


def test_probe_each_finds_only_the_writable_server(rw: ProbePG, ro: ProbePG) -> None:
    assert probe_each([rw.dsn, ro.dsn]) == {rw.dsn: True, ro.dsn: False}


def test_refused_connection_counts_as_not_accepted() -> None:
    dsn = f"host=127.0.0.1 port={free_port()} user=postgres"
    assert probe_each([dsn]) == {dsn: False}


def test_write_blocked_on_synchronous_replication_is_not_accepted(root: Path) -> None:
    with running_pg(root, "sync", "synchronous_standby_names = 'nobody'\n") as pg:
        local = pg.dsn + " options='-c synchronous_commit=local'"
        with psycopg.connect(local, autocommit=True) as conn:
            conn.execute("CREATE TABLE pgha_probe(run_id text, seq bigint, at timestamptz default now(),"
                         " primary key(run_id, seq))")
        assert probe_each([pg.dsn], timeout=0.3) == {pg.dsn: False}
        # The cancelled commit did happen locally: "returned" is not the same as "acknowledged in time".
        with psycopg.connect(local, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pgha_probe WHERE run_id LIKE 'each-%'").fetchone()
        assert row == (1,)

        p = Probe(pg.dsn, interval=0.01, timeout=0.2)
        p.start()
        wait_until("two timed-out writes", lambda: p.failed >= 2)
        report = p.stop()
        assert report.acknowledged == 0 and report.connected
        assert any("no answer within" in m for m, _ in report.errors)


def test_frozen_server_does_not_hang_the_probe(root: Path) -> None:
    with running_pg(root, "frozen") as pg:
        p = Probe(pg.dsn, interval=0.01, timeout=0.3)
        p.start()
        frozen: list[int] = []
        try:
            wait_until("writes before the freeze", lambda: p.acknowledged >= 5)
            pm = pg.pid()
            assert pm is not None
            children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pm)], capture_output=True, text=True)
            for pid in [pm, *map(int, children.stdout.split())]:
                os.kill(pid, signal.SIGSTOP)
                frozen.append(pid)
            wait_until("a write stopped by the watchdog", lambda: p.failed >= 1)
            assert probe_each([pg.dsn], timeout=0.3) == {pg.dsn: False}
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        before = p.acknowledged
        wait_until("writes after the thaw", lambda: p.acknowledged > before)
        report = p.stop()
    assert report.missing == 0
    assert any("no answer within" in m for m, _ in report.errors)


# --- CLI ------------------------------------------------------------------------------


def invoke(*args: str) -> tuple[int, str, str]:
    _register()
    result = CliRunner().invoke(cli, ["probe", *args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_malformed_dsn_is_one_masked_line() -> None:
    code, out, err = invoke("host=127.0.0.1 password=hunter2 nonsense")
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "invalid DSN" in err and "hunter2" not in err


def test_cli_never_connects_exits_2_with_report() -> None:
    code, out, err = invoke(f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/postgres",
                            "--duration", "0.3", "--json")
    assert code == 2
    d = json.loads(out)
    assert d["connected"] is False and d["acknowledged"] == 0 and d["failed"] >= 1
    assert "never connected" in err
    assert "hunter2" not in out + err


def test_cli_json_report_parses_and_masks_password(rw: ProbePG) -> None:
    code, out, err = invoke(rw.dsn + " password=hunter2", "--duration", "0.3", "--json", "--interval-ms", "5")
    assert code == 0, err
    d: dict[str, Any] = json.loads(out)
    assert set(d) >= JSON_KEYS
    assert d["acknowledged"] >= 1 and d["missing"] == 0
    assert "hunter2" not in out + err


def test_cli_text_report_and_bad_table_name(rw: ProbePG) -> None:
    code, out, _ = invoke(rw.dsn, "--duration", "0.2", "--table", "probe_alt")
    assert code == 0
    assert "acknowledged writes" in out and "missing after run" in out
    code, _, err = invoke(rw.dsn, "--table", "x; drop table y")
    assert code == 1 and "invalid table name" in err


def test_ctrl_c_prints_the_report_so_far(rw: ProbePG) -> None:
    exe = Path(sys.executable).with_name("pgha")
    proc = subprocess.Popen([str(exe), "probe", rw.dsn + " password=hunter2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        assert "hunter2" not in banner and "(run " in banner
        run_id = banner.rsplit("(run ", 1)[1].rstrip(")\n")
        wait_until("the CLI's first writes", lambda: len(rows_of(rw, run_id)) >= 5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        stop_pid(proc.pid)
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()  # also after a timeout: no ResourceWarning in a later test
    assert proc.returncode == 130, err
    assert f"run id               {run_id}" in out
    assert "missing after run    0" in out
