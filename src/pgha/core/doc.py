"""Render the rules table as Markdown (docs/rules.md is generated from RULES by this module).

Regenerate with ``python -m pgha.core.doc > docs/rules.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pgha.core.rules import RULES, Rule

HEADER = """\
# The rules table

<!-- Generated from pgha.core.rules.RULES; do not edit.
     Regenerate with: python -m pgha.core.doc > docs/rules.md -->

Every HA loop evaluates these rows top to bottom and follows the first one whose
condition holds.  The rule id is logged and published in the member's status, so
"why did node 2 promote?" is answered by a rule id.  Sections are in order of
precedence.
"""


def render(rules: Sequence[Rule] = RULES) -> str:
    """The whole document: one table per section, rows in evaluation order."""
    out = [HEADER.rstrip("\n")]
    section: str | None = None
    for n, rule in enumerate(rules, start=1):
        if rule.section != section:
            section = rule.section
            out.append(f"\n## {section}\n\n| # | id | what it does |\n| --- | --- | --- |")
        comment = rule.comment.replace("|", "\\|")
        out.append(f"| {n} | `{rule.id}` | {comment} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
