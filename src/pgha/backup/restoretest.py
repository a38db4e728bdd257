"""A restore test on the repository host: prove the latest backup and the archive restore.

``RestoreTest.run`` (called by ``pgha repository run`` for a VerifyRequest):

1. ``pgbackrest restore --type=standby --archive-mode=off`` of the latest backup into a scratch
   directory, with a scratch pgbackrest.conf that names only the local repository;
2. starts PostgreSQL there as a hot standby (read-only) on a scratch port and a private socket
   directory, no TCP listener, ``archive_mode=off`` (the copy never archives into the stanza);
3. waits until the replay reaches the last WAL segment of the archive.  If the replay stops
   short of it, a segment is missing: the test fails and records an archive gap.  The time from
   step 1 to here is the measured RTO;
4. promotes the scratch copy (it is thrown away) so that ``pg_amcheck --install-missing`` can
   check every database's tables and indexes, and counts the user tables;
5. stops the server and removes the scratch directory, whatever happened.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pgha.backup.command import BackupError, PgBackRest
from pgha.backup.conffile import MARKER, USER_RE, state_dir
from pgha.backup.settings import PATH_RE, STANZA_RE
from pgha.backup.verify import VerifyRequest, VerifyResult
from pgha.postgres.binaries import Binaries, RunAs
from pgha.postgres.common import PostgresError

if TYPE_CHECKING:
    from pgha.backup.repository import Repository
    from pgha.core.model import ClusterView

log = logging.getLogger("pgha.repository")

WAL_SEGMENT = 16 * 1024 * 1024


@dataclass(frozen=True)
class VerifyConfig:
    """``verify:`` in the repository host's file: where and how restore tests run."""

    # PostgreSQL's programs (the major version the cluster runs).
    bin_dir: str = "/usr/lib/postgresql/15/bin"
    # Scratch directory for the restored copy; empty: next to the repository (<path>/../verify).
    scratch_dir: str = ""
    # TCP port number the scratch server uses for its socket name (it listens on no address).
    port: int = 54399
    # Seconds the restore and the replay may take before the test fails.
    timeout: float = 3600.0
    # Seconds without replay progress, short of the archive's end, that count as a gap.
    stall_after: float = 20.0


def problem(v: VerifyConfig) -> str | None:
    for key, value in (("bin_dir", v.bin_dir), ("scratch_dir", v.scratch_dir)):
        if (value or key != "scratch_dir") and not PATH_RE.match(value):
            return f"verify.{key}: {value!r} must be an absolute path of letters, digits and '_./+-'"
    if not 1024 <= v.port <= 65535:
        return f"verify.port: {v.port} is not a port for the scratch server; use 1024-65535"
    if v.timeout <= 0 or v.stall_after <= 0:
        return "verify.timeout and verify.stall_after must be positive seconds"
    return None


class VerifyFailed(Exception):
    """A step of the restore test failed; ``str()`` is one line."""


