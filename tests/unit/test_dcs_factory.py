"""One factory for every DCS user, and the CLI's --dcs URL forms and etcd TLS/auth flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pgha.cli import context
from pgha.cli.main import _register, cli
from pgha.config import DcsConfig, EtcdConfig, ZooKeeperConfig
from pgha.dcs.etcd import EtcdKV
from pgha.dcs.factory import dcs_url, open_kv, parse_dcs_url
from pgha.dcs.memory import MemoryKV
from pgha.dcs.zookeeper import ZooKeeperKV


def test_open_kv_builds_the_configured_backend() -> None:
    etcd = open_kv(DcsConfig(etcd=EtcdConfig(endpoints=("http://a:1", "http://b:2"), username="u", password="pw")))
    assert isinstance(etcd, EtcdKV) and etcd.endpoints == ("http://a:1", "http://b:2")
    assert "pw" not in repr(etcd)
    zk = open_kv(DcsConfig(type="zookeeper", prefix="/ha", zookeeper=ZooKeeperConfig(("h1:2181", "h2:2181"))))
    assert isinstance(zk, ZooKeeperKV) and zk.hosts == ("h1:2181", "h2:2181") and zk.lease_dir == "/ha/.leases"
    etcd.close()
    zk.close()


def test_only_the_factory_constructs_backends() -> None:
    src = Path(__file__).resolve().parents[2] / "src"
    users = [p for p in src.rglob("*.py") if "EtcdKV(" in p.read_text() or "ZooKeeperKV(" in p.read_text()]
    assert sorted(p.name for p in users) == ["etcd.py", "factory.py", "zookeeper.py"]


@pytest.mark.parametrize(("url", "expected"), [
    ("http://a:2379", DcsConfig(etcd=EtcdConfig(endpoints=("http://a:2379",)))),
    ("https://a:2379/, https://b:2379", DcsConfig(etcd=EtcdConfig(endpoints=("https://a:2379", "https://b:2379")))),
    ("zk://a:2181,b:2181", DcsConfig(type="zookeeper", zookeeper=ZooKeeperConfig(("a:2181", "b:2181")))),
    ("zks://a:2281", DcsConfig(type="zookeeper", zookeeper=ZooKeeperConfig(("a:2281",), tls=True))),
])
def test_dcs_urls(url: str, expected: DcsConfig) -> None:
    assert parse_dcs_url(url) == expected
    assert parse_dcs_url(dcs_url(expected)) == expected


def test_a_dcs_url_keeps_the_files_tls_and_auth() -> None:
    base = DcsConfig(prefix="/x", etcd=EtcdConfig(cacert="/ca", username="u", password="p"))
    got = parse_dcs_url("https://c:2379", base)
    assert got.prefix == "/x" and got.etcd.cacert == "/ca" and got.etcd.password == "p"
    assert got.etcd.endpoints == ("https://c:2379",)


@pytest.mark.parametrize(("url", "fragment"), [
    ("zk://", "give at least one host:port after zk://"),
    ("zk://nohostport", "'nohostport' is not host:port"),
    ("127.0.0.1:2379", "must start with http:// or https:// (etcd), or zk:// (ZooKeeper)"),
])
def test_bad_dcs_urls(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("/", "/")):
        parse_dcs_url(url)


def test_cli_flags_and_password_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _register()
    seen: list[DcsConfig] = []

    def factory(dcs: DcsConfig) -> MemoryKV:
        seen.append(dcs)
        return MemoryKV()

    monkeypatch.setattr(context, "KV_FACTORY", factory)
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("PGHA_DCS_PASSWORD", "from-env")
    r = CliRunner().invoke(cli, ["list", "--dcs", "https://127.0.0.1:2379", "--cluster", "c",
                                 "--dcs-cacert", str(ca), "--dcs-user", "pgha"])
    assert r.exit_code == 0, r.output
    assert seen[0].etcd.cacert == str(ca) and seen[0].etcd.username == "pgha" and seen[0].etcd.password == "from-env"
    r = CliRunner().invoke(cli, ["list", "--dcs", "zk://127.0.0.1:2181", "--cluster", "c", "--dcs-user", "zk"])
    assert r.exit_code == 0, r.output
    zk = seen[-1].zookeeper
    assert seen[-1].type == "zookeeper" and zk.hosts == ("127.0.0.1:2181",) and not zk.tls
    assert (zk.username, zk.password) == ("zk", "from-env")
    r = CliRunner().invoke(cli, ["list", "--dcs", "zks://127.0.0.1:2181", "--cluster", "c", "--dcs-user", "zk",
                                 "--dcs-cacert", str(ca)])
    assert r.exit_code == 0, r.output
    assert seen[-1].zookeeper.tls and seen[-1].zookeeper.cacert == str(ca)
    r = CliRunner().invoke(cli, ["list", "--dcs", "zk://127.0.0.1:2181", "--cluster", "c"])
    assert r.exit_code == 2 and "--dcs-user: ZooKeeper needs the cluster's digest credential" in r.output


def test_cli_missing_tls_file_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _register()
    monkeypatch.setattr(context, "KV_FACTORY", lambda dcs: MemoryKV())
    monkeypatch.delenv("PGHA_DCS_PASSWORD", raising=False)
    r = CliRunner().invoke(cli, ["list", "--dcs", "https://127.0.0.1:2379", "--cluster", "c",
                                 "--dcs-cacert", "/nonexistent/ca.pem"])
    assert r.exit_code == 2
    assert "--dcs-cacert: file /nonexistent/ca.pem not found" in r.output
    r = CliRunner().invoke(cli, ["list", "--dcs", "https://127.0.0.1:2379", "--cluster", "c", "--dcs-user", "u"])
    assert r.exit_code == 2 and "--dcs-user: etcd authentication needs PGHA_DCS_PASSWORD too" in r.output
