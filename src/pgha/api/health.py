"""Health checks, answered as Patroni 4.1.5 answers them (its api.py, ``do_GET``, ``_readiness``,
``do_GET_liveness``): pure functions of one NodeSnapshot.

Each check is a row of ``HEALTH_CHECKS`` (paths -> predicate), so the routing table, the
OpenAPI document and docs/api.md list the same set.  A Patroni user's HAProxy or keepalived
check keeps working: the same paths (``/``, ``/master``, ``/standby_leader``…), the same
200/503, the same query parameters (``lag``, ``tag_KEY``, ``mode``), and query parameters a
check does not know are ignored, as Patroni ignores them.

Where pgha answers differently on purpose (docs/api.md, "Differences from Patroni"):
/primary and /leader need PostgreSQL running as primary, not the lock alone; a malformed
``lag`` or ``mode`` is a 400, where Patroni silently drops the limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pgha.api import views
from pgha.api.handle import NodeSnapshot
from pgha.api.schema import BadRequest, Param
from pgha.api.views import in_recovery, is_leader_primary, is_replica, is_sync, leader_name, running
from pgha.core.model import BOOL_TAGS, INT_TAGS, Tags

# --- query parameters ----------------------------------------------------------------------
# PostgreSQL's memory units (what Patroni's parse_int(value, 'B') takes); pgha also takes them
# in any case.
_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
_SIZE = re.compile(r"\s*(\d{1,15}(?:\.\d{1,6})?)\s*([a-zA-Z]{0,2})\s*")


def parse_size(name: str, text: str) -> int:
    """Bytes, or a number with a unit: 16MB, 1.5GB, 512kB, 100B (units are powers of 1024)."""
    m = _SIZE.fullmatch(text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise BadRequest(f"{name}: {shown!r} is not a size; use bytes or a unit: B, kB, MB, GB, TB "
                         "(e.g. 16MB)")
    return round(float(m.group(1)) * _UNITS[unit])


def tags_match(tags: Tags, wanted: Mapping[str, str]) -> bool:
    """``tag_KEY=VALUE``: KEY from Tags.extra, or a built-in tag (booleans as true/false, as
    Patroni compares ``str(value).lower()``; 1/0 are taken too)."""
    for key, value in wanted.items():
        if key in BOOL_TAGS:
            have = "true" if getattr(tags, key) else "false"
            if value.strip().lower() not in (have, "1" if have == "true" else "0"):
                return False
        elif key in INT_TAGS:
            if value.strip() != str(getattr(tags, key)):
                return False
        elif tags.extra.get(key) != value:
            return False
    return True


def _tags(s: NodeSnapshot) -> Tags:
    if s.local is not None:
        return s.local.tags
    return s.member.tags if s.member is not None else Tags()


def _wanted_tags(query: Mapping[str, str]) -> dict[str, str]:
    return {k[len("tag_"):]: v for k, v in query.items() if k.startswith("tag_")}


def _max_lag(query: Mapping[str, str]) -> int | None:
    return parse_size("lag", query["lag"]) if "lag" in query else None


# --- Patroni's facts about this node ----------------------------------------------------------
def leader_optime(s: NodeSnapshot) -> int:
    """Patroni's ``max(cluster.status.last_lsn, latest_end_lsn)``: the leader's published WAL
    position, or what this replica's WAL receiver got, whichever is further (0: unknown)."""
    known = [0]
    if s.view is not None:
        leader = s.view.members.get(leader_name(s) or "")
        if leader is not None and leader.wal_lsn is not None:
            known.append(leader.wal_lsn)
    if s.local is not None and s.local.pg.received_lsn is not None:
        known.append(s.local.pg.received_lsn)
    return max(known)


def replayed(s: NodeSnapshot) -> int:
    return s.local.pg.replayed_lsn or 0 if s.local is not None else 0


def dcs_ok(s: NodeSnapshot) -> bool:
    return s.view is not None and s.view.dcs_error is None


def primary_ok(s: NodeSnapshot) -> bool:
    """Patroni's primary_status_code.  Paused and cut off from the DCS, Patroni answers by role
    alone; so does pgha."""
    if not dcs_ok(s) and s.cluster_config.pause:
        return running(s) and in_recovery(s) is False
    return is_leader_primary(s)