def segment_position(name: str) -> int:
    """The position part of a WAL file name (timeline dropped) as a segment number."""
    return int(name[8:16], 16) * (0x100000000 // WAL_SEGMENT) + int(name[16:24], 16)


def lsn_position(lsn: str) -> int:
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def lsn_segment(lsn: str) -> int:
    """The segment holding the byte just before ``lsn`` (the last one replay finished reading)."""
    return max(0, lsn_position(lsn) - 1) // WAL_SEGMENT


def segment_name(timeline: int, segment: int) -> str:
    per = 0x100000000 // WAL_SEGMENT
    return f"{timeline:08X}{segment // per:08X}{segment % per:08X}"


class RestoreTest:
    def __init__(self, verify: VerifyConfig, repo_path: str, stanza: str, run_as: RunAs, db_user: str,
                 config_file: Path) -> None:
        if not STANZA_RE.match(stanza):
            raise ValueError(f"stanza {stanza!r} is not allowed")
        self.v = verify
        self.repo_path = repo_path
        self.stanza = stanza
        self.run_as = run_as
        self.db_user = db_user
        root = Path(verify.scratch_dir) if verify.scratch_dir else Path(repo_path).parent / "verify"
        self.root = root
        self.data = root / "data"
        self.sock = root / "sock"
        self.conf = root / "pgbackrest.conf"
        self.state = state_dir(config_file)
        self.bins = Binaries(verify.bin_dir, run_as, root)

    # --- the steps ----------------------------------------------------------------------------
    def run(self, request: VerifyRequest, info: dict[str, object], now: float) -> VerifyResult:
        started = time.monotonic()
        backup, archive_end = _latest(info)
        rto = 0.0
        try:
            if not backup:
                raise VerifyFailed("no backup in the repository to restore; run 'pgha backup' first")
            if not archive_end:
                raise VerifyFailed("the archive holds no WAL; check WAL archiving ('pgha validate')")
            self._prepare()
            self._restore()
            self._start()
            replayed = self._replay_to(archive_end, started)
            rto = time.monotonic() - started
            log.info("restore test %s: backup %s restored and replayed to %s in %.1f s", request.id, backup,
                     replayed, rto)
            tables, amcheck = self._checks()
            message = (f"backup {backup} restored and replayed to {replayed} in {rto:.1f} s; "
                       f"{tables} table(s); pg_amcheck {amcheck}")
            return VerifyResult(request.id, True, message, now, now + time.monotonic() - started, rto_seconds=rto,
                                tables=tables, amcheck=amcheck, backup=backup, archive_end=archive_end,
                                replayed_to=replayed)
        except (VerifyFailed, BackupError, PostgresError, OSError) as exc:
            gap = isinstance(exc, ArchiveGap)
            log.error("restore test %s failed: %s", request.id, exc)
            return VerifyResult(request.id, False, str(exc), now, now + time.monotonic() - started, gap=gap,
                                replayed_to=getattr(exc, "replayed_to", ""), backup=backup, archive_end=archive_end)
        finally:
            self._cleanup()

    def _prepare(self) -> None:
        self._cleanup()
        for d in (self.root, self.sock, self.state, self.state / "log", self.state / "lock"):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.run_as.chown(d)
        # The scratch configuration names only the local repository: the restore can reach no member.
        text = "\n".join([MARKER, "", "[global]", f"repo1-path={self.repo_path}",
                          f"log-path={self.state}/log", f"lock-path={self.state}/lock", "log-level-file=info",
                          "log-level-console=warn", "log-level-stderr=error", "", f"[{self.stanza}]",
                          f"pg1-path={self.data}", ""])
        self.conf.write_text(text)
        self.conf.chmod(0o640)
        self.run_as.chown(self.conf)

    def _restore(self) -> None:
        pgbr = PgBackRest(self.conf, self.stanza, self.run_as)
        pgbr.run("restore", ["--type=standby", "--archive-mode=off", "--target-timeline=latest"],
                 timeout=self.v.timeout)
        # Only local connections to the scratch socket, which only the PostgreSQL user can reach.
        hba = self.root / "pg_hba.conf"
        hba.write_text("local all all trust\n")
        self.run_as.chown(hba)

    def _options(self) -> str:
        opts = {"port": str(self.v.port), "listen_addresses": "''", "unix_socket_directories": f"'{self.sock}'",
                "hba_file": f"'{self.root}/pg_hba.conf'", "hot_standby": "on", "archive_mode": "off",
                "primary_conninfo": "''", "primary_slot_name": "''", "synchronous_standby_names": "''",
                "wal_retrieve_retry_interval": "1s", "ssl": "off", "cluster_name": "'pgha-verify'",
                "default_transaction_read_only": "on"}
        return " ".join(f"-c {k}={v}" for k, v in opts.items())

    def _start(self) -> None:
        proc = self.bins.run("pg_ctl", ["-D", str(self.data), "-l", str(self.root / "postgres.log"), "-o",
                                        self._options(), "-W", "start"], timeout=60)
        deadline = time.monotonic() + 30
        while proc.returncode == 0 and not self._alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc.returncode != 0 or not self._alive():
            raise VerifyFailed(f"the restored copy does not start: {self._log_tail()}")

    def _sql(self, sql: str, dbname: str = "postgres", timeout: float = 30.0) -> list[str]:
        proc = self.bins.run("psql", ["-X", "-A", "-t", "-q", "-h", str(self.sock), "-p", str(self.v.port), "-U",
                                      self.db_user, "-d", dbname, "-v", "ON_ERROR_STOP=1", "-c", sql],
                             timeout=timeout)
        if proc.returncode != 0:
            raise PostgresError(" ".join((proc.stderr or "no output").split())[:300])
        return [ln for ln in proc.stdout.splitlines() if ln]

    def _replay_to(self, archive_end: str, started: float) -> str:
        target = segment_position(archive_end)
        best, best_at = -1, time.monotonic()
        last_error = "not started"
        while True:
            now = time.monotonic()
            if now - started > self.v.timeout:
                raise VerifyFailed(f"the restore did not replay to {archive_end} within {self.v.timeout:.0f} s "
                                   f"({last_error})")
            try:
                row = self._sql("SELECT pg_last_wal_replay_lsn(), pg_is_in_recovery(), "
                                "(SELECT timeline_id FROM pg_control_checkpoint())", timeout=10)
                lsn, _recovery, tl = row[0].split("|")
                pos, seg = lsn_position(lsn), lsn_segment(lsn)
                if pos >= (target + 1) * WAL_SEGMENT:
                    # The archive's last segment is replayed to its end.
                    return segment_name(int(tl), target)
                if pos > best:
                    best, best_at = pos, now
                elif now - best_at >= self.v.stall_after:
                    if seg >= target:
                        # Inside the last segment: its last record goes on into WAL not archived yet.
                        return segment_name(int(tl), seg)
                    missing = segment_name(int(tl), seg + 1)
                    raise ArchiveGap(f"WAL replay stopped at {segment_name(int(tl), seg)} but the archive goes on "
                                     f"to {archive_end}: {missing} is missing from the archive (a gap)",
                                     segment_name(int(tl), seg))
            except PostgresError as exc:
                if not self._alive():
                    raise VerifyFailed(f"the restored copy stopped during replay: {self._log_tail()}") from None
                # Not yet consistent ("the database system is starting up"): keep waiting, unless
                # that lasts as long as a stall (the WAL the backup itself needs is missing).
                last_error = str(exc)
                if best < 0 and now - best_at >= max(self.v.stall_after * 3, 60.0) and \
                        "starting up" in last_error and self._log_says_missing():
                    raise ArchiveGap(f"the restored copy never became consistent: WAL the backup needs is "
                                     f"missing from the archive ({self._log_tail()})", "") from None
            time.sleep(0.5)

    def _alive(self) -> bool:
        return self.bins.run("pg_ctl", ["-D", str(self.data), "status"], timeout=30).returncode == 0

    def _log_says_missing(self) -> bool:
        return "could not" in self._log_tail(2000)

    def _checks(self) -> tuple[int, str]:
        # The copy is a throwaway: promote it so pg_amcheck can install amcheck where it is missing.
        proc = self.bins.run("pg_ctl", ["-D", str(self.data), "-w", "-t", "120", "promote"], timeout=150)
        if proc.returncode != 0:
            raise VerifyFailed(f"the restored copy does not promote: {self._log_tail()}")
        tables = 0
        dbs = self._sql("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")
        for db in dbs:
            rows = self._sql("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                             "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', "
                             "'information_schema') AND n.nspname NOT LIKE 'pg_toast%'", dbname=db)
            tables += int(rows[0])
        if not (Path(self.v.bin_dir) / "pg_amcheck").exists():
            return tables, "not installed"
        proc = self.bins.run("pg_amcheck", ["-h", str(self.sock), "-p", str(self.v.port), "-U", self.db_user,
                                            "--all", "--install-missing", "--heapallindexed", "--no-password"],
                             timeout=self.v.timeout, env={"PGOPTIONS": "-c default_transaction_read_only=off"})
        if proc.returncode != 0:
            text = " ".join((proc.stdout + proc.stderr).split())[:300] or f"exit code {proc.returncode}"
            raise VerifyFailed(f"pg_amcheck found problems in the restored copy: {text}")
        return tables, f"passed on {len(dbs)} database(s)"

    def _log_tail(self, limit: int = 300) -> str:
        try:
            lines = [ln for ln in (self.root / "postgres.log").read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no server log"
        return " | ".join(lines[-3:])[-limit:] if lines else "empty server log"

    def _cleanup(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(PostgresError):
                self.bins.run("pg_ctl", ["-D", str(self.data), "-m", "immediate", "-w", "stop"], timeout=60)
        if self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)


class ArchiveGap(VerifyFailed):
    def __init__(self, message: str, replayed_to: str) -> None:
        super().__init__(message)
        self.replayed_to = replayed_to


def _latest(info: dict[str, object]) -> tuple[str, str]:
    """(label of the newest good backup, the archive's last segment) from one stanza's info."""
    backups = [b for b in info.get("backup") or () if isinstance(b, dict) and not b.get("error")]  # type: ignore[attr-defined]
    label = str(backups[-1].get("label", "")) if backups else ""
    ends = [str(a.get("max")) for a in info.get("archive") or () if isinstance(a, dict) and a.get("max")]  # type: ignore[attr-defined]
    end = max(ends, key=lambda n: (n[8:], n[:8])) if ends else ""
    return label, end


def take_request(repo: Repository, view: ClusterView) -> bool:
    """On the repository host: carry out a pending restore test (True when one ran)."""
    from pgha.backup import verify as keys
    from pgha.backup.repository import endpoints

    request = keys.read_request(repo.store)
    if request is None:
        return False
    done = keys.read_result(repo.store)
    if done is not None and done.id == request.id:
        keys.clear_request(repo.store)
        return False
    log.info("restore test %s requested (by %s)", request.id, request.by or "?")
    # The role to connect to the copy as: the members' PostgreSQL user, checked like pgbackrest.conf's.
    users = [e.user for e in endpoints(view).values() if USER_RE.match(e.user)]
    test = RestoreTest(repo.cfg.verify, repo.cfg.backup.path, repo.stanza, repo.run_as,
                       users[0] if users else repo.cfg.user, repo.cfg.config_file)
    try:
        info = repo.pgbr.info()
    except BackupError as exc:
        now = time.time()
        result = VerifyResult(request.id, False, str(exc), now, now)
    else:
        result = test.run(request, info, time.time())
    log.info("restore test %s: %s", request.id, result.message)
    keys.put_result(repo.store, result)
    keys.clear_request(repo.store)
    return True
