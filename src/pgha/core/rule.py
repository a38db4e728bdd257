"""One row of the rules table (``pgha.core.rules``): an id, a comment, a guard and the actions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pgha.core.actions import Action
from pgha.core.facts import Facts


@dataclass(frozen=True)
class Rule:
    id: str
    section: str
    comment: str
    when: Callable[[Facts], bool]
    then: Callable[[Facts], list[Action]]
    # Optional facts appended to the reason (e.g. the election ranking), for operators.
    detail: Callable[[Facts], str] | None = None
    # The rule acts on the result of the last background task, which must stay visible to the
    # next loops (e.g. a failed pg_rewind keeps the member stopped); otherwise the agent drops a
    # finished task's result once a decision has seen it.
    keeps_task_result: bool = False
    # Seconds until the next loop at the latest when this row decides (None: the section's pace).
    recheck_in: float | None = None
