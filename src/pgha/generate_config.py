"""The commented node file `pgha generate-config` writes.

Pure: the caller gathers the facts (flags, what a running PostgreSQL said, this host's addresses) into a
``NodeFileRequest`` and the passwords into ``Secrets``; ``render`` returns the YAML text.  Every scalar is
written as a JSON string or number, which YAML reads back unchanged.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import secrets
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field

from pgha import __version__
from pgha.config import Credentials, NodeConfig
from pgha.core import defaults

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Secrets:
    """The logins every member shares (their passwords are not in repr)."""

    superuser: Credentials
    replication: Credentials
    api: Credentials

    @classmethod
    def generate(cls) -> Secrets:
        def new(user: str) -> Credentials:
            return Credentials(user, secrets.token_urlsafe(24))

        return cls(new("postgres"), new("replicator"), new("pgha"))

    @classmethod
    def of(cls, cfg: NodeConfig) -> Secrets:
        """Those of an existing node file; an API without credentials gets a new login."""
        api = cfg.api.auth if isinstance(cfg.api.auth, Credentials) else Credentials("pgha", secrets.token_urlsafe(24))
        return cls(cfg.postgresql.superuser, cfg.postgresql.replication, api)


@dataclass(frozen=True)
class Vip:
    address: str
    prefix: int
    interface: str


@dataclass(frozen=True)
class NodeFileRequest:
    cluster: str
    name: str
    etcd: tuple[str, ...]
    data_dir: str
    pg_version: int
    port: int
    # listen_addresses
    listen: str
    # The address other members and clients use for this host.
    connect_host: str
    api_listen: str
    vip: Vip | None = None
    # Settings for this node only (read from a running server's configuration files).
    parameters: Mapping[str, str] = field(default_factory=dict)
    # Where the PostgreSQL settings came from, for the header: "" means defaults.
    read_from: str = ""
    # The node file the passwords were copied from, for the header: "" means generated now.
    secrets_from: str = ""
    # The running server's configuration directory when outside data_dir (Debian's /etc/postgresql/...).
    config_dir: str = ""
    # The running server's programs (RunningServer.bin_dir); "" means Debian's for pg_version.
    server_bin_dir: str = ""

    @property
    def bin_dir(self) -> str:
        return self.server_bin_dir or f"/usr/lib/postgresql/{self.pg_version}/bin"


def q(value: str | int) -> str:
    """A YAML scalar that reads back as exactly ``value``."""
    return json.dumps(value)


def login(cred: Credentials) -> str:
    return f"{{username: {q(cred.username)}, password: {q(cred.password)}}}"


def parse_vip(text: str) -> tuple[str, int]:
    """'10.0.0.50' or '10.0.0.50/24' -> (address, prefix); ValueError with the fix otherwise."""
    try:
        iface = ipaddress.IPv4Interface(text if "/" in text else f"{text}/24")
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 address with an optional /prefix, e.g. 10.0.0.50/24") from None
    if iface.network.prefixlen == 0:
        raise ValueError(f"{text!r}: the prefix must be 1-32, e.g. 10.0.0.50/24")
    return str(iface.ip), iface.network.prefixlen


def parse_listen(text: str) -> tuple[str, int]:
    """'host:port' -> (host, port); ValueError with the fix otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected host:port with a port 1-65535, e.g. 10.0.0.11:8008, got {text!r}")
    return host, int(port)


def _dcs_block(req: NodeFileRequest) -> list[str]:
    endpoints = f"[{', '.join(q(e) for e in req.etcd)}]"
    if "dcs" not in {f.name for f in dataclasses.fields(NodeConfig)}:
        # This pgha reads only the older top-level etcd: section.
        return ["etcd:", f"  endpoints: {endpoints}", "  prefix: \"/pgha\""]
    return [
        "dcs:",
        "  type: \"etcd\"",
        "  prefix: \"/pgha\"",
        "  etcd:",
        f"    endpoints: {endpoints}",
        "    # TLS (https:// endpoints) and etcd authentication, when etcd has them on:",
        "    # cacert: /etc/pgha/etcd-ca.pem",
        "    # cert: /etc/pgha/etcd-client.pem",
        "    # key: /etc/pgha/etcd-client.key",
        "    # username: pgha",
        "    # password: \"...\"",
    ]


def _api_block(req: NodeFileRequest, sec: Secrets) -> list[str]:
    host, port = parse_listen(req.api_listen)
    lines = [
        "# The REST API: health checks for load balancers (/primary, /replica, ...) answer anyone; actions",
        "# (switchover, restart, reinitialize, configuration) need these credentials.",
        "api:",
        f"  listen: {q(req.api_listen)}",
    ]
    if host in ("", "0.0.0.0", "::", "[::]"):
        lines.append(f"  connect_url: {q(f'http://{req.connect_host}:{port}')}   # how the other members reach it")
    lines += [
        f"  auth: {login(sec.api)}",
        "  # HTTPS: tls: {certfile: /etc/pgha/api.pem, keyfile: /etc/pgha/api.key, cafile: \"\", verify_client: false}",
    ]
    return lines


