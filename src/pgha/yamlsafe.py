"""YAML written by operators (node files, `edit-config --apply`), read safely.

Only YAML's plain types are built (``yaml.safe_load``: a tag such as ``!!python/object`` is refused),
and aliases may not expand past ``MAX_VALUES`` values, so an alias bomb ("billion laughs") is refused
before anything walks it.  Every problem is a ``ValueError`` with one line.
"""

from __future__ import annotations

from typing import Any

import yaml

# Values a document may hold once its aliases are expanded (a node file has a few hundred).
MAX_VALUES = 100_000


def load(text: str) -> Any:
    """The document in ``text``; ValueError (one line naming the line and the fix) when it is not usable."""
    try:
        data = yaml.safe_load(text)
        size = _expanded_size(data, {})
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        if isinstance(exc, yaml.constructor.ConstructorError):
            raise ValueError(f"a YAML tag that is not allowed{where}; remove the tag (!!...)") from None
        raise ValueError(f"not valid YAML{where}; fix the syntax") from None
    except RecursionError:
        raise ValueError("nested too deeply to be a configuration") from None
    if size > MAX_VALUES:
        raise ValueError(f"its aliases expand to more than {MAX_VALUES} values (an alias bomb?); write the "
                         "values out")
    return data


def _expanded_size(value: Any, seen: dict[int, int]) -> int:
    """How many values ``value`` holds with every alias expanded (each shared object is counted once)."""
    if not isinstance(value, dict | list):
        return 1
    known = seen.get(id(value))
    if known is not None:
        return known
    seen[id(value)] = MAX_VALUES + 1  # a cycle (a recursive alias) counts as too large
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    total = 1
    for item in items:
        total += _expanded_size(item, seen)
        if total > MAX_VALUES:
            break
    seen[id(value)] = total
    return total
