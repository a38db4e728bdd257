"""Per-node configuration: typed, validated, with one clear line per problem.

The YAML file is mapped onto frozen dataclasses by a small schema walker that
rejects unknown keys, wrong types and missing required fields, naming the key
and the fix.  Environment checks (ports in use, data-dir ownership) live in
``pgha.preflight`` so that loading a file never touches the machine.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pgha import redact, yamlsafe
from pgha.backup.settings import BackupConfig, RestoreSource
from pgha.confbuild import ConfigError as ConfigError
from pgha.confbuild import build as build
from pgha.core import names
from pgha.core.model import ClusterConfig, Tags


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class EtcdConfig:
    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    # CA bundle the https endpoints are verified against (empty: the system's CAs).
    cacert: str = ""
    # Client certificate and its key, for etcd's --client-cert-auth.
    cert: str = ""
    key: str = ""
    # etcd authentication (etcdctl auth enable); the password is never logged or shown.
    username: str = ""
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class ZooKeeperConfig:
    hosts: tuple[str, ...] = ("127.0.0.1:2181",)
    # Digest authentication (required): every znode pgha creates gets an ACL that lets this user
    # alone read and write it.  The password is never logged or shown.
    username: str = ""
    password: str = field(default="", repr=False)
    # More ACL entries for pgha's znodes, "scheme:id:perms" (e.g. "digest:ops:<hash>:r"); never world.
    acl: tuple[str, ...] = ()
    # TLS to ZooKeeper's secureClientPort, verified against cacert (empty: the system's CAs).
    tls: bool = False
    cacert: str = ""
    # Client certificate and its key (ssl.clientAuth=need on the server).
    cert: str = ""
    key: str = ""


@dataclass(frozen=True)
class DcsConfig:
    type: Literal["etcd", "zookeeper"] = "etcd"
    prefix: str = "/pgha"
    # Seconds one request may take before the next endpoint is tried.
    request_timeout: float = 2.0
    etcd: EtcdConfig = EtcdConfig()
    zookeeper: ZooKeeperConfig = ZooKeeperConfig()


@dataclass(frozen=True)
class LegacyEtcdConfig:
    """The old top-level ``etcd:`` section (still accepted; it maps onto ``dcs:``)."""

    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    prefix: str = "/pgha"
    request_timeout: float = 2.0


@dataclass(frozen=True)
class PeerSSLConfig:
    """libpq's TLS settings for this node's connections to the other members' PostgreSQL."""

    # disable | allow | prefer | require | verify-ca | verify-full; empty: verify-full with a
    # sslrootcert, else libpq's prefer (encrypted if offered, the server never checked).
    sslmode: str = ""
    # The CA that signed the members' server certificates (valid for their connect_address).
    sslrootcert: str = ""
    # A client certificate and its key, for hostssl ... cert lines.
    sslcert: str = ""
    sslkey: str = ""

    @property
    def mode(self) -> str:
        return self.sslmode or ("verify-full" if self.sslrootcert else "prefer")


SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class PostgresConfig:
    data_dir: str
    bin_dir: str = "/usr/lib/postgresql/15/bin"
    listen: str = "127.0.0.1"
    port: int = 5432
    # host:port the other members and clients use to reach this server.
    connect_address: str = ""
    superuser: Credentials = Credentials("postgres")
    replication: Credentials = Credentials("replicator")
    # Parameters for this node only; they override the cluster-wide ones.
    parameters: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    # pg_hba.conf lines added before pgha's own defaults.
    pg_hba: tuple[str, ...] = ()
    initdb: tuple[str, ...] = ("--data-checksums", "--encoding=UTF8", "--locale=C.UTF-8")
    # Unix socket directory; empty means <data_dir parent>/pg_socket (mode 0700).
    socket_dir: str = ""
    # TLS toward the other members (replication, clone, rewind, queries).
    ssl: PeerSSLConfig = PeerSSLConfig()
    # libpq's require_auth toward the other members, where libpq has it (16+); "" leaves it out.
    require_auth: str = "scram-sha-256"
    # Where the configuration the server ran with before pgha lives, when not in data_dir (Debian's
    # /etc/postgresql/15/main, Patroni's config_dir): adopting takes it over into data_dir.
    config_dir: str = ""
    # How a new or reinitialized replica is built, in order: "pgbackrest" (a restore of the newest
    # backup from the repository, then streaming; needs backup:) and "basebackup" (pg_basebackup
    # from a member).  Patroni's name.
    create_replica_methods: tuple[Literal["pgbackrest", "basebackup"], ...] = ("basebackup",)

    @property
    def connect_host(self) -> str:
        return self.connect_address.rsplit(":", 1)[0] if self.connect_address else self.listen

    @property
    def connect_port(self) -> int:
        if self.connect_address and ":" in self.connect_address:
            return int(self.connect_address.rsplit(":", 1)[1])
        return self.port


