"""The generated haproxy.cfg is valid and a real HAProxy 2.6 routes by the members' health answers."""

from __future__ import annotations

import shutil
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pgha.routing.haproxy import render_haproxy_config
from tests.support.haproxy import haproxy_check, running_haproxy, seed_config
from tests.support.procs import free_port, stop_pid

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (Debian package haproxy)"),
]


class Member:
    """A stub member: a TCP "database" that greets with its name, and a health API."""

    def __init__(self, name: str, role: str) -> None:
        self.name = name
        self.role = role
        self.paths: list[str] = []
        member = self

        class Greeter(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.sendall(member.name.encode())

        class Health(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                member.paths.append(self.path)
                ok = (self.path == "/primary" and member.role == "primary") or (
                    self.path.startswith("/replica?") and member.role == "replica")
                self.send_response(200 if ok else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.db = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Greeter)
        self.api = ThreadingHTTPServer(("127.0.0.1", 0), Health)
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self.db, self.api)]
        for t in self.threads:
            t.start()

    def spec(self) -> tuple[str, str, int, str]:
        api = f"http://127.0.0.1:{self.api.server_address[1]}"
        return (self.name, "127.0.0.1", self.db.server_address[1], api)

    def close(self) -> None:
        for s in (self.db, self.api):
            s.shutdown()
            s.server_close()


def greeting(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(64).decode()
    except OSError:
        return ""


def settles(check: Callable[[], bool], timeout: float = 15.0, streak: int = 4) -> bool:
    """True once ``check`` holds ``streak`` times in a row (health checks take a few intervals)."""
    deadline = time.monotonic() + timeout
    good = 0
    while time.monotonic() < deadline:
        good = good + 1 if check() else 0
        if good >= streak:
            return True
        time.sleep(0.1)
    return False


def test_config_is_valid(tmp_path: Path) -> None:
    members = [("node-1", "10.0.0.1", 5432, "http://10.0.0.1:8008"),
               ("node_2", "10.0.0.2", 5432, "https://10.0.0.2:8008"),
               ("node3", "10.0.0.3", 5433, "http://10.0.1.3:8010")]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_haproxy_config(members, 5000, 5001, max_lag="1MB", stats_port=7000))
    res = haproxy_check(cfg)
    assert res.returncode == 0, res.stdout + res.stderr
    text = cfg.read_text()
    assert "http-check send meth GET uri /primary" in text
    assert "http-check send meth GET uri /replica?lag=1MB" in text
    assert "server node_2 10.0.0.2:5432 check port 8008 check-ssl verify none" in text
    assert "server node3 10.0.0.3:5433 check port 8010 addr 10.0.1.3" in text
    assert "mode tcp" in text and "timeout client 30m" in text


def test_bad_member_url_is_refused() -> None:
    with pytest.raises(ValueError, match=r"API URL 'h:8008' is not allowed; use http\(s\)://host:port"):
        render_haproxy_config([("n1", "h", 5432, "h:8008")], 5000, 5001)
    with pytest.raises(ValueError, match="member name 'node 2' is not allowed"):
        render_haproxy_config([("node 2", "h", 5432, "http://h:8008")], 5000, 5001)
    with pytest.raises(ValueError, match="use the same host or an IP address"):
        render_haproxy_config([("n1", "h", 5432, "http://api.h:8008")], 5000, 5001)


@pytest.fixture
def members() -> Iterator[tuple[Member, Member]]:
    a, b = Member("node1", "primary"), Member("node2", "replica")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_haproxy_routes_by_health(tmp_path: Path, members: tuple[Member, Member]) -> None:
    a, b = members
    rw, ro = free_port(), free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_haproxy_config([a.spec(), b.spec()], rw, ro, check_interval="200ms",
                                         bind_address="127.0.0.1"))
    assert haproxy_check(cfg).returncode == 0
    log = open(tmp_path / "haproxy.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        assert settles(lambda: greeting(rw) == "node1" and greeting(ro) == "node2")
        assert "/primary" in a.paths and any(p == "/replica?lag=16MB" for p in b.paths)

        # Switchover: the stubs swap roles; HAProxy follows and cuts the old primary's sessions.
        held = socket.create_connection(("127.0.0.1", rw), timeout=2)
        assert held.recv(64) == b"node1"
        a.role, b.role = "replica", "primary"
        assert settles(lambda: greeting(rw) == "node2" and greeting(ro) == "node1")
        held.settimeout(5)
        assert held.recv(64) == b""  # shutdown-sessions closed it
        held.close()
    finally:
        stop_pid(proc.pid, timeout=5)
        proc.wait()
        log.close()


# --- Patroni's seed config against pgha's own API server ---------------------------------------
def test_seed_config_against_pgha_api_over_https(tmp_path: Path) -> None:
    """Patroni's example config (default check: OPTIONS /) with what docs/api.md says to add when the
    API serves HTTPS: `check-ssl verify none` or `check-ssl ca-file`; without it, nothing is up."""
    from pgha.api import ApiServer
    from tests.unit.test_api_helpers import make_ca, make_handle, make_snapshot

    certs = make_ca(tmp_path)
    tls = {"certfile": str(certs["server_crt"]), "keyfile": str(certs["server_key"])}
    handles = {"node1": make_handle("leader", tls=tls), "node2": make_handle("replica", tls=tls)}
    apis = {n: ApiServer(h) for n, h in handles.items()}
    dbs = {n: Member(n, "") for n in handles}  # only their greeting "databases" are used
    for api in apis.values():
        api.start()
    try:
        for extra, routed in (("check-ssl verify none", True), (f"check-ssl ca-file {certs['ca_crt']}", True),
                              ("", False)):
            port = free_port()
            cfg = tmp_path / "seed.cfg"
            cfg.write_text(seed_config(port, [f"{n} 127.0.0.1:{dbs[n].db.server_address[1]} maxconn 100 "
                                              f"check port {apis[n].port} {extra}" for n in handles], "200ms"))
            with running_haproxy(cfg):
                if not routed:
                    time.sleep(1.5)
                    assert greeting(port) == "", "plain checks against an HTTPS API must fail"
                    continue
                assert settles(lambda p=port: greeting(p) == "node1"), extra
                # A switchover, as the agents' snapshots see it.
                handles["node1"].snap, handles["node2"].snap = make_snapshot("replica"), make_snapshot("leader")
                assert settles(lambda p=port: greeting(p) == "node2"), extra
                handles["node1"].snap, handles["node2"].snap = make_snapshot("leader"), make_snapshot("replica")
    finally:
        for api in apis.values():
            api.stop()
        for db in dbs.values():
            db.close()
