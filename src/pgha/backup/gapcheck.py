"""The gap check: after every timeline change, is the archive continuous from the oldest kept
backup to the newest segment?  If not, repair it (``backup.gap_repair``, decided by
``pgha.core.gaprepair``).

Every agent with a ``backup:`` section runs one ``GapThread`` (off the HA loop):

- on the primary, ``request()`` (called once the archive has confirmed a new timeline, see
  ``handlers_postgres.confirm_archive``) runs a check: ``pgbackrest repo-ls`` of the stanza's
  archive (over TLS, from the member) and ``pgbackrest info`` (the oldest backup's first segment),
  then ``continuity.missing()`` across the timelines' ``.history`` files.  A hole is an event in
  the agent's feed (kind ``backup``), the metric ``pgha_backup_archive_gap`` = 1, and a decision;
- the push intent is the DCS key ``backup/gap`` (the missing segment names).  Every agent reads it
  each pass and pushes (``archive-push``) the ones its pg_wal still holds; pgBackRest accepts a
  segment that is already archived with the same content.  The primary checks again after
  PUSH_WAIT seconds; what is still missing is covered by a full backup (``backup/request``);
- the key is deleted once a check finds no hole.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgha.backup import keys
from pgha.backup.archive import client
from pgha.backup.command import BackupError, PgBackRest
from pgha.backup.continuity import missing, parse_history, parse_segment
from pgha.core import gaprepair
from pgha.core.model import BackupRequest
from pgha.dcs import codec
from pgha.dcs.base import DCSError
from pgha.dcs.store import ClusterStore
from pgha.postgres.binaries import RunAs

if TYPE_CHECKING:
    from pgha.agent.agent import Agent

log = logging.getLogger("pgha.backup")

GAP = "backup/gap"
# Seconds between two reads of backup/gap by every agent, and the members' turn to push.
PASS_EVERY = 10.0
PUSH_WAIT = 2 * PASS_EVERY + 5.0
SEGMENT_NAME_LEN = 24


def archive_files(listing: dict[str, Any]) -> tuple[set[tuple[int, int]], dict[int, str]]:
    """(segments present, history file names by timeline) from ``repo-ls --recurse --output=json``
    of archive/STANZA: keys like ``15-1/0000000100000000/0000000100000000000000A3-<sha>.gz``."""
    present: set[tuple[int, int]] = set()
    histories: dict[int, str] = {}
    for path, meta in listing.items():
        if not isinstance(meta, dict) or meta.get("type") != "file":
            continue
        name = path.rsplit("/", 1)[-1]
        if len(name) >= 16 and name[8:16] == ".history" and all(c in "0123456789ABCDEF" for c in name[:8]):
            histories[int(name[:8], 16)] = path
        else:
            seg = parse_segment(name)
            if seg is not None:
                present.add(seg)
    return present, histories


def find_missing(pgbr: PgBackRest) -> list[str]:
    """The segments a restore from the oldest kept backup to the newest segment cannot find
    (empty: continuous, or no backup yet).  BackupError when the repository cannot be read."""
    info = pgbr.info()
    backups = info.get("backup") or []
    start_wal = str(((backups[0] or {}).get("archive") or {}).get("start") or "") if backups else ""
    start = parse_segment(start_wal)
    if start is None:
        return []
    root = f"archive/{pgbr.stanza}"
    try:
        listing = json.loads(pgbr.run("repo-ls", [root, "--recurse", "--output=json"], timeout=120))
    except json.JSONDecodeError:
        raise BackupError("pgbackrest repo-ls --output=json printed something that is not JSON") from None
    if not isinstance(listing, dict):
        raise BackupError("pgbackrest repo-ls --output=json did not print an object")
    present, histories = archive_files(listing)
    end_timeline = max([t for t, _ in present] + list(histories), default=start[0])
    history = ""
    if end_timeline in histories:
        history = pgbr.run("repo-get", [f"{root}/{histories[end_timeline]}"], timeout=60)
    # The newest timeline without a segment yet is not a hole (its first one is still being archived).
    return [name for name in missing(present, parse_history(history), start, end_timeline) if parse_segment(name)]


def held(wal_dir: Path, names: Iterable[str]) -> list[Path]:
    """The named segments this member's pg_wal still holds (complete files only)."""
    out = []
    for name in names:
        if len(name) != SEGMENT_NAME_LEN or parse_segment(name) is None:
            continue
        f = wal_dir / name
        if f.is_file():
            out.append(f)
    return sorted(out)