@dataclass(frozen=True)
class TLSConfig:
    certfile: str
    keyfile: str
    # The CA of the members' certificates: verifies client certificates (verify_client) and the
    # other members' APIs when this agent calls them (/status polls, /failsafe); empty: the system's CAs.
    cafile: str = ""
    verify_client: bool = False
    # false: call the other members' APIs without checking their certificates (a man in the middle
    # could then fake a peer's position, and the failsafe call would give it the API password).
    verify_peers: bool = True


@dataclass(frozen=True)
class ApiConfig:
    listen: str = "127.0.0.1:8008"
    # URL the other members use to reach this API; default derived from listen.
    connect_url: str = ""
    # Basic auth on the mutating endpoints (POST, PATCH, DELETE).  Required: credentials, or
    # the explicit string "none" to leave them open (the agent then warns at every start).
    auth: Credentials | Literal["none"] | None = None
    tls: TLSConfig | None = None

    @property
    def credentials(self) -> Credentials | None:
        """The configured user and password (None with ``auth: none``)."""
        return self.auth if isinstance(self.auth, Credentials) else None

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        if self.connect_url:
            return self.connect_url.rstrip("/")
        scheme = "https" if self.tls else "http"
        host = self.host if self.host not in ("0.0.0.0", "") else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class VipConfig:
    address: str
    prefix: int = 24
    interface: str = "eth0"


@dataclass(frozen=True)
class PgBouncerConfig:
    # The pgbouncer.ini the agent rewrites ([databases] section) and reloads.
    config: str
    admin_port: int = 6432
    admin_host: str = "127.0.0.1"
    admin_user: str = "pgbouncer"
    admin_password: str = field(default="", repr=False)
    # Databases routed to the primary; "*" routes every database.
    databases: tuple[str, ...] = ("*",)


@dataclass(frozen=True)
class CallbacksConfig:
    on_start: str = ""
    on_stop: str = ""
    on_role_change: str = ""
    on_reload: str = ""
    # Runs before a promotion; a non-zero exit vetoes it.
    pre_promote: str = ""
    # Seconds a hook may run before it is killed.
    timeout: float = 30.0


@dataclass(frozen=True)
class WatchdogConfig:
    # "on": PostgreSQL as primary is fenced when the agent dies or stops renewing.
    mode: Literal["on", "off"] = "on"


@dataclass(frozen=True)
class BootstrapConfig:
    # Take over a PostgreSQL cluster pgha did not create (its primary and replicas, in place):
    # the primary's agent claims the cluster with the existing system identifier, never initdb.
    adopt: bool = False
    # How the first member creates the cluster: initdb, or a point-in-time restore from the
    # pgBackRest repository (bootstrap.pgbackrest names the stanza and the target).
    method: Literal["initdb", "pgbackrest"] = "initdb"
    pgbackrest: RestoreSource | None = None


@dataclass(frozen=True)
class MetricsConfig:
    # Also export Patroni's 23 metric names (patroni_primary, patroni_xlog_location…) at /metrics, so that
    # alerts and dashboards written for Patroni keep working; false leaves only pgha's own names.
    patroni_compat: bool = True


@dataclass(frozen=True)
class LogConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: str = ""


