"""What a run leaves behind: the agents' decision log tails, the summary table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pgha.demo import DemoCluster
from pgha.faults.check import FaultRecord, KindSummary, Verdict

LINES = 40
STEADY = ("[leader-steady]", "[replica-steady]")


def agent_log_tails(demo: DemoCluster, lines: int = LINES) -> str:
    """The last ``lines`` lines of every agent's log that changed decision (the steady rules
    repeat every loop)."""
    if demo.state is None:
        return ""
    paths = [(node.name, Path(node.config).parent / "agent.log") for node in demo.state.nodes]
    return "\n".join(log_tail(name, path, lines) for name, path in paths if path.exists())


def log_tail(name: str, path: Path, lines: int = LINES) -> str:
    """``--- name (path) ---`` and the last ``lines`` decision changes of that agent log."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    kept = [line for line in text if not any(s in line for s in STEADY)][-lines:]
    return f"--- {name} ({path}) ---\n" + "\n".join(kept)


def summary_text(title: str, seed: int, faults: Sequence[FaultRecord], kinds: Sequence[KindSummary],
                 verdict: Verdict, ops: dict[str, int]) -> str:
    recovered = [f.recovery for f in faults if f.recovery is not None]
    lines = [f"{title}: seed {seed}, {len(faults)} faults, operations " +
             ", ".join(f"{k} {v}" for k, v in sorted(ops.items()))]
    lines += ["  " + k.line() for k in kinds]
    if recovered:
        lines.append(f"  recovery after heal: max {max(recovered):.1f}s, mean {sum(recovered) / len(recovered):.1f}s")
    lines.append(f"  verdict: {'PASS' if verdict.ok else 'FAIL'}" +
                 ("" if verdict.ok else "; " + "; ".join(verdict.problems[:5])))
    return "\n".join(lines)