def standby_leader_ok(s: NodeSnapshot) -> bool:
    """Patroni's standby_leader_status_code: the leader of a standby cluster, running as a replica of
    the other site."""
    return views.is_standby_leader(s)


def leader_ok(s: NodeSnapshot) -> bool:
    """Patroni's leader_status_code (/leader): the primary, or the standby leader."""
    return primary_ok(s) or standby_leader_ok(s)


def replica_ok(s: NodeSnapshot, query: Mapping[str, str]) -> bool:
    """Patroni's replica_status_code: a running replica, not tagged noloadbalance, and with
    ``lag``, no further behind than that (the leader's position minus what was replayed)."""
    max_lag = _max_lag(query)
    if not is_replica(s) or _tags(s).noloadbalance:
        return False
    optime = leader_optime(s)
    return max_lag is None or not optime or optime <= replayed(s) + max_lag


def sync_standby(s: NodeSnapshot) -> bool:
    """Patroni's ``sync_standby``: listed synchronous standby, and not in quorum mode."""
    return is_sync(s) and s.cluster_config.synchronous_mode != "quorum"


def quorum_standby(s: NodeSnapshot) -> bool:
    return is_sync(s) and s.cluster_config.synchronous_mode == "quorum"


def _with_tags(ok: bool, s: NodeSnapshot, query: Mapping[str, str]) -> bool:
    # Patroni checks tag_* only when the answer would be 200, and never on the leader checks.
    return ok and tags_match(_tags(s), _wanted_tags(query))


def read_only(s: NodeSnapshot, q: Mapping[str, str]) -> bool:
    return _with_tags(leader_ok(s) or replica_ok(s, q), s, q)


def read_only_sync(s: NodeSnapshot, q: Mapping[str, str]) -> bool:
    return _with_tags(leader_ok(s) or (dcs_known(s) and sync_standby(s) and replica_ok(s, q)), s, q)


def read_only_quorum(s: NodeSnapshot, q: Mapping[str, str]) -> bool:
    return _with_tags(leader_ok(s) or (dcs_known(s) and quorum_standby(s) and replica_ok(s, q)), s, q)


def dcs_known(s: NodeSnapshot) -> bool:
    """Patroni answers the synchronous checks only with a cluster state from the DCS."""
    return s.view is not None


def synchronous(s: NodeSnapshot, q: Mapping[str, str]) -> bool:
    return _with_tags(dcs_known(s) and sync_standby(s) and replica_ok(s, q), s, q)


def quorum(s: NodeSnapshot, q: Mapping[str, str]) -> bool:
    return _with_tags(dcs_known(s) and quorum_standby(s) and replica_ok(s, q), s, q)


def asynchronous(s: NodeSnapshot, q: Mapping[str, str]) -> bool:
    return _with_tags(dcs_known(s) and not is_sync(s) and replica_ok(s, q), s, q)


def liveness(s: NodeSnapshot, now_mono: float) -> bool:
    """Patroni: the next HA loop was due less than ttl ago on a running primary (2 x ttl
    elsewhere); always alive in maintenance mode, where a stuck loop harms nothing."""
    if s.cluster_config.pause:
        return True
    primary = running(s) and in_recovery(s) is False
    threshold = s.cluster_config.ttl * (1 if primary else 2)
    return now_mono < s.at + s.cluster_config.loop_wait + threshold


def readiness_failure(s: NodeSnapshot, query: Mapping[str, str]) -> str | None:
    """Patroni's ``_readiness``: None when ready, else why not."""
    mode = query.get("mode", "apply")
    if mode not in ("apply", "write"):
        raise BadRequest(f"mode: {mode[:40]!r} is not a lag mode; use apply (replayed WAL) or write "
                         "(received WAL)")
    max_lag = _max_lag(query)
    if s.holds_lease:
        return None
    if not running(s):
        return "PostgreSQL is not running"
    pg = s.local.pg if s.local is not None else None
    if pg is None or not pg.in_recovery or pg.receiver_status != "streaming":
        return "PostgreSQL replication state is not streaming"
    if s.view is None and not pg.received_lsn:
        failsafe = s.local is not None and s.local.failsafe_deadline is not None
        return None if failsafe else "DCS is not accessible"
    position = (pg.received_lsn if mode == "write" else pg.replayed_lsn) or 0
    lag = leader_optime(s) - position
    limit = max_lag if max_lag is not None else s.cluster_config.maximum_lag_on_failover
    if lag > limit:
        return f"Replication {mode} lag {lag} exceeds maximum allowable {limit}"
    return None


