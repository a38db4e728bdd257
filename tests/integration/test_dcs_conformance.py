"""One contract, every backend: MemoryKV (fake clock), etcd, etcd with TLS and auth, and ZooKeeper.

Watches: etcd and the in-memory KV replay every event with its revision; ZooKeeper only signals
that something under the prefix changed (several changes may come as one event).  Tests of the
exact replay run on the first kind; the tests every backend passes check what ClusterStore relies
on: a change wakes the watcher, and resuming from the returned revision loses no change.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable

import pytest

from pgha.dcs.base import Compacted, DCSError, LeaseNotFound, WatchEvent
from tests.support.etcd import Backend

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix() -> str:
    return f"/conformance-{uuid.uuid4().hex[:8]}/"


class Watcher:
    """Runs watch_prefix in a background thread and collects its events."""

    def __init__(self, dcs: Backend, prefix: str, start_revision: int) -> None:
        self.events: list[WatchEvent] = []
        self.stop = threading.Event()
        self.result: int | BaseException | None = None
        self._arrived = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(dcs, prefix, start_revision), daemon=True)
        self._thread.start()

    def _run(self, dcs: Backend, prefix: str, start_revision: int) -> None:
        try:
            self.result = dcs.kv.watch_prefix(prefix, start_revision, self._on_event, self.stop)
        except BaseException as exc:
            self.result = exc
        with self._arrived:
            self._arrived.notify_all()

    def _on_event(self, event: WatchEvent) -> None:
        with self._arrived:
            self.events.append(event)
            self._arrived.notify_all()

    def wait_for(self, count: int) -> list[WatchEvent]:
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.events) >= count or self.result is not None, 20)
        return list(self.events)

    def finish(self) -> int | BaseException | None:
        self.stop.set()
        self._thread.join(20)
        assert not self._thread.is_alive(), "watch_prefix did not return after stop was set"
        return self.result


def test_put_get_and_revisions(dcs: Backend, prefix: str) -> None:
    kv = dcs.kv
    r1 = kv.put(prefix + "a", b"1")
    r2 = kv.put(prefix + "a", b"2")
    assert r2 > r1
    item = kv.get(prefix + "a")
    assert item is not None
    assert (item.value, item.create_revision, item.mod_revision, item.lease) == (b"2", r1, r2, 0)
    assert kv.get(prefix + "missing") is None


def test_get_prefix_returns_only_that_prefix_and_the_read_revision(dcs: Backend, prefix: str) -> None:
    kv = dcs.kv
    kv.put(prefix + "dir/x", b"x")
    kv.put(prefix + "dir/y", b"y")
    last = kv.put(prefix + "dirt", b"not under dir/")
    revision, items = kv.get_prefix(prefix + "dir/")
    assert [i.key for i in items] == [prefix + "dir/x", prefix + "dir/y"]
    assert revision >= last


def test_create_only_when_absent(dcs: Backend, prefix: str) -> None:
    kv = dcs.kv
    assert kv.create(prefix + "k", b"first")
    assert not kv.create(prefix + "k", b"second")
    item = kv.get(prefix + "k")
    assert item is not None and item.value == b"first"


def test_replace_and_delete_if_compare_mod_revision(dcs: Backend, prefix: str) -> None:
    kv = dcs.kv
    key = prefix + "k"
    assert not kv.replace(key, b"x", 1)
    assert not kv.delete_if(key, 0)
    kv.put(key, b"v1")
    item = kv.get(key)
    assert item is not None
    assert not kv.replace(key, b"stale", item.mod_revision - 1)
    assert kv.replace(key, b"v2", item.mod_revision)
    assert not kv.delete_if(key, item.mod_revision)  # its revision moved on
    newer = kv.get(key)
    assert newer is not None and newer.value == b"v2" and newer.create_revision == item.create_revision
    assert kv.delete_if(key, newer.mod_revision)
    assert kv.get(key) is None


def test_delete_and_delete_prefix(dcs: Backend, prefix: str) -> None:
    kv = dcs.kv
    for k in ("a/1", "a/2", "ab", "b"):
        kv.put(prefix + k, b"")
    kv.delete(prefix + "b")
    kv.delete(prefix + "never-existed")
    kv.delete_prefix(prefix + "a/")
    assert [i.key for i in kv.get_prefix(prefix)[1]] == [prefix + "ab"]


def test_lease_binds_keys_and_revoke_removes_them(dcs: Backend, prefix: str) -> None:
    kv = dcs.kv
    lease = kv.grant(30)
    assert lease > 0
    assert kv.keepalive(lease) == 30
    kv.put(prefix + "bound", b"", lease=lease)
    kv.put(prefix + "free", b"")
    item = kv.get(prefix + "bound")
    assert item is not None and item.lease == lease
    kv.revoke(lease)
    assert kv.get(prefix + "bound") is None
    assert kv.get(prefix + "free") is not None
    with pytest.raises(LeaseNotFound):
        kv.keepalive(lease)
    with pytest.raises(LeaseNotFound):
        kv.put(prefix + "late", b"", lease=lease)
    kv.revoke(lease)  # revoking a gone lease is harmless


def test_lease_expiry_removes_bound_keys(dcs: Backend, prefix: str) -> None:
    kv = dcs.kv
    lease = kv.grant(2)
    kv.put(prefix + "bound", b"", lease=lease)
    assert kv.create(prefix + "claim", b"", lease=lease)
    dcs.expire(lease, 2)
    assert kv.get_prefix(prefix)[1] == []
    with pytest.raises(LeaseNotFound):
        kv.keepalive(lease)


def test_keepalive_keeps_keys_alive(dcs: Backend, prefix: str) -> None:
    kv = dcs.kv
    lease = kv.grant(10)
    kv.put(prefix + "bound", b"", lease=lease)
    assert kv.keepalive(lease) == 10
    assert kv.get(prefix + "bound") is not None


def exact_watch_only(dcs: Backend) -> None:
    if not dcs.exact_watch:
        pytest.skip(f"{dcs.kind} watches signal changes; they do not replay each event")


def test_watch_delivers_events_in_order(dcs: Backend, prefix: str) -> None:
    exact_watch_only(dcs)
    kv = dcs.kv
    start = kv.get_prefix(prefix)[0] + 1
    watcher = Watcher(dcs, prefix, start)
    r1 = kv.put(prefix + "a", b"1")
    kv.put("/elsewhere-" + prefix.strip("/"), b"not watched")
    kv.delete(prefix + "a")
    events = watcher.wait_for(2)
    resume = watcher.finish()
    assert [(e.kind, e.key) for e in events] == [("put", prefix + "a"), ("delete", prefix + "a")]
    assert events[0].revision == r1 and events[1].revision > r1
    assert isinstance(resume, int) and resume > events[1].revision


def test_watch_resumes_from_the_returned_revision(dcs: Backend, prefix: str) -> None:
    exact_watch_only(dcs)
    kv = dcs.kv
    watcher = Watcher(dcs, prefix, kv.get_prefix(prefix)[0] + 1)
    kv.put(prefix + "seen", b"")
    watcher.wait_for(1)
    resume = watcher.finish()
    assert isinstance(resume, int)
    kv.put(prefix + "while-away-1", b"")
    kv.put(prefix + "while-away-2", b"")
    again = Watcher(dcs, prefix, resume)
    events = again.wait_for(2)
    again.finish()
    assert [e.key for e in events] == [prefix + "while-away-1", prefix + "while-away-2"]


def test_watch_replays_history_from_an_old_revision(dcs: Backend, prefix: str) -> None:
    exact_watch_only(dcs)
    kv = dcs.kv
    first = kv.put(prefix + "x", b"1")
    kv.put(prefix + "x", b"2")
    watcher = Watcher(dcs, prefix, first)
    events = watcher.wait_for(2)
    watcher.finish()
    assert [e.revision for e in events][:1] == [first] and len(events) == 2


def test_watch_returns_when_stopped_while_idle(dcs: Backend, prefix: str) -> None:
    watcher = Watcher(dcs, prefix, dcs.kv.get_prefix(prefix)[0] + 1)
    assert isinstance(watcher.finish(), int)


def test_watch_from_a_compacted_revision_raises_compacted(dcs: Backend, prefix: str) -> None:
    kv = dcs.kv
    old = kv.put(prefix + "x", b"1")
    kv.put(prefix + "x", b"2")
    latest = kv.put(prefix + "x", b"3")
    dcs.compact(latest)
    watcher = Watcher(dcs, prefix, old)
    watcher.wait_for(1)
    assert isinstance(watcher.finish(), Compacted)
    # From the compaction revision on, watching works again.
    again = Watcher(dcs, prefix, latest)
    assert [e.revision for e in again.wait_for(1)] == [latest]
    again.finish()


def test_one_kv_is_shared_by_threads(dcs: Backend, prefix: str) -> None:
    kv = dcs.kv
    winners: list[int] = []
    watcher = Watcher(dcs, prefix, kv.get_prefix(prefix)[0] + 1)

    def race(i: int) -> None:
        if kv.create(prefix + "only-one", str(i).encode()):
            winners.append(i)
        kv.put(prefix + f"mine-{i}", b"")

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    events = watcher.wait_for(9 if dcs.exact_watch else 1)
    watcher.finish()
    assert len(events) == 9 or (not dcs.exact_watch and events)
    assert len(kv.get_prefix(prefix)[1]) == 9


# --- what every backend's watch gives ClusterStore --------------------------------------------
def test_watch_wakes_on_each_put_and_delete(dcs: Backend, prefix: str) -> None:
    kv = dcs.kv
    kv.put(prefix + "existing", b"")
    watcher = Watcher(dcs, prefix, kv.get_prefix(prefix)[0] + 1)
    for n, change in enumerate([lambda: kv.put(prefix + "new", b"1"), lambda: kv.put(prefix + "new", b"2"),
                                lambda: kv.delete(prefix + "existing"), lambda: kv.delete_prefix(prefix)], 1):
        change()
        events = watcher.wait_for(n)
        assert len(events) >= n
        assert all(a.revision < b.revision for a, b in itertools.pairwise(events))
    watcher.finish()


def test_no_event_without_a_change(dcs: Backend, prefix: str) -> None:
    kv = dcs.kv
    kv.put(prefix + "x", b"")
    watcher = Watcher(dcs, prefix, kv.get_prefix(prefix)[0] + 1)
    kv.put("/elsewhere-" + prefix.strip("/"), b"not watched")
    threading.Event().wait(1.0)
    assert watcher.finish() is not None and watcher.events == []


def test_changes_while_nobody_watches_wake_the_next_watch(dcs: Backend, prefix: str) -> None:
    kv = dcs.kv
    kv.put(prefix + "stays", b"")
    kv.put(prefix + "goes", b"")
    watcher = Watcher(dcs, prefix, kv.get_prefix(prefix)[0] + 1)
    resume = watcher.finish()
    assert isinstance(resume, int) and watcher.events == []
    for change in (lambda: kv.put(prefix + "stays", b"changed"), lambda: kv.delete(prefix + "goes")):
        change()
        again = Watcher(dcs, prefix, resume)
        assert again.wait_for(1), "a change made between two watches was lost"
        resume = again.finish()
        assert isinstance(resume, int)
        quiet = Watcher(dcs, prefix, resume)
        threading.Event().wait(0.5)
        quiet_resume = quiet.finish()
        assert quiet.events == [], "a change was reported twice across a resume"
        assert isinstance(quiet_resume, int)
        resume = quiet_resume


def test_a_watch_from_an_old_revision_wakes_at_once(dcs: Backend, prefix: str) -> None:
    kv = dcs.kv
    first = kv.put(prefix + "x", b"1")
    kv.put(prefix + "x", b"2")
    watcher = Watcher(dcs, prefix, first)
    assert watcher.wait_for(1)
    watcher.finish()


def test_a_key_bound_to_another_clients_lease_lives_and_dies_with_it(dcs: Backend, prefix: str) -> None:
    """ClusterStore.handoff_leader: the leader key rebound to the candidate's lease (another process)."""
    other = dcs.second_client()
    theirs = other.grant(30)
    mine = dcs.kv.grant(30)
    key = prefix + "leader"
    assert dcs.kv.create(key, b"n1", mine)
    current = dcs.kv.get(key)
    assert current is not None and current.lease == mine
    assert dcs.kv.replace(key, b"n2", current.mod_revision, theirs)
    handed = dcs.kv.get(key)
    assert handed is not None and (handed.value, handed.lease) == (b"n2", theirs)
    assert handed.mod_revision > current.mod_revision
    dcs.kv.revoke(mine)  # the old leader's lease no longer matters
    assert dcs.kv.get(key) == handed
    seen = other.get(key)
    assert seen is not None and (seen.value, seen.lease) == (b"n2", theirs)
    watcher = Watcher(dcs, prefix, dcs.kv.get_prefix(prefix)[0] + 1)
    other.revoke(theirs)
    assert watcher.wait_for(1), "the end of the owner's lease did not wake the watcher"
    watcher.finish()
    assert dcs.kv.get(key) is None and dcs.kv.get_prefix(prefix)[1] == []
    assert dcs.kv.create(key, b"n3", dcs.kv.grant(30))  # the key is free again


