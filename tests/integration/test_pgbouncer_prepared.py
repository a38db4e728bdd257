"""Protocol-level prepared statements through the demo's PgBouncer in transaction mode, as they are today.

Debian 12 ships PgBouncer 1.18, which does not track prepared statements: a client's next transaction
may run on a server connection where its statement was never prepared, or where another client's
statement of the same name already is. pgbench shows it: -M prepared fails, -M extended (the extended
protocol with unnamed statements) and -M simple work. docs/configuration.md#pgbouncer lists each client's
setting. From PgBouncer 1.21 the demo's ini sets max_prepared_statements (tests/unit/test_demo_pgbouncer.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from pgha.demo.pgbouncer_process import PREPARED_STATEMENTS_SINCE, pgbouncer_version
from tests.support.pgbouncer import APP_PASSWORD, APP_USER, Bouncer, PgServer, scratch_dir, start_bouncer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bouncer() -> Iterator[tuple[PgServer, Bouncer]]:
    """A PostgreSQL with pgbench's tables behind a PgBouncer in transaction mode.

    Two server connections for four clients: a client's next transaction surely runs on a server
    connection another client used, so the failure shows within a few transactions, not by chance.
    """
    parent = scratch_dir("pgha-prepared-")
    server = PgServer.create(parent, "one")
    b: Bouncer | None = None
    try:
        server.start()
        pgbench(server.port, "-i", "-s", "1", "-q")
        b = start_bouncer(server, default_pool_size=2)
        yield server, b
    finally:
        if b is not None:
            b.close()
        server.stop()
        shutil.rmtree(parent, ignore_errors=True)


def pgbench(port: int, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pgbench", *args, "-h", "127.0.0.1", "-p", str(port), "-U", APP_USER, "postgres"],
                          env={**os.environ, "PGPASSWORD": APP_PASSWORD}, capture_output=True, text=True,
                          timeout=120, check=check)


def select_only(port: int, mode: str) -> subprocess.CompletedProcess[str]:
    return pgbench(port, "-n", "-S", "-M", mode, "-c", "4", "-j", "2", "-t", "50", check=False)


def test_the_installed_pgbouncer_says_its_version() -> None:
    assert pgbouncer_version() is not None  # Debian 12: (1, 18)


def test_prepared_mode_fails_through_pgbouncer_1_18(bouncer: tuple[PgServer, Bouncer]) -> None:
    if (pgbouncer_version() or (0, 0)) >= PREPARED_STATEMENTS_SINCE:
        pytest.skip("PgBouncer >= 1.21 with max_prepared_statements: prepared mode works")
    server, b = bouncer
    res = select_only(b.port, "prepared")
    # The failing clients abort (pgbench's exit status depends on whether every client did); what
    # always shows is PostgreSQL's error about a statement another client prepared, or never did.
    assert 'ERROR:  prepared statement "P_0" does not exist' in res.stderr or \
        'ERROR:  prepared statement "P_0" already exists' in res.stderr, res.stderr
    # The same run straight to PostgreSQL works: the pooler, not the server, is the problem.
    direct = select_only(server.port, "prepared")
    assert direct.returncode == 0, direct.stderr


@pytest.mark.parametrize("mode", ["extended", "simple"])
def test_unnamed_statements_work_through_pgbouncer(bouncer: tuple[PgServer, Bouncer], mode: str) -> None:
    res = select_only(bouncer[1].port, mode)
    assert res.returncode == 0, res.stderr
    assert "number of transactions actually processed: 200/200" in res.stdout
