"""ZooKeeper backend (work in progress on this branch)."""

from __future__ import annotations

from pgha.dcs.base import DCSError


class ZooKeeperKV:
    def __init__(self, hosts: tuple[str, ...], timeout: float = 2.0) -> None:
        raise DCSError("ZooKeeper support is not finished yet; use dcs.type: etcd")
