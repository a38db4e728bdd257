"""The DCS layer: the KV contract, its etcd and in-memory backends, and the cluster's keys."""

from pgha.dcs.base import KV, Compacted, DCSError, KeyValue, LeaseNotFound, WatchEvent
from pgha.dcs.etcd import EtcdKV
from pgha.dcs.memory import MemoryKV
from pgha.dcs.store import ClusterStore, HistoryEntry, InitializeConflict

__all__ = [
    "KV",
    "ClusterStore",
    "Compacted",
    "DCSError",
    "EtcdKV",
    "HistoryEntry",
    "InitializeConflict",
    "KeyValue",
    "LeaseNotFound",
    "MemoryKV",
    "WatchEvent",
]
