"""`pgha-faults`: the fault suite CI runs, and a soak as long as asked.

    pgha-faults suite [--seed S] [--results DIR]     # 30 faults in sync mode, then 10 in async mode
    pgha-faults suite --backup ...                   # the sync run with a backup host, its faults, PITR check
    pgha-faults soak --faults N [--seed S] [--sync] [--kinds a,b] [--results DIR] [--pg-bin DIR]
    pgha-faults summarise DIR [--sync]                 # the summary of an interrupted run

Needs root (network namespaces, nftables), PostgreSQL 15 and etcd (scripts/install-deps.sh).
Exit code 0 when every verdict passes, 1 otherwise, 2 on a bad flag or a missing prerequisite.
"""

from __future__ import annotations

import random
import signal
import sys
import time
from pathlib import Path

import click

from pgha.demo import netlab
from pgha.faults import netfault
from pgha.faults.backupfaults import BACKUP_KINDS
from pgha.faults.nemesis import ETCD_MEMBER_KINDS, KINDS
from pgha.faults.runner import STOP, FaultRun, RunConfig


def _stop_on_signals() -> None:
    """SIGTERM or Ctrl-C: finish the fault under way, check and summarise (the run's ``stop``); a
    second one: clean up (cluster, namespaces, clients) and exit at once.  Also when started in the
    background of a script, where SIGINT arrives ignored."""

    def handler(signum: int, frame: object) -> None:
        if STOP.is_set():
            sys.exit(128 + signum)
        STOP.set()
        click.echo("pgha-faults: stopping after the fault under way (again to stop at once)", err=True)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _prerequisites() -> None:
    _stop_on_signals()
    why = netlab.unavailable() or netfault.unavailable()
    if why:
        raise click.UsageError(f"{why}; the fault suite runs the --netns lab as root")


def _seed(seed: int | None) -> int:
    return seed if seed is not None else random.SystemRandom().randrange(1, 10**9)


def _kinds(kinds: str | None) -> list[str] | None:
    chosen = [k.strip() for k in kinds.split(",") if k.strip()] if kinds else None
    known = KINDS | ETCD_MEMBER_KINDS | BACKUP_KINDS
    unknown = sorted(set(chosen or ()) - set(known))
    if unknown:
        raise click.BadParameter(f"unknown fault kind {', '.join(unknown)}; known: "
                                 f"{', '.join(sorted(KINDS | ETCD_MEMBER_KINDS))}, {', '.join(BACKUP_KINDS)} "
                                 f"({', '.join(sorted(ETCD_MEMBER_KINDS))} need --etcd-members 3; "
                                 f"{', '.join(sorted(BACKUP_KINDS))} need --backup)",
                                 param_hint="--kinds")
    return chosen


def _results(path: str | None, what: str) -> Path:
    return Path(path or f"results/faults-{what}-{time.strftime('%Y%m%d-%H%M%S')}").absolute()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Jepsen-style fault runs against a `pgha demo --netns --vip` cluster."""


@main.command()
@click.option("--seed", type=int, help="replay a run: the same faults in the same order")
@click.option("--results", "results", help="results directory (default results/faults-suite-<time>)")
@click.option("--sync-faults", type=click.IntRange(0), default=30, show_default=True)
@click.option("--async-faults", type=click.IntRange(0), default=10, show_default=True)
@click.option("--minutes", type=click.FloatRange(1), default=15.0, show_default=True,
              help="time budget: no fault starts that could end past it (shared in proportion to the counts)")
@click.option("--backup", is_flag=True, help="the sync run gets a pgBackRest repository host: it starts with each "
              "backup fault once, and ends with the PITR checker")
def suite(seed: int | None, results: str | None, sync_faults: int, async_faults: int, minutes: float,
          backup: bool) -> None:
    """The CI suite: faults in synchronous mode (must lose nothing), then in asynchronous mode."""
    _prerequisites()
    seed = _seed(seed)
    root = _results(results, "suite")
    ok = True
    # Budget: what is left of the sync share carries over to the async run.  Each run also needs
    # about a minute to boot its cluster and read the table back.
    start = time.monotonic()
    total = max(1, sync_faults + async_faults)
    for sync, n in ((True, sync_faults), (False, async_faults)):
        if n:
            share = (sync_faults if sync else total) / total
            deadline = start + minutes * 60 * share - 60
            with_backup = backup and sync
            run = FaultRun(RunConfig(faults=n, seed=seed, sync=sync, results=root / ("sync" if sync else "async"),
                                     deadline=deadline, backup=with_backup,
                                     first_kinds=list(BACKUP_KINDS) if with_backup else []))
            ok = run.execute().ok and ok
    click.echo(f"pgha-faults suite: {'PASS' if ok else 'FAIL'} (seed {seed}; results in {root})")
    sys.exit(0 if ok else 1)


@main.command()
@click.option("--faults", "n", type=click.IntRange(1), required=True, help="how many faults")
@click.option("--seed", type=int, help="replay a run: the same faults in the same order")
@click.option("--sync/--async", default=False, help="synchronous_mode on (default: asynchronous)")
@click.option("--kinds", help="only these fault kinds, comma-separated (default: all)")
@click.option("--ttl", type=click.FloatRange(2), default=4.0, show_default=True)
@click.option("--etcd-members", type=click.IntRange(1, 7), default=1, show_default=True,
              help="an etcd cluster of this many members, each in its own namespace (adds etcd member faults)")
@click.option("--results", "results", help="results directory (default results/faults-soak-<time>)")
@click.option("--backup", is_flag=True, help="a pgBackRest repository host (adds the backup faults), and the PITR "
              "checker at the end of each cluster's life")
@click.option("--pg-bin", metavar="DIR", default="",
              help="PostgreSQL's bin directory, e.g. $(make -s pg18-bin) (default: Debian's 15)")
def soak(n: int, seed: int | None, sync: bool, kinds: str | None, ttl: float, etcd_members: int,
         results: str | None, backup: bool, pg_bin: str) -> None:
    """As many faults as asked, on one cluster (a new one only when one does not recover)."""
    chosen = _kinds(kinds)
    _prerequisites()
    run = FaultRun(RunConfig(faults=n, seed=_seed(seed), sync=sync, results=_results(results, "soak"),
                             ttl=ttl, loop_wait=min(0.5, ttl / 4), kinds=chosen, etcd_members=etcd_members,
                             backup=backup, pg_bin=pg_bin))
    sys.exit(0 if run.execute().ok else 1)


@main.command()
@click.argument("results", type=click.Path(exists=True, file_okay=False))
@click.option("--sync/--async", default=False, help="the run's mode (synchronous runs must lose nothing)")
@click.option("--seed", type=int, default=0, help="the run's seed, for the summary line")
def summarise(results: str, sync: bool, seed: int) -> None:
    """Summarise a run from its results directory (one that was interrupted, for instance)."""
    run = FaultRun(RunConfig(faults=0, seed=seed, sync=sync, results=Path(results).absolute()))
    try:
        run.load()
    except (OSError, ValueError, KeyError) as exc:
        raise click.UsageError(f"{results}: cannot read nemesis.jsonl ({exc}); "
                               "is it a pgha-faults results directory?") from None
    sys.exit(0 if run.finish().ok else 1)

