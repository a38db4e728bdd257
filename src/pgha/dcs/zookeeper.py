"""The KV contract on ZooKeeper, with kazoo: sessions are leases, znodes are keys, zxids are revisions.

Keys and values: see ``pgha.dcs.zk_layout`` (a key is the znode of the same
path; the znodes above it are directories).  ``create_revision`` is the
znode's czxid and ``mod_revision`` its mzxid; compare-and-set compares the
mzxid read just before and writes with that znode's data version, so a
concurrent change makes the write fail (ZooKeeper's own optimistic check).

Leases are sessions.  ``grant(ttl)`` opens a new ZooKeeper session with
timeout ttl (refused if the server negotiates less) and creates its marker, the
ephemeral znode ``<lease_dir>/<session id hex>``; the lease id is the session
id.  ``keepalive`` is a real round trip on that session (an ``exists`` of the
marker): the server expires a session only after ``timeout`` with no packet
from it, so ``LeaseKeeper``'s deadline (send time + ttl) is never later than
the server's expiry.  A session expires ttl after its last packet (rounded up
to the next tick, ``tickTime``); kazoo also pings the server in between, so
the expiry of a frozen or dead agent comes ttl after its last keepalive or
ping, as etcd's comes ttl after the last keepalive.  ``revoke`` closes the
session: its ephemeral znodes vanish at once.

A key bound to a lease this client holds is an EPHEMERAL znode of that
session, so ZooKeeper deletes it with the session.  A key bound to another
client's lease (``ClusterStore.handoff_leader`` writes the leader key bound to
the *candidate's* lease: ephemeral znodes belong only to the creating session)
is a persistent znode tagged with the owner lease id, written in one
transaction with a ``check`` that the owner's marker exists.  It counts only
while that marker exists: readers treat it as absent the moment the owner's
session ends (the same instant its ephemeral keys vanish) and delete it.  So a
handed-off leader key lives exactly as long as the candidate's session, as in
etcd it lives exactly as long as the candidate's lease.

Reads are not one snapshot: ``get_prefix`` reads the znodes one by one, and
returns as its revision the newest zxid the server had applied *before* the
first of them (kazoo's ``last_zxid``), so every change after that revision is
seen by a watch from revision + 1.

Watches are one-shot in ZooKeeper, and cannot replay history: ``watch_prefix``
arms a data and a child watch on every znode under the prefix while it scans
them, and calls ``on_event`` once per scan that found a change (a znode whose
czxid, mzxid or pzxid is at least the start revision, or a watch that fired),
then scans again, re-arming.  Events therefore say "something under the prefix
changed, at about this revision"; several changes may come as one event.  It
returns a revision to resume from without losing a change (a change before it
was seen by a scan that already reported, one after it shows in the next
call's first scan).  There is no compaction, so ``Compacted`` is never raised.

Credential, ACL and TLS: ``pgha.dcs.zk_secure``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)

from pgha.dcs import zk_layout as layout
from pgha.dcs import zk_secure
from pgha.dcs.base import DCSError, KeyValue, LeaseNotFound, WatchEvent
from pgha.dcs.zk_layout import Node
from pgha.dcs.zk_secure import ZkSecurity

log = logging.getLogger("pgha.dcs.zookeeper")
# kazoo logs every failed reconnect attempt (10 a second); our own errors say when ZooKeeper is unreachable.
KAZOO_LOG = logging.getLogger("pgha.dcs.kazoo")
KAZOO_LOG.setLevel(logging.ERROR)

FIX = "start ZooKeeper or fix dcs.zookeeper.hosts"
# Session timeout of the client's own (lease-less) session, seconds.
MAIN_SESSION = 10.0
# Seconds to wait for a new session (at least the request timeout).
CONNECT_TIMEOUT = 5.0
# How often a waiting watch checks ``stop`` (seconds).
WATCH_POLL = 0.1
# Attempts of a write that lost a race with a concurrent one before it gives up.
WRITE_ATTEMPTS = 8

T = TypeVar("T")


class _Conflict(Exception):
    """The znode changed between our read and our conditional write: read again."""


class ZooKeeperKV:
    """``KV`` on one ZooKeeper ensemble at ``hosts`` (``host:port`` each)."""

    def __init__(self, hosts: tuple[str, ...], timeout: float = 2.0, lease_dir: str = "/.pgha-leases",
                 security: ZkSecurity | None = None, root: str = "") -> None:
        if not hosts:
            raise ValueError("dcs.zookeeper.hosts is empty; list at least one host:port")
        self.hosts = tuple(hosts)
        self.timeout = timeout
        self.lease_dir = lease_dir.rstrip("/") or "/.pgha-leases"
        self.security = security
        # The prefix whose znodes must not be open to anyone (checked on every new connection).
        self.root = root.rstrip("/") or self.lease_dir.rsplit("/", 1)[0] or "/"
        self._lock = threading.Lock()
        self._client: KazooClient | None = None
        self._leases: dict[int, tuple[KazooClient, int]] = {}  # lease -> (its session's client, ttl)
        self._wakers: set[threading.Event] = set()

    def __repr__(self) -> str:
        return f"ZooKeeperKV({','.join(self.hosts)})"

    # --- connections ------------------------------------------------------------------------
    def _unreachable(self, why: str) -> DCSError:
        return DCSError(f"ZooKeeper unreachable at {','.join(self.hosts)} ({why}); {FIX}")

    def _connect(self, session_timeout: float) -> KazooClient:
        # Opening a session is a write on the ensemble (and a log sync): allow more than one request.
        wait = max(self.timeout, CONNECT_TIMEOUT)
        return zk_secure.connect(self.hosts, session_timeout, wait, self.security, KAZOO_LOG, FIX)

    def _main(self) -> KazooClient:
        with self._lock:
            if self._client is None:
                client = self._connect(MAIN_SESSION)
                try:
                    zk_secure.refuse_open_tree(client, self.root, self._wait)
                except BaseException:
                    self._close_session(client)
                    raise
                client.add_listener(self._on_state)
                self._client = client
            return self._client

    def _on_state(self, state: str) -> None:
        # A dropped or new connection may have lost watches: every watcher scans again.
        with self._lock:
            wakers = list(self._wakers)
        for event in wakers:
            event.set()

    def _wait(self, result: Any) -> Any:
        """The value of a kazoo async result, within the request timeout; DCSError when unreachable."""
        try:
            return result.get(timeout=self.timeout)
        except (NoNodeError, NodeExistsError, BadVersionError, NotEmptyError):
            raise
        except NoAuthError:
            raise DCSError(zk_secure.refused(self.security, self.root)) from None
        except KazooException as exc:
            raise self._unreachable(type(exc).__name__) from None
        except Exception as exc:
            if "timeout" in type(exc).__name__.lower():
                raise self._unreachable(f"no answer within {self.timeout:g}s") from None
            raise

    def _marker(self, lease: int) -> str:
        return f"{self.lease_dir}/{lease:016x}"

    # --- reading --------------------------------------------------------------------------------
    def _read(self, client: KazooClient, path: str, watch: Callable[..., None] | None = None) -> Node | None:
        try:
            data, stat = self._wait(client.get_async(path, watch=watch))
        except NoNodeError:
            if watch is not None:
                self._wait(client.exists_async(path, watch=watch))
            return None
        return layout.node(path, data, stat)

    def _walk(self, prefix: str, watch: Callable[..., None] | None = None) -> tuple[list[Node], int]:
        """Every znode under ``prefix`` (directories too), read level by level in parallel.

        Also the newest zxid of the directory above them (or, when that is gone, of its nearest
        existing ancestor): its pzxid records when a child came or went.
        """
        client = self._main()
        parent, start = layout.prefix_roots(prefix)
        try:
            anchor, names = self._list(client, parent, watch)
        except NoNodeError:
            return [], self._nearest(client, parent, watch)
        level = [layout.join(parent, n) for n in names if n.startswith(start)]
        if parent == "/":
            level = [p for p in level if not p.startswith("/zookeeper")]
        nodes: list[Node] = []
        while level:
            reads = [(p, client.get_async(p, watch=watch), client.get_children_async(p, watch=watch))
                     for p in level]
            level = []
            for path, read, children in reads:
                try:
                    data, stat = self._wait(read)
                    kids = self._wait(children)
                except NoNodeError:
                    continue  # deleted meanwhile: its parent's pzxid shows it
                nodes.append(layout.node(path, data, stat))
                level += [layout.join(path, k) for k in kids]
        return nodes, anchor

    def _list(self, client: KazooClient, path: str, watch: Callable[..., None] | None) -> tuple[int, list[str]]:
        """(newest zxid of ``path``, its children's names), watching its children when asked."""
        names, stat = self._wait(client.get_children_async(path, watch=watch, include_data=True))
        return max(int(stat.czxid), int(stat.mzxid), int(stat.pzxid)), list(names)

    def _nearest(self, client: KazooClient, path: str, watch: Callable[..., None] | None) -> int:
        """The newest zxid of the nearest existing ancestor of ``path`` (watched: a creation wakes us)."""
        while path not in ("", "/"):
            path = path.rsplit("/", 1)[0] or "/"
            with contextlib.suppress(NoNodeError):
                return self._list(client, path, watch)[0]
        return 0

    def _alive(self, leases: set[int], watch: Callable[..., None] | None = None) -> set[int]:
        """Which of these (other sessions') leases still have their marker."""
        client = self._main()
        checks = [(lease, client.exists_async(self._marker(lease), watch=watch)) for lease in leases]
        return {lease for lease, check in checks if self._wait(check) is not None}

    def _keys(self, nodes: list[Node], watch: Callable[..., None] | None = None) -> Iterator[Node]:
        """The nodes that are live keys; keys bound to a gone lease are deleted on the way."""
        foreign = {n.foreign_lease for n in nodes if n.is_key and n.foreign_lease}
        alive = self._alive(foreign, watch) if foreign else set()
        for n in nodes:
            if not n.is_key:
                continue
            if n.foreign_lease and n.foreign_lease not in alive:
                self._reap(n)
                continue
            yield n

    def _reap(self, n: Node) -> None:
        """Delete a key whose owner lease is gone (only if nobody rewrote it meanwhile)."""
        with contextlib.suppress(NoNodeError, BadVersionError, NotEmptyError):
            self._wait(self._main().delete_async(n.path, version=n.version))

    def _revision(self) -> int:
        """A zxid every later read on this connection reflects (asks the server when we know none)."""
        client = self._main()
        if not client.last_zxid:
            self._wait(client.exists_async("/"))
        return int(client.last_zxid or 0)

    def _current(self, path: str) -> tuple[Node | None, KeyValue | None]:
        """The znode at ``path`` and the key it holds (None when absent, a directory or orphaned)."""
        n = self._read(self._main(), path)
        if n is None or not n.is_key:
            return n, None
        if n.foreign_lease and not self._alive({n.foreign_lease}):
            return n, None
        return n, n.keyvalue()

    # --- KV: reads -------------------------------------------------------------------------------
    def get_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        revision = self._revision()
        keys = [n.keyvalue() for n in self._keys(self._walk(prefix)[0])]
        return revision, sorted(keys, key=lambda kv: kv.key)

    def get(self, key: str) -> KeyValue | None:
        n, kv = self._current(layout.key_path(key))
        if n is not None and kv is None and n.foreign_lease:
            self._reap(n)
        return kv

    # --- KV: writes --------------------------------------------------------------------------------
    def _write(self, key: str, value: bytes, lease: int, expect: Callable[[KeyValue | None], bool]) -> int | None:
        """Write ``key`` when ``expect(current key)`` holds; its new mod revision, or None when refused."""
        path = layout.key_path(key)
        for _ in range(WRITE_ATTEMPTS):
            n, current = self._current(path)
            if not expect(current):
                return None
            try:
                return self._write_node(path, n, value, lease)
            except _Conflict:
                continue
        raise DCSError(f"ZooKeeper: {key} kept changing under a write ({WRITE_ATTEMPTS} attempts); try again")

    def _write_node(self, path: str, n: Node | None, value: bytes, lease: int) -> int:
        own = self._own_session(lease) if lease else None
        client = own or self._main()
        foreign = lease if lease and own is None else 0
        data = layout.encode(value, foreign)
        owner = client.client_id[0] if own is not None else 0
        if foreign and not self._alive({foreign}):
            raise LeaseNotFound(f"lease {lease:x} not found: its ZooKeeper session ended")
        try:
            if n is None and not foreign:
                _, stat = self._wait(client.create_async(path, data, ephemeral=bool(own), makepath=True,
                                                         include_data=True))
                return int(stat.mzxid)
            if n is not None and n.ephemeral_owner == owner and not foreign:
                return int(self._wait(client.set_async(path, data, version=n.version)).mzxid)
        except (NodeExistsError, BadVersionError, NoNodeError):
            raise _Conflict from None
        return self._transact(client, path, n, data, own is not None, foreign)

    def _transact(self, client: KazooClient, path: str, n: Node | None, data: bytes, ephemeral: bool,
                  foreign: int) -> int:
        """Replace the znode in one transaction (its owner changes, or the owner lease must be checked)."""
        if n is not None and n.children and ephemeral:
            raise DCSError(f"ZooKeeper: {path} has keys below it, so it cannot be bound to a lease")
        if n is None:
            self._wait(client.ensure_path_async(path.rsplit("/", 1)[0] or "/"))
        txn = client.transaction()
        if foreign:
            txn.check(self._marker(foreign), -1)
        if n is not None and n.ephemeral_owner == 0 and not ephemeral:
            txn.set_data(path, data, n.version)
        else:
            if n is not None:
                txn.delete(path, n.version)
            txn.create(path, data, ephemeral=ephemeral)
        results = self._wait(txn.commit_async())
        failures = [r for r in results if isinstance(r, Exception)]
        if failures:
            if foreign and isinstance(results[0], NoNodeError):
                raise LeaseNotFound(f"lease {foreign:x} not found: its ZooKeeper session ended")
            raise _Conflict
        stat = self._wait(client.exists_async(path))
        return int(stat.mzxid) if stat is not None else self._revision()

    def _own_session(self, lease: int) -> KazooClient | None:
        """The client of ``lease`` when this KV holds it and it is still that session; else None."""
        with self._lock:
            entry = self._leases.get(lease)
        if entry is None:
            return None
        client = entry[0]
        if client.client_id is None or client.client_id[0] != lease or client.state == KazooState.LOST:
            self._forget(lease)
            raise LeaseNotFound(f"lease {lease:x} not found: its ZooKeeper session expired")
        return client

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        revision = self._write(key, value, lease, lambda current: True)
        assert revision is not None
        return revision

    def create(self, key: str, value: bytes, lease: int = 0) -> bool:
        return self._write(key, value, lease, lambda current: current is None) is not None

    def replace(self, key: str, value: bytes, mod_revision: int, lease: int = 0) -> bool:
        if mod_revision <= 0:
            return False
        return self._write(key, value, lease,
                           lambda current: current is not None and current.mod_revision == mod_revision) is not None

    def delete(self, key: str) -> None:
        self._delete(layout.key_path(key), None)

    def delete_if(self, key: str, mod_revision: int) -> bool:
        if mod_revision <= 0:
            return False
        return self._delete(layout.key_path(key), mod_revision)

    def _delete(self, path: str, mod_revision: int | None) -> bool:
        for _ in range(WRITE_ATTEMPTS):
            n, current = self._current(path)
            if n is None or not n.is_key:
                return False
            if mod_revision is not None and (current is None or current.mod_revision != mod_revision):
                return False
            try:
                self._wait(self._main().delete_async(path, version=n.version))
                return True
            except NoNodeError:
                return False
            except NotEmptyError:  # keys below it: it stays as their directory
                with contextlib.suppress(BadVersionError, NoNodeError):
                    self._wait(self._main().set_async(path, b"", version=n.version))
                    return True
            except BadVersionError:
                if mod_revision is not None:
                    return False
        return False

    def delete_prefix(self, prefix: str) -> None:
        client = self._main()
        parent, start = layout.prefix_roots(prefix)
        try:
            names = self._wait(client.get_children_async(parent))
        except NoNodeError:
            return
        for name in names:
            path = layout.join(parent, name)
            if name.startswith(start) and not path.startswith(("/zookeeper", self.lease_dir)):
                with contextlib.suppress(NoNodeError):
                    self._retry(lambda p=path: client.delete(p, recursive=True))  # type: ignore[misc]

    def _retry(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except NoNodeError:
            raise
        except KazooException as exc:
            raise self._unreachable(type(exc).__name__) from None

    # --- leases ------------------------------------------------------------------------------------
    def grant(self, ttl: int) -> int:
        if ttl <= 0:
            raise DCSError(f"cannot grant a lease of {ttl} s: the TTL must be positive")
        client = self._connect(float(ttl))
        negotiated = float(getattr(client, "_session_timeout", ttl * 1000)) / 1000.0
        lease = int(client.client_id[0])
        try:
            if negotiated < ttl:
                raise DCSError(f"ZooKeeper granted a session of {negotiated:g} s instead of the ttl {ttl} s; "
                               "raise maxSessionTimeout in zoo.cfg (or lower the ttl)")
            self._wait(client.create_async(self._marker(lease), b"", ephemeral=True, makepath=True))
        except BaseException:
            self._close_session(client)
            raise
        with self._lock:
            self._leases[lease] = (client, round(negotiated))
        client.add_listener(lambda state, lease=lease: self._on_lease_state(lease, state))
        return lease

    def _on_lease_state(self, lease: int, state: str) -> None:
        if state == KazooState.LOST:
            # The session expired: kazoo would open a new one, which is not this lease.
            threading.Thread(target=self._forget, args=(lease,), name="zk-lease-lost", daemon=True).start()

    def _forget(self, lease: int) -> None:
        with self._lock:
            entry = self._leases.pop(lease, None)
        if entry is not None:
            self._close_session(entry[0])

    @staticmethod
    def _close_session(client: KazooClient) -> None:
        with contextlib.suppress(Exception):
            client.stop()
            client.close()

    def keepalive(self, lease: int, timeout: float | None = None) -> int:
        # kazoo moves to another server itself; the round trip below keeps the request timeout.
        client = self._own_session(lease)
        if client is None:
            alive = self._alive({lease})  # asks the server: DCSError when it cannot be reached
            raise LeaseNotFound(f"lease {lease:x} {'belongs to another client' if alive else 'not found'}: "
                                "a ZooKeeper session can only be kept alive by its own client")
        with self._lock:
            ttl = self._leases[lease][1] if lease in self._leases else 0
        if self._wait(client.exists_async(self._marker(lease))) is None:
            self._forget(lease)
            raise LeaseNotFound(f"lease {lease:x} not found: it was revoked")
        return ttl

    def revoke(self, lease: int) -> None:
        with self._lock:
            entry = self._leases.pop(lease, None)
        if entry is not None:
            # Closing the session deletes its ephemeral keys and its marker at once.
            self._close_session(entry[0])
            return
        # Another process's lease: its marker goes, so keys bound to it from outside count as gone.
        with contextlib.suppress(NoNodeError):
            self._wait(self._main().delete_async(self._marker(lease)))

    def time_to_live(self, lease: int) -> int:
        """-1 once the lease's marker is gone, else 1 (ZooKeeper does not tell a session's time left)."""
        return 1 if self._alive({lease}) else -1

    # --- watch -------------------------------------------------------------------------------------
    def watch_prefix(self, prefix: str, start_revision: int, on_event: Callable[[WatchEvent], None],
                     stop: threading.Event, poll: float | None = None) -> int:
        fired = threading.Event()

        def watcher(*_: Any) -> None:
            fired.set()

        with self._lock:
            self._wakers.add(fired)
        next_rev, last_event, first = start_revision, 0, True
        try:
            while True:
                fired.clear()
                before = self._revision()  # every change up to here shows in this scan
                nodes, anchor = self._walk(prefix, watcher)
                keys = list(self._keys(nodes, watcher))
                newest = max([anchor, *(n.newest for n in nodes)])
                if next_rev > 0 and (newest >= next_rev or not first):
                    top = max(nodes, key=lambda n: n.newest, default=None)
                    last_event = max(newest, last_event + 1, next_rev)
                    on_event(WatchEvent("put", top.path if top is not None and top in keys else prefix,
                                        last_event))
                next_rev = max(next_rev, before + 1)
                first = False
                while not fired.is_set():
                    if stop.is_set():
                        return next_rev
                    fired.wait(poll or WATCH_POLL)
                if stop.is_set():
                    return next_rev
        finally:
            with self._lock:
                self._wakers.discard(fired)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            leases, self._leases = dict(self._leases), {}
        for lease_client, _ in leases.values():
            self._close_session(lease_client)
        if client is not None:
            self._close_session(client)
