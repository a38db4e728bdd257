"""The cluster's backup keys in the DCS.

- ``backup/request``: a BackupRequest (the CLI and the API write it; the repository host takes it);
- ``backup/result``: how the last requested backup ended (written by the repository host);
- ``backup/info``: the summary of ``pgbackrest info`` and the restore window (repository host).

Values are decoded defensively: a bad value reads as absent, with the problem logged once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from pgha.backup.info import BackupSummary, from_dict
from pgha.core.model import BackupRequest
from pgha.dcs import codec
from pgha.dcs.store import ClusterStore

log = logging.getLogger("pgha.backup")

REQUEST, RESULT, INFO = "backup/request", "backup/result", "backup/info"


@dataclass(frozen=True)
class BackupResult:
    id: str
    type: str
    ok: bool
    # One line: the backup's label, or pgBackRest's error.
    message: str
    started_at: float
    finished_at: float
    # The member the backup was read from (a standby by default).
    source: str = ""


def load_object(store: ClusterStore, name: str) -> dict[str, Any] | None:
    """The JSON object at ``name`` under the cluster, or None (absent, or not an object: logged)."""
    kv = store.kv.get(store.key(name))
    if kv is None:
        return None
    try:
        return codec.loads_object(kv.value)
    except ValueError as exc:
        log.warning("%s: %s; ignored", name, exc)
        return None


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def read_request(store: ClusterStore) -> BackupRequest | None:
    kv = store.kv.get(store.key(REQUEST))
    if kv is None:
        return None
    try:
        return codec.decode(BackupRequest, kv.value)
    except ValueError as exc:
        log.warning("%s: %s; ignored", REQUEST, exc)
        return None


def put_request(store: ClusterStore, request: BackupRequest) -> bool:
    """Record ``request`` unless another one is pending (False then)."""
    return store.kv.create(store.key(REQUEST), codec.encode(request))


def clear_request(store: ClusterStore) -> None:
    store.kv.delete(store.key(REQUEST))


def read_result(store: ClusterStore) -> BackupResult | None:
    data = load_object(store, RESULT)
    if data is None:
        return None
    try:
        return BackupResult(**{k: data[k] for k in BackupResult.__dataclass_fields__ if k in data})
    except TypeError:
        return None


def put_result(store: ClusterStore, result: BackupResult) -> None:
    store.kv.put(store.key(RESULT), _dump(asdict(result)))


def read_info(store: ClusterStore) -> BackupSummary | None:
    data = load_object(store, INFO)
    return from_dict(data) if data is not None else None


def put_info(store: ClusterStore, summary: BackupSummary) -> None:
    store.kv.put(store.key(INFO), _dump(summary.to_dict()))