def read_gap(store: ClusterStore) -> dict[str, Any] | None:
    kv = store.kv.get(store.key(GAP))
    if kv is None:
        return None
    try:
        data = codec.loads_object(kv.value)
    except ValueError as exc:
        log.warning("%s: %s; ignored", GAP, exc)
        return None
    segs = data.get("segments")
    if not isinstance(segs, list) or not all(isinstance(s, str) and parse_segment(s) for s in segs):
        log.warning("%s: segments is not a list of WAL segment names; ignored", GAP)
        return None
    return data


class GapThread:
    """The gap check and the push intent (see the module's doc)."""

    def __init__(self, store: ClusterStore, member: str, mode: str, wal_dir: Path, pgbr: Callable[[], PgBackRest],
                 is_primary: Callable[[], bool], on_event: Callable[[str], None],
                 on_gap: Callable[[bool], None]) -> None:
        self.store = store
        self.member = member
        self.mode = mode
        self.wal_dir = wal_dir
        self.pgbr = pgbr
        self.is_primary = is_primary
        self.on_event = on_event
        self.on_gap = on_gap
        self._wake = threading.Event()
        self._requested = False
        # The segments the members were asked to push, and when (the primary's last decision).
        self._asked: tuple[tuple[str, ...], float] = ((), 0.0)
        self.last: gaprepair.GapDecision | None = None

    def start(self) -> None:
        threading.Thread(target=self.run, name="gap-check", daemon=True).start()

    def request(self) -> None:
        """Check the archive (the primary, after a timeline change)."""
        self._requested = True
        self._wake.set()

    def run(self) -> None:
        while True:
            self._wake.wait(PASS_EVERY)
            self._wake.clear()
            try:
                self.push_requested()
                asked, at = self._asked
                if self._requested or (asked and time.monotonic() - at >= PUSH_WAIT):
                    self._requested = False
                    if self.is_primary():
                        self.check()
            except (BackupError, DCSError, OSError) as exc:
                log.warning("backup: gap check: %s; retrying", exc)
                self._requested = True
                time.sleep(PASS_EVERY)

    def push_requested(self) -> int:
        """Push the segments backup/gap names that this member's pg_wal holds."""
        gap = read_gap(self.store)
        if gap is None:
            return 0
        files = held(self.wal_dir, gap["segments"])
        pgbr = self.pgbr()
        for f in files:
            pgbr.run("archive-push", [str(f)], timeout=120)
        if files:
            log.info("backup: pushed %d segment(s) missing from the archive, from pg_wal", len(files))
            self.on_event(f"{self.member} pushed {len(files)} segment(s) missing from the archive")
        return len(files)

    def check(self) -> gaprepair.GapDecision:
        lost = find_missing(self.pgbr())
        asked, _ = self._asked
        decision = gaprepair.decide(lost, self.mode, members_asked=bool(asked) and tuple(lost) == asked)
        self.last = decision
        self.on_gap(bool(lost))
        log.info("backup: gap check [%s] %s", decision.rule_id, decision.reason)
        if lost:
            self.on_event(f"archive gap [{decision.rule_id}] {decision.reason}")
        if decision.action == "push":
            self.store.kv.put(self.store.key(GAP), json.dumps(
                {"segments": list(decision.push), "by": self.member, "at": time.time()}).encode())
            self._asked = (decision.push, time.monotonic())
            self._wake.set()  # push what this member holds now
            return decision
        self._asked = ((), 0.0)
        if decision.action == "full":
            request = BackupRequest(f"gap-{uuid.uuid4().hex[:12]}", "full", time.time())
            if keys.put_request(self.store, request):
                self.on_event(f"full backup {request.id} requested to cover the archive gap")
        if not lost:
            self.store.kv.delete(self.store.key(GAP))
        return decision

def start_gap_thread(agent: Agent) -> GapThread | None:
    """The archive gap check of this member (pgha.backup.gapcheck), started; None without an Archive port."""
    status, config = agent.backup_status, agent.config
    if agent.ports.archive is None or status is None or config.backup is None:
        return None
    run_as = RunAs.for_data_dir(Path(config.postgresql.data_dir))

    def is_primary() -> bool:
        view = agent.view
        return view is not None and view.leader is not None and view.leader.name == config.name

    def on_gap(found: bool) -> None:
        status.archive_gap = found

    def on_event(text: str) -> None:
        agent.metrics.recorder.note(time.time(), "backup", config.name, text)

    thread = GapThread(agent.store, config.name, config.backup.gap_repair,
                       Path(config.postgresql.data_dir) / "pg_wal", lambda: client(config, run_as),
                       is_primary, on_event, on_gap)
    thread.start()
    return thread
