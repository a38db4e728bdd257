"""One fault run: a `--netns --vip` cluster, the workload and monitors, N faults from a seed,
the checks after each fault, and the results directory.

Results (under ``results``): ``history.jsonl`` (every client operation), ``nemesis.jsonl``
(every fault: start, heal, recovery), ``monitor-<epoch>-<node>.jsonl`` (acceptance intervals),
``faults.json`` (per-fault findings), ``summary.txt`` and, for a failing run, ``report.txt``
with every agent's decision log tail.  A cluster that does not recover within the limit is
a finding; the run then starts a new cluster (an *epoch*) and goes on.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg

from pgha.backup.restoretest import VerifyFailed
from pgha.demo import DemoCluster, DemoError, netlab
from pgha.demo.procs import stop_pid
from pgha.demo.state import PG_BIN
from pgha.faults import backupfaults, check, monitor, workload
from pgha.faults.nemesis import Nemesis, heal_network, settled_view
from pgha.faults.report import agent_log_tails, log_tail, summary_text
from pgha.preflight import port_free

# Set (by a signal handler) to end a run after the fault under way, with its checks and summary.
STOP = threading.Event()
EPOCH_VALUES = 10**13  # each epoch's clients write values from epoch * EPOCH_VALUES


@dataclass
class RunConfig:
    faults: int
    seed: int
    sync: bool
    results: Path
    ttl: float = 4.0
    loop_wait: float = 0.5
    hold: float | None = None  # how long each fault lasts; default ttl + 2
    kinds: list[str] | None = None  # restrict to these kinds
    recovery_limit: float = 60.0
    clients_per_route: int = 2
    settle: float = 1.0  # steady writes before each fault
    etcd_members: int = 1  # > 1: an etcd cluster, one namespace per member (adds the etcd member faults)
    deadline: float | None = None  # monotonic time after which no new fault starts (a time budget)
    # A pgBackRest repository host (its own namespace), the backup faults, and the PITR checker.
    backup: bool = False
    # Kinds run first, in this order (then random ones): `suite --backup` runs each backup fault once.
    first_kinds: list[str] = field(default_factory=list)
    pg_bin: str = ""  # PostgreSQL's bin directory (picks the major); "" is the demo's default, Debian's 15
    say: Callable[[str], None] = field(default=lambda s: print(s, flush=True))

    @property
    def title(self) -> str:
        return f"{'sync' if self.sync else 'async'} mode"


def free_port_base(nodes: int) -> int:
    for _ in range(200):
        base = random.randrange(20000, 32000, 100)
        ports = [base, base + 1] + [base + 10 * i + k for i in range(1, nodes + 1) for k in range(3)]
        if all(port_free("127.0.0.1", p) for p in ports):
            return base
    raise DemoError("no free port range found in 20000-32000")


class Epoch:
    """One cluster's life within a run, with its workload and monitors."""

    def __init__(self, run: FaultRun, number: int) -> None:
        self.run = run
        self.number = number
        cfg = run.cfg
        self.log: IO[str] = open(cfg.results / "demo.log", "a")  # noqa: SIM115 - closed in stop()
        vip = str(netlab.free_subnet().network_address + 100)
        self.demo = DemoCluster(run.workdir / f"cluster{number}", nodes=3, port_base=free_port_base(3),
                                ttl=cfg.ttl, loop_wait=cfg.loop_wait, sync=cfg.sync, netns=True, vip=vip,
                                etcd_members=cfg.etcd_members,
                                say=lambda s: print(s, file=self.log, flush=True),
                                pg_bin=cfg.pg_bin or PG_BIN)
        self.demo.backup = cfg.backup
        self.procs: list[subprocess.Popen[bytes]] = []
        self.reported: set[int] = set()

    def start(self) -> None:
        self.demo.up(timeout=120)
        leader = self.demo.wait_vip(timeout=30)
        with psycopg.connect(self.demo.node(leader).dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute(workload.CREATE)
            conn.execute(monitor.CREATE)
        assert self.demo.state is not None
        if self.run.cfg.backup:
            self.run.cfg.say(f"  backup: {backupfaults.take_full_backup(self.demo)}")
        res = self.run.cfg.results
        for n in self.demo.state.nodes:
            self._spawn(netlab.in_netns(n.netns), "pgha.faults.monitor", "--node", n.name, "--dsn", n.dsn,
                        "--out", str(res / f"monitor-{self.number}-{n.name}.jsonl"))
        dsns = [f"--dsn=vip={self.vip_dsn()}", f"--dsn=multi={self.multi_dsn()}"] * self.run.cfg.clients_per_route
        self._spawn(self.demo.client_exec([]), "pgha.faults.workload", "--out", str(res / "history.jsonl"),
                    "--base", str(self.number * EPOCH_VALUES), *dsns)

    def _spawn(self, prefix: list[str], module: str, *args: str) -> None:
        proc = subprocess.Popen([*prefix, sys.executable, "-m", module, *args], stdout=self.log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)

    def vip_dsn(self) -> str:
        assert self.demo.state is not None
        return (f"host={self.demo.state.vip} port={self.demo.lab_pg_port} user=postgres dbname=postgres "
                f"passfile={self.demo.dir / 'pgpass'}")

    def multi_dsn(self) -> str:
        assert self.demo.state is not None
        hosts = ",".join(str(n.address) for n in self.demo.state.nodes)
        ports = ",".join(str(self.demo.lab_pg_port) for _ in self.demo.state.nodes)
        return (f"host={hosts} port={ports} user=postgres dbname=postgres target_session_attrs=read-write "
                f"passfile={self.demo.dir / 'pgpass'}")

    def present(self) -> set[int]:
        """Every value in the set table, read on the leader."""
        leader = self.demo.wait_vip(timeout=10)
        with psycopg.connect(self.demo.node(leader).dsn, autocommit=True, connect_timeout=3) as conn:
            rows = conn.execute(f"SELECT value FROM {workload.TABLE}").fetchall()
        return {int(r[0]) for r in rows}

    def stop(self) -> None:
        for proc in self.procs:
            stop_pid(proc.pid, signal.SIGTERM, timeout=20)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self.demo.state is not None:
            heal_network(self.demo)
            for n in self.demo.state.nodes:
                with contextlib.suppress(OSError):
                    shutil.copy(Path(n.config).parent / "agent.log",
                                self.run.cfg.results / f"agent-{self.number}-{n.name}.log")
            with contextlib.suppress(Exception):
                self.demo.down()
        self.log.close()


class FaultRun:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.workdir = Path("/nonexistent")  # made by execute(): the clusters' directories
        self.faults: list[check.FaultRecord] = []
        self.problems: list[str] = []
        self.tails: list[str] = []
        self.epochs: list[tuple[int, float, float]] = []  # (number, start, end)
        self.skipped = 0  # faults left out by the time budget

    # --- records ------------------------------------------------------------------------
    def nemesis_log(self, event: dict[str, Any]) -> None:
        # The wall clock too, to find the moment in the agents' logs.
        event["wall"] = time.strftime("%H:%M:%S", time.gmtime()) + f"{time.time() % 1:.3f}"[1:]
        with open(self.cfg.results / "nemesis.jsonl", "a") as fh:
            fh.write(json.dumps(event) + "\n")

    def ops(self) -> list[check.Op]:
        path = self.cfg.results / "history.jsonl"
        out = []
        with contextlib.suppress(FileNotFoundError), open(path) as fh:
            for line in fh:
                with contextlib.suppress(ValueError, KeyError):
                    out.append(check.Op.from_json(json.loads(line)))
        return out

    def intervals(self) -> list[check.Writable]:
        out = []
        for path in sorted(self.cfg.results.glob("monitor-*.jsonl")):
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError, KeyError):
                    d = json.loads(line)
                    out.append(check.Writable(d["node"], d["from"], d["to"]))
        return out

    # --- the run ------------------------------------------------------------------------
    def execute(self) -> check.Verdict:
        cfg = self.cfg
        cfg.results.mkdir(parents=True, exist_ok=True)
        for pattern in ("*.jsonl", "agent-*.log", "*.txt", "faults.json", "demo.log"):
            for old in cfg.results.glob(pattern):
                old.unlink()
        self.workdir = Path(tempfile.mkdtemp(prefix="pgha-faults-", dir="/tmp"))
        self.workdir.chmod(0o755)
        cfg.say(f"pgha-faults: {cfg.title}, {cfg.faults} faults, seed {cfg.seed} "
                f"(replay: --seed {cfg.seed}), ttl {cfg.ttl:g}s; results in {cfg.results}")
        try:
            self._epochs()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.finish()

    def _epochs(self) -> None:
        done = 0
        number = 0
        while done < self.cfg.faults:
            number += 1
            epoch = Epoch(self, number)
            began = time.monotonic()
            try:
                epoch.start()
                done += self._faults(epoch, self.cfg.faults - done)
                self._final_check(epoch)
                if self.cfg.backup:
                    self._pitr_check(epoch)
            except DemoError as exc:
                self.problems.append(f"cluster {number}: {exc}")
                self.tails.append(agent_log_tails(epoch.demo))
                done += 1  # do not loop forever on a cluster that cannot start
            finally:
                epoch.stop()
                self.epochs.append((number, began, time.monotonic()))

    def _faults(self, epoch: Epoch, left: int) -> int:
        cfg = self.cfg
        nemesis = Nemesis(epoch.demo, self.rng, cfg.hold if cfg.hold is not None else cfg.ttl + 2)
        kinds = nemesis.kinds()
        names = sorted(cfg.kinds or kinds)
        for k in [*names, *cfg.first_kinds]:
            if k not in kinds:
                raise DemoError(f"unknown fault kind {k!r}; known: {', '.join(sorted(kinds))}")
        for i in range(left):
            if self._out_of_time() or STOP.is_set():
                self.skipped = left - i
                cfg.say(f"  {'stopped' if STOP.is_set() else 'time budget reached'}: {self.skipped} faults not run")
                return left
            index = len(self.faults) + 1
            kind = cfg.first_kinds[index - 1] if index <= len(cfg.first_kinds) else self.rng.choice(names)
            time.sleep(cfg.settle)
            before = nemesis.leader()
            start = time.monotonic()
            target = kinds[kind]()
            self.nemesis_log({"index": index, "event": "start", "kind": kind, "target": target.node,
                              "detail": target.detail, "t": start, "leader": before})
            time.sleep(nemesis.hold)
            healed = time.monotonic()
            target.heal()
            self.nemesis_log({"index": index, "event": "heal", "t": healed})
            rec = check.FaultRecord(index, kind, target.node, start, healed, None, leader_before=before)
            self.faults.append(rec)
            try:
                epoch.demo.wait_healthy(timeout=cfg.recovery_limit)
                epoch.demo.wait_vip(timeout=10)
                rec.recovered = time.monotonic()
                self._clear_switchover(epoch)
                rec.leader_after = nemesis.leader()
                self._check_lost(epoch, rec)
            except (DemoError, AssertionError, psycopg.Error) as exc:
                rec.note = str(exc)
            self.nemesis_log({"index": index, "event": "recovered" if rec.recovered else "unrecovered",
                              "t": rec.recovered or time.monotonic(), "leader": rec.leader_after,
                              "lost": len(rec.lost), "lost_values": rec.lost[:100],
                              "fail_present": rec.fail_present[:100], "note": rec.note})
            cfg.say(self._fault_line(rec, target.detail))
            if rec.recovered is None:
                self.tails.append(f"fault #{index} {kind}:\n" + agent_log_tails(epoch.demo))
                return i + 1
        return left

    def _out_of_time(self) -> bool:
        """Whether one more fault (as long as the longest so far) would end past the deadline."""
        if self.cfg.deadline is None:
            return False
        longest = max((f.end - f.start for f in self.faults), default=self.cfg.ttl * 4)
        return time.monotonic() + self.cfg.settle + longest > self.cfg.deadline

    def _fault_line(self, rec: check.FaultRecord, detail: str) -> str:
        rec_s = f"recovered in {rec.recovery:.1f}s" if rec.recovery is not None else "NOT RECOVERED"
        lost = f", {len(rec.lost)} acknowledged writes LOST" if rec.lost else ""
        return (f"  #{rec.index:<3} {rec.kind:<24} {rec.target or '-':<6} {rec.leader_before}->"
                f"{rec.leader_after or '?'}  {rec_s}{lost}  ({detail})")

    def _clear_switchover(self, epoch: Epoch) -> None:
        """A request still pending after recovery is dropped, so it cannot act in a later fault."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if settled_view(epoch.demo).switchover is None:
                return
            time.sleep(0.2)
        epoch.demo.store().clear_switchover()
        epoch.demo.wait_healthy(timeout=self.cfg.recovery_limit)

    def _check_lost(self, epoch: Epoch, rec: check.FaultRecord) -> None:
        read_at = time.monotonic()
        present = epoch.present()
        ops = [op for op in self.ops() if epoch.number * EPOCH_VALUES <= op.value < (epoch.number + 1) * EPOCH_VALUES]
        lost = [op.value for op in check.lost_writes(ops, present, read_at) if op.value not in epoch.reported]
        rec.lost = lost
        epoch.reported.update(lost)
        rec.fail_present = [op.value for op in check.failed_but_present(ops, present)
                            if op.value not in epoch.reported]
        epoch.reported.update(rec.fail_present)

    def _final_check(self, epoch: Epoch) -> None:
        """Once more after the last fault: writes acknowledged since the last check."""
        if self.faults and self.faults[-1].recovered is not None:
            time.sleep(self.cfg.settle)
            extra = check.FaultRecord(self.faults[-1].index, self.faults[-1].kind, None, 0, 0, 0)
            self._check_lost(epoch, extra)
            self.faults[-1].lost += extra.lost
            self.faults[-1].fail_present += extra.fail_present

    def _pitr_check(self, epoch: Epoch) -> None:
        """The archive holds every acknowledged write: a restore of the newest backup replayed to
        the end of the archive (after one more WAL switch is archived) is read back."""
        leader = epoch.demo.wait_vip(timeout=10)
        # Every write acknowledged before the switch is in a segment up to the one it closes.
        read_at = time.monotonic()
        with psycopg.connect(epoch.demo.node(leader).dsn, autocommit=True, connect_timeout=3) as conn:
            last = str(conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0])  # type: ignore[index]
        root = epoch.demo.repository_path / "archive" / epoch.demo.cluster
        deadline = time.monotonic() + 180
        while not any(f.name.startswith(last) for d in root.glob("*/*") if d.is_dir() for f in d.iterdir()):
            if time.monotonic() > deadline:
                self.problems.append(f"cluster {epoch.number}: {last} not archived within 180 s of the last fault")
                return
            time.sleep(1.0)
        ops = [op for op in self.ops() if epoch.number * EPOCH_VALUES <= op.value < (epoch.number + 1) * EPOCH_VALUES]
        try:
            restored, replayed = backupfaults.PitrCheck(epoch.demo, self.workdir / f"pitr{epoch.number}",
                                                        epoch.demo.port_base + 7).values(workload.TABLE)
        except VerifyFailed as exc:
            self.problems.append(f"cluster {epoch.number}: PITR to the end of the archive failed: {exc}")
            return
        lost = check.lost_writes(ops, restored, read_at)
        self.cfg.say(f"  PITR to the end of the archive ({replayed}): {len(restored)} rows, "
                     f"{len(lost)} acknowledged writes missing")
        if lost and self.cfg.sync:
            self.problems.append(f"cluster {epoch.number}: the PITR to the end of the archive misses {len(lost)} "
                                 f"acknowledged writes, e.g. {[op.value for op in lost[:5]]}")

    def load(self) -> None:
        """The faults of a run from its nemesis log (to summarise a run that was interrupted)."""
        events = [json.loads(line) for line in (self.cfg.results / "nemesis.jsonl").read_text().splitlines()]
        by_index: dict[int, check.FaultRecord] = {}
        for e in events:
            i = e["index"]
            if e["event"] == "start":
                by_index[i] = check.FaultRecord(i, e["kind"], e.get("target"), e["t"], e["t"], None,
                                                leader_before=e.get("leader"))
            elif i in by_index and e["event"] == "heal":
                by_index[i].healed = e["t"]
            elif i in by_index:
                f = by_index[i]
                f.recovered = e["t"] if e["event"] == "recovered" else None
                f.leader_after, f.note = e.get("leader"), e.get("note", "")
                f.lost = e.get("lost_values") or [-1] * int(e.get("lost", 0))
                f.fail_present = e.get("fail_present", [])
        # A fault without its outcome was cut short by the interruption: not counted.
        self.faults = [f for f in by_index.values() if f.recovered is not None or f.note]

    def finish(self) -> check.Verdict:
        ops = self.ops()
        oks = [op.complete for op in ops if op.type == "ok"]
        dual = check.dual_writable(self.intervals())
        starts = [f.start for f in self.faults]
        for i, f in enumerate(self.faults):
            nxt = starts[i + 1] if i + 1 < len(starts) else None
            f.max_gap = check.longest_gap(oks, f.start, f.end)
            f.dual = [d for d in dual if check.in_window(d[2], f, nxt)]
        outside = [d for d in dual if not any(check.in_window(d[2], f, None if i + 1 == len(starts) else starts[i + 1])
                                             for i, f in enumerate(self.faults))]
        extra = list(self.problems) + [f"two nodes accepted writes outside any fault: {d}" for d in outside]
        verdict = check.verdict(self.faults, self.cfg.sync, extra)
        counts = Counter(op.type for op in ops)
        kinds = check.summarise(self.faults)
        text = summary_text(f"pgha-faults {self.cfg.title}", self.cfg.seed, self.faults, kinds, verdict, dict(counts))
        if self.skipped:
            text += f"\n  ({self.skipped} faults left out: stopped, or time budget reached)"
        res = self.cfg.results
        (res / "summary.txt").write_text(text + "\n")
        (res / "faults.json").write_text(json.dumps({
            "seed": self.cfg.seed, "sync": self.cfg.sync, "ttl": self.cfg.ttl, "ok": verdict.ok,
            "problems": verdict.problems, "operations": dict(counts),
            "faults": [f.to_json() for f in self.faults]}, indent=1) + "\n")
        if not verdict.ok:
            self.tails += [log_tail(p.stem, p) for p in sorted(res.glob("agent-*.log"))]
            (res / "report.txt").write_text("\n".join(verdict.problems) + "\n\n" + "\n\n".join(self.tails) + "\n")
        self.cfg.say(text)
        if not verdict.ok:
            self.cfg.say(f"agents' decision log tails: {res / 'report.txt'}")
        return verdict
