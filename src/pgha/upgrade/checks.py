"""The pre-flight of a major-version upgrade: each check returns None or one line naming the problem.

Nothing here stops or changes the running cluster: ``pg_upgrade --check`` runs against a scratch
new data directory (``<data_dir>.upgrade-check``, removed afterwards) and the live old server.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import psycopg

from pgha.config import NodeConfig
from pgha.core.model import ClusterView, Role
from pgha.postgres import db, versions
from pgha.postgres.common import PostgresError
from pgha.postgres.node import PostgresNode

# A replica this many bytes behind the primary's WAL is not "caught up".
MAX_LAG_BYTES = 16 * 1024 * 1024
# Headroom beyond what each member's step writes: a full new copy (a replica's clone) or the
# new catalog and WAL (pg_upgrade --link on the primary).
PRIMARY_SPACE = 512 * 1024 * 1024
PROGRAMS = ("postgres", "initdb", "pg_ctl", "pg_upgrade", "pg_controldata", "pg_basebackup", "vacuumdb")


def bin_dir_problem(config: NodeConfig, to_bin_dir: str) -> str | None:
    """The new bin_dir holds a newer major's programs than this member runs."""
    new = Path(to_bin_dir)
    missing = [p for p in PROGRAMS if not os.access(new / p, os.X_OK)]
    if missing:
        return f"{to_bin_dir} lacks {', '.join(missing)}; install the new major's server there"
    old_major = versions.bin_dir_major(config.postgresql.bin_dir)
    new_major = versions.bin_dir_major(to_bin_dir)
    if new_major <= old_major:
        return f"{to_bin_dir} is PostgreSQL {new_major or 'unknown'}, not newer than the running {old_major}"
    return None


def data_size(path: Path) -> int:
    """Bytes in ``path``'s files (links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, f))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


def disk_problem(config: NodeConfig, primary: bool) -> str | None:
    """Room beside the data directory: the primary's new catalog, or a replica's new full copy when it
    cannot take the new cluster by rsync (its old data directory is kept aside)."""
    data = Path(config.postgresql.data_dir)
    # A replica with rsync takes the new cluster as hard links (only the catalog is new).
    need = PRIMARY_SPACE if primary or shutil.which("rsync") else data_size(data) + PRIMARY_SPACE
    free = shutil.disk_usage(data.parent).free
    if free < need:
        return (f"only {free // 2**20} MiB free beside {data}, {need // 2**20} MiB needed "
                f"({'the new catalog' if primary else 'a new copy of the data'}); free some space")
    return None


def share_dir(bin_dir: str) -> Path:
    """The new major's share directory (pg_config --sharedir; else <bin_dir>/../share/postgresql)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([str(Path(bin_dir) / "pg_config"), "--sharedir"], capture_output=True, text=True,
                             timeout=10, check=False, stdin=subprocess.DEVNULL).stdout.strip()
        if out and Path(out).is_dir():
            return Path(out)
    parent = Path(bin_dir).parent / "share"
    return parent / "postgresql" if (parent / "postgresql").is_dir() else parent


def extension_problem(ext_dir: Path, name: str, version: str) -> str | None:
    """``name`` at ``version`` can be carried over: the new major ships it at that version, or an
    update path from it."""
    if not (ext_dir / f"{name}.control").is_file():
        return f"extension {name} {version} is not installed for the new major ({ext_dir} has no {name}.control)"
    prefix = f"{name}--{version}"
    if any(p.name == prefix + ".sql" or p.name.startswith(prefix + "--") for p in ext_dir.glob(f"{name}--*.sql")):
        return None
    control = (ext_dir / f"{name}.control").read_text(errors="replace")
    found = re.search(r"default_version\s*=\s*'([^']*)'", control)
    if found and found.group(1) == version:
        return None
    return f"extension {name} {version} has no install or update script in {ext_dir}; install a matching version"


def installed_extensions(config: NodeConfig, node: PostgresNode) -> dict[str, str]:
    """Every extension in every database that takes connections: name -> version."""
    found: dict[str, str] = {}
    with db.local_or_error(config, node.layout, "the extension check") as conn:
        dbs = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datallowconn")]
    sock, port = db.listening(config, node.layout)
    for name in dbs:
        try:
            with psycopg.connect(host=sock, port=port, user=config.postgresql.superuser.username, dbname=name,
                                 connect_timeout=3, autocommit=True, passfile=str(node.layout.passfile)) as conn:
                for ext, ver in conn.execute("SELECT extname, extversion FROM pg_extension"):
                    found[str(ext)] = str(ver)
        except psycopg.Error as exc:
            raise PostgresError(f"the extension check: cannot read database {name} ({db.one_line(exc)})") from None
    return found


def extensions_problem(config: NodeConfig, node: PostgresNode, to_bin_dir: str) -> str | None:
    ext_dir = share_dir(to_bin_dir) / "extension"
    for name, version in sorted(installed_extensions(config, node).items()):
        problem = extension_problem(ext_dir, name, version)
        if problem is not None:
            return problem
    return None


def cluster_problem(view: ClusterView, me: str) -> str | None:
    """As the leader sees the cluster: not paused, every other member a streaming, caught-up
    replica, no restart pending anywhere.  Returns '<member>: <problem>'."""
    if view.config.pause:
        return f"{me}: the cluster is paused (maintenance mode); resume it first"
    leader = view.members.get(me)
    head = leader.wal_lsn if leader is not None and leader.wal_lsn else 0
    for name, m in sorted(view.members.items()):
        if m.pending_restart:
            return f"{name}: a restart is pending (pgha restart {name} first)"
        if name == me:
            continue
        if m.role != Role.REPLICA or m.state != "streaming":
            return f"{name}: not a streaming replica (state: {m.state})"
        replayed = m.replayed_lsn or 0
        if head and head - replayed > MAX_LAG_BYTES:
            return f"{name}: {head - replayed} bytes behind the primary; wait for it to catch up"
    return None


def initdb_options(config: NodeConfig, checksums: bool, new_major: int) -> tuple[str, ...]:
    """The node's initdb options with the old cluster's checksum setting (pg_upgrade needs both the same;
    initdb 18 turns checksums on unless told otherwise)."""
    kept = tuple(o for o in config.postgresql.initdb if o not in ("-k", "--data-checksums", "--no-data-checksums"))
    if checksums:
        return (*kept, "--data-checksums")
    return (*kept, "--no-data-checksums") if new_major >= 18 else kept


def checksums_on(fields: Mapping[str, str]) -> bool:
    return fields.get("Data page checksum version", "0") not in ("", "0")
