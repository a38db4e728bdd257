"""The one validator for names and values leaving pgha (pgha.core.names), where values are read
(DCS records, cluster config) and where files are written (postgresql.conf, synchronous_standby_names,
pgbouncer.ini, haproxy.cfg); value-based redaction (pgha.redact); preflight's OS errors."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgha.config import ConfigError, loads, parse
from pgha.core import names
from pgha.core.model import ClusterConfig
from pgha.core.syncrep import render_names
from pgha.dcs.memory import MemoryKV
from pgha.dcs.store import ClusterStore
from pgha.preflight import exposed_secrets, run_all
from pgha.redact import REDACTED, scrub, scrub_text
from pgha.routing.haproxy import render_haproxy_config
from pgha.routing.pgbouncer import plain_database_names, rewrite_databases

HOSTILE = ["", "a\nb", "a b", "a=b", "a'b", 'a"b', "a;b", "a\x00b", "a\u2028b", "-rf", "$(id)", "a#b",
           "x" * 300, "a\\b", "a,b"]

# (kind, accepted, refused besides HOSTILE)
TABLE: list[tuple[str, list[str], list[str]]] = [
    ("member name", ["node1", "n-1.a_b", "A" * 63, "1"], ["_x", ".x", "A" * 64, "a:b", "a/b"]),
    ("cluster name", ["main", "db-1"], ["a:b", "é"]),
    ("host", ["10.0.0.1", "db1.example.com", "::1", "[::1]", "fe80::1%eth0", "a_b"], ["a/b", "é.com"]),
    ("parameter name", ["work_mem", "TimeZone", "pg_stat_statements.track", "_x"], ["1x", "a-b", "a.b-c"]),
    ("pgbouncer database", ["*", "app_db", "db-1.x"], ["**", "a*"]),
]


@pytest.mark.parametrize(("kind", "good", "bad"), TABLE, ids=[t[0] for t in TABLE])
def test_the_validator_table(kind: str, good: list[str], bad: list[str]) -> None:
    for value in good:
        assert names.problem(kind, value) is None, value
    for value in [*HOSTILE, *bad]:
        why = names.problem(kind, value)
        assert why is not None and why.startswith(f"{kind} ") and "\n" not in why and len(why) < 300, value
        with pytest.raises(ValueError):
            names.check(kind, value)


def test_ports_urls_and_parameter_values() -> None:
    assert names.port_problem(5432) is None
    assert all(names.port_problem(p) for p in (0, 65536, -1, True, "5432"))
    for url in ("http://10.0.0.1:8008", "https://db1:8008/", "http://[::1]:8008", ""):
        assert names.url_problem(url) is None, url
    for url in ("ftp://a:1", "http://a b:1", "http://a:1/\nx", "http://u:p@a:1", "http://a:99999",
                "http://a=b:1", "http://a:1/?x"):
        assert names.url_problem(url) is not None, url
    assert names.parameter_problem("archive_command", "cp %p /a/%f && echo 'x'") is None
    assert names.parameter_problem("work_mem", 64) is None
    assert "control character" in str(names.parameter_problem("archive_command", "a\nb"))
    assert names.parameter_problem("a\nb", "x") is not None
    good, bad = names.valid_parameters({"work_mem": "1MB", "x\ny": "1", "log_line_prefix": "a\x00"})
    assert good == {"work_mem": "1MB"} and len(bad) == 2


def test_cluster_config_refuses_bad_parameters_for_the_api_edit_config_and_the_node_file() -> None:
    assert ClusterConfig(parameters={"work_mem": "1MB"}).problem() is None
    problem = ClusterConfig(parameters={"work_mem\nport": "1"}).problem()
    assert problem is not None and problem.startswith("parameters: parameter name")


def _member(**fields: Any) -> bytes:
    return json.dumps({"role": "replica", "state": "streaming", "host": "127.0.0.1", "port": 5432,
                       "api_url": "http://127.0.0.1:8008", **fields}).encode()


def test_hostile_dcs_records_are_ignored_with_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    kv = MemoryKV()
    store = ClusterStore(kv, "main")
    kv.put(store.key("members/good"), _member())
    kv.put(store.key("members/evil1"), _member(host="127.0.0.1\nlisten_addresses = '*'"))
    kv.put(store.key("members/evil2"), _member(host="h=x"))
    kv.put(store.key("members/evil3"), _member(api_url="http://a'b:1"))
    kv.put(store.key("members/ev\nil"), _member())
    kv.put(store.key("members/evil4"), _member(port=70000))
    kv.put(store.key("sync"), json.dumps({"leader": "good", "standbys": ['a", "b']}).encode())
    kv.put(store.key("switchover"), json.dumps({"id": "1", "candidate": "a\nb"}).encode())
    kv.put(store.key("intents/a b"), json.dumps({"action": "restart", "id": "1"}).encode())
    kv.put(store.key("config"), json.dumps({"parameters": {"work_mem": "2MB", "a\nb": "1",
                                                           "log_line_prefix": "x\ny"}}).encode())
    with caplog.at_level(logging.WARNING, logger="pgha.dcs.store"):
        view = store.read()
        first = len(caplog.records)
        store.read()
    assert list(view.members) == ["good"]
    assert view.sync is None and view.switchover is None and not view.intents
    assert dict(view.config.parameters) == {"work_mem": "2MB"}
    assert len(store.problems) == 10
    # At most a few lines per read (the rest counted in one line), and nothing again while it lasts.
    assert first == 4 and len(caplog.records) == first
    assert "7 more values" in caplog.records[-1].getMessage()
    assert all("\n" not in r.getMessage() for r in caplog.records)
    assert any("'members/ev\\nil'" in p for p in store.problems)


def test_writers_refuse_what_the_readers_let_through_by_mistake() -> None:
    with pytest.raises(ValueError, match="member name"):
        render_names(("node1", 'x", "y'), 1, "any")
    assert render_names(("node1", "node2"), 1, "first") == 'FIRST 2 ("node1", "node2")'
    with pytest.raises(ValueError, match="host"):
        rewrite_databases("[databases]\n", ["*"], "h\nlisten_port = 1", 5432)
    with pytest.raises(ValueError, match="pgbouncer database"):
        rewrite_databases("[databases]\n", ["app", "x y"], "h", 5432)
    with pytest.raises(ValueError, match="port"):
        rewrite_databases("[databases]\n", ["*"], "h", 0)
    assert plain_database_names(["app", "x y", "appdb=host=203.0.113.9", "*", 'q"', "db-2"]) == (
        ["app", "db-2"], ["x y", "appdb=host=203.0.113.9", "*", 'q"'])
    member = ("node1", "10.0.0.1", 5432, "http://10.0.0.1:8008")
    assert "server node1 10.0.0.1:5432" in render_haproxy_config([member], 5000, 5001)
    for bad in (("node1", "10.0.0.1\n  external-check command /x", 5432, "http://10.0.0.1:8008"),
                ("node1", "10.0.0.1", 5432, "http://10.0.0.1:8008/\nx")):
        with pytest.raises(ValueError):
            render_haproxy_config([bad], 5000, 5001)
    with pytest.raises(ValueError, match="bind address"):
        render_haproxy_config([member], 5000, 5001, bind_address="* \n global")


def test_postgresql_conf_never_holds_an_invalid_parameter(tmp_path: Path) -> None:
    from pgha.postgres.common import Upstream
    from pgha.postgres.conf import primary_conninfo, render_postgresql_conf
    from pgha.postgres.layout import Layout

    cfg = parse({"cluster": "main", "name": "node1", "postgresql": {"data_dir": str(tmp_path / "data")},
                 "api": {"auth": "none"}})
    layout = Layout.of(cfg)
    text = render_postgresql_conf(cfg, layout, {"work_mem": "1MB", "a\nport": 1, "x": "a\nb"}, None, "")
    assert "work_mem = '1MB'" in text and "# ignored: 2 parameters" in text and "\nport = 1\n" not in text
    with pytest.raises(ValueError, match="host"):
        primary_conninfo(cfg, layout, Upstream(name="node2", host="h' host=evil", port=5432))


@pytest.mark.parametrize(("text", "masked", "kept"), [
    ("PGPASSWORD=s3cret pgbackrest --stanza=main archive-push %p", "s3cret", "archive-push %p"),
    ("wal-g wal-push %p --aws-secret-access-key=AKIA123", "AKIA123", "wal-push %p"),
    ("aws s3 cp %p s3://key:s3cret@bucket/%f", "s3cret", "s3://key:"),
    ("curl -H 'Authorization: Bearer abcdef123' https://x", "abcdef123", "https://x"),
    ("host=a password='x y' user=b", "x y", "user=b"),
    ("cp %p /archive/%f", None, "cp %p /archive/%f"),
    ("passfile=/var/lib/pgha/pgpass", None, "/var/lib/pgha/pgpass"),
])
def test_secret_looking_values_are_masked(text: str, masked: str | None, kept: str) -> None:
    out = scrub_text(text)
    assert kept in out
    if masked is not None:
        assert masked not in out and REDACTED in out
    assert scrub({"parameters": {"archive_command": text}, "admin_password": "x"}) == {
        "parameters": {"archive_command": out}, "admin_password": REDACTED}


def test_config_errors_never_show_a_secret() -> None:
    base: dict[str, Any] = {"cluster": "main", "name": "n1", "postgresql": {"data_dir": "/x"}}
    for api in ({"auth": {"password": "Sekret-1"}}, {"auth": "Sekret-1"},
                {"auth": {"username": "u", "password": ["Sekret-1"]}},
                {"auth": {"username": "u", "password": {"a": "Sekret-1"}}}, {"auth": ["Sekret-1"]}):
        with pytest.raises(ConfigError) as info:
            parse({**base, "api": api})
        assert "Sekret-1" not in str(info.value), str(info.value)
    with pytest.raises(ConfigError) as info:
        parse({**base, "api": {"auth": "none"}, "postgresql": {"data_dir": "/x", "superuser": {"password": 12345}}})
    assert "postgresql.superuser" in str(info.value) and "12345" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        loads(yaml.safe_dump({**base, "api": {"auth": "none"}, "dcs": {"etcd": {"endpoints": ["u:Sekret-1@h"]}}}),
              "f")
    assert "dcs.etcd.endpoints" in str(info.value) and "Sekret-1" not in str(info.value)


def _node(tmp_path: Path, **postgresql: Any) -> Any:
    return parse({"cluster": "main", "name": "n1", "api": {"auth": {"username": "u", "password": "p"},
                                                           "listen": "127.0.0.1:0"},
                  "postgresql": {"data_dir": str(tmp_path / "data"), **postgresql}})


def test_preflight_turns_os_errors_into_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^postgresql.listen: 'no-such-host.invalid' does not resolve"):
        run_all(_node(tmp_path, listen="no-such-host.invalid", port=1))


def test_a_world_readable_node_file_holding_passwords_is_named(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("x")
    cfg = _node(tmp_path)
    os.chmod(path, 0o644)
    warning = exposed_secrets(str(path), cfg)
    assert warning is not None and "chmod 600" in warning and "\n" not in warning
    os.chmod(path, 0o640)
    assert exposed_secrets(str(path), cfg) is None
    assert exposed_secrets("-", cfg) is None


def test_the_docs_list_the_validator_table() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    start, end = doc.index(names.DOC_BEGIN), doc.index(names.DOC_END) + len(names.DOC_END)
    assert doc[start:end] == names.doc_table(), (
        "docs/configuration.md's names table is stale; paste python -c 'from pgha.core.names import "
        "doc_table; print(doc_table())' between its markers")
