"""The adapter's pure parts: LSNs, pg_controldata, managed file contents, progress lines."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pgha.config import Credentials, NodeConfig, PeerSSLConfig, PostgresConfig
from pgha.core.model import LocalPostgres, PgRunState
from pgha.postgres import conf, libpq
from pgha.postgres.clone import parse_progress
from pgha.postgres.common import Upstream
from pgha.postgres.controldata import parse
from pgha.postgres.layout import Layout
from pgha.postgres.lsn import format_lsn, parse_lsn, timeline_of_walfile
from pgha.postgres.observe import carry_replica_timeline


def test_lsn_round_trip() -> None:
    assert parse_lsn("0/3000060") == 0x3000060
    assert parse_lsn("1A/FF") == (0x1A << 32) | 0xFF
    assert parse_lsn(None) is None and parse_lsn("") is None
    assert format_lsn(parse_lsn("16/B374D848") or 0) == "16/B374D848"
    with pytest.raises(ValueError):
        parse_lsn("3000060")
    assert timeline_of_walfile("000000020000000000000003") == 2


CONTROLDATA = """\
pg_control version number:            1300
Database system identifier:           7305392174124577046
Database cluster state:               shut down in recovery
Latest checkpoint location:           0/5000060
Latest checkpoint's REDO location:    0/5000028
Latest checkpoint's TimeLineID:       1
Minimum recovery ending location:     0/6000000
Min recovery ending loc's timeline:   2
"""


def test_controldata() -> None:
    cd = parse(CONTROLDATA)
    assert cd.system_id == "7305392174124577046" and cd.state == "shut down in recovery"
    assert cd.checkpoint_lsn == 0x5000060 and cd.checkpoint_redo_lsn == 0x5000028
    assert cd.timeline == 1 and cd.min_recovery_timeline == 2 and cd.latest_timeline == 2
    assert parse("").system_id is None


def config() -> NodeConfig:
    return NodeConfig(cluster="c", name="Node-1", postgresql=PostgresConfig(
        data_dir="/srv/pg/data", port=5433,
        replication=Credentials("repl user", "p:w\\d"), superuser=Credentials("postgres", "s'x"),
        pg_hba=("hostssl all all 10.0.0.0/8 scram-sha-256",)))


def test_postgresql_conf_for_a_replica() -> None:
    cfg = config()
    text = conf.render_postgresql_conf(cfg, Layout.of(cfg), {"work_mem": "8MB", "port": 1, "Fsync": False},
                                       Upstream("node2", "10.0.0.2", 5432), "")
    lines = text.splitlines()
    assert lines[3] == "include 'postgresql.base.conf'"
    assert "port = 5433" in lines and "work_mem = '8MB'" in lines and "fsync = off" in lines
    assert "# ignored (set by pgha): port" in lines
    assert "unix_socket_directories = '/srv/pg/pg_socket'" in lines
    assert "primary_slot_name = 'node_1'" in lines and "recovery_target_timeline = 'latest'" in lines
    assert conf.read_upstream(text) == ("node2", "10.0.0.2:5432")
    conninfo = next(ln for ln in lines if ln.startswith("primary_conninfo"))
    assert "application_name=Node-1" in conninfo and "passfile=/srv/pg/pgha.pgpass" in conninfo
    assert "user=''repl user''" in conninfo and "p:w" not in conninfo
    primary = conf.without_upstream(text)
    assert conf.read_upstream(primary) == (None, None) and "primary_conninfo" not in primary


def test_hba_and_passfile() -> None:
    cfg = config()
    hba = conf.render_hba(cfg).splitlines()
    assert hba.index("hostssl all all 10.0.0.0/8 scram-sha-256") < hba.index("local all all trust")
    assert 'host replication "repl user" all scram-sha-256' in hba
    peers = {("10.0.0.2", 5432), ("node3.example", 5433), ("fd00::3", 5432), ("evil\n*", 5432), ("a:b\\c", 1)}
    assert libpq.render_passfile(cfg, peers).splitlines() == [
        "localhost:*:*:repl user:p\\:w\\\\d", "localhost:*:*:postgres:s'x",
        "10.0.0.2:5432:*:repl user:p\\:w\\\\d", "10.0.0.2:5432:*:postgres:s'x",
        "fd00\\:\\:3:5432:*:repl user:p\\:w\\\\d", "fd00\\:\\:3:5432:*:postgres:s'x",
        "node3.example:5433:*:repl user:p\\:w\\\\d", "node3.example:5433:*:postgres:s'x",
    ]
    assert [ln.split(":")[0] for ln in libpq.render_passfile(cfg, set()).splitlines()] == ["localhost"] * 2


def test_peer_connections_verify_the_server_and_require_scram_where_libpq_can(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "pg-ca.pem"
    ca.write_text("x")
    cfg = config()
    assert libpq.security_options(cfg, 150000) == {"sslmode": "prefer"}
    assert libpq.security_options(cfg, 160000) == {"sslmode": "prefer", "require_auth": "scram-sha-256"}
    secured = replace(cfg, postgresql=replace(cfg.postgresql, ssl=PeerSSLConfig(sslrootcert=str(ca))))
    assert libpq.security_options(secured, 150000) == {"sslmode": "verify-full", "sslrootcert": str(ca)}
    off = replace(secured, postgresql=replace(secured.postgresql, require_auth=""))
    assert "require_auth" not in libpq.security_options(off, 170000)
    monkeypatch.setattr(libpq, "tools_version", lambda bin_dir: 160004)
    conninfo = conf.primary_conninfo(secured, Layout.of(secured), Upstream("node2", "10.0.0.2", 5432))
    assert f"sslmode=verify-full sslrootcert={ca} require_auth=scram-sha-256" in conninfo
    monkeypatch.setattr(libpq, "tools_version", lambda bin_dir: 150018)
    assert "require_auth" not in conf.primary_conninfo(secured, Layout.of(secured), Upstream("n2", "h", 1))


def test_a_replica_gives_up_a_frozen_upstream() -> None:
    """Keepalives never fire while the WAL receiver's feedback waits for an ACK: tcp_user_timeout does,
    and it bounds the connect of PostgreSQL 15's WAL receiver, which ignores connect_timeout."""
    cfg = config()
    text = conf.primary_conninfo(cfg, Layout.of(cfg), Upstream("node2", "10.0.0.2", 5432))
    assert f"tcp_user_timeout={conf.TCP_USER_TIMEOUT_MS}" in text and "keepalives=1" in text


