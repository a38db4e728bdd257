"""Network faults inside a lab namespace: nftables rules that drop packets, so TCP hangs.

This kernel has no netem qdisc, and a link set down resets nothing either but also hides
the asymmetric cases; a table of drop rules inside the node's own namespace cuts exactly
the traffic we name, in one direction or both.  Only ``eth0`` is filtered: a node still
reaches itself over ``lo`` (its monitor, its own PostgreSQL).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

from pgha.demo import netlab

TABLE = "pghafault"


class NetFaultError(Exception):
    """One line naming the nft command that failed and why."""


def _nft(netns: str | None, script: str) -> None:
    argv = [*netlab.in_netns(netns), "nft", "-f", "-"]
    try:
        res = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=10, check=False)
    except FileNotFoundError:
        raise NetFaultError("`nft` not found; install the Debian package nftables (scripts/install-deps.sh)") from None
    if res.returncode != 0:
        raise NetFaultError(f"nft in {netns or 'the root namespace'}: {res.stderr.strip() or res.returncode}")


def ruleset(drop_from: Iterable[str], drop_to: Iterable[str]) -> str:
    """The nft script of our table: drop packets arriving from ``drop_from`` and leaving for
    ``drop_to`` on eth0 (an empty list drops nothing in that direction)."""
    src, dst = sorted(set(drop_from)), sorted(set(drop_to))
    lines = [f"table inet {TABLE} {{",
             "  chain input { type filter hook input priority -10; policy accept;"]
    if src:
        lines.append(f"    iifname \"eth0\" ip saddr {{ {', '.join(src)} }} drop")
    lines += ["  }", "  chain output { type filter hook output priority -10; policy accept;"]
    if dst:
        lines.append(f"    oifname \"eth0\" ip daddr {{ {', '.join(dst)} }} drop")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def cut(netns: str, drop_from: Iterable[str], drop_to: Iterable[str]) -> None:
    """Replace our table in ``netns`` with one dropping what is named (nothing else changes)."""
    heal(netns)
    _nft(netns, ruleset(drop_from, drop_to))


def heal(netns: str) -> None:
    """Remove our table from ``netns``, if there is one."""
    subprocess.run([*netlab.in_netns(netns), "nft", "delete", "table", "inet", TABLE],
                   capture_output=True, timeout=10, check=False)


def unavailable() -> str | None:
    """Why nftables cannot filter inside a namespace here, or None."""
    try:
        res = subprocess.run(["nft", "--version"], capture_output=True, text=True, timeout=10, check=False)
    except FileNotFoundError:
        return "`nft` not found; install the Debian package nftables (scripts/install-deps.sh)"
    return None if res.returncode == 0 else f"nft --version failed: {res.stderr.strip()}"