@dataclass(frozen=True)
class NodeConfig:
    cluster: str
    name: str
    postgresql: PostgresConfig
    dcs: DcsConfig = DcsConfig()
    api: ApiConfig = ApiConfig()
    # Seeds /pgha/<cluster>/config when this node initializes the cluster.
    cluster_config: ClusterConfig = ClusterConfig()
    tags: Tags = Tags()
    vip: VipConfig | None = None
    pgbouncer: PgBouncerConfig | None = None
    callbacks: CallbacksConfig = CallbacksConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    # pgBackRest: the repository host, TLS files, retention (WAL archiving and backups).
    backup: BackupConfig | None = None

    @property
    def etcd(self) -> LegacyEtcdConfig:
        """The old view (endpoints, prefix, request_timeout) for callers not yet on ``dcs``."""
        return LegacyEtcdConfig(self.dcs.etcd.endpoints, self.dcs.prefix, self.dcs.request_timeout)


def _check_semantics(cfg: NodeConfig) -> None:
    for key, kind in (("cluster", "cluster name"), ("name", "member name")):
        why = names.problem(kind, getattr(cfg, key))
        if why is not None:
            raise ConfigError(f"{key}: {why}")
    if cfg.tags.replicatefrom:
        why = names.problem("member name", cfg.tags.replicatefrom)
        if why is not None:
            raise ConfigError(f"tags.replicatefrom: {why}")
        if cfg.tags.replicatefrom == cfg.name:
            raise ConfigError("tags.replicatefrom: names this member itself; name another member (a replica), "
                              "or remove the tag to stream from the leader")
    pgc = cfg.postgresql
    if not 1 <= pgc.port <= 65535:
        raise ConfigError(f"postgresql.port: {pgc.port} is not a TCP port; use 1-65535")
    if not Path(pgc.data_dir).is_absolute():
        raise ConfigError("postgresql.data_dir: must be an absolute path, e.g. /var/lib/pgha/data")
    if pgc.config_dir and not Path(pgc.config_dir).is_absolute():
        raise ConfigError("postgresql.config_dir: must be an absolute path, e.g. /etc/postgresql/15/main")
    for host in pgc.listen.split(","):
        if host.strip() != "*" and names.problem("host", host.strip()) is not None:
            raise ConfigError(f"postgresql.listen: {names.shown(host.strip())} is not an address; give host "
                              "names or IP addresses separated by commas, or '*'")
    if pgc.connect_address:
        host, sep, port = pgc.connect_address.rpartition(":")
        if not sep or names.problem("host", host) or not port.isdigit() or names.port_problem(int(port)):
            raise ConfigError(f"postgresql.connect_address: {names.shown(pgc.connect_address)} must be "
                              "host:port, e.g. 10.0.0.11:5432")
    bad = names.parameters_problem(pgc.parameters)
    if bad is not None:
        raise ConfigError(f"postgresql.parameters: {bad}")
    host, sep, port = cfg.api.listen.rpartition(":")
    if (not sep or not port.isdigit() or int(port) > 65535  # 0: any free port (tests)
            or (host not in ("", "*", "0.0.0.0") and names.problem("host", host))):
        raise ConfigError(f"api.listen: expected host:port, got {names.shown(cfg.api.listen)}")
    why = names.url_problem(cfg.api.connect_url, "URL")
    if why is not None:
        raise ConfigError(f"api.connect_url: {why}")
    if cfg.api.auth is None:
        raise ConfigError("api.auth: missing; set credentials (auth: {username: pgha, password: ...}) to protect "
                          "the mutating endpoints, or write 'auth: none' to leave them open")
    creds = cfg.api.credentials
    if creds is not None and not (creds.username and creds.password):
        raise ConfigError("api.auth: username and password must both be non-empty; set them, or write "
                          "'auth: none'")
    if cfg.pgbouncer is not None:
        for db in cfg.pgbouncer.databases:
            why = names.problem("pgbouncer database", db)
            if why is not None:
                raise ConfigError(f"pgbouncer.databases: {why}")
        if names.problem("host", cfg.pgbouncer.admin_host) or names.port_problem(cfg.pgbouncer.admin_port):
            raise ConfigError("pgbouncer.admin_host, admin_port: give a host name or IP address and a TCP port")
    check_dcs(cfg.dcs)
    check_peer_ssl(cfg.postgresql.ssl, "postgresql.ssl")
    auth = r"!?(password|md5|gss|sspi|scram-sha-256|none)"
    if cfg.postgresql.require_auth and not re.fullmatch(f"{auth}(,{auth})*", cfg.postgresql.require_auth):
        raise ConfigError("postgresql.require_auth: use libpq's methods (e.g. scram-sha-256), or \"\" to leave it out")
    methods = cfg.postgresql.create_replica_methods
    if not methods or len(set(methods)) != len(methods):
        raise ConfigError("postgresql.create_replica_methods: give each method once, e.g. [pgbackrest, basebackup]")
    if cfg.backup is not None or cfg.bootstrap.method != "initdb" or cfg.bootstrap.pgbackrest is not None \
            or "pgbackrest" in cfg.postgresql.create_replica_methods:
        from pgha.backup.checks import check_node

        check_node(cfg)
    problem = cfg.cluster_config.problem()
    if problem:
        raise ConfigError(f"cluster_config.{problem}")


