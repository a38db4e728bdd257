"""ClusterStore on a real etcd: the contract of tests/unit/test_store.py, plus outages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgha.core.model import MemberInfo
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
    store.publish_member(MemberInfo("n1"), 0)
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
