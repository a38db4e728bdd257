"""Facts derived once from the inputs, so that rule guards read like sentences."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from pgha.core import standby
from pgha.core.model import (
    ClusterConfig,
    ClusterView,
    DataDir,
    LocalState,
    MemberInfo,
    PgRunState,
    Role,
)
from pgha.core.upstream import UpstreamChoice, upstream_of

# pg_controldata states of a data directory that last ran as a primary.
PRIMARY_CONTROL_STATES = frozenset({"in production", "shut down", "shutting down"})
# Seconds a switchover phase may last before the leader gives up on it.
SWITCHOVER_PHASE_TIMEOUT = 10.0
# Seconds we wait for every PgBouncer to pause before demoting anyway.
BOUNCER_PAUSE_TIMEOUT = 2.0
# Seconds a replica may fail to stream from the right leader before it rewinds.
NOT_STREAMING_REWIND_AFTER = 15.0
# Seconds a standby leader may fail to stream from the other site before it tries the next host of its
# list: more than a reconnect to a dead host takes (connect_timeout), less than a failover of that site.
SOURCE_STALL = 20.0


@dataclass(frozen=True)
class Facts:
    view: ClusterView
    local: LocalState
    config: ClusterConfig
    now: float

    # --- who leads ------------------------------------------------------------------
    @property
    def me(self) -> str:
        return self.local.name

    @property
    def leader_name(self) -> str | None:
        return self.view.leader.name if self.view.leader else None

    @property
    def i_lead(self) -> bool:
        """The leader key names us and is bound to the lease we renew.

        Fix (found by the simulation): a key that names us but is bound to a lease we no longer
        renew (an agent that came back with a new lease) expires with that lease; acting as its
        holder, a restarted primary served writes until it expired and another member promoted.
        """
        leader = self.view.leader
        if leader is None or leader.name != self.me:
            return False
        mine = self.local.lease_id
        return not (leader.lease_id and mine and leader.lease_id != mine)

    @property
    def other_leads(self) -> bool:
        return self.leader_name is not None and self.leader_name != self.me

    @property
    def leader_member(self) -> MemberInfo | None:
        return self.view.members.get(self.leader_name) if self.leader_name else None

    @property
    def leader_proven_dead(self) -> bool:
        """The leader's agent and PostgreSQL both refused connections just now (the host is
        up but neither process is): no lease timeout is needed to know it is gone."""
        poll = self.local.peers.get(self.leader_name or "")
        leader = self.view.leader
        # Fix: the poll must postdate the current leader key.  Otherwise a poll of a leader
        # that was dead a moment ago revokes the key it took again after restarting (and had
        # started PostgreSQL as primary with), while another member gets promoted.
        fresh = leader is not None and leader.mod_revision <= self.local.peers_revision
        if self.leader_stops_for_switchover:
            # A leader in a switchover shuts PostgreSQL down on purpose.
            return False
        return fresh and poll is not None and poll.api == "refused" and poll.pg == "refused"

    # --- the DCS and our lease ---------------------------------------------------------
    @property
    def dcs_ok(self) -> bool:
        return self.view.dcs_error is None

    @property
    def lease_left(self) -> float:
        """Seconds our lease is certainly still alive (negative or 0: may be gone)."""
        if self.local.lease_deadline is None:
            return 0.0
        return self.local.lease_deadline - self.now

    @property
    def must_fence(self) -> bool:
        """Our lease could expire within the fence margin and no failsafe covers us."""
        if self.failsafe_covers:
            return False
        return self.lease_left <= self.config.fence_margin

    @property
    def failsafe_covers(self) -> bool:
        d = self.local.failsafe_deadline
        return self.config.failsafe_mode and d is not None and d > self.now

    # --- local PostgreSQL ----------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.local.pg.run_state == PgRunState.RUNNING

    @property
    def stopped(self) -> bool:
        return self.local.pg.run_state in (PgRunState.STOPPED, PgRunState.CRASHED)

    @property
    def is_primary(self) -> bool:
        return self.running and self.local.pg.in_recovery is False

    @property
    def is_replica(self) -> bool:
        return self.running and self.local.pg.in_recovery is True

    @property
    def data_empty(self) -> bool:
        return self.local.pg.data_dir == DataDir.EMPTY

    @property
    def data_valid(self) -> bool:
        return self.local.pg.data_dir == DataDir.VALID

    @property
    def data_invalid(self) -> bool:
        return self.local.pg.data_dir == DataDir.INVALID

    @property
    def foreign_data(self) -> bool:
        sid = self.local.pg.system_id
        return self.data_valid and sid is not None and self.view.system_id is not None and sid != self.view.system_id

    @property
    def primary_data(self) -> bool:
        """The data directory last ran as a primary (so it may hold WAL nobody else has)."""
        return self.local.pg.control_state in PRIMARY_CONTROL_STATES

    @property
    def adoptable_primary(self) -> bool:
        """bootstrap.adopt and our data is a primary's: running as one, or stopped after running as one."""
        return self.local.adopt and self.data_valid and (self.is_primary or (self.stopped and self.primary_data))

    @property
    def unmanaged(self) -> bool:
        """We were asked to adopt (bootstrap.adopt) and our server still runs from files pgha never
        wrote: it is not pgha's yet, so pgha neither fences it nor gives it the VIP until the files
        are rewritten.  Without adopt, a server is always treated as pgha's."""
        return self.local.adopt and self.data_valid and self.local.pg.unmanaged_conf

    @property
    def config_stale(self) -> bool:
        """The managed files are not what PostgreSQL should run with (parameters changed, or the
        files are not pgha's yet: an adopted server)."""
        return not self.local.config_applied or self.local.pg.unmanaged_conf

    @property
    def crashed_for(self) -> float | None:
        since = self.local.pg.down_since_mono
        return None if since is None else self.now - since

    @property
    def task_running(self) -> bool:
        return self.local.task is not None and self.local.task.running

    def last_task_failed(self, kind: str) -> bool:
        t = self.local.task
        return t is not None and not t.running and t.kind == kind and t.ok is False

    def last_task_ok(self, kind: str) -> bool:
        t = self.local.task
        return t is not None and not t.running and t.kind == kind and t.ok is True

    @property
    def my_lsn(self) -> int:
        pg = self.local.pg
        return max(x or 0 for x in (pg.wal_lsn, pg.received_lsn, pg.replayed_lsn))

    # --- timelines ----------------------------------------------------------------------
    @cached_property
    def latest_timeline(self) -> int:
        tls = [m.timeline for m in self.view.members.values() if m.timeline]
        tls += [tl + 1 for tl in self.view.forks]
        if self.local.pg.timeline:
            tls.append(self.local.pg.timeline)
        return max(tls, default=1)

    @property
    def void_fork(self) -> int | None:
        """The timeline our own latest /history entry says we ended by promoting, when that
        promotion never happened: we are still on it, not primary, and no member is past it.

        The entry is written before the promotion (so a crash after it leaves the fork known); a
        decision that wrote it and then failed (its write timed out but was applied, then the
        lease ran out) or a crash in between leaves it naming a timeline nobody reached, and
        every member then looks "behind the latest timeline" for ever.  A promotion moves
        PostgreSQL to the new timeline before it accepts a single write, so nothing exists there.
        """
        forks = self.view.forks
        if not forks or self.view.last_leader != self.me or self.is_primary:
            return None
        ended = max(forks)
        if self.local.pg.timeline != ended:
            return None
        if any((m.timeline or 0) > ended for m in self.view.members.values()):
            return None
        return ended

    @property
    def behind_leader_timeline(self) -> bool:
        tl = self.local.pg.timeline
        lm = self.leader_member
        return tl is not None and lm is not None and lm.timeline is not None and tl < lm.timeline

    @property
    def diverged(self) -> bool:
        """Our WAL went past the point where the leader's timeline forked off ours."""
        tl = self.local.pg.timeline
        if tl is None or self.leader_member is None or self.leader_member.timeline is None:
            return False
        if tl >= self.leader_member.timeline:
            return False
        fork = self.view.forks.get(tl)
        if fork is None:
            # Unknown fork point: a former primary must assume it diverged.
            return self.primary_data
        return self.my_lsn > fork

    # --- a standby cluster -----------------------------------------------------------------
    @property
    def standby(self) -> bool:
        """This is a standby cluster (``standby_cluster`` set): its leader follows the other site."""
        return standby.active(self.config.standby_cluster)

    @property
    def leader_serves(self) -> bool:
        """The leader runs so that replicas can clone, rewind and stream from it: as primary, or as
        the standby leader of a standby cluster."""
        lm = self.leader_member
        if lm is None:
            return False
        return lm.role == Role.PRIMARY or (self.standby and lm.role == Role.REPLICA
                                           and lm.state in ("running", "streaming"))

    @property
    def past_remote_fork(self) -> bool:
        """Standby cluster: we replayed past a recorded fork (demote-cluster records where the other
        site's timeline forked off ours) that our upstream cannot send us beyond: we diverged.  A
        replica never replays what it did not receive, except what it had before the fork."""
        if not self.standby:
            return False
        rep, rec = self.local.pg.replayed_lsn or 0, self.local.pg.received_lsn or 0
        return any(rec <= lsn < rep for lsn in self.view.forks.values())

    # --- replicas ---------------------------------------------------------------------
    @property
    def streaming_from_leader(self) -> bool:
        pg = self.local.pg
        return self.is_replica and pg.receiver_status == "streaming" and pg.following == self.leader_name

    @cached_property
    def upstream(self) -> UpstreamChoice:
        """Whom we should stream from: the leader, or the member our replicatefrom tag names."""
        return upstream_of(self.view, self.me, self.local.tags)

    @property
    def streaming_from_upstream(self) -> bool:
        """Streaming from the member we should stream from (the leader unless we cascade)."""
        pg = self.local.pg
        return self.is_replica and pg.receiver_status == "streaming" and pg.following == self.upstream.name

    @property
    def not_streaming_for(self) -> float:
        since = self.local.not_streaming_since
        return 0.0 if since is None else self.now - since

    def member_is_healthy_replica(self, name: str) -> bool:
        m = self.view.members.get(name)
        return m is not None and m.role == Role.REPLICA and m.state == "streaming"

    # --- switchover ---------------------------------------------------------------------
    @property
    def switchover_due(self) -> bool:
        sw = self.view.switchover
        if sw is None:
            return False
        return sw.scheduled_at is None or sw.scheduled_at <= self.local.wall_now

    @property
    def phase_age(self) -> float:
        sw = self.view.switchover
        if sw is None or sw.phase_at is None:
            return 0.0
        return self.local.wall_now - sw.phase_at

    @property
    def leader_stops_for_switchover(self) -> bool:
        """The leader is pausing or shutting down on purpose, to hand over its key."""
        sw = self.view.switchover
        return sw is not None and sw.phase in ("pausing", "demoting")

    @property
    def bouncers_paused(self) -> bool:
        sw = self.view.switchover
        if sw is None:
            return True
        return all(m.pgbouncer_paused_for == sw.id for m in self.view.members.values() if m.pgbouncer)
