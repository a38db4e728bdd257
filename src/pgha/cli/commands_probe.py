"""`pgha probe DSN`: write through a DSN every few milliseconds and report what a client saw."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

import click

from pgha.cli.main import cli

# Exit codes (also in docs/probe.md).
EXIT_OK = 0
EXIT_USAGE = 1  # malformed DSN or option
EXIT_NEVER_CONNECTED = 2  # no connection succeeded during the whole run
EXIT_MISSING = 3  # acknowledged writes missing from the final primary
EXIT_INTERRUPTED = 130  # Ctrl-C: the report so far is printed first


@cli.command("probe")
@click.argument("dsn")
@click.option("--interval-ms", default=10.0, show_default=True, type=click.FloatRange(min=1.0),
              help="Time between two write attempts.")
@click.option("--duration", "duration", default=None, type=click.FloatRange(min=0.0),
              help="Seconds to run (default: until Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--table", default="pgha_probe", show_default=True, help="Probe table (created if missing).")
@click.option("--timeout-ms", default=2000.0, show_default=True, type=click.FloatRange(min=10.0),
              help="Client-side limit on each statement; a write slower than this counts as failed.")
def probe(dsn: str, interval_ms: float, duration: float | None, as_json: bool, table: str,
          timeout_ms: float) -> None:
    """Probe write availability through DSN (a libpq string or URI; multi-host with
    target_session_attrs=read-write follows the primary).

    Reports acknowledged writes, failed attempts, the longest gap between two
    acknowledged writes, and the acknowledged writes missing from the final primary.
    """
    from pgha.probe import Probe, ProbeError, safe_dsn

    try:
        p = Probe(dsn, interval=interval_ms / 1000.0, table=table, timeout=timeout_ms / 1000.0)
    except ProbeError as exc:
        click.echo(f"pgha probe: {exc}", err=True)
        sys.exit(EXIT_USAGE)

    if not as_json:
        click.echo(f"probing {safe_dsn(dsn)} every {interval_ms:g} ms"
                   f"{f' for {duration:g}s' if duration is not None else ' until Ctrl-C'} (run {p.run_id})",
                   err=True)
    p.start()
    interrupted = _run_until_interrupted(p.wait, duration)
    report = p.stop()

    click.echo(report.to_json() if as_json else report.to_text())
    if interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if not report.connected:
        last = report.errors[0][0] if report.errors else "no error recorded"
        click.echo(f"pgha probe: never connected to {safe_dsn(dsn)}: {last}", err=True)
        sys.exit(EXIT_NEVER_CONNECTED)
    if report.missing:
        click.echo(f"pgha probe: {report.missing} acknowledged writes are missing", err=True)
        sys.exit(EXIT_MISSING)


def _run_until_interrupted(wait: Callable[[float], bool], duration: float | None) -> bool:
    """Wait ``duration`` seconds (None: forever) or until the probe stops; True on Ctrl-C.

    Fix: Ctrl-C is a flag set by our own SIGINT handler, not a KeyboardInterrupt.  An exception
    raised inside threading.Event.wait() can leave the event's lock held, and the probe's stop()
    then blocked on it for good, printing nothing (a flaky test saw it about once in three runs).
    """
    hit: list[bool] = []

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        hit.append(True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        deadline = None if duration is None else time.monotonic() + duration
        while not hit:
            left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if left <= 0 or wait(left):
                break
    finally:
        signal.signal(signal.SIGINT, previous)
    return bool(hit)
