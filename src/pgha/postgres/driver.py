"""Which libpq the agent's psycopg calls: the system's, when that gives up nothing.

psycopg-binary brings its own libpq and, with it, its own OpenSSL, Kerberos and LDAP libraries. In the
agent they sit beside the system's OpenSSL, which Python's ``ssl`` module has loaded already (etcd, the
REST API): about 4 MB of resident memory, a tenth of the agent (``bench/idle``: 47.8 MB with the bundled
libpq, 44.0-44.6 MB without; docs/architecture.md, "What a healthy cluster costs at rest"). psycopg's
Python implementation calls the system's ``libpq.so.5`` (the one PostgreSQL's own programs load) through
ctypes, and shares the system's OpenSSL. The agent's queries are few and small (a statement per loop),
so the implementation's speed does not show (0.040 CPU-s/min per idle agent either way).

The agent takes it when the system's libpq is at least as new as the one pg_basebackup, pg_rewind and
the WAL receiver load: the agent's own connections to other members then get every protection
(``require_auth`` needs 16) those programs get. Otherwise, and when ``PSYCOPG_IMPL`` is set already (an
operator's choice, which psycopg itself reads), nothing changes. It must run before anything imports
psycopg: the choice is read once, at that import.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import sys

from pgha.config import NodeConfig
from pgha.postgres import libpq

log = logging.getLogger(__name__)

IMPL_VARIABLE = "PSYCOPG_IMPL"


def system_version() -> int:
    """PQlibVersion() of the libpq the dynamic linker finds (asked in a child: nothing is loaded here); 0 if none."""
    name = ctypes.util.find_library("pq")
    return 0 if name is None else libpq.asked_version(name)


def choice(system: int, tools: int, preset: str | None, imported: bool) -> str | None:
    """The implementation to ask psycopg for, or None to leave it be (the decision, without I/O)."""
    if preset is not None or imported or system == 0:
        return None
    return "python" if system // 10000 >= tools // 10000 else None


def choose(config: NodeConfig) -> None:
    """Point psycopg at the system's libpq when that gives up nothing (see the module's text)."""
    preset, imported = os.environ.get(IMPL_VARIABLE), "psycopg" in sys.modules
    if preset is not None or imported:
        return
    system, tools = system_version(), libpq.tools_version(config.postgresql.bin_dir)
    picked = choice(system, tools, preset, imported)
    if picked is not None:
        os.environ[IMPL_VARIABLE] = picked
    else:
        log.debug("psycopg keeps its own libpq (the system's: %d, the tools': %d)", system, tools)
