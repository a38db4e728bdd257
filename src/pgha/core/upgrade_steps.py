"""Which part of a major-version upgrade this member does now: a table of rows, without I/O.

While ``rule upgrade-hold`` keeps the HA loop from acting, each member's upgrade worker (a thread of
its agent, ``pgha.upgrade.worker``) reads the upgrade record and every member's report from the DCS
and asks :func:`parts` what to do; the worker carries the parts out and reports. Each row names a
part and why; the agent logs the row id with what it did, and docs/rules.md lists the rows (generated).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class UpgradeFacts:
    """What a member knows of the upgrade: the record's phase, its own role and report."""

    phase: str
    # This member leads the upgrade (the record's leader: the primary when it was requested).
    lead: bool
    # This member's own report of this upgrade ("" when it has not reported).
    mine: str
    # The leader has recorded the stopped primary's final checkpoint (replicas must replay it).
    primary_lsn: bool = False
    # This member finished its part for this phase already.
    done: bool = False


@dataclass(frozen=True)
class UpgradeRule:
    id: str
    # The part of the upgrade the worker carries out (a method of pgha.upgrade.worker.UpgradeWorker).
    part: str
    comment: str
    when: Callable[[UpgradeFacts], bool]


UPGRADE_RULES: tuple[UpgradeRule, ...] = (
    UpgradeRule("upgrade-preflight", "preflight",
                "Pre-flight, on every member before anything stops: the new binaries and disk space; on the "
                "leader also the extensions and pg_upgrade --check. Report preflight-ok or what failed.",
                lambda f: f.phase == "preflight" and not f.mine),
    UpgradeRule("upgrade-judge-preflight", "judge-preflight",
                "The leader waits for every member's pre-flight: any failure (or a member that never reports) "
                "ends the upgrade before anything stopped; else initdb the new cluster and record 'stopping'.",
                lambda f: f.phase == "preflight" and f.lead),
    UpgradeRule("upgrade-stop-all", "stop-all",
                "The leader pauses PgBouncer, stops the primary (a shutdown checkpoint), waits until every "
                "replica stopped at that checkpoint, runs pg_upgrade --link and the replicas' rsync, and starts "
                "the new primary; a failure before it starts rolls every member back.",
                lambda f: f.phase == "stopping" and f.lead),
    UpgradeRule("upgrade-pause-replica", "pause-replica",
                "A replica pauses its PgBouncer and reports paused, then waits for the primary's final checkpoint.",
                lambda f: f.phase == "stopping" and not f.lead and f.mine not in ("paused", "stopped", "failed")),
    UpgradeRule("upgrade-stop-replica", "stop-replica",
                "The primary stopped: the replica replays its final checkpoint, stops, and reports the position "
                "(the leader refuses to go on unless every replica reached it).",
                lambda f: f.phase == "stopping" and not f.lead and f.primary_lsn and f.mine == "paused"),
    UpgradeRule("upgrade-resync-replica", "resync-replica",
                "The new primary's files are ready: rsync the upgraded layout onto this stopped replica "
                "(pg_upgrade's documented replica method); report synced, or sync-skipped to be cloned.",
                lambda f: f.phase == "syncing" and not f.lead and f.mine == "stopped"),
    UpgradeRule("upgrade-finish", "finish",
                "The new primary runs: wait until every replica streams from it, then record 'done'.",
                lambda f: f.phase == "replicas" and f.lead),
    UpgradeRule("upgrade-release-replica", "release-replica",
                "The new primary runs: switch to the new binaries (where the rsync was skipped, move the old data "
                "aside for the HA loop to clone) and report released, which ends this member's hold.",
                lambda f: f.phase == "replicas" and not f.lead and f.mine != "released"),
    UpgradeRule("upgrade-restore-replica", "restore-replica",
                "Rolling back: put the kept old data directory back (where the rsync replaced it), report "
                "restored, and resume PgBouncer once the old primary runs again.",
                lambda f: f.phase == "rolling-back" and not f.lead and f.mine != "restored"),
)


def parts(f: UpgradeFacts) -> tuple[UpgradeRule, ...]:
    """Every row that holds, in table order (the leader's pre-flight is two: check, then judge)."""
    if f.done:
        return ()
    return tuple(rule for rule in UPGRADE_RULES if rule.when(f))
