"""Carry out a Decision's actions in order; stop at the first one that fails.

Every Action type in ``pgha.core.actions.ALL_ACTIONS`` has exactly one handler
here (a test checks it, and the simulation runs these very handlers).  Handlers
are idempotent: running a decision twice is harmless.  They never assign the
agent's memory: they return typed outcomes (``pgha.core.memory``), which the
executor folds in with the core's pure ``apply`` right after each handler, so
the next action sees them.  Long actions hand their work to the background task
runner; what that work finds out is reported through ``Agent.report`` and
folded in at the next loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pgha.core import actions as A
from pgha.core import memory as M
from pgha.core import standby
from pgha.core.model import ClusterView, LocalState, TaskKind
from pgha.core.standby import StandbyCluster
from pgha.dcs.base import DCSError
from pgha.postgres.node import PostgresError, Upstream

if TYPE_CHECKING:
    from pgha.agent.agent import Agent

log = logging.getLogger("pgha.agent")

Outcomes = Sequence[M.Outcome]
NONE: Outcomes = ()


class ActionFailed(Exception):
    """An action could not be carried out; the rest of the decision is skipped."""


class ActionSkipped(Exception):
    """An action failed, but nothing after it depends on it: the rest of the decision runs.

    For PgBouncer: a PgBouncer that is down or hangs must not hold up the member's callbacks
    and intents, which the rules list after it.  The core decides the action again next loop.
    """


Handler = Callable[["Executor", Any, ClusterView, LocalState], Outcomes]
HANDLERS: dict[type[A.Action], Handler] = {}


def handles(cls: type[A.Action]) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[cls] = fn
        return fn

    return register


class Executor:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def run(self, decision: A.Decision, view: ClusterView, local: LocalState) -> None:
        for action in decision.actions:
            handler = HANDLERS[type(action)]
            try:
                self.agent.remember(handler(self, action, view, local))
                self.agent.count_action(action.name, True)
            except ActionSkipped as exc:
                self.agent.count_action(action.name, False)
                log.warning("[%s] %s failed: %s; going on with the rest of this decision",
                            decision.rule_id, action.name, exc)
            except (ActionFailed, PostgresError, DCSError, OSError) as exc:
                self.agent.count_action(action.name, False)
                log.warning("[%s] %s failed: %s; skipping the rest of this decision",
                            decision.rule_id, action.name, exc)
                return

    # --- helpers -------------------------------------------------------------------
    @property
    def now(self) -> float:
        return self.agent.ports.clock.monotonic()

    def upstream(self, view: ClusterView, name: str | None) -> Upstream | None:
        if name is None:
            return None
        if name == standby.REMOTE:
            return remote_upstream(standby.rotated(self.agent.cluster_config.standby_cluster,
                                                   self.agent.memory.source_turn))
        if name == self.agent.config.name:
            # We hold the leader key ourselves: the first member of a standby cluster clones the other
            # site with the key held, and then follows that site (the clone's source), not itself.
            return None
        return self.address(view, name)

    @staticmethod
    def address(view: ClusterView, name: str) -> Upstream:
        """Where member ``name`` (ourselves included: PgBouncer points at its own leader) serves PostgreSQL."""
        m = view.members.get(name)
        if m is None or not m.host:
            raise ActionFailed(f"member {name} has not published its address")
        return Upstream(name=name, host=m.host, port=m.port)

    def standby_leader_source(self, view: ClusterView, local: LocalState) -> Upstream | None:
        """The other site, when we are the standby leader of a standby cluster (restarted in place)."""
        leads = view.leader is not None and view.leader.name == local.name
        if not (leads and local.pg.in_recovery and standby.active(self.agent.cluster_config.standby_cluster)):
            return None
        return self.upstream(view, standby.REMOTE)

    def task(self, kind: TaskKind, fn: Callable[[], str | None]) -> Outcomes:
        if not self.agent.ports.tasks.start(kind, fn):
            raise ActionFailed(f"another background action is running; {kind.value} must wait")
        self.agent.on_task_started(kind)
        return NONE

    def stopping(self) -> M.Outcome:
        """Reported before the agent stops PostgreSQL itself, so the stop is not taken for a crash."""
        return M.StoppedOnPurpose(self.now)


def remote_upstream(sc: StandbyCluster | None) -> Upstream:
    """The standby cluster's source as an upstream (its first host for pg_basebackup and pg_rewind)."""
    if sc is None or not sc.active:
        raise ActionFailed("standby_cluster is not set: there is no other site to follow")
    why = sc.problem()
    if why is not None:
        raise ActionFailed(why)
    host, port = sc.hosts()[0] if sc.host else ("", 0)
    return Upstream(name=standby.REMOTE, host=host, port=port, remote=sc)


# The handlers register themselves with @handles when their modules are imported.
from pgha.agent import handlers_dcs, handlers_postgres, handlers_routing  # noqa: E402, F401