def _vip_block(vip: Vip | None) -> list[str]:
    head = [
        "# The virtual IP the leader holds and announces with gratuitous ARP; every other member removes it.",
        "# The agent needs CAP_NET_ADMIN and CAP_NET_RAW (packaging/systemd grants exactly those).",
    ]
    if vip is None:
        return [*head, "# vip: {address: 10.0.0.50, prefix: 24, interface: eth0}"]
    return [*head, f"vip: {{address: {q(vip.address)}, prefix: {vip.prefix}, interface: {q(vip.interface)}}}"]


def _parameters_block(req: NodeFileRequest) -> list[str]:
    if not req.parameters:
        return ["  # Settings for this node only (they override cluster_config.parameters),",
                "  # e.g. {shared_buffers: 1GB}.",
                "  parameters: {}"]
    lines = ["  # Settings for this node only (they override cluster_config.parameters): those the running",
             "  # server's configuration files set, except what pgha sets itself (port, listen_addresses, paths...).",
             "  parameters:"]
    lines += [f"    {name}: {q(value)}" for name, value in sorted(req.parameters.items())]
    return lines


def render(req: NodeFileRequest, sec: Secrets) -> str:
    """The node file: every section commented, passwords from ``sec``."""
    source = (f"PostgreSQL settings were read from the running server ({req.read_from})."
              if req.read_from else "PostgreSQL settings are defaults: no running server was read.")
    passwords = (f"The passwords are those of {req.secrets_from}."
                 if req.secrets_from else "The passwords were generated for this file.")
    lines = [
        f"# pgha node file for member {req.name} of cluster {req.cluster}: written by `pgha generate-config`",
        f"# (pgha {__version__}). Reference: docs/configuration.md. Check it on this host, as the user that runs",
        "# the agent: pgha validate -c FILE",
        f"# {source}",
        f"# {passwords} Every member needs the same superuser, replication and API",
        "# passwords: write the other members' files with --secrets-from THIS_FILE. Keep the file mode 0600.",
        "",
        "# The cluster (the same on every member) and this member's name (unique in the cluster).",
        f"cluster: {q(req.cluster)}",
        f"name: {q(req.name)}",
        "",
        "# etcd holds the leader lease and the cluster's state. List every etcd member's client URL; the agent",
        "# moves to the next one when a member does not answer. Keys live under <prefix>/<cluster>/.",
        *_dcs_block(req),
        "",
        "# The PostgreSQL server this agent runs. pgha writes postgresql.conf and pg_hba.conf in data_dir",
        "# itself; change settings here or with `pgha edit-config`, not in those files.",
        "postgresql:",
        f"  data_dir: {q(req.data_dir)}",
        f"  bin_dir: {q(req.bin_dir)}",
        f"  listen: {q(req.listen)}   # listen_addresses",
        f"  port: {req.port}",
        f"  connect_address: {q(f'{req.connect_host}:{req.port}')}   # how the other members and clients reach it",
        *([f"  config_dir: {q(req.config_dir)}   # the server's configuration now: adopting takes it over"]
          if req.config_dir else []),
        "  # The roles pgha creates on the member that initializes the cluster and logs in with. For a server",
        "  # pgha did not create, give the roles these passwords (ALTER ROLE ... PASSWORD) or put theirs here.",
        f"  superuser: {login(sec.superuser)}",
        f"  replication: {login(sec.replication)}",
        *_parameters_block(req),
        "  # pg_hba.conf lines before pgha's own, e.g. [\"hostssl all all 10.0.0.0/24 scram-sha-256\"].",
        "  pg_hba: []",
        "",
        *_api_block(req, sec),
        "",
        "# Seeds the cluster-wide settings when this member initializes the cluster; afterwards change them",
        "# with `pgha edit-config`.",
        *(f"# {line}" for line in textwrap.wrap(defaults.summary(), 100)),
        "cluster_config: {}",
        "",
        "# Failover preferences for this member: nofailover never promotes it; a higher priority wins ties.",
        "tags: {nofailover: false, failover_priority: 1}",
        "",
        *_vip_block(req.vip),
        "",
        "# A PgBouncer the agent keeps pointed at the primary (it rewrites that ini's [databases] section and",
        "# PAUSEs it during a switchover); the admin user must be in its admin_users.",
        "# pgbouncer: {config: /etc/pgbouncer/pgbouncer.ini, admin_port: 6432, admin_user: pgbouncer,",
        "#             admin_password: \"...\"}",
        "",
        "# Commands run on events, called with EVENT ROLE CLUSTER; a non-zero pre_promote vetoes a promotion.",
        "# callbacks: {on_role_change: /etc/pgha/on_role_change.sh, timeout: 30}",
        "",
        "# The watchdog kills this member's PostgreSQL if the agent dies or freezes while primary: keep it on.",
        "watchdog: {mode: \"on\"}",
        "",
        "# The agent logs to stderr (journald under systemd) unless file is set.",
        "log: {level: \"INFO\", file: \"\"}",
    ]
    return "\n".join(lines) + "\n"
