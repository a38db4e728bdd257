"""The files pgha manages: postgresql.conf, pg_hba.conf, standby.signal and the password file.

postgresql.conf is pgha's: it includes initdb's file (kept as
postgresql.base.conf) and then sets what replication needs, the cluster and
node parameters, and, for a replica, where to stream from.  The upstream's
member name is written as a comment (``# pgha upstream: node2``) so that
``observe()`` can tell which member the files point at.

Every write is atomic (temporary file + rename) and, when the agent is
root, the file is given to the PostgreSQL user (the server and its
walsenders must read everything in the data directory).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from pgha.config import NodeConfig
from pgha.core import names
from pgha.core.slots import slot_name as slot_name
from pgha.postgres import libpq
from pgha.postgres.binaries import RunAs
from pgha.postgres.common import Upstream
from pgha.postgres.layout import Layout

MARKER = "# Managed by pgha"
UPSTREAM_PREFIX = "# pgha upstream: "
UPSTREAM_ADDR_PREFIX = "# pgha upstream address: "

Value = str | int | float | bool

# Set by pgha from the node configuration and the role; parameters cannot override them.
PROTECTED = frozenset(
    {
        "listen_addresses",
        "port",
        "unix_socket_directories",
        "unix_socket_permissions",
        "primary_conninfo",
        "primary_slot_name",
        "recovery_target_timeline",
        "synchronous_standby_names",
        "hot_standby",
        "include",
        "include_dir",
        "include_if_exists",
    }
)

# Replication settings pgha needs; parameters may change them (e.g. wal_level = logical).
DEFAULTS: Mapping[str, Value] = {
    "wal_level": "replica",
    "hot_standby_feedback": True,
    "wal_log_hints": True,
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_keep_size": "256MB",
    "password_encryption": "scram-sha-256",
    # A replica re-pointed at a new primary reconnects within 0.5 s instead of 5 s; in
    # synchronous mode the new primary's writes wait for that reconnection.
    "wal_retrieve_retry_interval": "500ms",
}


def quote(value: Value) -> str:
    """A postgresql.conf value."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def conninfo_quote(value: str) -> str:
    """A libpq keyword/value conninfo value."""
    if value and re.fullmatch(r"[A-Za-z0-9_.:/@+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# How long a replica's connection to its upstream may leave data unacknowledged (ms): a frozen or
# cut-off upstream host is given up after this, and the next host of a list is tried.
TCP_USER_TIMEOUT_MS = 10_000


def conninfo(**kw: str | int) -> str:
    return " ".join(f"{k}={conninfo_quote(str(v))}" for k, v in kw.items())


def primary_conninfo(config: NodeConfig, layout: Layout, upstream: Upstream, slot_sync: bool = False) -> str:
    """Raises ValueError (one line) for an upstream whose name, host or port is not valid.
    ``slot_sync``: PostgreSQL 17+'s slot sync worker connects with it and needs a dbname."""
    host, port = upstream.host, str(upstream.port)
    if upstream.remote is not None:
        # The other site's hosts, tried in turn (libpq's multi-host list); any one that answers
        # serves, a primary or a standby.
        why = upstream.remote.problem()
        pairs = upstream.remote.hosts() if why is None else ()
        host, port = ",".join(h for h, _ in pairs), ",".join(str(p) for _, p in pairs)
    else:
        why = (names.problem("member name", upstream.name) or names.problem("host", upstream.host)
               or names.port_problem(upstream.port))
    if why is not None:
        raise ValueError(f"upstream {names.shown(upstream.name)}: {why}")
    extra: dict[str, str | int] = {"dbname": "postgres"} if slot_sync else {}
    if upstream.remote is not None:
        extra["target_session_attrs"] = "any"
    return conninfo(
        host=host,
        port=port,
        user=config.postgresql.replication.username,
        passfile=str(layout.passfile),
        application_name=config.name,
        connect_timeout=3,
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=3,
        # Keepalives only probe an idle connection; a WAL receiver always has feedback in flight, so
        # on a frozen or cut-off upstream it would wait for TCP's retransmissions (about 15 minutes)
        # or wal_receiver_timeout.  This also bounds the connect itself (SYN retries), which the WAL
        # receiver of PostgreSQL 15 does not time out by connect_timeout.
        tcp_user_timeout=TCP_USER_TIMEOUT_MS,
        **libpq.for_tools(config),
        **extra,
    )


def render_postgresql_conf(
    config: NodeConfig,
    layout: Layout,
    parameters: Mapping[str, Value],
    upstream: Upstream | None,
    synchronous_standby_names: str,
) -> str:
    pgc = config.postgresql
    settings: dict[str, Value] = dict(DEFAULTS)
    ignored = []
    invalid = 0
    for k, v in parameters.items():
        if names.parameter_problem(k, v) is not None:
            invalid += 1  # the readers refuse these already (pgha.core.names); never written
        elif k.lower() in PROTECTED:
            ignored.append(k)
        else:
            settings[k.lower()] = v
    lines = [
        f"{MARKER}: rewritten on every change, do not edit.  Change the cluster parameters",
        "# (pgha edit-config) or postgresql.parameters in the node file instead.",
        "# initdb's defaults are kept in postgresql.base.conf; ALTER SYSTEM still overrides both.",
        "include 'postgresql.base.conf'",
        "",
        f"listen_addresses = {quote(pgc.listen)}",
        f"port = {pgc.port}",
        "# The agent connects through this socket with trust (see pg_hba.conf): only the owner",
        "# (postgres) and root may reach it.",
        f"unix_socket_directories = {quote(str(layout.socket_dir))}",
        "unix_socket_permissions = 0700",
        "hot_standby = on",
        f"cluster_name = {quote(config.name)}",
        f"synchronous_standby_names = {quote(synchronous_standby_names)}",
        "recovery_target_timeline = 'latest'",
    ]
    if ignored:
        lines.append(f"# ignored (set by pgha): {', '.join(sorted(ignored))}")
    if invalid:
        lines.append(f"# ignored: {invalid} parameters with an invalid name or value")
    lines += ["", "# replication defaults, cluster and node parameters"]
    lines += [f"{k} = {quote(v)}" for k, v in settings.items()]
    lines.append("")
    if upstream is not None:
        slot_sync = bool(parameters.get("sync_replication_slots"))
        lines.append(f"{UPSTREAM_PREFIX}{upstream.name}")
        if upstream.remote is None:  # the other site's hosts: any of them may be the one streaming
            lines.append(f"{UPSTREAM_ADDR_PREFIX}{upstream.host}:{upstream.port}")
        if upstream.remote is not None:
            lines += standby_leader_lines(config, layout, upstream, slot_sync)
        elif config.tags.nostream:
            lines.append("# tagged nostream: no primary_conninfo, WAL comes from restore_command only")
        else:
            lines += [
                f"primary_conninfo = {quote(primary_conninfo(config, layout, upstream, slot_sync))}",
                f"primary_slot_name = {quote(slot_name(config.name))}",
            ]
    else:
        lines.append("# no upstream: primary, or a standby waiting for one")
    return "\n".join(lines) + "\n"


def standby_leader_lines(config: NodeConfig, layout: Layout, upstream: Upstream, slot_sync: bool) -> list[str]:
    """The standby leader's source: the other site (``standby_cluster``), checked again here."""
    sc = upstream.remote
    assert sc is not None
    why = sc.problem()
    if why is not None:
        raise ValueError(why)
    lines = ["# the standby leader of a standby cluster: it follows the other site (standby_cluster)"]
    if sc.host:
        lines.append(f"primary_conninfo = {quote(primary_conninfo(config, layout, upstream, slot_sync))}")
        if sc.primary_slot_name:
            lines.append(f"primary_slot_name = {quote(sc.primary_slot_name)}")
    if sc.restore_command:
        lines.append(f"restore_command = {quote(sc.restore_command)}")
    if sc.recovery_min_apply_delay:
        lines.append(f"recovery_min_apply_delay = {quote(sc.recovery_min_apply_delay)}")
    return lines


def read_upstream(text: str) -> tuple[str | None, str | None]:
    """(member name, 'host:port') from a postgresql.conf pgha wrote."""
    name = addr = None
    for line in text.splitlines():
        if line.startswith(UPSTREAM_PREFIX):
            name = line[len(UPSTREAM_PREFIX) :].strip() or None
        elif line.startswith(UPSTREAM_ADDR_PREFIX):
            addr = line[len(UPSTREAM_ADDR_PREFIX) :].strip() or None
    return name, addr


def without_upstream(text: str) -> str:
    """postgresql.conf as a primary's: the upstream lines removed (after a promotion)."""
    drop = (UPSTREAM_PREFIX, UPSTREAM_ADDR_PREFIX, "primary_conninfo", "primary_slot_name",
            "# the standby leader", "recovery_min_apply_delay")
    kept = [ln for ln in text.splitlines() if not ln.startswith(drop)]
    return "\n".join(kept) + "\n"


def without_managed_settings(text: str) -> tuple[str, list[str]]:
    """postgresql.auto.conf without the settings pgha sets (PROTECTED), and their names."""
    kept, removed = [], []
    for line in text.splitlines():
        name = line.split("=", 1)[0].strip().lower() if "=" in line and not line.lstrip().startswith("#") else ""
        if name in PROTECTED:
            removed.append(name)
        else:
            kept.append(line)
    return "\n".join(kept) + ("\n" if kept else ""), removed


def render_hba(config: NodeConfig) -> str:
    pgc = config.postgresql
    lines = [f"{MARKER}: rewritten on every change; add lines with postgresql.pg_hba.", ""]
    if pgc.pg_hba:
        lines.append("# postgresql.pg_hba")
        lines += list(pgc.pg_hba)
        lines.append("")
    lines += [
        "# The agent connects over the Unix socket without a password.  The socket directory is",
        "# pg_socket/ next to the data directory (mode 0700) or postgresql.socket_dir, and",
        "# unix_socket_permissions is 0700, so only the postgres user and root can reach it.",
        "local all all trust",
        f"host replication {_hba_name(pgc.replication.username)} all scram-sha-256",
        "host all all all scram-sha-256",
    ]
    return "\n".join(lines) + "\n"


def _hba_name(name: str) -> str:
    return name if re.fullmatch(r"[a-z0-9_]+", name) else '"' + name.replace('"', '""') + '"'


def write_atomic(path: Path, text: str, run_as: RunAs, mode: int = 0o600) -> bool:
    """Write ``text`` to ``path`` (temp + fsync + rename); return False when it was already so."""
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        run_as.chown(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def touch(path: Path, run_as: RunAs) -> None:
    if not path.exists():
        write_atomic(path, "", run_as)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
