"""The HTTP server itself: keep-alive, port in use, stop, raw protocol junk, TLS with client certificates,
and the generated OpenAPI document and docs table."""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import replace
from pathlib import Path

import pytest

from pgha.api import AddressInUseError, ApiServer, ApiStartError
from pgha.api.routes import BY_PATH, ROUTES, markdown_table, openapi
from pgha.config import ApiConfig
from tests.unit.test_api_helpers import Client, make_ca, make_handle, serving

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    with serving(make_handle("leader")) as c:
        assert c.get("/status").status == 200
        conn = c.conn
        for _ in range(20):
            assert c.get("/primary").status == 200
            assert c.get("/nope").status == 404
        assert c.conn is conn


def test_port_in_use_is_one_clear_line() -> None:
    h = make_handle("leader")
    first = ApiServer(h)
    first.start()
    try:
        h2 = make_handle("replica")
        h2.config = replace(h2.config, api=ApiConfig(listen=f"127.0.0.1:{first.port}"))
        second = ApiServer(h2)
        with pytest.raises(AddressInUseError) as info:
            second.start()
        assert str(info.value) == f"api.listen 127.0.0.1:{first.port}: address already in use; pick a free port"
        assert isinstance(info.value, ApiStartError)
    finally:
        first.stop()


def test_stop_closes_idle_keep_alive_connections_and_frees_the_port() -> None:
    h = make_handle("leader")
    server = ApiServer(h)
    server.start()
    port = server.port
    client = Client(port)
    try:
        assert client.get("/status").status == 200
        server.stop()
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            client.get("/status")
    finally:
        client.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


@pytest.mark.parametrize("junk", [
    b"\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/1.1 extra\r\n\r\n", b"GET /status HTTP/9\r\n\r\n",
    b"GET /status HTTP/1.1\r\nbad header line\r\n\r\n", b"\x00\xff\x16\x03\x01garbage\r\n\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    b"POST /switchover HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"POST /switchover HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"POST /switchover HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}",
])
def test_protocol_junk_never_gets_a_5xx(junk: bytes) -> None:
    with serving(make_handle("leader")) as c:
        with socket.create_connection(("127.0.0.1", c.port), timeout=10) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        if data.startswith(b"HTTP/"):
            status = int(data.split()[1])
            assert status < 500, data[:200]
        assert c.get("/status").status == 200


# --- TLS ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_ca(tmp_path_factory.mktemp("ca"))


def _client_context(certs: dict[str, Path], cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs["ca_crt"]))
    if cert is not None:
        ctx.load_cert_chain(str(certs[f"{cert}_crt"]), str(certs[f"{cert}_key"]))
    return ctx


def test_tls_with_client_certificate_verification(certs: dict[str, Path]) -> None:
    tls = {"certfile": str(certs["server_crt"]), "keyfile": str(certs["server_key"]),
           "cafile": str(certs["ca_crt"]), "verify_client": True}
    h = make_handle("leader", auth=True, tls=tls)
    with serving(h, _client_context(certs, "client")) as c:
        assert c.get("/primary").status == 200
        assert c.post("/reload").status == 202
        assert c.post("/reload", auth=None).status == 401
        for cert in (None, "rogue"):
            bad = Client(c.port, _client_context(certs, cert))
            try:
                with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException, OSError)):
                    bad.get("/primary")
            finally:
                bad.close()
        plain = Client(c.port)
        try:
            with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
                plain.get("/primary")
        finally:
            plain.close()
        assert c.get("/status").status == 200


def test_tls_without_client_verification(certs: dict[str, Path]) -> None:
    tls = {"certfile": str(certs["server_crt"]), "keyfile": str(certs["server_key"])}
    with serving(make_handle("replica", tls=tls), _client_context(certs, None)) as c:
        assert c.get("/replica").status == 200


@pytest.mark.parametrize(("tls", "message"), [
    ({"certfile": "/nonexistent.crt", "keyfile": "/nonexistent.key"}, "api.tls.certfile/keyfile: cannot load"),
    ({"certfile": "server_crt", "keyfile": "server_key", "verify_client": True},
     "api.tls.verify_client: needs api.tls.cafile"),
    ({"certfile": "server_crt", "keyfile": "server_key", "cafile": "/nonexistent.ca"}, "api.tls.cafile"),
])
def test_bad_tls_settings_are_one_line(certs: dict[str, Path], tls: dict[str, object], message: str) -> None:
    resolved = {k: str(certs[v]) if isinstance(v, str) and v in certs else v for k, v in tls.items()}
    server = ApiServer(make_handle("leader", tls=resolved))
    with pytest.raises(ApiStartError) as info:
        server.start()
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


# --- the generated documents -------------------------------------------------------------------
def test_openapi_is_generated_from_the_routing_table() -> None:
    with serving(make_handle("leader")) as c:
        doc = c.get("/openapi.json").json()
    assert doc == openapi()
    assert doc["openapi"].startswith("3.")
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ops == {(r.method, r.path) for r in ROUTES}
    switchover = doc["paths"]["/switchover"]["post"]
    assert switchover["security"] == [{"basicAuth": []}]
    schema = switchover["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"leader", "candidate", "scheduled_at"}
    assert schema["additionalProperties"] is False
    assert "lag" in {p["name"] for p in doc["paths"]["/replica"]["get"]["parameters"]}
    patch = doc["paths"]["/config"]["patch"]["requestBody"]["content"]["application/merge-patch+json"]
    assert patch["schema"]["properties"]["synchronous_mode"]["enum"] == ["off", "on", "strict", "quorum"]


def test_every_health_path_answers_get_head_options() -> None:
    for path, methods in BY_PATH.items():
        if any(r.health for r in methods.values()):
            assert set(methods) == {"GET", "HEAD", "OPTIONS"}, path


def test_docs_table_is_current() -> None:
    assert markdown_table() in DOCS.read_text(), \
        "docs/api.md is stale: paste the output of `python -m pgha.api` into it"
