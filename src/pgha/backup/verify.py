"""Restore tests in the DCS: ``backup/verify-request`` and ``backup/verify``.

``pgha backup verify`` and the ``verify`` schedule record a VerifyRequest; the repository host
(``pgha repository run``) restores the latest backup into a scratch directory, replays the
archive to its end, checks the copy and removes it (``restoretest``), then records the
VerifyResult: the outcome, one line, and how long the restore and replay took (the measured RTO).
Values are decoded defensively: a bad value reads as absent.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from pgha.backup.keys import load_object
from pgha.dcs.store import ClusterStore

log = logging.getLogger("pgha.backup")

VERIFY_REQUEST, VERIFY_RESULT = "backup/verify-request", "backup/verify"


@dataclass(frozen=True)
class VerifyRequest:
    id: str
    requested_at: float = 0.0
    # Who asked: "cli", or the member whose agent submitted a scheduled slot.
    by: str = ""


@dataclass(frozen=True)
class VerifyResult:
    id: str
    ok: bool
    # One line: what was checked, or the first check that failed.
    message: str
    started_at: float
    finished_at: float
    # The backup restored, and the last WAL segment the replay reached / the archive's last one.
    backup: str = ""
    replayed_to: str = ""
    archive_end: str = ""
    # Seconds from the start of the restore until the copy had replayed the whole archive: the
    # time a restore of the latest point takes (the measured RTO).  0: it did not get there.
    rto_seconds: float = 0.0
    # The replay stopped before the end of the archive: a segment is missing (an archive gap).
    gap: bool = False
    tables: int = 0
    amcheck: str = ""


def _pick(cls: type[Any], data: dict[str, Any]) -> Any:
    try:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
    except TypeError:
        return None


def read_request(store: ClusterStore) -> VerifyRequest | None:
    data = load_object(store, VERIFY_REQUEST)
    req = _pick(VerifyRequest, data) if data is not None else None
    return req if isinstance(req, VerifyRequest) and isinstance(req.id, str) and req.id else None


def put_request(store: ClusterStore, request: VerifyRequest) -> bool:
    """Record ``request`` unless another restore test is pending (False then)."""
    return store.kv.create(store.key(VERIFY_REQUEST), _dump(asdict(request)))


def clear_request(store: ClusterStore) -> None:
    store.kv.delete(store.key(VERIFY_REQUEST))


def read_result(store: ClusterStore) -> VerifyResult | None:
    data = load_object(store, VERIFY_RESULT)
    res = _pick(VerifyResult, data) if data is not None else None
    return res if isinstance(res, VerifyResult) else None


def put_result(store: ClusterStore, result: VerifyResult) -> None:
    store.kv.put(store.key(VERIFY_RESULT), _dump(asdict(result)))


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
