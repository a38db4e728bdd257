"""Configuration errors: one clear line naming the key and the fix, non-zero exit, nothing on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pgha.cli.main import _register, cli
from pgha.config import ConfigError, load, parse


def base(tmp: Path) -> dict[str, Any]:
    return {
        "cluster": "main",
        "name": "node1",
        "etcd": {"endpoints": ["http://127.0.0.1:2379"]},
        "postgresql": {"data_dir": str(tmp / "data"), "port": 5432},
        "api": {"auth": {"username": "pgha", "password": "api-s3cret"}},
    }


def test_minimal_config_parses_with_defaults(tmp_path: Path) -> None:
    cfg = parse(base(tmp_path))
    assert cfg.cluster == "main"
    assert cfg.postgresql.bin_dir == "/usr/lib/postgresql/15/bin"
    assert cfg.cluster_config.ttl == 10.0
    assert cfg.api.url == "http://127.0.0.1:8008"


@pytest.mark.parametrize(("cluster_config", "timings"), [
    # The default profile renews every 0.35 ttl = 3.5 s: 17.1 etcd requests a minute per agent at rest;
    # a primary has 10 - 2 - 3.5 = 4.5 s for a late answer, so one server gets the whole request
    # timeout (2 s) and the next one still has 2.5 s.
    ({}, (10.0, 2.0, 3.5, 2.0)),
    # The fast profile renews every 0.2 s: a primary has 2 - 0.5 - 0.2 = 1.3 s for a late answer,
    # so one server gets 0.65 s and the next one still has time.
    ({"profile": "fast"}, (2.0, 0.5, 0.2, 0.65)),
    # A key set explicitly wins over the profile; 0 asks for the automatic period again.
    ({"profile": "fast", "ttl": 4, "fence_margin": 1, "renew_interval": 0}, (4.0, 1.0, 0.5, 1.25)),
    ({"ttl": 10, "loop_wait": 1, "renew_interval": 0.5}, (10.0, 2.0, 0.5, 2.0)),
])
def test_profiles_and_the_renewal_period(tmp_path: Path, cluster_config: dict[str, Any],
                                         timings: tuple[float, float, float, float]) -> None:
    cfg = parse({**base(tmp_path), "cluster_config": cluster_config}).cluster_config
    assert (cfg.ttl, cfg.fence_margin, cfg.renewal_period(), cfg.keepalive_timeout(2.0)) == pytest.approx(timings)


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    for key in path:
        d = d.setdefault(key, {})
    d[last] = value


def _drop(d: dict[str, Any], dotted: str) -> None:
    *path, last = dotted.split(".")
    for key in path:
        d = d[key]
    del d[last]


BAD: list[tuple[str, str, Any, str]] = [
    # (case, key, value or "<drop>", text the message must contain)
    ("unknown top-level key", "colour", "blue", "colour: unknown key"),
    ("unknown nested key", "postgresql.dta_dir", "/x", "postgresql.dta_dir: unknown key"),
    ("wrong type", "postgresql.port", "five", "postgresql.port: expected an integer"),
    ("bool is not int", "postgresql.port", True, "postgresql.port: expected an integer"),
    ("list expected", "etcd.endpoints", "http://x:1", "etcd.endpoints: expected a list"),
    ("missing required", "name", "<drop>", "name: required key is missing"),
    ("missing nested required", "postgresql.data_dir", "<drop>", "postgresql.data_dir: required key is missing"),
    ("relative data dir", "postgresql.data_dir", "data", "must be an absolute path"),
    ("port range", "postgresql.port", 70000, "not a TCP port"),
    ("bad literal", "cluster_config.synchronous_mode", "always", "synchronous_mode: must be"),
    ("ttl too short", "cluster_config.ttl", 1, "ttl: 1.0 is too short"),
    ("loop_wait vs ttl", "cluster_config.loop_wait", 16, "loop_wait"),
    ("bad endpoint", "etcd.endpoints", ["127.0.0.1:2379"], "must start with http://"),
    ("bad api listen", "api.listen", "localhost", "api.listen: expected host:port"),
    ("bad name", "name", "no spaces please", "name: member name 'no spaces please' is not allowed; use letters"),
    ("newline in a name", "name", "n1\nport = 1", "name: holds a control character"),
    ("quote in a cluster", "cluster", "a'b", "cluster: cluster name \"a'b\" is not allowed"),
    ("NUL in a path", "postgresql.bin_dir", "/usr\0/bin", "postgresql.bin_dir: holds a control character"),
    ("bad listen host", "postgresql.listen", "a b", "postgresql.listen: 'a b' is not an address"),
    ("bad connect address", "postgresql.connect_address", "h=1:5432", "postgresql.connect_address: 'h=1:5432'"),
    ("connect address port", "postgresql.connect_address", "h:x", "must be host:port"),
    ("parameter name", "postgresql.parameters", {"work_mem\nport": "1MB"},
     "postgresql.parameters: key 'work_mem\\nport' is not allowed"),
    ("parameter name with =", "postgresql.parameters", {"a=b": 1}, "parameter name 'a=b' is not allowed"),
    ("cluster parameter value", "cluster_config.parameters", {"archive_command": "x\ny"},
     "cluster_config.parameters: parameter archive_command's value holds a control character"),
    ("bad connect url", "api.connect_url", "http://a b:8008", "api.connect_url: URL 'http://a b:8008'"),
    ("pgbouncer database", "pgbouncer", {"config": "/x", "databases": ["a=b"]},
     "pgbouncer.databases: pgbouncer database 'a=b' is not allowed"),
    ("api.auth missing", "api.auth", "<drop>", "api.auth: missing; set credentials (auth: {username: pgha, "
                                               "password: ...}) to protect the mutating endpoints, or write "
                                               "'auth: none' to leave them open"),
    ("api.auth misspelled", "api.auth", "off", "api.auth: expected a mapping or 'none'"),
    ("api.auth empty password", "api.auth.password", "", "api.auth: username and password must both be "
                                                         "non-empty"),
]


@pytest.mark.parametrize(("case", "key", "value", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_gives_one_clear_line(tmp_path: Path, case: str, key: str, value: Any, expected: str) -> None:
    data = base(tmp_path)
    if value == "<drop>":
        _drop(data, key)
    else:
        _set(data, key, value)
    with pytest.raises(ConfigError) as info:
        parse(data)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_validate_command_exit_code_and_nothing_on_disk(tmp_path: Path) -> None:
    _register()
    data = base(tmp_path)
    data["postgresql"]["port"] = "five"
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(data))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(cli, ["validate", "-c", str(path)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line]
    assert len(lines) == 1 and "postgresql.port: expected an integer" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load(bad)


def test_secrets_are_not_in_repr(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["postgresql"]["superuser"] = {"username": "postgres", "password": "s3cret-pw"}
    cfg = parse(data)
    assert "s3cret-pw" not in repr(cfg) and "api-s3cret" not in repr(cfg)


def test_api_auth_none_is_explicit(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["api"]["auth"] = "none"
    cfg = parse(data)
    assert cfg.api.auth == "none" and cfg.api.credentials is None
    assert parse(base(tmp_path)).api.credentials is not None


def test_validate_names_the_api_auth_fix(tmp_path: Path) -> None:
    _register()
    data = base(tmp_path)
    del data["api"]
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(cli, ["validate", "-c", str(path)])
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line] == [
        f"pgha: {path}: api.auth: missing; set credentials (auth: {{username: pgha, password: ...}}) to protect the "
        "mutating endpoints, or write 'auth: none' to leave them open"]


# --- the dcs: section ---------------------------------------------------------------------------
def dcs_base(tmp: Path, dcs: dict[str, Any]) -> dict[str, Any]:
    data = base(tmp)
    del data["etcd"]
    data["dcs"] = dcs
    return data


def test_dcs_section_for_etcd_with_tls_and_auth(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("x")
    cfg = parse(dcs_base(tmp_path, {
        "type": "etcd", "prefix": "/ha", "request_timeout": 1.5,
        "etcd": {"endpoints": ["https://10.0.0.1:2379", "https://10.0.0.2:2379"],
                 "cacert": str(tmp_path / "ca.pem"), "cert": str(tmp_path / "client.pem"),
                 "key": str(tmp_path / "client.key"), "username": "pgha", "password": "etcd-s3cret"}}))
    assert cfg.dcs.type == "etcd" and cfg.dcs.prefix == "/ha" and cfg.dcs.request_timeout == 1.5
    assert cfg.dcs.etcd.endpoints == ("https://10.0.0.1:2379", "https://10.0.0.2:2379")
    assert cfg.dcs.etcd.username == "pgha" and cfg.dcs.etcd.password == "etcd-s3cret"
    assert "etcd-s3cret" not in repr(cfg)
    assert cfg.etcd.prefix == "/ha" and cfg.etcd.endpoints == cfg.dcs.etcd.endpoints  # the old view


def test_dcs_section_for_zookeeper(tmp_path: Path) -> None:
    ca = tmp_path / "zk-ca.pem"
    ca.write_text("x")
    cfg = parse(dcs_base(tmp_path, {"type": "zookeeper", "zookeeper": {
        "hosts": ["127.0.0.1:2181", "h2:2181"], **ZK_AUTH, "tls": True, "cacert": str(ca),
        "acl": ["digest:ops:abc=:r", "ip:10.0.0.0/8:r"]}}))
    zk = cfg.dcs.zookeeper
    assert cfg.dcs.type == "zookeeper" and zk.hosts == ("127.0.0.1:2181", "h2:2181")
    assert (zk.username, zk.password, zk.tls, zk.cacert) == ("pgha", "pw", True, str(ca))
    assert cfg.dcs.prefix == "/pgha" and "pw" not in repr(cfg)


ZK_AUTH = {"username": "pgha", "password": "pw"}


def test_the_old_etcd_key_maps_onto_dcs(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["etcd"] = {"endpoints": ["http://a:2379", "http://b:2379"], "prefix": "/old", "request_timeout": 3}
    cfg = parse(data)
    assert cfg.dcs.type == "etcd" and cfg.dcs.prefix == "/old" and cfg.dcs.request_timeout == 3.0
    assert cfg.dcs.etcd.endpoints == ("http://a:2379", "http://b:2379")


def test_etcd_and_dcs_at_once_is_one_line(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["dcs"] = {"type": "etcd"}
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert str(info.value).startswith("etcd: and dcs: are both given; move etcd.endpoints to dcs.etcd.endpoints")


BAD_DCS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown type", {"type": "consul"}, "dcs.type: must be 'etcd' or 'zookeeper'"),
    ("unknown key", {"etcd": {"endpoint": ["http://a:1"]}}, "dcs.etcd.endpoint: unknown key"),
    ("no endpoints", {"etcd": {"endpoints": []}}, "dcs.etcd.endpoints: list at least one URL"),
    ("bad endpoint", {"etcd": {"endpoints": ["a:2379"]}}, "dcs.etcd.endpoints: 'a:2379' must start with http://"),
    ("key without cert", {"etcd": {"key": "/k"}}, "dcs.etcd.key: a client key needs its certificate"),
    ("cert without key", {"etcd": {"cert": "/c"}}, "dcs.etcd.cert: a client certificate needs its key"),
    ("user without password", {"etcd": {"username": "pgha"}}, "dcs.etcd.username: etcd authentication needs"),
    ("password without user", {"etcd": {"password": "pw"}}, "dcs.etcd.password: set dcs.etcd.username too"),
    ("missing cacert", {"etcd": {"cacert": "/nonexistent/ca.pem"}},
     "dcs.etcd.cacert: file /nonexistent/ca.pem not found"),
    ("missing cert", {"etcd": {"cert": "/nonexistent/c.pem", "key": "/nonexistent/c.key"}},
     "dcs.etcd.cert: file /nonexistent/c.pem not found"),
    ("bad prefix", {"prefix": "pgha"}, "dcs.prefix: 'pgha' must be an absolute key path"),
    ("bad timeout", {"request_timeout": 0}, "dcs.request_timeout: 0 is out of range"),
    ("no zk hosts", {"type": "zookeeper", "zookeeper": {"hosts": []}}, "dcs.zookeeper.hosts: list at least one"),
    ("bad zk host", {"type": "zookeeper", "zookeeper": {"hosts": ["zk1"]}}, "dcs.zookeeper.hosts: 'zk1' must be"),
    ("zk url", {"type": "zookeeper", "zookeeper": {"hosts": "zk1:2181"}}, "dcs.zookeeper.hosts: expected a list"),
    ("zk without credential", {"type": "zookeeper", "zookeeper": {"hosts": ["zk1:2181"]}},
     "dcs.zookeeper.username: ZooKeeper needs the cluster's digest credential"),
    ("zk without password", {"type": "zookeeper", "zookeeper": {"username": "pgha"}},
     "dcs.zookeeper.username: ZooKeeper needs the cluster's digest credential"),
    ("zk world acl", {"type": "zookeeper", "zookeeper": {**ZK_AUTH, "acl": ["world:anyone:r"]}},
     "dcs.zookeeper.acl[0]: a world:anyone entry opens the cluster's znodes to anyone; remove it"),
    ("zk bad acl", {"type": "zookeeper", "zookeeper": {**ZK_AUTH, "acl": ["digest:ops:h:rwx"]}},
     "dcs.zookeeper.acl[0]: must be scheme:id:perms"),
    ("zk cacert without tls", {"type": "zookeeper", "zookeeper": {**ZK_AUTH, "cacert": "/etc/hostname"}},
     "dcs.zookeeper.cacert: set dcs.zookeeper.tls: true to use it"),
    ("zk missing cacert", {"type": "zookeeper", "zookeeper": {**ZK_AUTH, "tls": True, "cacert": "/nonexistent/ca"}},
     "dcs.zookeeper.cacert: file /nonexistent/ca not found"),
    ("zk key without cert", {"type": "zookeeper", "zookeeper": {**ZK_AUTH, "tls": True, "key": "/k"}},
     "dcs.zookeeper.key: a client key needs its certificate"),
]


@pytest.mark.parametrize(("case", "dcs", "expected"), BAD_DCS, ids=[b[0] for b in BAD_DCS])
def test_bad_dcs_value_is_one_line(tmp_path: Path, case: str, dcs: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(dcs_base(tmp_path, dcs))
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert "pw" not in str(info.value).replace("password", "")