# --- the table ---------------------------------------------------------------------------------
LAG = Param("lag", "503 when the leader's WAL position is more than this ahead of what this replica "
            "replayed: bytes or 16MB, 1GB, 512kB…", "16MB")
TAGS = Param("tag_*", "503 unless the node's tag KEY equals VALUE (tag_KEY=VALUE): a tag under tags.extra, "
             f"or {', '.join(BOOL_TAGS)} (true/false), {', '.join(INT_TAGS)}", "zone")
MODE = Param("mode", "Which lag /readiness measures: apply (replayed WAL, the default) or write (received "
             "WAL)", "write")
# Any other query parameter is ignored, as Patroni ignores it (HAProxy configs add their own).
OTHERS = Param("*", "Any other query parameter is ignored, as Patroni ignores it")
REPLICA_PARAMS = (LAG, TAGS, OTHERS)

Check = Callable[[NodeSnapshot, Mapping[str, str], float], bool]


@dataclass(frozen=True)
class HealthCheck:
    paths: tuple[str, ...]
    summary: str
    check: Check
    params: tuple[Param, ...] = (OTHERS,)


HEALTH_CHECKS: tuple[HealthCheck, ...] = (
    HealthCheck(("/primary", "/", "/master", "/read-write"),
                "200 iff this node holds the leader lease and PostgreSQL runs as primary (tags ignored)",
                lambda s, q, now: primary_ok(s)),
    HealthCheck(("/leader",), "200 iff this node holds the leader lease and runs as primary, or as the "
                "standby leader of a standby cluster (tags ignored)", lambda s, q, now: leader_ok(s)),
    HealthCheck(("/standby-leader", "/standby_leader"), "200 iff this node is the standby leader of a standby "
                "cluster: it holds the leader lease and runs as a replica of the other site (tags ignored)",
                lambda s, q, now: standby_leader_ok(s)),
    HealthCheck(("/replica",), "200 iff PostgreSQL runs as a replica and is not tagged noloadbalance",
                lambda s, q, now: _with_tags(replica_ok(s, q), s, q), REPLICA_PARAMS),
    HealthCheck(("/read-only",), "200 iff this node is the primary or the standby leader, or a replica as /replica "
                "answers it",
                lambda s, q, now: read_only(s, q), REPLICA_PARAMS),
    HealthCheck(("/sync", "/synchronous"), "200 iff this node is a synchronous standby (not in quorum mode) "
                "and a replica as /replica answers it", lambda s, q, now: synchronous(s, q), REPLICA_PARAMS),
    HealthCheck(("/quorum",), "200 iff this node is a quorum synchronous standby (synchronous_mode: quorum) "
                "and a replica as /replica answers it", lambda s, q, now: quorum(s, q), REPLICA_PARAMS),
    HealthCheck(("/async", "/asynchronous"), "200 iff this node is a replica as /replica answers it and not "
                "a synchronous standby", lambda s, q, now: asynchronous(s, q), REPLICA_PARAMS),
    HealthCheck(("/read-only-sync", "/read-only-synchronous"), "200 iff this node is the primary, the standby "
                "leader or a synchronous standby as /sync answers it", lambda s, q, now: read_only_sync(s, q),
                REPLICA_PARAMS),
    HealthCheck(("/read-only-quorum",), "200 iff this node is the primary, the standby leader or a quorum "
                "standby as /quorum answers it", lambda s, q, now: read_only_quorum(s, q), REPLICA_PARAMS),
    HealthCheck(("/health",), "200 iff PostgreSQL is running",
                lambda s, q, now: _with_tags(running(s), s, q), (TAGS, OTHERS)),
    HealthCheck(("/liveness",), "200 iff the HA loop ran within loop_wait + ttl (2 x ttl on a replica); "
                "always in maintenance mode", lambda s, q, now: liveness(s, now)),
    HealthCheck(("/readiness",), "200 iff this node holds the leader lease, or is a streaming replica within "
                "lag (default: maximum_lag_on_failover)", lambda s, q, now: readiness_failure(s, q) is None,
                (LAG, MODE, OTHERS)),
)
