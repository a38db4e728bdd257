"""How KV keys, values and leases are laid out in ZooKeeper znodes (see pgha.dcs.zookeeper).

A key ``/pgha/main/members/n1`` is the znode of the same path; the znodes above
it are *directories*: persistent, with empty data, never keys.  A key's data
starts with one tag byte, so a key with an empty value is never mistaken for a
directory:

    b"=" + value                  a key (persistent, or ephemeral: bound to the
                                  lease that is the session owning it)
    b"@" + 16 hex digits + value  a persistent key bound to another session's
                                  lease; it counts only while that lease's
                                  marker znode exists
"""

from __future__ import annotations

from dataclasses import dataclass

from pgha.dcs.base import DCSError, KeyValue

TAG_KEY = b"="
TAG_FOREIGN = b"@"
LEASE_HEX = 16


def key_path(key: str) -> str:
    """The znode path of ``key``; DCSError for keys ZooKeeper cannot hold."""
    if not key.startswith("/") or key.endswith("/") or "//" in key or key == "/":
        raise DCSError(f"key {key!r} cannot be stored in ZooKeeper: use /segment/segment without a trailing /")
    if any(part in (".", "..") for part in key.split("/")[1:]) or key.startswith("/zookeeper"):
        raise DCSError(f"key {key!r} cannot be stored in ZooKeeper: '.', '..' and /zookeeper are reserved")
    return key


def prefix_roots(prefix: str) -> tuple[str, str]:
    """(directory to list, name start): ``/a/b/`` -> (/a/b, ""), ``/a/b`` -> (/a, "b")."""
    if not prefix.startswith("/"):
        raise DCSError(f"prefix {prefix!r} cannot be used with ZooKeeper: it must start with /")
    parent, _, start = prefix.rpartition("/")
    return parent or "/", start


def join(parent: str, child: str) -> str:
    return f"{parent.rstrip('/')}/{child}"


def encode(value: bytes, foreign_lease: int = 0) -> bytes:
    if foreign_lease:
        return TAG_FOREIGN + b"%016x" % foreign_lease + value
    return TAG_KEY + value


@dataclass(frozen=True)
class Node:
    """One znode as read: its path, data and the stat fields the KV needs."""

    path: str
    data: bytes
    czxid: int
    mzxid: int
    pzxid: int
    version: int
    ephemeral_owner: int
    children: int

    @property
    def is_key(self) -> bool:
        return self.data[:1] in (TAG_KEY, TAG_FOREIGN)

    @property
    def foreign_lease(self) -> int:
        """The lease of another session this persistent key is bound to (0: none)."""
        if self.data[:1] != TAG_FOREIGN:
            return 0
        try:
            return int(self.data[1:1 + LEASE_HEX], 16)
        except ValueError:
            return 0

    @property
    def lease(self) -> int:
        return self.ephemeral_owner or self.foreign_lease

    def keyvalue(self) -> KeyValue:
        skip = 1 + LEASE_HEX if self.data[:1] == TAG_FOREIGN else 1
        return KeyValue(self.path, self.data[skip:], self.czxid, self.mzxid, self.lease)

    @property
    def newest(self) -> int:
        """The newest zxid this node records: its data, its creation, its children's comings and goings."""
        return max(self.czxid, self.mzxid, self.pzxid)


def node(path: str, data: bytes | None, stat: object) -> Node:
    return Node(path, data or b"", int(getattr(stat, "czxid", 0)), int(getattr(stat, "mzxid", 0)),
                int(getattr(stat, "pzxid", 0)), int(getattr(stat, "version", 0)),
                int(getattr(stat, "ephemeralOwner", 0)), int(getattr(stat, "numChildren", 0)))
