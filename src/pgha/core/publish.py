"""When an agent writes its member key again for its WAL positions alone: a pure decision.

The key's positions feed the election's lag limit (the old leader's published position), a
switchover's lag check from the CLI and `pgha list`; every put wakes every agent's watch and costs
each one a read.  So the cadence is a trade between those two, and it is decided here, without I/O.
"""

from __future__ import annotations

from pgha.core.model import ClusterConfig, MemberInfo

# A member key that changed only in its WAL positions is written again at most every ttl/3, and
# then only when a position moved by LSN_STEP bytes (at most 1/16 of maximum_lag_on_failover) or the
# key is LSN_REFRESH seconds old.  An idle PostgreSQL still writes a little WAL now and then
# (checkpoints, running-transaction records, autovacuum); each such put wakes every agent's watch and
# costs each one a read, so small moves wait.  What the published positions are used for stays
# within LSN_STEP of a caught-up position: the lag limit of an election (the old leader's position),
# a switchover's lag check from the CLI, `pgha list`.
LSN_STEP = 64 * 1024
LSN_REFRESH = 300.0


def lsn_publish_due(last: MemberInfo, info: MemberInfo, age: float, config: ClusterConfig) -> bool:
    """Whether ``info``, which differs from the ``last`` one written ``age`` seconds ago only in its
    positions (WAL and permanent slots), is worth writing now."""
    if age < config.ttl / 3:
        return False
    if info.slots != last.slots or info.slot_restart != last.slot_restart:
        return True  # replicas copy a permanent slot's position from it: no threshold
    moved = max(abs((new or 0) - (old or 0)) for new, old in (
        (info.wal_lsn, last.wal_lsn), (info.received_lsn, last.received_lsn),
        (info.replayed_lsn, last.replayed_lsn)))
    return moved >= min(LSN_STEP, config.maximum_lag_on_failover // 16) or age >= LSN_REFRESH
