"""Render the rules table as Markdown (docs/rules.md is generated from RULES by this module).

Regenerate with ``python -m pgha.core.doc > docs/rules.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pgha.core.rules import RULES, Rule
from pgha.core.slots import SLOT_RULES, SlotRule
from pgha.core.upgrade_steps import UPGRADE_RULES, UpgradeRule

HEADER = """\
# The rules table

<!-- Generated from pgha.core.rules.RULES; do not edit.
     Regenerate with: python -m pgha.core.doc > docs/rules.md -->

Every HA loop evaluates these rows top to bottom and follows the first one whose
condition holds.  The rule id is logged and published in the member's status, so
"why did node 2 promote?" is answered by a rule id.  Sections are in order of
precedence.
"""


SLOTS_HEADER = """
## Permanent slots (each slot, every upkeep)

The steady rows (leader-steady, replica-steady and the other replica rows) also plan the permanent slots (`slots:`,
`ignore_slots`): for each slot name, configured or present on the member, the first of these rows
that holds decides (pgha.core.slots.SLOT_RULES; the agent logs the row id with what it did).
"""


def render_slots(rules: Sequence[SlotRule] = SLOT_RULES) -> list[str]:
    out = [SLOTS_HEADER.rstrip("\n"), "", "| # | id | what it does |", "| --- | --- | --- |"]
    for n, rule in enumerate(rules, start=1):
        out.append(f"| {n} | `{rule.id}` | {rule.comment.replace('|', chr(92) + '|')} |")
    return out


UPGRADE_HEADER = """
## Major-version upgrade (each member's part, while upgrade-hold holds it)

`pgha upgrade` records an upgrade; while rule upgrade-hold keeps a member's HA loop from acting, its upgrade
worker does the parts these rows name, every row that holds, in order (pgha.core.upgrade_steps.UPGRADE_RULES;
the agent logs the row id with what it did).
"""


def render_upgrade(rules: Sequence[UpgradeRule] = UPGRADE_RULES) -> list[str]:
    out = [UPGRADE_HEADER.rstrip("\n"), "", "| # | id | what it does |", "| --- | --- | --- |"]
    for n, rule in enumerate(rules, start=1):
        out.append(f"| {n} | `{rule.id}` | {rule.comment.replace('|', chr(92) + '|')} |")
    return out


def render(rules: Sequence[Rule] = RULES) -> str:
    """The whole document: one table per section, rows in evaluation order, then the slot rows."""
    out = [HEADER.rstrip("\n")]
    section: str | None = None
    for n, rule in enumerate(rules, start=1):
        if rule.section != section:
            section = rule.section
            out.append(f"\n## {section}\n\n| # | id | what it does |\n| --- | --- | --- |")
        comment = rule.comment.replace("|", "\\|")
        out.append(f"| {n} | `{rule.id}` | {comment} |")
    if rules is RULES:
        out += render_slots()
        out += render_upgrade()
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
