"""``pgha repository run``: the small pgha process on the pgBackRest repository host.

pgBackRest runs ``backup`` and ``expire`` only where the repository is local, so this process,
not a member's agent, carries out backups.  It:

- keeps the repository's pgbackrest.conf current with the members the DCS lists (each agent
  publishes where its ``pgbackrest server`` and PostgreSQL are), and (re)starts the repository's
  ``pgbackrest server`` (TLS) whenever the members it lets in change;
- takes the backup requested at /backup/request (``pgha backup``, POST /backup) with
  ``backup-standby`` when a standby streams, then ``expire``; writes /backup/result;
- publishes /backup/info: the backups and the restore window, after each backup and every
  INFO_EVERY seconds.

It is woken by the DCS watch; the periodic re-read is a safety net.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from pgha.backup import keys
from pgha.backup.command import BackupError, PgBackRest
from pgha.backup.conffile import render_repository, state_dir
from pgha.backup.info import BackupSummary, summarize
from pgha.backup.restoretest import VerifyConfig
from pgha.backup.restoretest import problem as verify_problem
from pgha.backup.restoretest import take_request as take_verify_request
from pgha.backup.settings import HOST_RE, BackupConfig
from pgha.backup.settings import problem as backup_problem
from pgha.config import ConfigError, DcsConfig, LogConfig, build, check_dcs
from pgha.core.model import BackupEndpoint, ClusterView, Role
from pgha.dcs.base import DCSError
from pgha.dcs.store import ClusterStore
from pgha.postgres.binaries import RunAs
from pgha.postgres.conf import write_atomic

log = logging.getLogger("pgha.repository")

# Seconds between two refreshes of /backup/info and two full re-reads of the DCS.
INFO_EVERY = 30.0
RESCAN_EVERY = 10.0
# Seconds one backup may take before it is abandoned (pgBackRest's own protocol timeout is longer).
BACKUP_TIMEOUT = 6 * 3600.0


@dataclass(frozen=True)
class RepositoryConfig:
    cluster: str
    # This host's name (logs only).
    name: str
    backup: BackupConfig
    dcs: DcsConfig = DcsConfig()
    # Address the repository's pgbackrest server listens on (tls-server-address).
    listen: str = "0.0.0.0"
    # The OS user that owns the repository and runs pgBackRest (as PostgreSQL's does on members).
    user: str = "postgres"
    # Certificate CNs let in for every stanza besides the cluster's members: the first member of a
    # cluster restored from this repository (`pgha restore`), a standby cluster.
    clients: tuple[str, ...] = ()
    # Restore tests (`pgha backup verify`, the verify schedule): PostgreSQL's programs, scratch space.
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def config_file(self) -> Path:
        if self.backup.config_file:
            return Path(self.backup.config_file)
        return Path(self.backup.path).parent / "pgbackrest.conf"


def load(path: str) -> RepositoryConfig:
    """Read and check the repository host's file; ConfigError with one line."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; pass the repository host's YAML file with -c") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.__class__.__name__}); check the file") from None
    try:
        cfg = build(RepositoryConfig, data)
        check_dcs(cfg.dcs)
        found = backup_problem(cfg.backup, cfg.cluster) or verify_problem(cfg.verify)
        if found:
            raise ConfigError(found)
        if not HOST_RE.match(cfg.listen):
            raise ConfigError(f"listen: {cfg.listen!r} is not an address; e.g. 0.0.0.0")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return cfg


def run_as(user: str) -> RunAs:
    import pwd

    if os.geteuid() != 0:
        return RunAs.for_data_dir(Path("/"))
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"user: no OS user {user!r} on this host; create it or name another") from None
    return RunAs(pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_name, True)


def endpoints(view: ClusterView) -> dict[str, BackupEndpoint]:
    """The members that publish a pgBackRest endpoint (values are checked when rendered)."""
    return {name: m.backup for name, m in sorted(view.members.items()) if m.backup is not None}


def backup_source(view: ClusterView, from_standby: bool) -> tuple[bool, str]:
    """(use backup-standby, from which member): a streaming standby when there is one."""
    standbys = sorted(n for n, m in view.members.items() if m.role == Role.REPLICA and m.state == "streaming"
                      and m.backup is not None)
    if from_standby and standbys:
        return True, standbys[0]
    primary = next((n for n, m in view.members.items() if m.role == Role.PRIMARY), "")
    return False, primary


