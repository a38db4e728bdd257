"""The cluster-wide defaults as text: docs/configuration.md's table and generate-config's comment.

Both are rendered from ``ClusterConfig``'s fields (default and ``doc``) and ``PROFILES``, the one
place the defaults are written, so no doc can name another value.  Pure: the ``__main__`` block is
the only I/O.  Regenerate the table with ``python -m pgha.core.defaults docs/configuration.md``.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from pgha.core.model import PROFILE_USES, PROFILES, ClusterConfig, profile_config

BEGIN = ("<!-- Generated from pgha.core.model (ClusterConfig, PROFILES); do not edit.\n"
         "     Regenerate with: python -m pgha.core.defaults docs/configuration.md -->")
END = "<!-- end of the generated defaults -->"
TIMINGS = tuple(PROFILES["default"])


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    if isinstance(value, tuple) and not value:
        return "[]"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        inner = ", ".join(f"{f.name}: {_value(getattr(value, f.name))}" for f in dataclasses.fields(value))
        return "{" + inner + "}"
    return str(value)


def renewal(profile: str) -> str:
    """How often a profile renews the lease, e.g. "every 3.5 s" ("%.3g" of the period)."""
    return f"every {profile_config(profile).renewal_period():.3g} s"


def timings(profile: str) -> str:
    """A profile's timings in one phrase: ``ttl 10, loop_wait 5, …, a lease renewal every 3.5 s``."""
    values = PROFILES[profile]
    parts = [f"{key} {_value(values[key])}" for key in TIMINGS if key != "renew_interval"]
    auto = "" if values["renew_interval"] else " (automatic)"
    return ", ".join(parts) + f", a lease renewal {renewal(profile)}{auto}"


def _default(f: dataclasses.Field[Any]) -> str:
    if f.name in TIMINGS:
        others = "; ".join(f"`{p}`: {_value(v[f.name])}" for p, v in PROFILES.items() if p != "default")
        shown = _value(PROFILES["default"][f.name])
        if f.name == "renew_interval" and not PROFILES["default"][f.name]:
            shown += f": {renewal('default')}"
        return f"{shown} ({others})"
    if f.default is not dataclasses.MISSING:
        return f"`{f.default}`" if isinstance(f.default, str) else _value(f.default)
    assert callable(f.default_factory)
    return _value(f.default_factory())


def _meaning(f: dataclasses.Field[Any]) -> str:
    doc = str(f.metadata["doc"])
    if f.name == "profile":
        uses = "; ".join(f"`{p}`: {timings(p)} — {PROFILE_USES[p]}" for p in PROFILES)
        doc += f". {uses}. See \"Choosing ttl\" in architecture.md"
    return doc.replace("|", "\\|")


def table() -> str:
    """The Markdown table of every cluster-wide setting, its default and its meaning."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{f.name}` | {_default(f)} | {_meaning(f)} |" for f in dataclasses.fields(ClusterConfig)]
    return "\n".join(rows)


def splice(text: str) -> str:
    """``text`` with the block between BEGIN and END replaced by the current table."""
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError("the generated defaults' markers are missing")
    return f"{head}{BEGIN}\n\n{table()}\n\n{END}{tail}"


def summary() -> str:
    """One line naming the defaults, for generate-config's comment."""
    c = ClusterConfig()
    return f"Defaults (profile {c.profile}): {timings(c.profile)}; synchronous_mode {c.synchronous_mode}."


if __name__ == "__main__":  # pragma: no cover - the only I/O: rewrite the file named in place
    path = sys.argv[1] if len(sys.argv) > 1 else "docs/configuration.md"
    with open(path, encoding="utf-8") as fh:
        old = fh.read()
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(splice(old))