def test_the_libpq_of_the_postgresql_tools_is_asked_its_version() -> None:
    version = libpq.tools_version(PostgresConfig(data_dir="/x").bin_dir)
    if version == 0:
        pytest.skip("PostgreSQL 15's binaries are not installed")
    assert 100000 <= version < 1000000
    assert libpq.linked_version("/nonexistent") == 0


def test_quoting_and_names() -> None:
    assert conf.quote("it's") == "'it''s'" and conf.quote(True) == "on" and conf.quote(10) == "10"
    assert conf.slot_name("Node-2.east") == "node_2_east"
    assert parse_progress("  12/2048 kB (0%), 0/1 tablespace (data/base/1/2)") == (12 * 1024, 2048 * 1024)
    assert parse_progress("pg_basebackup: write-ahead log start point: 0/2000028") is None


def test_standby_timeline_never_goes_back_while_the_same_postmaster_runs() -> None:
    standby = LocalPostgres(run_state=PgRunState.RUNNING, in_recovery=True)
    pg, seen = carry_replica_timeline(replace(standby, timeline=2), "100@1", None)
    assert pg.timeline == 2 and seen == ("100@1", 2)
    # Its upstream shut down: no WAL receiver, SQL shows the last restartpoint's timeline.
    pg, seen = carry_replica_timeline(replace(standby, timeline=1), "100@1", seen)
    assert pg.timeline == 2 and seen == ("100@1", 2)
    # A moment of "starting" (SQL refused) forgets nothing.
    pg, seen = carry_replica_timeline(LocalPostgres(run_state=PgRunState.STARTING, timeline=1), "100@1", seen)
    assert pg.timeline == 1 and seen == ("100@1", 2)
    pg, seen = carry_replica_timeline(replace(standby, timeline=3), "100@1", seen)
    assert pg.timeline == 3 and seen == ("100@1", 3)
    # Another postmaster (restarted, e.g. after a rewind) starts afresh.
    pg, seen = carry_replica_timeline(replace(standby, timeline=1), "200@9", seen)
    assert pg.timeline == 1 and seen == ("200@9", 1)
    # A primary reports its own timeline; stopped, nothing is remembered.
    primary = LocalPostgres(run_state=PgRunState.RUNNING, in_recovery=False, timeline=1)
    assert carry_replica_timeline(primary, "200@9", seen) == (primary, seen)
    assert carry_replica_timeline(LocalPostgres(), None, seen) == (LocalPostgres(), None)
