"""etcd with TLS, client certificates and auth; endpoint failover; one clear line for every bad setting."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgha.config import DcsConfig, EtcdConfig
from pgha.dcs.base import DCSError, WatchEvent
from pgha.dcs.etcd import EtcdKV
from pgha.dcs.factory import open_kv
from pgha.dcs.store import ClusterStore
from pgha.demo.certs import make_ca, make_cert
from tests.support.etcd import EtcdServer
from tests.support.procs import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def kv(etcd_secure: EtcdServer) -> Iterator[EtcdKV]:
    client = etcd_secure.client()
    yield client
    client.close()


def _settings(server: EtcdServer, **changes: object) -> DcsConfig:
    assert server.tls is not None and server.auth is not None
    etcd = EtcdConfig(endpoints=(server.url,), username=server.auth.user, password=server.auth.password,
                      **server.tls.client_kwargs())
    return DcsConfig(request_timeout=1.0, etcd=dataclasses.replace(etcd, **changes))  # type: ignore[arg-type]


def _one_line_error(dcs: DcsConfig) -> str:
    kv = open_kv(dcs)
    try:
        with pytest.raises(DCSError) as info:
            kv.get("/pgha/x")
    finally:
        kv.close()
    message = str(info.value)
    assert "\n" not in message
    assert (not dcs.etcd.password or dcs.etcd.password not in message) and "Traceback" not in message
    return message


def test_the_factory_opens_tls_and_auth_and_the_store_works(etcd_secure: EtcdServer) -> None:
    kv = open_kv(_settings(etcd_secure))
    store = ClusterStore(kv, "secure")
    lease = kv.grant(10)
    assert store.acquire_leader("n1", lease)
    assert kv.keepalive(lease) == 10
    leader = store.read().leader
    assert leader is not None and leader.name == "n1"
    kv.revoke(lease)
    assert store.read().leader is None
    assert etcd_secure.auth is not None and etcd_secure.auth.password not in repr(kv)
    kv.close()


def test_watch_streams_with_tls_and_auth(kv: EtcdKV) -> None:
    prefix = f"/watch-secure-{time.monotonic_ns()}/"
    start = kv.get_prefix(prefix)[0] + 1
    seen: list[WatchEvent] = []
    stop = threading.Event()
    thread = threading.Thread(target=lambda: kv.watch_prefix(prefix, start, seen.append, stop))
    thread.start()
    kv.put(prefix + "a", b"1")
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    assert [e.key for e in seen] == [prefix + "a"]


def test_an_expired_token_is_renewed_by_logging_in_again(kv: EtcdKV) -> None:
    kv.put("/token/a", b"1")
    old = kv._token
    time.sleep(3.5)  # the server's --auth-token-ttl is 2 s: the token is gone
    assert kv.get("/token/a") is not None
    assert kv._token is not None and kv._token != old


def test_first_endpoint_dead_the_second_answers(etcd_secure: EtcdServer) -> None:
    dead = f"https://127.0.0.1:{free_port()}"
    kv = open_kv(dataclasses.replace(_settings(etcd_secure),
                                     etcd=dataclasses.replace(_settings(etcd_secure).etcd,
                                                              endpoints=(dead, etcd_secure.url))))
    kv.put("/failover/k", b"v")
    item = kv.get("/failover/k")
    assert item is not None and item.value == b"v"
    assert isinstance(kv, EtcdKV) and kv.endpoints[kv._preferred] == etcd_secure.url
    kv.close()


def test_wrong_password_is_one_line_without_the_password(etcd_secure: EtcdServer) -> None:
    message = _one_line_error(_settings(etcd_secure, password="not-the-password"))
    assert "refused the login of user pgha" in message and "fix dcs.etcd.username and dcs.etcd.password" in message
    assert "not-the-password" not in message


def test_no_credentials_on_an_auth_enabled_etcd(etcd_secure: EtcdServer) -> None:
    message = _one_line_error(_settings(etcd_secure, username="", password=""))
    assert "set dcs.etcd.username and dcs.etcd.password" in message


def test_a_key_outside_the_granted_prefix_is_permission_denied(kv: EtcdKV) -> None:
    with pytest.raises(DCSError, match="permission denied; grant the user's role readwrite"):
        kv.put("outside-the-prefix", b"x")


def test_wrong_ca_is_one_line(etcd_secure: EtcdServer, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other-ca")
    message = _one_line_error(_settings(etcd_secure, cacert=str(other.cert)))
    assert "not trusted" in message and "dcs.etcd.cacert" in message


def test_missing_client_certificate_is_one_line(etcd_secure: EtcdServer) -> None:
    message = _one_line_error(_settings(etcd_secure, cert="", key=""))
    assert "TLS" in message


def test_client_certificate_from_another_ca_is_refused(etcd_secure: EtcdServer, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other-ca")
    cert, key = make_cert(other, tmp_path, "stranger", [], client=True)
    message = _one_line_error(_settings(etcd_secure, cert=str(cert), key=str(key)))
    assert "TLS" in message


def test_plain_http_to_a_tls_endpoint_is_one_line(etcd_secure: EtcdServer) -> None:
    _one_line_error(_settings(etcd_secure).__class__(
        request_timeout=1.0, etcd=EtcdConfig(endpoints=(etcd_secure.url.replace("https", "http"),))))
