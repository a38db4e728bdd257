"""The agent's upgrade thread: carries out this member's part of the upgrade in /upgrade.

It sleeps until the HA loop reads an upgrade in the view (``notice``), then follows the phases
(``pgha.upgrade.record``).  The leader named in the record drives the phases; every member writes
its own report.  While the record holds a member its HA loop takes no action (rule upgrade-hold),
so this thread alone stops, upgrades and starts PostgreSQL; the lease keeps being renewed.
Before touching PostgreSQL each member waits until its HA loop has decided upgrade-hold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from pgha.config import NodeConfig
from pgha.core import upgrade_steps
from pgha.core.model import ClusterView
from pgha.core.upgrade_steps import UpgradeFacts
from pgha.dcs.base import DCSError
from pgha.dcs.store import HistoryEntry
from pgha.postgres import db, versions
from pgha.postgres.controldata import parse
from pgha.postgres.lsn import format_lsn, parse_lsn
from pgha.postgres.node import PostgresNode
from pgha.upgrade import bindir, checks, keys, resync, steps
from pgha.upgrade.record import FINAL_PHASES, Report, Upgrade, one_line, with_phase

if TYPE_CHECKING:
    from pgha.agent.agent import Agent

log = logging.getLogger("pgha.upgrade")

# Seconds to wait for every member's pre-flight / for the replicas to stop / for a hold to begin.
REPORT_TIMEOUT = 120.0
HOLD_TIMEOUT = 30.0
# Seconds the primary waits for the other members' PgBouncers to pause before it stops.
BOUNCER_WAIT = 5.0
RSYNC_TIMEOUT = resync.RSYNC_TIMEOUT
POLL = 0.5


class Failed(Exception):
    """A step failed: one line, naming the member."""


class UpgradeWorker:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.me = agent.config.name
        self._event = threading.Event()
        # The (id, phase) pairs this member has done its part for.
        self._done: set[tuple[str, str]] = set()
        # The new primary has started: no way back by rollback any more.
        self._new_started = False
        # What each row of pgha.core.upgrade_steps.UPGRADE_RULES names.
        self._parts: dict[str, Callable[[Upgrade, str], None]] = {
            "preflight": lambda up, mine: self._preflight(up, up.leader == self.me),
            "judge-preflight": lambda up, mine: self._judge_preflight(up),
            "stop-all": lambda up, mine: self._stop_all(up),
            "pause-replica": lambda up, mine: self._pause_replica(up),
            "stop-replica": lambda up, mine: self._stop_replica(up),
            "resync-replica": lambda up, mine: self._resync_replica(up),
            "finish": lambda up, mine: self._finish(up),
            "release-replica": lambda up, mine: self._release_replica(up, synced=mine == "synced"),
            "restore-replica": self._restore_replica,
        }

    def notice(self, view: ClusterView) -> None:
        """From the HA loop: an upgrade is recorded (its phase may have changed)."""
        if view.upgrade_phase and view.upgrade_phase not in FINAL_PHASES:
            self._event.set()

    def run(self) -> None:
        while True:
            self._event.wait()
            self._event.clear()
            try:
                self._step()
            except Exception:
                log.exception("upgrade step failed")
                time.sleep(1.0)

    # --- plumbing -------------------------------------------------------------------------------
    @property
    def config(self) -> NodeConfig:
        return self.agent.config

    @property
    def pg(self) -> PostgresNode:
        pg = self.agent.ports.pg
        assert isinstance(pg, PostgresNode)
        return pg

    def _read(self) -> tuple[Upgrade | None, dict[str, Report]]:
        return keys.read(self.agent.store)

    def _report(self, up: Upgrade, phase: str, message: str = "", lsn: str = "") -> None:
        keys.report(self.agent.store, self.me, Report(id=up.id, phase=phase, message=one_line(message), lsn=lsn,
                                                      at=time.time()))

    def _wait(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        """Poll ``check`` (an upgrade runs: other members report in the DCS) until it returns something."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(POLL)
        raise Failed(f"{self.me}: timed out after {timeout:.0f} s waiting for {what}")

    def _held(self) -> bool:
        return self.agent.current_rule() == "upgrade-hold"

    def _params(self) -> dict[str, str | int | float | bool]:
        view = self.agent.view
        base = dict(view.config.parameters) if view is not None else {}
        return {**base, **self.config.postgresql.parameters}

    # --- the phases -----------------------------------------------------------------------------
    def _step(self) -> None:
        up, reports = self._read()
        if up is None or not up.active:
            return
        self._event.set()  # come back: an upgrade is active
        time.sleep(POLL)
        lead = up.leader == self.me
        mine = reports.get(self.me, Report("", "")).phase
        facts = UpgradeFacts(up.phase, lead, mine, bool(up.primary_lsn), (up.id, up.phase) in self._done)
        for rule in upgrade_steps.parts(facts):
            log.info("[%s] upgrade %s, phase %s: %s", rule.id, up.id, up.phase, rule.part)
            self._parts[rule.part](up, mine)

    def _restore_replica(self, up: Upgrade, mine: str) -> None:
        if mine == "synced" and up.kept_name:
            resync.put_back(Path(self.config.postgresql.data_dir),
                            Path(self.config.postgresql.data_dir).with_name(up.kept_name))
        self._report(up, "restored", "the old data directory is in place")
        # PgBouncer resumes once the old primary runs again.
        with contextlib.suppress(Failed):
            self._wait("the rollback", lambda: (c := self._read()[0]) is None or c.id != up.id
                       or c.phase != "rolling-back", REPORT_TIMEOUT)
        self._hold_bouncer(False)

    def _preflight(self, up: Upgrade, lead: bool) -> None:
        problem = checks.bin_dir_problem(self.config, up.to_bin_dir) or checks.disk_problem(self.config, lead)
        if problem is None and lead:
            problem = (checks.extensions_problem(self.config, self.pg, up.to_bin_dir)
                       or steps.check(self.config, self.pg, up.to_bin_dir, self._params()))
        if problem is None:
            self._report(up, "preflight-ok")
        else:
            log.error("upgrade pre-flight: %s", problem)
            self._report(up, "preflight-failed", f"{self.me}: {problem}")

    def _judge_preflight(self, up: Upgrade) -> None:
        view = self.agent.view
        assert view is not None
        members = tuple(sorted(view.members))
        try:
            reports = self._wait("every member's pre-flight", lambda: (
                r if set(members) <= set(r := self._read()[1]) else None), REPORT_TIMEOUT)
        except Failed as exc:
            return self._fail(up, str(exc))
        failed = [reports[n].message for n in members if reports[n].phase != "preflight-ok"]
        view = self.agent.view or view  # as read now, after every member's checks
        problem = failed[0] if failed else checks.cluster_problem(view, self.me)
        if problem:
            return self._fail(up, problem)
        self._done.add((up.id, "preflight"))
        try:
            # The new cluster's initdb, while the old primary still serves: out of the write gap.
            steps.prepare_primary(self.config, self.pg, up.to_bin_dir, self._params())
        except Exception as exc:
            return self._fail(up, f"{self.me}: {exc}")
        from_major = versions.bin_dir_major(self.config.postgresql.bin_dir)
        keys.put(self.agent.store, with_phase(
            up, "stopping", "holding the cluster; stopping the primary", members=members, started_at=time.time(),
            from_major=from_major, to_major=versions.bin_dir_major(up.to_bin_dir), old_system_id=view.system_id or ""))

    def _fail(self, up: Upgrade, message: str) -> None:
        log.error("upgrade refused: %s", message)
        shutil.rmtree(steps.staging_dir(self.config), ignore_errors=True)
        self._done.add((up.id, up.phase))
        keys.put(self.agent.store, with_phase(up, "failed", message, finished_at=time.time()))

    def _hold_bouncer(self, pause: bool) -> None:
        bouncer = self.agent.ports.bouncer
        if bouncer is None:
            return
        try:
            bouncer.pause(timeout=5.0) if pause else bouncer.resume()
        except Exception as exc:
            log.warning("PgBouncer %s: %s", "pause" if pause else "resume", exc)

    def _checkpoint_lsn(self, node: PostgresNode) -> str:
        cd = parse("\n".join(f"{k}: {v}" for k, v in steps.controldata_fields(node.binaries, node.layout.data).items()))
        return format_lsn(cd.checkpoint_lsn) if cd.checkpoint_lsn is not None else ""

    # --- the leader -----------------------------------------------------------------------------
    def _stop_all(self, up: Upgrade) -> None:
        self._done.add((up.id, "stopping"))
        self._new_started = False
        try:
            self._wait("the HA loop to hold", self._held, HOLD_TIMEOUT)
            self._hold_bouncer(True)
            others = [m for m in up.members if m != self.me]
            # Every PgBouncer paused before the primary stops (or BOUNCER_WAIT passed), as for a switchover.
            with contextlib.suppress(Failed):
                self._wait("the PgBouncers to pause", lambda: all(
                    r.get(n, Report("", "")).phase in ("paused", "failed") for n in others)
                    if (r := self._read()[1]) is not None else False, BOUNCER_WAIT)
            self.pg.stop("fast", 300)
            stopped_at = time.time()
            lsn = self._checkpoint_lsn(self.pg)
            up = dataclasses.replace(up, primary_lsn=lsn, stopped_at=stopped_at,
                                     message=f"primary stopped at {lsn}; waiting for the replicas")
            keys.put(self.agent.store, up)
            reports = self._wait("the replicas to stop", lambda: (
                r if all(r.get(n, Report("", "")).phase in ("stopped", "failed") for n in others)
                else None) if (r := self._read()[1]) is not None else None, REPORT_TIMEOUT)
            for n in others:
                if reports[n].phase != "stopped" or reports[n].lsn != lsn:
                    raise Failed(f"{n}: {reports[n].message or f'stopped at {reports[n].lsn}'}, not at the "
                                 f"primary's final checkpoint {lsn}")
            keys.put(self.agent.store, with_phase(up, "upgrading", "pg_upgrade --link on the primary"))
            self._upgrade_primary(dataclasses.replace(up, phase="upgrading"))
        except Exception as exc:
            if self._new_started:
                log.exception("after the new primary started")
            else:
                self._roll_back(up, f"{self.me}: {exc}" if not isinstance(exc, Failed) else str(exc))

    def _upgrade_primary(self, up: Upgrade) -> None:
        fault = _fault(up)
        old = self.pg
        kept = steps.upgrade_primary(self.config, old, up.to_bin_dir, fault)
        config = bindir.with_bin_dir(self.config, up.to_bin_dir)
        new = PostgresNode(config)
        new.set_peers(frozenset((m.host, m.port) for m in (self.agent.view.members.values()
                                                           if self.agent.view else ()) if m.host))
        try:
            up = self._sync_replicas(up, kept)
            if fault == "after-sync":
                raise Failed(f"{self.me}: injected failure after the replicas' rsync (PGHA_UPGRADE_FAULTS)")
            new.configure(self._params(), None)
            new.start(300)
        except Exception:
            # Never accepted a write: the old cluster is still whole (pg_control.old not yet used).
            new.stop("immediate", 30)
            steps.roll_back(old.layout.data, kept, steps.staging_dir(self.config))
            raise
        self._new_started = True
        pg = new.observe()
        new_id = pg.system_id or ""
        bindir.record(config, up.to_bin_dir)
        self._swap(config, new)
        store = self.agent.store
        store.kv.put(store.key("initialize"), json.dumps({"system_id": new_id, "by": self.me}).encode())
        store.append_history(HistoryEntry(
            timeline=pg.timeline or 0, lsn=0, at=time.time(), new_leader=self.me, old_leader=self.me, kind="upgrade",
            reason=(f"upgrade from PostgreSQL {up.from_major} to {up.to_major}: system identifier "
                    f"{up.old_system_id} -> {new_id}; old data kept in {kept}")))
        self._done.add((up.id, "upgrading"))
        keys.put(store, with_phase(up, "replicas", f"the new primary runs on {up.to_major}; waiting for the "
                                   "replicas to stream",
                                   new_system_id=new_id, new_primary_at=time.time()))
        self._report(up, "released", f"upgraded; old data in {kept}")
        steps.analyze_in_background(new, up.to_major)
        self._hold_bouncer(False)

    def _sync_replicas(self, up: Upgrade, kept: Path) -> Upgrade:
        """Phase syncing: each replica takes the new cluster by rsync (or skips: cloned later)."""
        view = self.agent.view
        me = view.members.get(self.me) if view is not None else None
        up = with_phase(up, "syncing", "the replicas take the new cluster by rsync (new primary not started)",
                        primary_host=me.host if me is not None else "", kept_name=kept.name,
                        primary_data_dir=self.config.postgresql.data_dir)
        keys.put(self.agent.store, up)
        others = [m for m in up.members if m != self.me]
        self._wait("the replicas' rsync", lambda: all(
            r.get(n, Report("", "")).phase in ("synced", "sync-skipped") for n in others)
            if (r := self._read()[1]) is not None else False, RSYNC_TIMEOUT)
        return up

    def _roll_back(self, up: Upgrade, why: str) -> None:
        log.error("upgrade failed, rolling back: %s", why)
        shutil.rmtree(steps.staging_dir(self.config), ignore_errors=True)
        current, _ = self._read()
        up = with_phase(current if current is not None and current.id == up.id else up, "rolling-back",
                        f"{why}; rolling back")
        keys.put(self.agent.store, up)
        others = [m for m in up.members if m != self.me]
        with contextlib.suppress(Failed):
            self._wait("the replicas' old data directories", lambda: all(
                r.get(n, Report("", "")).phase == "restored" for n in others)
                if (r := self._read()[1]) is not None else False, REPORT_TIMEOUT)
        try:
            self.pg.configure(self._params(), None)
            self.pg.start(300)
        except Exception as exc:
            log.error("the old primary did not start after the rollback: %s", exc)
        self._hold_bouncer(False)
        self._done.add((up.id, up.phase))
        keys.put(self.agent.store, with_phase(up, "rolled-back", f"{why}; rolled back to PostgreSQL {up.from_major}",
                                              finished_at=time.time()))

    def _finish(self, up: Upgrade) -> None:
        self._done.add((up.id, "replicas"))
        def all_streaming() -> bool:
            view = self.agent.view
            if view is None:
                return False
            return all(m.server_version // 10000 == up.to_major and (n == self.me or m.state == "streaming")
                       for n, m in view.members.items()) and set(up.members) <= set(view.members)
        while not all_streaming():
            time.sleep(1.0)
            current, _ = self._read()
            if current is None or current.id != up.id or current.phase != "replicas":
                return
        keys.put(self.agent.store, with_phase(up, "done", f"every member runs PostgreSQL {up.to_major} and streams",
                                              finished_at=time.time()))
        log.info("upgrade %s done", up.id)

    # --- a replica ------------------------------------------------------------------------------
    def _pause_replica(self, up: Upgrade) -> None:
        """Held, with its PgBouncer paused, before the primary stops."""
        try:
            self._wait("the HA loop to hold", self._held, HOLD_TIMEOUT)
            self._hold_bouncer(True)
            self._report(up, "paused")
        except Exception as exc:
            self._report(up, "failed", f"{self.me}: {exc}")

    def _stop_replica(self, up: Upgrade) -> None:
        self._done.add((up.id, "stopping"))
        try:
            with_lag = self._wait_replayed(parse_lsn(up.primary_lsn) or 0)
            self.pg.stop("fast", 300)
            lsn = self._checkpoint_lsn(self.pg)
            self._report(up, "stopped", "" if with_lag else "did not replay the primary's final checkpoint", lsn)
        except Exception as exc:
            self._report(up, "failed", f"{self.me}: {exc}")

    def _wait_replayed(self, target: int) -> bool:
        deadline = time.monotonic() + HOLD_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.Error), db.local(self.config, self.pg.layout) as conn:
                row = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
                if row is not None and (parse_lsn(row[0]) or 0) >= target:
                    return True
            time.sleep(POLL)
        return False

    def _resync_replica(self, up: Upgrade) -> None:
        self._done.add((up.id, "syncing"))
        last_replica = max(m for m in up.members if m != up.leader)
        if _fault(up) == "clone-one-replica" and self.me == last_replica:
            why = "injected: cloned instead (PGHA_UPGRADE_FAULTS)"
        else:
            why = resync.take_new_cluster(Path(self.config.postgresql.data_dir), self.pg.binaries.run_as,
                                          up.primary_host, up.primary_data_dir, up.kept_name)
        if why:
            log.warning("the new cluster by rsync: %s; this replica is cloned from the new primary instead", why)
        self._report(up, "sync-skipped" if why else "synced", why)

    def _release_replica(self, up: Upgrade, synced: bool) -> None:
        """The new primary runs: with the new cluster by rsync start as its replica, else move the old
        data aside and be cloned (by the HA loop, once released)."""
        self._done.add((up.id, "replicas"))
        data = Path(self.config.postgresql.data_dir)
        kept = data.with_name(up.kept_name) if synced else steps.move_replica_aside(self.config)
        config = bindir.with_bin_dir(self.config, up.to_bin_dir)
        bindir.record(config, up.to_bin_dir)
        self._swap(config, PostgresNode(config))
        how = "took the new cluster by rsync" if synced else "cloning from the new primary"
        self._report(up, "released", f"{how}; old data in {kept}")
        self._hold_bouncer(False)

    def _swap(self, config: NodeConfig, node: PostgresNode) -> None:
        """The agent uses the new major's programs from now on."""
        old = self.agent.ports.pg
        self.agent.config = config
        self.agent.ports.pg = node
        if isinstance(old, PostgresNode):
            old.close()
        self.agent.wake()


def _fault(up: Upgrade) -> str:
    """The failure to inject: only in tests, whose agents run with PGHA_UPGRADE_FAULTS=1."""
    return up.inject if os.environ.get("PGHA_UPGRADE_FAULTS") == "1" else ""


def start(agent: Agent) -> UpgradeWorker | None:
    """The thread, for an agent on real PostgreSQL (not the simulation's fakes)."""
    if not isinstance(agent.ports.pg, PostgresNode):
        return None
    worker = UpgradeWorker(agent)
    try:
        up, _ = keys.read(agent.store)
    except DCSError:
        up = None
    if up is not None and up.active:
        worker._event.set()
    threading.Thread(target=worker.run, name="upgrade", daemon=True).start()
    return worker