def test_binding_a_key_to_a_gone_lease_of_another_client_fails(dcs: Backend, prefix: str) -> None:
    other = dcs.second_client()
    gone = other.grant(30)
    other.revoke(gone)
    with pytest.raises(LeaseNotFound):
        dcs.kv.put(prefix + "k", b"", lease=gone)
    assert dcs.kv.get(prefix + "k") is None


@pytest.mark.parametrize("call", [
    lambda kv: kv.get("/x"),
    lambda kv: kv.get_prefix("/x/"),
    lambda kv: kv.put("/x", b""),
    lambda kv: kv.create("/x", b""),
    lambda kv: kv.grant(5),
    lambda kv: kv.keepalive(1),
    lambda kv: kv.watch_prefix("/x/", 1, lambda e: None, threading.Event()),
], ids=["get", "get_prefix", "put", "create", "grant", "keepalive", "watch"])
def test_unreachable_store_raises_dcs_error_with_one_clear_line(dcs: Backend,
                                                                call: Callable[..., object]) -> None:
    kv = dcs.unreachable()
    with pytest.raises(DCSError) as info:
        call(kv)
    message = str(info.value)
    assert "\n" not in message and "unreachable" in message
    assert not isinstance(info.value, LeaseNotFound)
    if dcs.kind == "etcd":
        assert message.startswith("etcd unreachable at http://127.0.0.1:")
        assert "start etcd or fix etcd.endpoints" in message
