"""ClusterStore on a real ZooKeeper: the contract of tests/unit/test_store.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgha.core.model import MemberInfo
from pgha.dcs.store import ClusterStore
from tests.support.etcd import Backend
from tests.support.zookeeper import ZooKeeperBackend, ZooKeeperServer
from tests.unit.test_store import StoreContract

pytestmark = pytest.mark.integration


class TestStoreOnZooKeeper(StoreContract):
    @pytest.fixture
    def backend(self, zookeeper: ZooKeeperServer) -> Iterator[Backend]:
        backend = ZooKeeperBackend(zookeeper)
        yield backend
        backend.close()


def test_handoff_to_another_agents_session_and_its_death(zookeeper: ZooKeeperServer) -> None:
    """Switchover across processes: the leader key bound to the candidate's session, gone when it dies."""
    backend = ZooKeeperBackend(zookeeper)
    try:
        old_leader, candidate = backend.kv, backend.second_client()
        store, candidate_store = ClusterStore(old_leader, "zk-handoff"), ClusterStore(candidate, "zk-handoff")
        mine, theirs = old_leader.grant(30), candidate.grant(2)
        assert store.acquire_leader("n1", mine)
        candidate_store.publish_member(MemberInfo("n2"), theirs)
        assert store.handoff_leader("n1", "n2", theirs)
        leader = candidate_store.read().leader
        assert leader is not None and (leader.name, leader.lease_id) == ("n2", theirs)
        assert candidate_store.acquire_leader("n2", theirs)  # the candidate sees the key as its own
        # The candidate's host dies: its session expires after its ttl, and the key with it.
        entry = candidate._leases.pop(theirs)
        from tests.support.zookeeper import freeze

        freeze(entry[0])
        backend_view = ZooKeeperBackend.__new__(ZooKeeperBackend)
        backend_view.kv = old_leader
        backend_view.expire(theirs, 2)
        view = store.read()
        assert view.leader is None and "n2" not in view.members
        entry[0].stop()
        entry[0].close()
    finally:
        backend.close()
