"""`pgha generate-config … | pgha validate -c -`, with and without a running PostgreSQL to read from.

Real processes joined by a real pipe, as an operator types it; the passwords appear on neither stderr.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pgha.config import PostgresConfig
from tests.support.pg import PgSandbox
from tests.support.procs import free_port

pytestmark = pytest.mark.integration

PGHA = str(Path(sys.executable).with_name("pgha"))


def pipe(generate_args: list[str]) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the pipe through a shell; return validate's result and what generate-config wrote."""
    gen = " ".join(shlex.quote(a) for a in [PGHA, "generate-config", *generate_args])
    script = f"set -o pipefail; {gen} 2>gen.err | tee generated.yaml | {shlex.quote(PGHA)} validate -c -"
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False,
                          cwd=os.getcwd()), Path("generated.yaml").read_text()


def passwords(text: str) -> list[str]:
    data = yaml.safe_load(text)
    return [data["postgresql"]["superuser"]["password"], data["postgresql"]["replication"]["password"],
            data["api"]["auth"]["password"]]


def assert_no_secret_printed(res: subprocess.CompletedProcess[str], generated: str) -> None:
    printed = res.stdout + res.stderr + Path("gen.err").read_text()
    assert not any(p in printed for p in passwords(generated))


def test_pipe_without_a_running_postgresql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    os.chmod(tmp_path, 0o755)
    res, generated = pipe(["--cluster", "main", "--name", "node1", "--etcd", "http://127.0.0.1:2379",
                           "--vip", "198.19.7.100/24", "--data-dir", str(tmp_path / "data"), "--pg-version", "15",
                           "--port", str(free_port()), "--api-listen", f"127.0.0.1:{free_port()}"])
    assert (res.returncode, res.stdout.strip()) == (0, "<stdin>: OK (cluster main, node node1)"), res.stderr
    assert "PostgreSQL settings are defaults" in generated
    assert_no_secret_printed(res, generated)
    assert not (tmp_path / "data").exists()


@pytest.fixture(scope="module")
def running() -> Iterator[PostgresConfig]:
    """One running PostgreSQL 15 (initdb'ed by pgha's adapter) with a few settings of its own."""
    box = PgSandbox()
    try:
        node = box.primary("gen1", parameters={"shared_buffers": "24MB", "max_connections": 30, "fsync": False,
                                               "work_mem": "3MB"})
        yield node.config.postgresql
    finally:
        box.close()


def test_pipe_reads_the_running_postgresql(running: PostgresConfig, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pg = running
    monkeypatch.chdir(tmp_path)
    api = f"127.0.0.1:{free_port()}"
    # Found through the data directory's postmaster.pid (socket and port), read as its owner.
    res, generated = pipe(["--cluster", "main", "--name", "gen1", "--data-dir", pg.data_dir, "--api-listen", api])
    assert res.returncode == 0, res.stderr
    data = yaml.safe_load(generated)
    assert (data["postgresql"]["port"], data["postgresql"]["listen"]) == (pg.port, "127.0.0.1")
    assert data["postgresql"]["bin_dir"] == "/usr/lib/postgresql/15/bin"
    params = data["postgresql"]["parameters"]
    assert {k: params[k] for k in ("shared_buffers", "max_connections", "work_mem")} == \
        {"shared_buffers": "24MB", "max_connections": "30", "work_mem": "3MB"}
    # pgha sets these itself: never carried over from the server.
    assert not {"port", "listen_addresses", "unix_socket_directories", "data_directory", "wal_level"} & set(params)
    assert "read from the running server (postmaster pid" in generated
    assert_no_secret_printed(res, generated)

    # The same through --pg-dsn (the socket directory and port of that server).
    pid_lines = (Path(pg.data_dir) / "postmaster.pid").read_text().split("\n")
    dsn = f"host={pid_lines[4].strip()} port={pg.port} dbname=postgres user=postgres"
    Path("generated.yaml").unlink()
    res, generated = pipe(["--cluster", "main", "--name", "gen1", "--pg-dsn", dsn, "--api-listen", api])
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load(generated)["postgresql"]["parameters"] == params
    assert yaml.safe_load(generated)["postgresql"]["data_dir"] == pg.data_dir


def test_a_running_server_that_disagrees_with_the_flags_is_one_line(running: PostgresConfig) -> None:
    pg = running

    def generate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PGHA, "generate-config", "--cluster", "main", *args], capture_output=True,
                              text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)

    res = generate("--data-dir", pg.data_dir, "--port", str(pg.port + 1))
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr == f"pgha: --port {pg.port + 1} but the running server has {pg.port}; drop --port\n"
    res = generate("--pg-dsn", f"host=127.0.0.1 port={free_port()} user=postgres connect_timeout=2")
    assert res.returncode == 1 and len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith("pgha: cannot read the running PostgreSQL (connection")
    assert "pass --pg-dsn with a superuser connection" in res.stderr
    # A malformed DSN: libpq would quote a piece of it, possibly of the password; we do not.
    res = generate("--pg-dsn", "host=/tmp user=postgres password=s3cr3t xyzzy")
    assert res.returncode == 1 and "xyzzy" not in res.stderr and "s3cr3t" not in res.stderr
    assert res.stderr.startswith("pgha: --pg-dsn: not a libpq connection string;")
