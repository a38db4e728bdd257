"""decide(): the pure entry point of the core."""

from __future__ import annotations

from pgha.core.actions import Decision
from pgha.core.facts import Facts
from pgha.core.model import ClusterConfig, ClusterView, LocalState
from pgha.core.rules import RULES

# Sections in which the next loop should come soon, whatever loop_wait says.
_FAST_SECTIONS = {"election": 0.2, "switchover": 0.05, "bootstrap": 0.5}


def decide(view: ClusterView, local: LocalState, config: ClusterConfig, now: float) -> Decision:
    """The first rule whose guard holds decides; returns its actions, id and reason.

    ``now`` is this host's monotonic clock, the same clock as every ``*_deadline``
    and ``*_mono`` field of ``local``.
    """
    f = Facts(view=view, local=local, config=config, now=now)
    for rule in RULES:
        if rule.when(f):
            actions = tuple(rule.then(f))
            wake = rule.recheck_in if rule.recheck_in is not None else _FAST_SECTIONS.get(rule.section)
            if f.is_primary and local.lease_deadline is not None:
                # Wake in time to fence before the lease could expire.
                until_fence = local.lease_deadline - config.fence_margin - now
                wake = min(wake if wake is not None else config.loop_wait, max(until_fence, 0.05))
            reason = rule.comment if rule.detail is None else f"{rule.comment} ({rule.detail(f)})"
            return Decision(actions=actions, rule_id=rule.id, reason=reason, wake_in=wake,
                            keeps_task_result=rule.keeps_task_result)
    raise AssertionError("the last rule always matches")  # pragma: no cover


# The decision an agent publishes for a loop that raised before deciding (the next loop retries).
LOOP_FAILED = Decision(actions=(), rule_id="error", reason="the HA loop failed; see the agent's log")