def check_dcs(dcs: DcsConfig, path: str = "dcs") -> None:
    """The ``dcs:`` section's rules beyond types: URLs, host:port pairs, TLS and auth pairs, files."""
    if not dcs.prefix.startswith("/") or dcs.prefix.rstrip("/") == "":
        raise ConfigError(f"{path}.prefix: {names.shown(dcs.prefix)} must be an absolute key path, e.g. /pgha")
    if not 0 < dcs.request_timeout <= 60:
        raise ConfigError(f"{path}.request_timeout: {dcs.request_timeout:g} is out of range; use 0.1-60 seconds")
    etcd, where = dcs.etcd, f"{path}.etcd"
    if dcs.type == "etcd":
        _check_endpoints(etcd.endpoints, f"{where}.endpoints")
    if etcd.key and not etcd.cert:
        raise ConfigError(f"{where}.key: a client key needs its certificate; set {where}.cert too")
    if etcd.cert and not etcd.key:
        raise ConfigError(f"{where}.cert: a client certificate needs its key; set {where}.key too")
    if etcd.username and not etcd.password:
        raise ConfigError(f"{where}.username: etcd authentication needs {where}.password too")
    if etcd.password and not etcd.username:
        raise ConfigError(f"{where}.password: set {where}.username too (or remove the password)")
    if dcs.type == "etcd":
        for name in ("cacert", "cert", "key"):
            value = getattr(etcd, name)
            if value and not Path(value).is_file():
                raise ConfigError(f"{where}.{name}: file {value} not found; give the path of a PEM file")
    if dcs.type == "zookeeper":
        check_zookeeper(dcs.zookeeper, f"{path}.zookeeper")


ZK_PERMS = frozenset("rwcda")


def check_zookeeper(zk: ZooKeeperConfig, where: str) -> None:
    """Hosts, the digest credential, the extra ACL entries (never world) and the TLS files."""
    if not zk.hosts:
        raise ConfigError(f"{where}.hosts: list at least one host:port, e.g. 127.0.0.1:2181")
    for host in zk.hosts:
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"{where}.hosts: {names.shown(host)} must be host:port, e.g. 127.0.0.1:2181")
    if not (zk.username and zk.password):
        raise ConfigError(f"{where}.username: ZooKeeper needs the cluster's digest credential (username and "
                          "password): without it every znode is readable and writable by anyone; set both")
    if ":" in zk.username:
        raise ConfigError(f"{where}.username: must not contain ':' (digest auth is user:password)")
    for i, entry in enumerate(zk.acl):
        scheme, _, rest = entry.partition(":")
        ident, _, perms = rest.rpartition(":")
        if scheme == "world" or ident == "anyone":
            raise ConfigError(f"{where}.acl[{i}]: a world:anyone entry opens the cluster's znodes to anyone; "
                              "remove it")
        if scheme not in ("digest", "sasl", "x509", "ip") or not ident or not perms or set(perms) - ZK_PERMS:
            # The entry itself is not repeated: a digest entry holds a password hash.
            raise ConfigError(f"{where}.acl[{i}]: must be scheme:id:perms with scheme digest, sasl, x509 or ip "
                              "and perms from rwcda, e.g. digest:ops:<base64 hash>:r")
    if zk.key and not zk.cert:
        raise ConfigError(f"{where}.key: a client key needs its certificate; set {where}.cert too")
    if zk.cert and not zk.key:
        raise ConfigError(f"{where}.cert: a client certificate needs its key; set {where}.key too")
    for name in ("cacert", "cert", "key"):
        value = getattr(zk, name)
        if value and not zk.tls:
            raise ConfigError(f"{where}.{name}: set {where}.tls: true to use it (ZooKeeper's secureClientPort)")
        if value and not Path(value).is_file():
            raise ConfigError(f"{where}.{name}: file {value} not found; give the path of a PEM file")