class Repository:
    def __init__(self, cfg: RepositoryConfig, store: ClusterStore) -> None:
        self.cfg = cfg
        self.store = store
        self.run_as = run_as(cfg.user)
        self.stanza = cfg.backup.stanza_for(cfg.cluster)
        self.pgbr = PgBackRest(cfg.config_file, self.stanza, self.run_as)
        self.server: subprocess.Popen[bytes] | None = None
        self._clients: tuple[str, ...] | None = None
        self._seen: set[str] = set()
        self._wake = threading.Event()
        self.stop = threading.Event()
        self._info_at = 0.0
        self._stanza_seen = False

    # --- configuration and the TLS server ----------------------------------------------------
    def prepare(self) -> None:
        base = state_dir(self.cfg.config_file)
        for d in (Path(self.cfg.backup.path), base, base / "log", base / "lock", base / "spool"):
            d.mkdir(mode=0o750, parents=True, exist_ok=True)
            self.run_as.chown(d)

    def reconcile(self, view: ClusterView) -> None:
        members = endpoints(view)
        try:
            text = render_repository(self.cfg.backup, self.cfg.cluster, self.cfg.config_file, self.cfg.listen,
                                     members, self.cfg.clients, sorted(self._seen - set(members)))
        except ValueError as exc:
            log.error("%s; keeping the previous pgbackrest.conf", exc)
            return
        if write_atomic(self.cfg.config_file, text, self.run_as, 0o640):
            log.info("pgbackrest.conf: %d member(s): %s", len(members), ", ".join(members) or "none")
        # Members stay let in while this process runs: an agent restarting (its key gone for a
        # moment) must not have its primary's archive-push refused meanwhile.
        self._seen |= set(members)
        clients = tuple(sorted(self._seen)) + self.cfg.clients
        alive = self.server is not None and self.server.poll() is None
        # pgBackRest's server refuses to start without a client to let in.
        if clients and (clients != self._clients or not alive):
            if self.server is not None and not alive:
                log.error("pgbackrest server exited (code %s); restarting it", self.server.returncode)
            self._restart_server()
            self._clients = clients

    def _restart_server(self) -> None:
        self.stop_server()
        self.server = self.pgbr.popen("server", stanza=False, log=state_dir(self.cfg.config_file) / "server.log")
        log.info("pgbackrest server started (pid %d) on %s:%d", self.server.pid, self.cfg.listen,
                 self.cfg.backup.port)

    def stop_server(self) -> None:
        if self.server is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.server.send_signal(signal.SIGTERM)
        try:
            self.server.wait(10)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait(5)
        self.server = None

    # --- backups and info ---------------------------------------------------------------------
    def take_requested_backup(self, view: ClusterView) -> bool:
        request = keys.read_request(self.store)
        if request is None:
            return False
        done = keys.read_result(self.store)
        if done is not None and done.id == request.id:
            keys.clear_request(self.store)
            return False
        standby, source = backup_source(view, self.cfg.backup.from_standby)
        started = time.time()
        log.info("backup %s (%s) requested; from %s", request.id, request.type, source or "the primary")
        try:
            self.pgbr.run("backup", [f"--type={request.type}", f"--backup-standby={'y' if standby else 'n'}"],
                          timeout=BACKUP_TIMEOUT)
            summary = summarize(self.stanza, self.pgbr.info(), self.last_archived_at(), time.time())
            label = summary.backups[-1].label if summary.backups else "?"
            result = keys.BackupResult(request.id, request.type, True, f"backup {label} done", started, time.time(),
                                       source)
            try:
                self.pgbr.run("expire", timeout=600)
            except BackupError as exc:
                log.error("%s", exc)
        except BackupError as exc:
            result = keys.BackupResult(request.id, request.type, False, str(exc), started, time.time(), source)
        log.info("backup %s: %s", request.id, result.message)
        keys.put_result(self.store, result)
        keys.clear_request(self.store)
        self._info_at = 0.0
        return True

    def last_archived_at(self) -> float:
        """When the newest file arrived in the repository's archive (0: none)."""
        root = Path(self.cfg.backup.path) / "archive" / self.stanza
        newest = 0.0
        with contextlib.suppress(OSError):
            for sub in root.iterdir():
                if sub.is_dir():
                    for d in sub.iterdir():
                        if d.is_dir():
                            newest = max([newest, *(f.stat().st_mtime for f in d.iterdir())])
        return newest

    def _info_stale(self) -> bool:
        """Refresh every INFO_EVERY seconds, and at every wake until the stanza exists."""
        return time.monotonic() - self._info_at >= (INFO_EVERY if self._stanza_seen else 2.0)

    def publish_info(self) -> None:
        now = time.time()
        try:
            summary = summarize(self.stanza, self.pgbr.info(), self.last_archived_at(), now)
        except BackupError as exc:
            old = keys.read_info(self.store)
            summary = replace(old or BackupSummary(self.stanza, "unknown"), error=str(exc), read_at=now)
        keys.put_info(self.store, summary)
        self._stanza_seen = summary.status not in ("no stanza", "unknown") and not summary.error
        self._info_at = time.monotonic()

    # --- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        self.prepare()
        threading.Thread(target=self._watch, name="dcs-watch", daemon=True).start()
        try:
            while not self.stop.is_set():
                try:
                    view = self.store.read()
                    self.reconcile(view)
                    took = self.take_requested_backup(view) or take_verify_request(self, view)
                    if took or self._info_stale():
                        self.publish_info()
                except DCSError as exc:
                    log.error("DCS: %s; retrying", exc)
                self._wake.wait(RESCAN_EVERY)
                self._wake.clear()
        finally:
            self.stop_server()

    def _watch(self) -> None:
        revision = 0
        while not self.stop.is_set():
            try:
                revision = self.store.watch(revision, self._wake.set, self.stop,
                                            ignore=(keys.INFO, keys.RESULT))
            except DCSError:
                self.stop.wait(1.0)
