"""The API under hostile load (one process, a fake agent): the connection cap and eviction, the
whole-request deadline, no thread per client, and the cross-site checks on mutating requests.

The same behaviour against a real cluster, with the lease watched: tests/integration/test_api_hostile.py.
"""

from __future__ import annotations

import base64
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from pgha.api import conns
from pgha.api.guard import accepted_hosts, configured_names, host_name
from tests.unit.test_api_helpers import API_PASSWORD, API_USER, Client, FakeHandle, make_handle, serving


@pytest.fixture
def leader() -> Iterator[tuple[FakeHandle, Client]]:
    h = make_handle("leader", auth=True)
    with serving(h) as c:
        yield h, c


def _open(port: int, n: int, first_bytes: bytes = b"GET /prim") -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(first_bytes)
        out.append(s)
    return out


def _closed_by_server(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_past_the_cap_the_oldest_idle_connections_make_room_and_no_thread_is_started(
        leader: tuple[FakeHandle, Client]) -> None:
    _, c = leader
    threads = threading.active_count()
    with ExitStack() as stack:
        socks = _open(c.port, conns.MAX_CONNECTIONS + 40)
        for s in socks:
            stack.callback(s.close)
        assert threading.active_count() == threads
        # A client that sends its request at once is answered, however many idle ones are open.
        for _ in range(5):
            fresh = Client(c.port)
            assert fresh.get("/primary").status == 200
            fresh.close()
        # The first ones opened were closed to make room; the newest still wait.
        assert _closed_by_server(socks[0], 2.0)
        assert not _closed_by_server(socks[-1], 0.2)


def test_a_request_that_does_not_arrive_within_the_deadline_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conns, "REQUEST_TIMEOUT", 0.5)
    with serving(make_handle("leader")) as c:
        slow_head, = _open(c.port, 1, b"GET /primary HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow_body, = _open(c.port, 1, b"POST /switchover HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                      b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        started = time.monotonic()
        for s in (slow_head, slow_body):
            with s:
                assert _closed_by_server(s, 5.0)
        assert time.monotonic() - started < 3.0
        assert c.get("/primary").status == 200


def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    with serving(make_handle("leader")) as c:
        with socket.create_connection(("127.0.0.1", c.port), timeout=5) as s:
            s.sendall(b"GET /primary HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while data.count(b"HTTP/1.1 ") < 2:
                chunk = s.recv(65536)
                assert chunk
                data += chunk
        assert data.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 404" in data


def test_a_head_larger_than_the_limit_is_431() -> None:
    with serving(make_handle("leader")) as c:
        r = c.get("/primary", headers={f"X-{i}": "y" * 1000 for i in range(80)})
        assert r.status == 431


# --- cross-site requests ------------------------------------------------------------------
CROSS_SITE = [
    ({"Content-Type": "text/plain"}, b'{"leader": "n1"}', 415, "Content-Type: application/json"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"leader=n1", 415, "got 'application/x-www"),
    ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x--", 415, "Content-Type"),
    ({"Content-Type": ""}, b"", 415, "none was sent"),
    ({"Origin": "https://evil.example"}, b"{}", 403, "Origin 'https://evil.example' is not this agent"),
    ({"Origin": "null"}, b"{}", 403, "cross-site request refused"),
    ({"Origin": "http://127.0.0.1:1"}, b"{}", 403, "cross-site request refused"),
    ({"Host": "evil.example"}, b"{}", 421, "Host 'evil.example' is not an address or name of this agent"),
    ({"Host": "evil.example:8008", "Origin": "http://evil.example:8008"}, b"{}", 421, "Host"),
]


@pytest.mark.parametrize(("headers", "raw", "status", "message"), CROSS_SITE)
def test_cross_site_posts_are_refused_and_change_nothing(leader: tuple[FakeHandle, Client],
                                                         headers: dict[str, str], raw: bytes, status: int,
                                                         message: str) -> None:
    h, c = leader
    for method, path in (("POST", "/switchover"), ("POST", "/pause"), ("DELETE", "/restart"),
                         ("PATCH", "/config")):
        r = c.request(method, path, raw=raw, headers=headers)
        assert r.status == status, (method, path, r.data)
        assert message in r.error
    assert h.store.read().switchover is None and h.store.read().intents == {}
    assert not h.store.read().config.pause and h.wakes == 0


def test_same_origin_and_localhost_are_accepted(leader: tuple[FakeHandle, Client]) -> None:
    _, c = leader
    for headers in ({"Origin": f"http://127.0.0.1:{c.port}", "Host": f"127.0.0.1:{c.port}"},
                    {"Origin": f"http://localhost:{c.port}", "Host": f"localhost:{c.port}"},
                    {"Host": socket.gethostname()},
                    {"Content-Type": "application/json; charset=utf-8"}):
        assert c.post("/pause", headers=headers).status == 200, headers
        assert c.post("/resume", headers=headers).status == 200
    # PATCH /config also takes its own media type.
    r = c.request("PATCH", "/config", raw=b'{"loop_wait": 5}',
                  headers={"Content-Type": "application/merge-patch+json"})
    assert r.status == 200, r.data


def test_a_request_without_host_is_refused() -> None:
    with serving(make_handle("leader")) as c:
        with socket.create_connection(("127.0.0.1", c.port), timeout=5) as s:
            s.sendall(b"POST /pause HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n")
            data = s.recv(65536)
        assert data.startswith(b"HTTP/1.1 421") and b"Host missing" in data


def test_the_names_an_agent_answers_to() -> None:
    names = configured_names("0.0.0.0", "https://db1.example:8008")
    assert "db1.example" in names and "0.0.0.0" not in names
    assert accepted_hosts(names, "10.0.0.5") >= {"db1.example", "10.0.0.5"}
    assert "localhost" not in accepted_hosts(names, "10.0.0.5")
    assert "localhost" in accepted_hosts(names, "127.0.0.1")
    assert "::1" in configured_names("[::1]", "")
    assert "10.0.0.5" in accepted_hosts(frozenset(), "::ffff:10.0.0.5")
    assert [host_name(v) for v in ("A.example:80", "[::1]:8008", "::1", "10.1.2.3")] == [
        "a.example", "::1", "::1", "10.1.2.3"]


def test_a_plain_http_client_passes_the_guard(leader: tuple[FakeHandle, Client]) -> None:
    """http.client (like urllib3 and browsers) sends Host as host:port: it passes."""
    _, c = leader
    creds = base64.b64encode(f"{API_USER}:{API_PASSWORD}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=5)
    conn.request("POST", "/pause", body=b"{}", headers={"Content-Type": "application/json",
                                                        "Authorization": f"Basic {creds}"})
    assert conn.getresponse().status == 200
    conn.close()


def test_docs_limits_table_is_current() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    assert conns.limits_table() in docs, "docs/api.md is stale: paste conns.limits_table() under 'Under load'"
