"""The DCS contract: the few key-value primitives pgha needs from etcd.

Two backends implement ``KV``: ``EtcdKV`` (etcd v3 JSON gateway) and
``MemoryKV`` (in-process, for simulations).  ``ClusterStore`` builds the
cluster's keys on top of either, so the semantics live in one place and one
conformance suite checks both backends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class DCSError(Exception):
    """The DCS could not be reached or answered with an error; safe to retry."""


class LeaseNotFound(DCSError):
    """The lease expired or was revoked: anything bound to it is gone."""


class Compacted(DCSError):
    """A watch asked for a revision etcd already compacted; re-read everything."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "put" or "delete"
    key: str
    revision: int


class KV(Protocol):
    """Primitive operations; every method raises DCSError when the store is unreachable."""

    def get_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        """All keys under ``prefix`` and the store revision of that read."""
        ...

    def get(self, key: str) -> KeyValue | None: ...

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Unconditional put; returns the new revision."""
        ...

    def create(self, key: str, value: bytes, lease: int = 0) -> bool:
        """Put only if the key does not exist (create_revision == 0)."""
        ...

    def replace(self, key: str, value: bytes, mod_revision: int, lease: int = 0) -> bool:
        """Put only if the key exists with exactly this mod_revision."""
        ...

    def delete(self, key: str) -> None: ...

    def delete_if(self, key: str, mod_revision: int) -> bool:
        """Delete only if the key exists with exactly this mod_revision."""
        ...

    def delete_prefix(self, prefix: str) -> None: ...

    def grant(self, ttl: int) -> int:
        """Create a lease of ``ttl`` whole seconds; returns its id."""
        ...

    def keepalive(self, lease: int, timeout: float | None = None) -> int:
        """Renew the lease; returns the TTL granted; raises LeaseNotFound if it is gone.

        ``timeout``: seconds one server may take to answer before the next one is tried (None: the
        request timeout), so a renewal reaches a live server while the lease still has time.
        """
        ...

    def revoke(self, lease: int) -> None: ...

    def watch_prefix(
        self,
        prefix: str,
        start_revision: int,
        on_event: Callable[[WatchEvent], None],
        stop: threading.Event,
        poll: float | None = None,
    ) -> int:
        """Stream changes from ``start_revision`` until ``stop`` is set or the stream breaks.

        ``stop`` is looked at every ``poll`` seconds while nothing happens (None: the backend's
        own, about a second).  Returns the next revision to resume from.  Raises Compacted when
        ``start_revision`` is no longer available, DCSError when unreachable.
        """
        ...

    def close(self) -> None: ...
