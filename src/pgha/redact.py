"""Secrets out of answers, logs and error lines: by key name, and by what a value looks like.

A key whose name looks secret (``password``, ``admin_password``, ``ssl_passphrase_command``…)
has its whole value replaced.  Inside any other string, what looks like a credential is
masked and the rest kept, so an ``archive_command`` stays readable:

    PGPASSWORD=s3cret pgbackrest ...     ->  PGPASSWORD=******** pgbackrest ...
    s3://key:s3cret@bucket/path          ->  s3://key:********@bucket/path
    --repo1-s3-key-secret=abc            ->  --repo1-s3-key-secret=********
    Authorization: Bearer abc            ->  Authorization: Bearer ********

This is defence in depth: the REST API's answers (``/config``, ``/cluster``, ``/ui/state``)
and the agent's log lines go through it; configuration errors never print a secret key's
value in the first place (``config.py``).
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "********"

# Key names whose values are replaced whole, wherever they appear.
SECRET_KEY = re.compile(r"pass(word|phrase|wd)?|secret|token|private|credential|api[_-]?key|access[_-]?key",
                        re.IGNORECASE)

# name=value or name: value where the name looks secret; the value is masked.
_ASSIGNED = re.compile(
    r"""((?:^|[^A-Za-z0-9])[A-Za-z0-9_.-]*(?:pass(?!file)(?:word|phrase|wd)?|pwd|secret|token|credential|"""
    r"""api[_-]?key|access[_-]?key|private[_-]?key)[A-Za-z0-9_.-]*["']?\s*[=:]\s*)"""
    r"""(?!\.\.\.|"\.\.\.")('[^']*'|"[^"]*"|[^\s'"&;,)]+)""",  # "password: ..." in a hint is kept
    re.IGNORECASE)
# [scheme://]user:password@host
_USERINFO = re.compile(r"((?:[A-Za-z][A-Za-z0-9+.-]*://)?[^/\s:@'\"]+:)([^@\s/'\"]+)(@)")
_BEARER = re.compile(r"(\b(?:bearer|basic)\s+)([A-Za-z0-9+/=._~-]{6,})", re.IGNORECASE)


def secret_key(key: object) -> bool:
    """Whether a key's name says its value is a secret."""
    return isinstance(key, str) and SECRET_KEY.search(key) is not None


def scrub_text(text: str) -> str:
    """``text`` with every secret-looking value masked."""
    text = _ASSIGNED.sub(lambda m: m.group(1) + REDACTED, text)
    text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


def scrub(value: Any) -> Any:
    """A JSON-like value with secret keys' values replaced and secret-looking strings masked."""
    if isinstance(value, dict):
        return {k: REDACTED if secret_key(k) else scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value