def check_peer_ssl(ssl: PeerSSLConfig, where: str) -> None:
    """sslmode is one of libpq's, verify-* has a CA, cert and key come together, the files exist."""
    if ssl.mode not in SSLMODES:
        raise ConfigError(f"{where}.sslmode: {ssl.sslmode!r} is not a libpq sslmode; use one of {', '.join(SSLMODES)}")
    if ssl.mode.startswith("verify-") and not ssl.sslrootcert:
        raise ConfigError(f"{where}.sslmode: {ssl.mode} needs {where}.sslrootcert (the CA of the members' "
                          "server certificates)")
    if bool(ssl.sslcert) != bool(ssl.sslkey):
        raise ConfigError(f"{where}.sslcert: a client certificate and its key go together; set both "
                          f"{where}.sslcert and {where}.sslkey")
    for name in ("sslrootcert", "sslcert", "sslkey"):
        value = getattr(ssl, name)
        if value and not Path(value).is_file():
            raise ConfigError(f"{where}.{name}: file {value} not found; give the path of a PEM file")


def _check_endpoints(endpoints: tuple[str, ...], path: str) -> None:
    if not endpoints:
        raise ConfigError(f"{path}: list at least one URL, e.g. http://127.0.0.1:2379")
    for ep in endpoints:
        if not ep.startswith(("http://", "https://")) or not ep.split("://", 1)[1].strip("/"):
            raise ConfigError(f"{path}: {names.shown(ep)} must start with http:// or https:// and name host:port")


def _legacy_etcd(data: Any) -> Any:
    """Map the old top-level ``etcd:`` section onto ``dcs:`` (type etcd); both at once is an error."""
    if not isinstance(data, dict) or "etcd" not in data:
        return data
    if "dcs" in data:
        raise ConfigError("etcd: and dcs: are both given; move etcd.endpoints to dcs.etcd.endpoints "
                          "(and prefix, request_timeout to dcs) and remove the etcd: section")
    old = build(LegacyEtcdConfig, data["etcd"], "etcd")
    _check_endpoints(old.endpoints, "etcd.endpoints")
    data = {k: v for k, v in data.items() if k != "etcd"}
    data["dcs"] = {"type": "etcd", "prefix": old.prefix, "request_timeout": old.request_timeout,
                   "etcd": {"endpoints": list(old.endpoints)}}
    return data


def parse(data: Any, source: str = "") -> NodeConfig:
    cfg = build(NodeConfig, _legacy_etcd(data))
    _check_semantics(cfg)
    return cfg


def load(path: str | Path) -> NodeConfig:
    """Read and validate a node configuration file ("-": standard input); raise ConfigError with one line."""
    p = Path(path)
    if str(path) == "-":
        return loads(sys.stdin.read(), "<stdin>")
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found; pass the path of the node's YAML file with -c") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read it ({exc.strerror}); check the path and permissions") from None
    return loads(text, str(p))


def loads(text: str, source: str) -> NodeConfig:
    """Validate a node configuration's YAML text; errors name ``source``."""
    try:
        data = yamlsafe.load(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return parse(data, source)
    except ConfigError as exc:
        # Last line of defence: a credential inside a shown value (a URL's user:password@) is masked.
        raise ConfigError(redact.scrub_text(f"{source}: {exc}")) from None
