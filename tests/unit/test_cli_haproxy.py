"""`pgha haproxy-config`: members from etcd into a read-write and a read-only listener."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_cli_world import World, refusal, world_fixture  # noqa: F401


def with_apis(world: World) -> None:
    for i, name in enumerate(("node1", "node2", "node3"), start=1):
        host = "127.0.0.2" if name == "node3" else "127.0.0.1"
        world.change(name, api_url=f"http://{host}:80{i:02d}")


def test_prints_both_listeners_with_every_member(world: World) -> None:
    with_apis(world)
    r = world.run("haproxy-config", "--rw-port", "6000", "--ro-port", "6001", "--lag", "1MB",
                  "--bind", "127.0.0.1", "--check-interval", "500ms")
    assert r.exit_code == 0, r.output
    text = r.output
    primary, replicas = text.split("listen primary\n", 1)[1].split("listen replicas\n", 1)
    assert "    bind 127.0.0.1:6000" in primary and "http-check send meth GET uri /primary" in primary
    assert "    bind 127.0.0.1:6001" in replicas and "http-check send meth GET uri /replica?lag=1MB" in replicas
    servers = ["    server node1 127.0.0.1:5432 check port 8001",
               "    server node2 127.0.0.1:5433 check port 8002",
               "    server node3 127.0.0.2:5434 check port 8003"]
    for part in (primary, replicas):
        assert [line for line in part.splitlines() if line.startswith("    server ")] == servers
        assert "inter 500ms" in part and "on-marked-down shutdown-sessions" in part
    assert "listen stats" not in text


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (Debian package haproxy)")
def test_output_passes_haproxy_check(world: World, tmp_path: Path) -> None:
    with_apis(world)
    r = world.run("haproxy-config", "--stats-port", "7000")
    assert r.exit_code == 0, r.output
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(r.output)
    res = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "bind *:5000" in r.output and "bind *:5001" in r.output and "bind *:7000" in r.output
    assert "uri /replica?lag=16MB" in r.output


def test_members_without_an_api_url_are_left_out(world: World) -> None:
    world.change("node2", api_url="http://127.0.0.1:8002")
    r = world.run("haproxy-config")
    assert r.exit_code == 0, r.output
    assert [line.split()[1] for line in r.output.splitlines() if line.startswith("    server ")] == ["node2"] * 2


def test_no_member_with_an_api_is_refused(world: World) -> None:
    r = world.run("haproxy-config")
    assert r.exit_code == 1
    assert refusal(r) == ("pgha: no member of cluster main has published its address and API URL yet; "
                          "start the agents first")


@pytest.mark.parametrize(("args", "message"), [
    (["--lag", "lots"], "'lots' is not a size"),
    (["--check-interval", "soon"], "'soon' is not an HAProxy time"),
    (["--rw-port", "5001"], "--rw-port, --ro-port and --stats-port must all differ"),
])
def test_bad_options_are_usage_errors(world: World, args: list[str], message: str) -> None:
    with_apis(world)
    r = world.run("haproxy-config", *args)
    assert r.exit_code == 2
    assert message in r.output and "Traceback" not in r.output


def test_an_unusable_api_url_is_one_line(world: World) -> None:
    with_apis(world)
    world.change("node1", api_url="http://api.example:8001")
    r = world.run("haproxy-config")
    assert r.exit_code == 1
    assert refusal(r) == ("pgha: node1: the API host 'api.example' differs from '127.0.0.1'; "
                          "use the same host or an IP address in the API URL")


def test_https_apis_are_checked_with_tls_verified_against_the_ca_file(world: World, tmp_path: Path) -> None:
    from pgha.demo.certs import make_ca

    for i, name in enumerate(("node1", "node2", "node3"), start=1):
        world.change(name, api_url=f"https://127.0.0.1:80{i:02d}")
    r = world.run("haproxy-config")
    assert r.exit_code == 0, r.output
    assert "    server node1 127.0.0.1:5432 check port 8001 check-ssl verify none" in r.output
    ca = make_ca(tmp_path / "ca")
    r = world.run("haproxy-config", "--ca-file", str(ca.cert))
    assert r.exit_code == 0, r.output
    assert f"    server node2 127.0.0.1:5433 check port 8002 check-ssl verify required ca-file {ca.cert}" in r.output
    if shutil.which("haproxy") is not None:
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(r.output)
        res = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stdout + res.stderr
    r = world.run("haproxy-config", "--ca-file", "/my certs/ca.crt")
    assert r.exit_code == 2 and "has a space" in r.output
