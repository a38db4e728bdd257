"""ClusterStore on MemoryKV.

The same contract runs on a real etcd in tests/integration/test_store_etcd.py.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from pgha.core.model import ClusterConfig, MemberInfo, MemberIntent, Role, Switchover, SyncState, Tags
from pgha.dcs import codec
from pgha.dcs.base import DCSError
from pgha.dcs.store import ClusterStore, HistoryEntry, NoLease
from tests.support.etcd import Backend, MemoryBackend


def race(n: int, attempt: Callable[[int], bool]) -> list[int]:
    """Run ``attempt(i)`` for i in range(n) at once in threads; return the i that succeeded."""
    winners: list[int] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        if attempt(i):
            winners.append(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return winners


class StoreContract:
    """Behaviour every backend must give ClusterStore; subclasses provide the ``backend`` fixture."""

    @pytest.fixture
    def name(self) -> str:
        return f"c-{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def store(self, backend: Backend, name: str) -> ClusterStore:
        return ClusterStore(backend.kv, name)

    # --- reading ---------------------------------------------------------------------------
    def test_empty_cluster_reads_as_defaults(self, store: ClusterStore) -> None:
        view = store.read()
        assert view.name == store.cluster and view.revision > 0
        assert view.leader is None and view.system_id is None and view.initializing is None
        assert view.config == ClusterConfig() and dict(view.members) == {}
        assert view.sync is None and view.switchover is None and view.last_leader is None

    # --- leadership --------------------------------------------------------------------------
    def test_only_one_of_many_acquires_the_leader_key(self, backend: Backend, store: ClusterStore) -> None:
        leases = [backend.kv.grant(30) for _ in range(6)]
        winners = race(6, lambda i: store.acquire_leader(f"n{i}", leases[i]))
        assert len(winners) == 1
        leader = store.read().leader
        assert leader is not None
        assert (leader.name, leader.lease_id) == (f"n{winners[0]}", leases[winners[0]])
        assert leader.mod_revision > 0
        assert store.acquire_leader(f"n{winners[0]}", leases[winners[0]])  # already ours: still True

    def test_keys_that_die_with_their_holder_are_never_written_without_a_lease(
            self, store: ClusterStore) -> None:
        """Lease 0 (ours expired, a new one is being granted) would make the key permanent."""
        with pytest.raises(NoLease, match="no lease to bind /leader to yet"):
            store.acquire_leader("n1", 0)
        with pytest.raises(NoLease):
            store.claim_initialize("n1", 0)
        with pytest.raises(NoLease):
            store.publish_member(MemberInfo(name="n1"), 0)
        view = store.read()
        assert view.leader is None and view.initializing is None and dict(view.members) == {}

    def test_only_our_own_latest_history_entry_is_retracted(self, store: ClusterStore) -> None:
        """A promotion recorded but never made is removed by the member it names, and only then."""
        store.append_history(HistoryEntry(1, 100, 1.0, "failover", "n1", None))
        store.append_history(HistoryEntry(2, 200, 2.0, "switchover from n1", "n2", "n1", "switchover"))
        assert not store.retract_history(1, "n1")  # not the latest entry
        assert not store.retract_history(2, "n1")  # not ours
        assert not store.retract_history(3, "n2")  # another timeline
        assert store.retract_history(2, "n2")
        assert [e.timeline for e in store.history()] == [1]
        assert not store.retract_history(2, "n2")  # gone already

    def test_leader_key_goes_with_its_lease(self, backend: Backend, store: ClusterStore) -> None:
        lease = backend.kv.grant(2)
        assert store.acquire_leader("n1", lease)
        store.publish_member(MemberInfo("n1", role=Role.PRIMARY), lease)
        backend.expire(lease, 2)
        view = store.read()
        assert view.leader is None and dict(view.members) == {}

    def test_release_only_by_the_owner(self, backend: Backend, store: ClusterStore) -> None:
        assert store.acquire_leader("n1", backend.kv.grant(30))
        assert not store.release_leader("n2")
        assert store.read().leader is not None
        assert store.release_leader("n1")
        assert store.read().leader is None
        assert not store.release_leader("n1")

    def test_handoff_rebinds_the_key_to_the_candidate(self, backend: Backend, store: ClusterStore) -> None:
        mine, theirs = backend.kv.grant(30), backend.kv.grant(30)
        assert store.acquire_leader("n1", mine)
        assert not store.handoff_leader("n2", "n3", theirs)  # only the holder hands off
        assert store.handoff_leader("n1", "n2", theirs)
        leader = store.read().leader
        assert leader is not None and (leader.name, leader.lease_id) == ("n2", theirs)
        backend.kv.revoke(mine)  # the old leader's lease no longer matters
        assert store.read().leader == leader
        assert not store.handoff_leader("n1", "n3", mine)

    def test_handoff_to_a_gone_lease_fails_and_keeps_the_leader(self, backend: Backend,
                                                               store: ClusterStore) -> None:
        mine, gone = backend.kv.grant(30), backend.kv.grant(30)
        backend.kv.revoke(gone)
        assert store.acquire_leader("n1", mine)
        assert not store.handoff_leader("n1", "n2", gone)
        assert not store.handoff_leader("n1", "n2", 0)
        leader = store.read().leader
        assert leader is not None and leader.name == "n1"

    def test_delete_leader_if_needs_the_current_name_and_revision(self, backend: Backend,
                                                                 store: ClusterStore) -> None:
        assert store.acquire_leader("n1", backend.kv.grant(30))
        old = store.read().leader
        assert old is not None
        assert store.release_leader("n1")
        assert store.acquire_leader("n1", backend.kv.grant(30))  # same name, newer key
        assert not store.delete_leader_if("n1", old.mod_revision)
        current = store.read().leader
        assert current is not None and current.mod_revision > old.mod_revision
        assert not store.delete_leader_if("n2", current.mod_revision)
        assert store.delete_leader_if("n1", current.mod_revision)
        assert store.read().leader is None

    # --- initialization ---------------------------------------------------------------------------
    def test_initialize_race_then_publish(self, backend: Backend, store: ClusterStore) -> None:
        leases = [backend.kv.grant(30) for _ in range(4)]
        winners = race(4, lambda i: store.claim_initialize(f"n{i}", leases[i]))
        assert len(winners) == 1
        winner = f"n{winners[0]}"
        view = store.read()
        assert view.initializing == winner and view.system_id is None
        loser = next(f"n{i}" for i in range(4) if i != winners[0])
        with pytest.raises(DCSError, match="not published"):
            store.publish_initialized("999", loser)
        store.publish_initialized("7301", winner)
        backend.kv.revoke(leases[winners[0]])  # the published id is permanent
        view = store.read()
        assert (view.system_id, view.initializing, view.last_leader) == ("7301", None, winner)
        assert not store.claim_initialize("late", backend.kv.grant(30))

    def test_an_abandoned_claim_expires_with_its_lease(self, backend: Backend, store: ClusterStore) -> None:
        lease = backend.kv.grant(30)
        assert store.claim_initialize("n1", lease)
        backend.kv.revoke(lease)
        assert store.read().initializing is None
        assert store.claim_initialize("n2", backend.kv.grant(30))

    # --- configuration ----------------------------------------------------------------------------
    def test_seed_config_only_once(self, store: ClusterStore) -> None:
        assert store.get_config() == (ClusterConfig(), 0)
        assert store.seed_config(ClusterConfig(ttl=20))
        assert not store.seed_config(ClusterConfig(ttl=30))
        config, revision = store.get_config()
        assert config == ClusterConfig(ttl=20) and revision > 0
        assert store.read().config == ClusterConfig(ttl=20)

    def test_set_config_with_mod_revision_detects_concurrent_edits(self, store: ClusterStore) -> None:
        assert store.set_config(ClusterConfig(pause=True), mod_revision=0)  # 0: only while absent
        assert not store.set_config(ClusterConfig(), mod_revision=0)
        _, revision = store.get_config()
        assert store.set_config(ClusterConfig(ttl=25, parameters={"work_mem": "8MB"}), revision)
        assert not store.set_config(ClusterConfig(ttl=40), revision)  # stale
        assert store.read().config == ClusterConfig(ttl=25, parameters={"work_mem": "8MB"})
        assert store.set_config(ClusterConfig(ttl=40))  # unconditional
        assert store.get_config()[0].ttl == 40

    def test_a_bad_stored_config_keeps_its_valid_settings(self, backend: Backend,
                                                          store: ClusterStore) -> None:
        backend.kv.put(store.key("config"), b'{"ttl": 30, "loop_wait": "soon", "pause": true, "new": 1}')
        view = store.read()
        assert view.config == ClusterConfig(ttl=30, pause=True)
        assert len(store.problems) == 1 and "loop_wait" in store.problems[0]
        with pytest.raises(ValueError, match="loop_wait") as info:
            store.get_config()
        assert "\n" not in str(info.value)

    # --- members ---------------------------------------------------------------------------------
    def test_members_are_published_with_their_lease_and_vanish_with_it(self, backend: Backend,
                                                                        store: ClusterStore) -> None:
        a, b = backend.kv.grant(30), backend.kv.grant(30)
        info = MemberInfo("n1", role=Role.REPLICA, state="streaming", received_lsn=100,
                          tags=Tags(nofailover=True, extra={"dc": "east"}), host="10.0.0.1", port=5432)
        store.publish_member(info, a)
        store.publish_member(MemberInfo("n2"), b)
        members = store.read().members
        assert members["n1"] == MemberInfo(**{**info.__dict__, "lease_id": a})
        assert members["n2"].lease_id == b
        backend.kv.revoke(a)
        assert set(store.read().members) == {"n2"}
        store.delete_member("n2")
        assert dict(store.read().members) == {}

    def test_an_undecodable_member_is_skipped_and_reported(self, backend: Backend,
                                                           store: ClusterStore) -> None:
        store.publish_member(MemberInfo("good"), backend.kv.grant(30))
        backend.kv.put(store.key("members/bad"), b'{"name": "bad", "port": "five"}')
        backend.kv.put(store.key("members/worse"), b"\xff not json")
        view = store.read()
        assert set(view.members) == {"good"}
        assert sorted(p.split(":")[0] for p in store.problems) == ["members/bad", "members/worse"]

    # --- sync, switchover, intents, history ------------------------------------------------------------
    def test_only_the_leader_publishes_sync(self, backend: Backend, store: ClusterStore) -> None:
        assert not store.publish_sync("n1", ("n2",), 1)
        assert store.acquire_leader("n1", backend.kv.grant(30))
        assert not store.publish_sync("n2", ("n1",), 1)
        assert store.publish_sync("n1", ("n2", "n3"), 1)
        sync = store.read().sync
        assert sync is not None and (sync.leader, sync.standbys, sync.quorum) == ("n1", ("n2", "n3"), 1)
        assert sync.mod_revision > 0

    def test_switchover_is_created_once_and_cleared_by_id(self, store: ClusterStore) -> None:
        assert store.set_switchover(Switchover(id="s1", leader="n1", candidate="n2"))
        assert not store.set_switchover(Switchover(id="s2"))
        assert not store.update_switchover_phase("s2", "pausing")
        assert store.update_switchover_phase("s1", "pausing")
        switchover = store.read().switchover
        assert switchover is not None and (switchover.id, switchover.candidate) == ("s1", "n2")
        assert switchover.phase == "pausing" and switchover.phase_at is not None
        store.clear_switchover("other")
        assert store.read().switchover is not None
        store.clear_switchover("s1")
        assert store.read().switchover is None
        assert store.set_switchover(Switchover(id="s3", kind="failover", candidate="n3"))
        store.clear_switchover()
        assert store.read().switchover is None

    def test_intents_per_member(self, store: ClusterStore) -> None:
        restart = MemberIntent(action="restart", id="i1", only_if_pending=True)
        assert store.set_intent("n1", restart)
        assert not store.set_intent("n1", MemberIntent(action="reload", id="i2"))
        assert store.set_intent("n2", MemberIntent(action="reinitialize", id="i3"))
        assert store.read().intents == {"n1": restart, "n2": MemberIntent(action="reinitialize", id="i3")}
        store.clear_intent("n1", "i2")
        assert set(store.read().intents) == {"n1", "n2"}
        store.clear_intent("n1", "i1")
        assert set(store.read().intents) == {"n2"}

    def test_history_keeps_append_order(self, store: ClusterStore) -> None:
        entries = [
            HistoryEntry(0, 0, 1.0, "cluster initialized", "n1", kind="bootstrap"),
            HistoryEntry(1, 5000, 2.0, "n1 died", "n2", "n1"),
            HistoryEntry(2, 9000, 1.5, "switchover s1", "n3", "n2", kind="switchover"),  # clock went back
        ]
        for entry in entries:
            store.append_history(entry)
        assert store.history() == entries
        view = store.read()
        assert view.forks == {1: 5000, 2: 9000} and view.last_leader == "n3"

    def test_concurrent_history_appends_all_land(self, store: ClusterStore) -> None:
        def append(i: int) -> bool:
            store.append_history(HistoryEntry(i, i, 0.0, "r", f"n{i}"))
            return True

        race(5, append)
        assert sorted(e.timeline for e in store.history()) == [0, 1, 2, 3, 4]

    # --- clusters side by side -------------------------------------------------------------------------
    def test_two_clusters_in_one_store_do_not_interfere(self, backend: Backend, name: str) -> None:
        # The first name is a prefix of the second.
        one, two = ClusterStore(backend.kv, name), ClusterStore(backend.kv, name + "x")
        lease = backend.kv.grant(30)
        for store, sysid in ((one, "111"), (two, "222")):
            assert store.claim_initialize("n1", lease)
            store.publish_initialized(sysid, "n1")
            assert store.seed_config(ClusterConfig(ttl=22 if store is one else 24))
            assert store.acquire_leader("n1", lease)
            store.publish_member(MemberInfo("n1"), lease)
        assert two.set_switchover(Switchover(id="only-in-two"))
        view1, view2 = one.read(), two.read()
        assert (view1.system_id, view2.system_id) == ("111", "222")
        assert (view1.config.ttl, view2.config.ttl) == (22, 24)
        assert view1.switchover is None and view2.switchover is not None
        assert {name, name + "x"} <= set(ClusterStore.list_clusters(backend.kv))
        assert one.release_leader("n1")
        assert two.read().leader is not None
        one.remove_cluster()
        assert one.read().system_id is None and two.read().system_id == "222"
        assert name not in ClusterStore.list_clusters(backend.kv)

    def test_list_clusters_under_another_prefix(self, backend: Backend, name: str) -> None:
        store = ClusterStore(backend.kv, name, prefix="/other-" + name)
        assert store.seed_config(ClusterConfig())
        store.publish_member(MemberInfo("n1"), backend.kv.grant(30))
        ClusterStore(backend.kv, "members-only", prefix="/other-" + name).delete_member("x")
        assert ClusterStore.list_clusters(backend.kv, "/other-" + name) == [name]
        assert name not in ClusterStore.list_clusters(backend.kv)

    # --- watch -----------------------------------------------------------------------------------------
    def test_watch_wakes_on_change_and_resumes(self, backend: Backend, store: ClusterStore) -> None:
        woken = threading.Semaphore(0)
        stop = threading.Event()
        result: list[int] = []
        start = store.read().revision + 1
        thread = threading.Thread(target=lambda: result.append(store.watch(start, woken.release, stop)))
        thread.start()
        ClusterStore(backend.kv, store.cluster + "-neighbour").publish_member(MemberInfo("x"), backend.kv.grant(30))
        store.set_switchover(Switchover(id="s"))
        assert woken.acquire(timeout=20)
        stop.set()
        thread.join(20)
        assert not thread.is_alive() and result[0] > start
        store.clear_switchover()
        again = threading.Event()
        again.set()  # already stopped: deliver what is pending, then return
        calls: list[int] = []
        assert store.watch(result[0], lambda: calls.append(1), again) >= result[0]

    def test_watch_after_compaction_calls_back_once_and_asks_for_a_full_read(self, backend: Backend,
                                                                             store: ClusterStore) -> None:
        store.seed_config(ClusterConfig())
        old = store.read().revision
        store.set_config(ClusterConfig(ttl=20))
        assert store.set_switchover(Switchover(id="s"))
        latest = store.read().revision
        backend.compact(latest)
        calls: list[int] = []
        assert store.watch(old, lambda: calls.append(1), threading.Event()) == 0
        assert calls == [1]


class TestStoreOnMemory(StoreContract):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        backend = MemoryBackend()
        yield backend
        backend.close()

    def test_unreachable_store_raises_dcs_error(self, backend: Backend, store: ClusterStore) -> None:
        assert isinstance(backend, MemoryBackend)
        backend.memory.set_unreachable(True)
        with pytest.raises(DCSError):
            store.read()
        backend.memory.set_unreachable(False)
        assert store.read().leader is None


# --- the codec behind the store: values from other members are untrusted -------------------------------
def test_member_round_trip_with_nested_tags_and_role() -> None:
    info = MemberInfo("n1", role=Role.PRIMARY, timeline=3, wal_lsn=2**40, following=None,
                      tags=Tags(nosync=True, failover_priority=5, extra={"zone": "b"}), pgbouncer=True)
    assert codec.decode_member(codec.encode_member(info)) == info


def test_unknown_fields_are_ignored_and_missing_ones_default() -> None:
    data = b'{"name": "n1", "role": "replica", "from_the_future": [1], ' \
        b'"tags": {"nofailover": true, "new": 1}}'
    info = codec.decode_member(data)
    assert info == MemberInfo("n1", role=Role.REPLICA, tags=Tags(nofailover=True))
    assert codec.decode(Switchover, b'{"id": "s", "extra": 1}') == Switchover(id="s")


@pytest.mark.parametrize(("data", "fragment"), [
    (b"[1, 2]", "expected a JSON object"),
    (b"{", "not valid JSON"),
    (b'{"role": "boss"}', "role: 'boss' is not a valid role"),
    (b'{"port": true}', "port: expected int"),
    (b'{"tags": {"extra": {"zone": 1}}}', "tags.extra.zone: expected str"),
])
def test_a_bad_member_value_raises_one_line_value_error(data: bytes, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        codec.decode_member(data, name="n1")
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_required_fields_are_named_when_missing() -> None:
    with pytest.raises(ValueError, match="missing required field id"):
        codec.decode_intent(b'{"action": "restart"}')
    with pytest.raises(ValueError, match="action"):
        codec.decode_intent(b'{"action": "explode", "id": "i"}')


def test_config_strict_and_lenient() -> None:
    config = ClusterConfig(ttl=20, synchronous_mode="quorum",
                           parameters={"max_connections": 200, "jit": False})
    assert codec.decode_config(codec.encode_config(config)) == config
    with pytest.raises(ValueError, match=r"^invalid cluster config: ttl: 1\.0 is too short"):
        codec.decode_config(b'{"ttl": 1}')
    kept, problems = codec.decode_config_lenient(b'{"ttl": 1, "loop_wait": 2, "synchronous_mode": "maybe"}')
    assert kept == ClusterConfig(loop_wait=2)
    assert [p.split(":")[1].strip() for p in problems] == ["synchronous_mode", "ttl"]
    assert codec.decode_config_lenient(b"nonsense")[0] == ClusterConfig()


def test_sync_mod_revision_comes_from_the_key_not_the_value() -> None:
    data = codec.encode_sync(SyncState("n1", ("n2",), 1, mod_revision=99))
    assert b"mod_revision" not in data
    assert codec.decode_sync(data, 7) == SyncState("n1", ("n2",), 1, 7)
