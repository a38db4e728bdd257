"""What a demo records (demo.json), its layout constants, process helpers and health checks."""

from __future__ import annotations

import os
import pwd
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgha.core import standby
from pgha.core.model import ClusterView, Role

# An explicit entry for the demo's database (SHOW DATABASES lists it, so one can see where it
# points) and the fallback for every other database.
DEMO_BOUNCER_DATABASES = ("postgres", "*")

ETCD_BIN = "/usr/bin/etcd"
PG_BIN = "/usr/lib/postgresql/15/bin"
# With --netns: node i is .(NODE_HOST_BASE + i) of the lab /24, the client namespace .CLIENT_HOST.
NODE_HOST_BASE = 10
CLIENT_HOST = 250
# With --etcd-members N > 1: etcd member i is .(ETCD_HOST_BASE + i).
ETCD_HOST_BASE = 200
# With --backup and --netns: the pgBackRest repository host.
REPOSITORY_HOST = 240


class DemoError(Exception):
    """One line naming what went wrong and where to look."""


@dataclass
class DemoNode:
    name: str
    pg_port: int
    api_port: int
    config: str
    data_dir: str
    dsn: str
    agent_pid: int = 0
    pgbouncer_port: int | None = None
    netns: str | None = None
    address: str | None = None
    pgbouncer_pid: int | None = None
    # The node's REST API (https when the demo's API TLS is on).
    api_url: str = ""
    # With --backup: the node's `pgbackrest server` (the repository reaches it there).
    pgbackrest_pid: int = 0


@dataclass
class DemoEtcdMember:
    """One member of a --etcd-members cluster: its namespace, address, process and data."""

    name: str
    netns: str
    address: str
    data_dir: str
    pid: int = 0


@dataclass
class DemoState:
    cluster: str
    # The --dcs URL of the demo's DCS (zk://host:port for ZooKeeper) and its server's PID (0: external).
    etcd: str
    etcd_pid: int
    dir: str
    nodes: list[DemoNode] = field(default_factory=list)
    client_netns: str | None = None
    vip: str | None = None
    etcd_members: list[DemoEtcdMember] = field(default_factory=list)
    # The demo's --port-base (etcd's port when it runs one etcd).
    port_base: int = 0
    # Which DCS the demo runs: etcd or zookeeper.
    dcs: str = "etcd"
    # The API credentials (a netrc file, mode 0600) and the CA of the API certificates ("": no TLS).
    api_netrc: str = ""
    api_ca: str = ""
    # With --backup: the repository host's pgha process, its file and namespace (--netns).
    repository_pid: int = 0
    repository_config: str = ""
    repository_netns: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for n in d["nodes"]:
            for key in ("pgbouncer_port", "netns", "address", "pgbouncer_pid"):
                if n[key] is None:
                    del n[key]
        for key in ("client_netns", "vip"):
            if d[key] is None:
                del d[key]
        if not d["etcd_members"]:
            del d["etcd_members"]
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DemoState:
        nodes = [DemoNode(**n) for n in data.get("nodes", [])]
        return cls(cluster=data["cluster"], etcd=data["etcd"], etcd_pid=data.get("etcd_pid", 0),
                   dir=data.get("dir", ""), nodes=nodes, client_netns=data.get("client_netns"),
                   vip=data.get("vip"), dcs=data.get("dcs", "etcd"),
                   etcd_members=[DemoEtcdMember(**m) for m in data.get("etcd_members", [])],
                   port_base=data.get("port_base", 0), api_netrc=data.get("api_netrc", ""),
                   api_ca=data.get("api_ca", ""), repository_pid=data.get("repository_pid", 0),
                   repository_config=data.get("repository_config", ""),
                   repository_netns=data.get("repository_netns", ""))


def _pg_owner() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def _chown(path: Path) -> None:
    owner = _pg_owner()
    if owner is not None:
        os.chown(path, *owner)


def write_private(path: Path, text: str, give_to_postgres: bool = True) -> None:
    """Write ``path`` with mode 0600 from its creation (never readable by others in between); as
    root it is given to postgres by descriptor.  A link at ``path`` is refused (O_NOFOLLOW)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        owner = _pg_owner() if give_to_postgres else None
        if owner is not None:
            os.fchown(fd, *owner)
        f.write(text)


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    """Merge ``extra`` into ``into``; nested mappings merge, anything else replaces."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def orphan_watchdogs() -> list[int]:
    """Watchdog processes whose agent is gone (reparented to init), found by their command line."""
    from pgha.postgres.processes import children_of

    out = []
    for pid in children_of(1):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(c.endswith(b"/watchdog.sh") for c in cmd):
            out.append(pid)
    return out


def healthy(view: ClusterView, n: int) -> bool:
    if view.leader is None:
        return False
    leader = view.members.get(view.leader.name)
    if leader is None:
        return False
    # The leader runs as primary, or as the standby leader of a standby cluster (a replica of the other site).
    if standby.active(view.config.standby_cluster):
        if leader.role != Role.REPLICA or leader.state not in ("running", "streaming"):
            return False
    elif leader.role != Role.PRIMARY or leader.state != "running":
        return False
    # Streaming from the leader, on its timeline (a replica that rejoins streams the rest of the
    # old timeline from the new leader first).
    streaming = [m for m in view.members.values() if m.role == Role.REPLICA and m.state == "streaming"
                 and m.following == view.leader.name and m.timeline == leader.timeline]
    if len(streaming) < n - 1:
        return False
    # In synchronous mode the cluster is only as safe as its /sync key: a failover needs it.
    return n == 1 or view.config.synchronous_mode == "off" or sync_published(view)


def sync_published(view: ClusterView) -> bool:
    return (view.leader is not None and view.sync is not None and view.sync.leader == view.leader.name
            and bool(view.sync.standbys))


def describe(view: ClusterView, n: int) -> str:
    if view.system_id is None:
        return f"initializing ({view.initializing or 'racing for /initialize'})"
    if view.leader is None:
        return "no leader yet"
    parts = []
    for name in sorted(view.members):
        m = view.members[name]
        parts.append(f"{name}: {'leader' if name == view.leader.name else m.role.value} {m.state}")
    if not parts:
        return "waiting for members"
    if view.config.synchronous_mode != "off" and not sync_published(view):
        parts.append("no synchronous standby yet")
    return "; ".join(parts)
