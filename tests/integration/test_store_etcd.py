"""ClusterStore on a real etcd: the contract of tests/unit/test_store.py, plus outages."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from pgha.core.model import MemberInfo
from pgha.dcs import etcd as etcd_module
from pgha.dcs import etcd_wire
from pgha.dcs.base import DCSError
from pgha.dcs.etcd import EtcdKV
from pgha.dcs.store import ClusterStore
from tests.support.etcd import Backend, EtcdBackend, EtcdServer
from tests.unit.test_store import StoreContract

pytestmark = pytest.mark.integration


class TestStoreOnEtcd(StoreContract):
    @pytest.fixture
    def backend(self, etcd: EtcdServer) -> Iterator[Backend]:
        backend = EtcdBackend(etcd)
        yield backend
        backend.close()


class TestStoreOnSecureEtcd(StoreContract):
    """The same contract through TLS, a client certificate and etcd auth."""

    @pytest.fixture
    def backend(self, etcd_secure: EtcdServer) -> Iterator[Backend]:
        backend = EtcdBackend(etcd_secure)
        yield backend
        backend.close()


def test_store_survives_an_etcd_restart(etcd_fresh: EtcdServer) -> None:
    kv = EtcdKV((etcd_fresh.url,), 1.0)
    store = ClusterStore(kv, "restart")
    lease = kv.grant(60)
    assert store.acquire_leader("n1", lease)
    etcd_fresh.stop()
    with pytest.raises(DCSError) as info:
        store.read()
    assert str(info.value).startswith(f"etcd unreachable at {etcd_fresh.url} (")
    etcd_fresh.start()
    leader = store.read().leader
    assert leader is not None and leader.name == "n1"
    kv.close()


def test_a_paused_etcd_times_out_and_the_next_endpoint_answers(etcd: EtcdServer,
                                                              etcd_fresh: EtcdServer) -> None:
    kv = EtcdKV((etcd_fresh.url, etcd.url), 0.5)
    store = ClusterStore(kv, "failover-endpoints")
    store.publish_member(MemberInfo("n1"), kv.grant(30))
    etcd_fresh.pause()
    try:
        # The fresh server is paused: its reads time out and the shared one answers (it has no n1).
        assert dict(store.read().members) == {}
    finally:
        etcd_fresh.resume()
    only_paused = EtcdKV((etcd_fresh.url,), 0.5)
    etcd_fresh.pause()
    try:
        with pytest.raises(DCSError, match=r"no answer within 0.5s\); start etcd or fix etcd.endpoints"):
            only_paused.get("/x")
    finally:
        etcd_fresh.resume()
    kv.close()
    only_paused.close()


def test_a_silent_watch_stream_returns_a_resumable_revision(etcd: EtcdServer,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_module, "WATCH_IDLE", 0.3)
    kv = EtcdKV((etcd.url,), 1.0)
    start = kv.get_prefix("/silent/")[0] + 1
    # Nothing changes and stop is never set: the read timeout ends the stream, the caller reopens it.
    assert kv.watch_prefix("/silent/", start, lambda e: None, threading.Event()) == start
    kv.close()


class _Chunks:
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    def stream(self, amt: int | None) -> Iterator[bytes]:
        yield from self.chunks


def test_watch_stream_parser_splits_concatenated_and_partial_objects() -> None:
    chunks = _Chunks(b'{"result":{"a":1}}{"result"', b':{"b":2}}\n\n{"res', b'ult":{"c":"}{"}}\n')
    objects = list(etcd_wire.json_objects(chunks))  # type: ignore[arg-type]
    assert objects == [{"result": {"a": 1}}, {"result": {"b": 2}}, {"result": {"c": "}{"}}]
