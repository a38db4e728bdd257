"""The backup: section, the pgbackrest.conf files pgha writes, the backup summary and the backup intent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pgha import intents
from pgha.backup import archive
from pgha.backup.conffile import ConfValueError, render_repository
from pgha.backup.info import from_dict, summarize
from pgha.config import ConfigError, parse
from pgha.core.model import BackupEndpoint, BackupRequest, ClusterView, MemberInfo, Role


def node(tmp: Path, **backup: Any) -> dict[str, Any]:
    for name in ("host.crt", "host.key", "ca.crt"):
        (tmp / name).write_text("PEM")
    section = {"repository": "backup1", "tls": {"certfile": str(tmp / "host.crt"), "keyfile": str(tmp / "host.key"),
                                                "cafile": str(tmp / "ca.crt")}, **backup}
    return {"cluster": "main", "name": "node1", "postgresql": {"data_dir": str(tmp / "data"), "port": 5432},
            "api": {"auth": "none"}, "backup": section}


def test_member_gets_archive_settings_and_a_tls_pgbackrest_conf(tmp_path: Path) -> None:
    cfg = parse(node(tmp_path))
    conf = archive.config_file(cfg)
    assert conf == tmp_path / "pgbackrest.conf"
    s = archive.settings(cfg)
    assert s["archive_mode"] == "on"
    assert s["archive_command"] == f"pgbackrest --config={conf} --stanza=main archive-push %p"
    assert s["restore_command"] == f'pgbackrest --config={conf} --stanza=main archive-get %f "%p"'
    text = archive.render(cfg)
    for line in ("repo1-host=backup1", "repo1-host-type=tls", "repo1-host-port=8432", "repo1-path=/var/lib/pgbackrest",
                 "tls-server-auth=repository=main", "tls-server-address=127.0.0.1", "[main]",
                 f"pg1-path={tmp_path / 'data'}", f"pg1-socket-path={tmp_path / 'pg_socket'}", "pg1-port=5432"):
        assert line in text.splitlines()


@pytest.mark.parametrize(("backup", "error"), [
    ({"repository": "backup1\nrepo1-path=/x"}, "backup.repository: holds a control character"),
    ({"port": 70000}, "backup.port: 70000 is not a TCP port"),
    ({"path": "relative/repo"}, "backup.path: 'relative/repo' must be an absolute path"),
    ({"stanza": "a b"}, "backup.stanza: 'a b' is not a stanza name"),
    ({"retention_full": 0}, "backup.retention_full: 0 must be 1 or more"),
    ({"tls": {"certfile": "/nonexistent.crt", "keyfile": "/k", "cafile": "/c"}},
     "backup.tls.certfile: file /nonexistent.crt not found"),
    ({"unknown": 1}, "backup.unknown: unknown key"),
])
def test_bad_backup_settings_are_one_line(tmp_path: Path, backup: dict[str, Any], error: str) -> None:
    data = node(tmp_path)
    data["backup"].update(backup)
    with pytest.raises(ConfigError) as exc:
        parse(data)
    assert error in str(exc.value)
    assert "\n" not in str(exc.value)


def test_data_dir_that_pgbackrest_conf_cannot_hold_is_refused(tmp_path: Path) -> None:
    data = node(tmp_path)
    data["postgresql"]["data_dir"] = "/var/lib/pg data"
    with pytest.raises(ConfigError, match=r"postgresql\.data_dir: '/var/lib/pg data' has characters"):
        parse(data)


def test_repository_conf_lists_members_and_refuses_values_from_the_dcs_it_cannot_hold(tmp_path: Path) -> None:
    cfg = parse(node(tmp_path))
    assert cfg.backup is not None
    good = BackupEndpoint("10.0.0.1", 8432, "/var/lib/pg/data", 5432, "/var/lib/pg/pg_socket")
    text = render_repository(cfg.backup, "main", tmp_path / "pgbackrest.conf", "0.0.0.0", {"node1": good})
    assert "pg1-host=10.0.0.1" in text and "tls-server-auth=node1=main" in text and "repo1-retention-full=2" in text
    for name, bad in (("node1", BackupEndpoint("10.0.0.1\npg2-path=/etc", 8432, "/d", 5432, "/s")),
                      ("node=1", BackupEndpoint("10.0.0.1", 8432, "/d", 5432, "/s")),
                      ("node1", BackupEndpoint("10.0.0.1", 8432, "/d\n[x]", 5432, "/s")),
                      ("node1", BackupEndpoint("10.0.0.1", 0, "/d", 5432, "/s"))):
        with pytest.raises(ConfValueError):
            render_repository(cfg.backup, "main", tmp_path / "pgbackrest.conf", "0.0.0.0", {name: bad})


INFO = {
    "name": "main", "status": {"code": 0, "message": "ok"},
    "archive": [{"id": "15-1", "min": "000000010000000000000003", "max": "000000020000000000000009"}],
    "backup": [
        {"label": "20260101-000000F_20260102-000000I", "type": "incr", "timestamp": {"start": 200, "stop": 210},
         "archive": {"start": "000000010000000000000007", "stop": "000000010000000000000007"},
         "info": {"size": 100, "repository": {"delta": 10}}},
        {"label": "20260101-000000F", "type": "full", "timestamp": {"start": 100, "stop": 130},
         "archive": {"start": "000000010000000000000003", "stop": "000000010000000000000004"},
         "info": {"size": 1000, "repository": {"delta": 300}}},
    ],
}


def test_summary_orders_backups_and_gives_the_restore_window() -> None:
    s = summarize("main", INFO, last_archived_at=500.0, now=600.0)
    assert [b.type for b in s.backups] == ["full", "incr"]
    assert (s.window.start_at, s.window.end_wal, s.window.end_at) == (130, "000000020000000000000009", 500.0)
    assert from_dict(s.to_dict()) == s
    assert summarize("main", {}).status == "no stanza"


def test_backup_intent_checks() -> None:
    req = intents.Requester(wall_now=1000.0, mono_now=5.0)
    ep = BackupEndpoint("h", 8432, "/d", 5432, "/s")
    primary = MemberInfo("n1", role=Role.PRIMARY, state="running", backup=ep)
    view = ClusterView(name="main", members={"n1": primary})
    assert intents.backup(view, req, id="x", type="incr", pending=None) == BackupRequest("x", "incr", 1000.0)
    refusals = [
        intents.backup(view, req, id="x", type="weekly", pending=None),
        intents.backup(ClusterView(name="main", members={"n1": MemberInfo("n1", role=Role.PRIMARY,
                                                                           state="running")}),
                       req, id="x", type="full", pending=None),
        intents.backup(view, req, id="x", type="full", pending=BackupRequest("y")),
    ]
    assert [r.kind for r in refusals if isinstance(r, intents.Refusal)] == [
        intents.Kind.PRECONDITION, intents.Kind.PRECONDITION, intents.Kind.CONFLICT]


def test_archive_continuity_across_a_timeline_switch() -> None:
    from pgha.backup.continuity import missing, parse_history, parse_segment, segment_name

    assert parse_segment("000000010000000000000003-3b9f91134df3f0df5b3a3f100630b61dbcb56af1.gz") == (1, 3)
    assert parse_segment("000000010000000000000002.00000028.backup") is None
    assert segment_name(2, 0x100) == "000000020000000100000000"
    history = parse_history("1\t0/5018830\tno recovery target specified\n")
    assert history == [(1, 0x5018830)]
    # Timeline 1 up to segment 4, the switch segment 5 and later from timeline 2.
    present = {(1, 3), (1, 4), (1, 5), (2, 5), (2, 6)}
    assert missing(present, history, (1, 3), 2) == []
    assert missing(present - {(1, 4)}, history, (1, 3), 2) == ["000000010000000000000004"]
    assert missing(present - {(2, 5)}, history, (1, 3), 2) == ["000000020000000000000005"]


def test_unreachable_repository_is_one_line(tmp_path: Path) -> None:
    import socket

    from pgha.backup.probe import reach_repository
    from pgha.demo.certs import make_ca, make_cert

    ca = make_ca(tmp_path / "pki")
    cert, key = make_cert(ca, tmp_path / "pki", "node1", ["127.0.0.1"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = node(tmp_path, repository="127.0.0.1", port=port,
                tls={"certfile": str(cert), "keyfile": str(key), "cafile": str(ca.cert)})
    cfg = parse(data)
    assert cfg.backup is not None
    problem = reach_repository(cfg.backup, timeout=1.0)
    assert problem is not None and problem.startswith(f"backup.repository: 127.0.0.1:{port}: unreachable")
    assert "\n" not in problem


@pytest.mark.parametrize(("bootstrap", "error"), [
    ({"method": "pgbackrest"}, "bootstrap.method: pgbackrest needs bootstrap.pgbackrest.stanza"),
    ({"method": "pgbackrest", "pgbackrest": {"stanza": "main"}}, "bootstrap.pgbackrest.stanza: 'main' is this "
     "cluster's own stanza"),
    ({"method": "pgbackrest", "pgbackrest": {"stanza": "old", "target_time": "yesterday"}},
     "bootstrap.pgbackrest: target time 'yesterday' is not ISO 8601"),
    ({"method": "pgbackrest", "pgbackrest": {"stanza": "old", "target_lsn": "0/1", "target_name": "x"}},
     "bootstrap.pgbackrest: give one target"),
    ({"pgbackrest": {"stanza": "old"}}, "bootstrap.pgbackrest: set bootstrap.method: pgbackrest too"),
])
def test_bootstrap_from_the_repository_is_checked(tmp_path: Path, bootstrap: dict[str, Any], error: str) -> None:
    data = node(tmp_path)
    data["bootstrap"] = bootstrap
    with pytest.raises(ConfigError) as exc:
        parse(data)
    assert error in str(exc.value)


def test_restore_targets() -> None:
    from pgha.backup.restore import Target, parse_target

    assert parse_target() == Target()
    assert parse_target(time_="2030-01-31T02:00:00+01:00") == Target("time", "2030-01-31 01:00:00.000000+00")
    assert parse_target(lsn="0/3000060").args() == ["--type=lsn", "--target=0/3000060", "--target-action=promote"]
    assert parse_target(name="before-drop").kind == "name"
    assert Target().args() == ["--type=default"]


def test_validate_refuses_backups_of_postgresql_18_with_debians_pgbackrest(tmp_path: Path, pg18_bin: str) -> None:
    """Debian 12's pgBackRest (2.45) predates PostgreSQL 18: the preflight of `pgha validate` and of the
    agent names it in one line; the same file on PostgreSQL 15 passes that check."""
    from pgha import preflight
    from pgha.postgres import versions

    if versions.installed_pgbackrest() is None or versions.installed_pgbackrest() >= (2, 55, 0):
        pytest.skip("needs Debian 12's pgBackRest (older than 2.55)")
    data = node(tmp_path)
    data["postgresql"]["bin_dir"] = pg18_bin
    with pytest.raises(ConfigError) as exc:
        preflight.check_backup_version(parse(data))
    line = str(exc.value)
    assert "\n" not in line and "cannot back up PostgreSQL 18" in line and "2.55" in line
    data["postgresql"]["bin_dir"] = "/usr/lib/postgresql/15/bin"
    preflight.check_backup_version(parse(data))
