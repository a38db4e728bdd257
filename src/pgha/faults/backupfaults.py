"""The backup faults (``pgha-faults ... --backup``: a demo with a pgBackRest repository host in its
own namespace), and the PITR checker run at the end of a run.

Faults (each a start and a heal, like pgha.faults.nemesis's):

- ``part-backup-host``: the repository host's namespace drops every packet to and from the nodes
  and etcd (nothing is refused; archive-push hangs until pgBackRest's io-timeout, then fails);
- ``kill-backup-host``: SIGKILL of the repository's pgha process and its ``pgbackrest server``;
  restarted at heal;
- ``archive-push-failing``: the repository's ``pgbackrest server`` is stopped (SIGSTOP): every
  archive-push hangs, then fails; SIGCONT at heal.

While any of them lasts, the primary keeps serving and its pg_wal grows; after the heal the
archiver catches up.  The PITR checker (``PitrCheck``) restores the newest backup on the
repository host's filesystem into a scratch directory, replays the archive to its end and reads the
workload's table back: every acknowledged write of the run must be there.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pgha.backup import keys
from pgha.backup.command import BackupError, PgBackRest
from pgha.backup.restoretest import RestoreTest, VerifyConfig, VerifyFailed, _latest
from pgha.core.model import BackupRequest
from pgha.demo import DemoCluster, DemoError, pid_alive
from pgha.faults import netfault
from pgha.faults.procs import signal_all
from pgha.postgres.binaries import RunAs
from pgha.postgres.common import PostgresError
from pgha.postgres.processes import children_of

if TYPE_CHECKING:
    from pgha.faults.nemesis import Nemesis, Target

# Fault kind -> the function that starts it (only on a cluster with a repository host).
BACKUP_KINDS: dict[str, str] = {
    "part-backup-host": "part_backup_host",
    "kill-backup-host": "kill_backup_host",
    "archive-push-failing": "archive_push_failing",
}


def _repository(demo: DemoCluster) -> tuple[int, str]:
    assert demo.state is not None
    if not demo.state.repository_pid or not demo.state.repository_netns:
        raise DemoError("the backup faults need a --backup --netns demo (a repository host in its own namespace)")
    return demo.state.repository_pid, demo.state.repository_netns


def part_backup_host(nem: Nemesis) -> Target:
    from pgha.faults.nemesis import Target

    _, ns = _repository(nem.demo)
    everyone = [*nem.etcd_addresses, *(nem.address(n) for n in nem.nodes)]
    netfault.cut(ns, everyone, everyone)
    return Target(None, lambda: netfault.heal(ns), "repository host cut from the nodes and etcd")


def kill_backup_host(nem: Nemesis) -> Target:
    from pgha.faults.nemesis import Target

    pid, _ = _repository(nem.demo)
    pids = [pid, *children_of(pid)]
    signal_all(pids, signal.SIGKILL)
    demo = nem.demo

    def heal() -> None:
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        demo.start_repository()

    return Target(None, heal, f"repository pgha process and pgbackrest server SIGKILL ({len(pids)} processes), "
                              "restarted at heal")


def archive_push_failing(nem: Nemesis) -> Target:
    from pgha.faults.nemesis import Target

    pid, _ = _repository(nem.demo)
    servers = [p for p in children_of(pid) if b"server" in _cmdline(p)]
    pids = [p for s in servers for p in (s, *children_of(s))]
    signal_all(pids, signal.SIGSTOP)
    return Target(None, lambda: signal_all(pids, signal.SIGCONT),
                  f"repository's pgbackrest server SIGSTOP ({len(pids)} processes), SIGCONT at heal")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def kinds(nem: Nemesis) -> dict[str, Callable[[], Target]]:
    fns = {"part_backup_host": part_backup_host, "kill_backup_host": kill_backup_host,
           "archive_push_failing": archive_push_failing}
    return {kind: (lambda f=fns[name]: f(nem)) for kind, name in BACKUP_KINDS.items()}  # type: ignore[misc]


def take_full_backup(demo: DemoCluster, timeout: float = 300.0) -> str:
    """A full backup (the repository host takes it); its one-line result.  DemoError if it fails."""
    request = BackupRequest(f"faults-{uuid.uuid4().hex[:8]}", "full", time.time())
    store = demo.store()
    if not keys.put_request(store, request):
        raise DemoError("a backup request is already pending")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = keys.read_result(store)
        if result is not None and result.id == request.id:
            if not result.ok:
                raise DemoError(f"backup failed: {result.message}")
            return result.message
        time.sleep(1.0)
    raise DemoError(f"no backup within {timeout:.0f} s")


class PitrCheck(RestoreTest):
    """A restore of the newest backup, replayed to the end of the archive, read back."""

    def __init__(self, demo: DemoCluster, scratch: Path, port: int) -> None:
        import pwd

        pw = pwd.getpwnam("postgres")
        run_as = RunAs(pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_name, True) if os.geteuid() == 0 \
            else RunAs.for_data_dir(Path("/"))
        super().__init__(VerifyConfig(scratch_dir=str(scratch), port=port, timeout=900.0), str(demo.repository_path),
                         demo.cluster, run_as, "postgres", demo.dir / "repository" / "pgbackrest.conf")

    def values(self, table: str) -> tuple[set[int], str]:
        """Every value of ``table`` in the restored copy, and how far it replayed."""
        try:
            self._prepare()
            backup, archive_end = _latest(PgBackRest(self.conf, self.stanza, self.run_as).info())
            if not backup or not archive_end:
                raise VerifyFailed("no backup, or no archived WAL, to restore")
            self._restore()
            self._start()
            replayed = self._replay_to(archive_end, time.monotonic())
            rows = self._sql(f"SELECT value FROM {table}")
            return {int(r) for r in rows}, replayed
        except (BackupError, PostgresError, OSError) as exc:
            raise VerifyFailed(str(exc)) from None
        finally:
            self._cleanup()
