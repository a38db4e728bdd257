"""The one validator for every name and value that leaves pgha: pure, a table of rules.

A member's name and host end up in postgresql.conf (``primary_conninfo``,
``synchronous_standby_names``), pgbouncer.ini, haproxy.cfg, the password file and
connection strings; a parameter's name and value in postgresql.conf.  Each kind of
name has one row in ``RULES`` (docs/configuration.md lists them).  Values are checked
where they are READ (the DCS in ``dcs/codec.py``, the REST API and ``edit-config``
through ``ClusterConfig.problem()``, the node file in ``config.py``) and again where
they are written (``postgres/conf.py``, ``routing/``), so a bad value is refused with
one line and never reaches a file.

``problem()`` returns that line (naming the kind, the value shown safely and what is
allowed) or None; ``check()`` raises ``ValueError`` with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# C0 controls except tab, DEL, C1 controls and the Unicode line/paragraph separators: each of
# them ends or breaks a line in some file or parser pgha writes to (Python's splitlines too).
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class Rule:
    kind: str
    pattern: re.Pattern[str]
    # What is allowed, ending the error line ("use ...").
    allowed: str


def _rule(kind: str, pattern: str, allowed: str) -> Rule:
    return Rule(kind, re.compile(pattern), allowed)


RULES: Mapping[str, Rule] = {r.kind: r for r in (
    _rule("member name", r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}",
          "letters, digits, '-', '_' or '.' (at most 63, not starting with '-', '_' or '.'), e.g. 'node1'"),
    _rule("cluster name", r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}",
          "letters, digits, '-', '_' or '.' (at most 63, not starting with '-', '_' or '.'), e.g. 'main'"),
    _rule("host", r"[A-Za-z0-9_\[:][A-Za-z0-9_.:%\[\]-]{0,252}",
          "a host name or an IP address (letters, digits, '.', '-', '_', ':', '%', '[', ']'; at most 253)"),
    _rule("parameter name", r"[a-z_][a-z0-9_.]{0,127}",
          "a PostgreSQL parameter name: ^[a-z_][a-z0-9_.]*$ (any case), e.g. 'work_mem'"),
    _rule("pgbouncer database", r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}|\*",
          "letters, digits, '-', '_' or '.' (at most 63), or '*' for every database"),
)}


def shown(value: Any, limit: int = 40) -> str:
    """``value`` as it may appear in an error line: repr (control characters escaped), capped."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "..." + text[-1]


def problem(kind: str, value: Any) -> str | None:
    """One line naming what is wrong with ``value`` as a ``kind`` (a row of RULES), or None."""
    rule = RULES[kind]
    subject = value.lower() if kind == "parameter name" and isinstance(value, str) else value
    if isinstance(subject, str) and rule.pattern.fullmatch(subject):
        return None
    return f"{kind} {shown(value)} is not allowed; use {rule.allowed}"


def check(kind: str, value: str) -> str:
    """``value`` if it is a valid ``kind``; else ValueError with one line."""
    why = problem(kind, value)
    if why is not None:
        raise ValueError(why)
    return value


def port_problem(port: Any, kind: str = "port") -> str | None:
    if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
        return None
    return f"{kind} {shown(port)} is not a TCP port; use 1-65535"


def text_problem(value: Any, what: str) -> str | None:
    """Free text (a parameter value, a password, a command): one line without control characters."""
    if isinstance(value, str) and CONTROL.search(value):
        return f"{what} holds a control character (newline, NUL…); write it on one line without them"
    return None


def parameter_problem(name: Any, value: Any) -> str | None:
    """A PostgreSQL parameter as given in a config: its name and a value without control characters."""
    why = problem("parameter name", name)
    if why is not None:
        return why
    if not isinstance(value, str | int | float | bool):
        return f"parameter {name}: expected a string, number or true/false"
    return text_problem(value, f"parameter {name}'s value")


def parameters_problem(params: Mapping[Any, Any]) -> str | None:
    """The first bad parameter of ``params``, or None."""
    for name, value in params.items():
        why = parameter_problem(name, value)
        if why is not None:
            return why
    return None


def valid_parameters(params: Mapping[Any, Any]) -> tuple[dict[str, Any], list[str]]:
    """The valid parameters of ``params`` and one line per parameter left out."""
    good: dict[str, Any] = {}
    bad: list[str] = []
    for name, value in params.items():
        why = parameter_problem(name, value)
        if why is None:
            good[name] = value
        else:
            bad.append(f"{why}; ignored")
    return good, bad


def url_problem(url: str, what: str = "API URL") -> str | None:
    """An http(s)://host:port[/path] URL whose host is a valid host (empty: not published)."""
    if not url:
        return None
    bad = f"{what} {shown(url)} is not allowed; use http(s)://host:port with a valid host and port"
    if re.fullmatch(r"https?://[^\s/?#@]+(/[A-Za-z0-9_.~/-]*)?", url) is None:
        return bad
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return bad
    if host is None or problem("host", host) is not None or (port is not None and port_problem(port)):
        return bad
    return None


def member_problem(name: str, host: str, port: int, api_url: str) -> str | None:
    """What is wrong with a member record's name, host, port and API URL (empty host: not yet known)."""
    return (problem("member name", name)
            or (problem("host", host) if host else None)
            or (port_problem(port) if port else None)
            or url_problem(api_url))


# docs/configuration.md holds this table between the markers (a test checks it is current).
DOC_BEGIN = "<!-- names table: generated from pgha.core.names.RULES; do not edit -->"
DOC_END = "<!-- end of names table -->"


def doc_table() -> str:
    """The Markdown table of RULES for docs/configuration.md."""
    rows = [DOC_BEGIN, "| name | allowed |", "| --- | --- |"]
    rows += [f"| {r.kind} | {r.allowed.replace('|', chr(92) + '|')} |" for r in RULES.values()]
    return "\n".join([*rows, DOC_END])
