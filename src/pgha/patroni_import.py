"""A pgha node file from a Patroni configuration (`pgha generate-config --from-patroni`).

Pure: ``convert`` takes Patroni's parsed YAML and returns the node file as data, plus one line for every
Patroni key it could not carry over (``left``) and what it changed on the way (``notes``).  The CLI
fills in what Patroni's file may lack (an API login, the bin_dir) and checks the result with ``parse``.

What pgha keeps apart from Patroni on purpose: its keys live under ``dcs.prefix`` (/pgha), not Patroni's
namespace, so the way back to Patroni stays open; and the node file says ``bootstrap: {adopt: true}``,
so the agent takes over the running PostgreSQL instead of creating one.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

from pgha.core.model import Tags
from pgha.postgres.conf import PROTECTED

# Patroni's bootstrap.dcs keys that mean the same in pgha's cluster_config.
SAME_CLUSTER_KEYS = ("ttl", "loop_wait", "retry_timeout", "maximum_lag_on_failover", "primary_start_timeout",
                     "failsafe_mode", "synchronous_node_count", "maximum_lag_on_syncnode", "check_timeline",
                     "slots", "ignore_slots")

# Keys pgha has no use for, with the reason printed when a file has them.
WHY: Mapping[str, str] = {
    "namespace": "pgha keeps its keys under dcs.prefix (/pgha), apart from Patroni's, so the way back stays open",
    "ctl": "patronictl's client settings; pgha's CLI takes -c NODE_FILE or --dcs/--cluster",
    "citus": "pgha does not manage Citus groups",
    "standby_cluster": "copy it into cluster_config by hand (pgha takes host, port, primary_slot_name, "
                       "restore_command, recovery_min_apply_delay) once the adopted cluster runs",
    "consul": "pgha supports etcd (v3) and ZooKeeper only",
    "kubernetes": "pgha supports etcd (v3) and ZooKeeper only",
    "raft": "pgha supports etcd (v3) and ZooKeeper only",
    "exhibitor": "pgha supports etcd (v3) and ZooKeeper only",
    "pgpass": "pgha keeps its own password file (pgha.pgpass, next to the data directory)",
    "rewind": "pgha runs pg_rewind as the superuser",
    "proxy_address": "pgha publishes no pooler address; configure pgbouncer: for the PgBouncer it repoints",
    "use_unix_socket": "pgha's agent always connects over the Unix socket",
    "use_unix_socket_repl": "pgha replicates over TCP to connect_address",
    "pg_ident": "pgha leaves pg_ident.conf alone; keep the file in the data directory",
    "basebackup": "pgha clones with its own pg_basebackup options",
    "recovery_conf": "pgha has no restore_command for clones (WAL archiving belongs to backup:)",
    "custom_conf": "pgha's postgresql.conf includes postgresql.base.conf; put the settings in parameters",
    "pg_ctl_timeout": "pgha waits for PostgreSQL with its own timeouts",
    "krbsrvname": "pgha has no Kerberos service name setting; use PGKRBSRVNAME in the agent's environment",
    "remove_data_directory_on_rewind_failure": "pgha's cluster_config.clone_on_rewind_failure does that (on)",
    "remove_data_directory_on_diverged_timelines": "pgha clones again only when pg_rewind fails",
    "before_stop": "pgha has no before_stop hook",
    "on_restart": "pgha has no on_restart callback (on_stop then on_start run instead)",
    "users": "bootstrap.users are created only when Patroni initializes a cluster; this one exists",
    "post_init": "runs only when Patroni initializes a cluster; this one exists",
    "post_bootstrap": "runs only when Patroni initializes a cluster; this one exists",
    "method": "pgha adopts the running cluster; no bootstrap method is used",
    "use_slots": "pgha always gives each replica a replication slot",
    "slots": "pgha keeps permanent slots cluster-wide: put them in bootstrap.dcs.slots (cluster_config.slots)",
    "synchronous_mode_strict": "set cluster_config.synchronous_mode: strict instead (carried when true)",
    "replicatefrom": "pgha replicas stream from the primary (cascading is planned with the second site)",
    "device": "pgha's watchdog is its own process (no /dev/watchdog device)",
    "safety_margin": "pgha arms its watchdog from cluster_config.fence_margin",
    "dir": "pgha logs to stderr (journald) or log.file",
}

ETCD_KEYS = frozenset({"host", "hosts", "url", "protocol", "cacert", "cert", "key", "username", "user", "password"})
DCS_NAMES = ("etcd3", "etcd", "zookeeper", "consul", "kubernetes", "raft", "exhibitor")
CALLBACKS = ("on_start", "on_stop", "on_role_change", "on_reload")


class PatroniError(ValueError):
    """The Patroni file cannot give a node file at all (one line naming the key and the fix)."""


@dataclass
class Conversion:
    node: dict[str, Any] = field(default_factory=dict)
    # "KEY: why" for every Patroni key not carried over.
    left: list[str] = field(default_factory=list)
    # What was carried over with a change the operator should know.
    notes: list[str] = field(default_factory=list)

    def leave(self, key: str, why: str = "") -> None:
        self.left.append(f"{key}: {why or WHY.get(key.rsplit('.', 1)[-1], 'pgha has no such setting')}")

    def leave_rest(self, section: Mapping[str, Any], prefix: str, taken: set[str] | frozenset[str]) -> None:
        for key in section:
            if key not in taken:
                self.leave(f"{prefix}.{key}")


def convert(data: Any, base_dir: str) -> Conversion:
    """Map Patroni's configuration onto a pgha node file; relative paths are resolved from ``base_dir``."""
    if not isinstance(data, dict):
        raise PatroniError("not a Patroni configuration: expected a mapping with scope:, name:, postgresql:")
    out = Conversion()
    for key in ("scope", "name"):
        if not isinstance(data.get(key), str | int) or not str(data[key]):
            raise PatroniError(f"{key}: missing; a Patroni configuration names its {key}")
    out.node["cluster"] = str(data["scope"])
    out.node["name"] = str(data["name"])
    handlers = {"restapi": _restapi, "bootstrap": _bootstrap, "postgresql": _postgresql, "tags": _tags,
                "watchdog": _watchdog, "log": _log}
    for key, value in data.items():
        if key in ("scope", "name"):
            continue
        if key in handlers:
            handlers[key](_section(value, key), out, base_dir)
        elif key == "slots":
            out.leave("slots")
        elif key not in DCS_NAMES:
            out.leave(key)
    _dcs(data, out)
    if "postgresql" not in data:
        raise PatroniError("postgresql: missing; a Patroni configuration names its data_dir there")
    out.node["bootstrap"] = {"adopt": True}
    return out


def _section(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        # The value is not echoed: a misplaced password would be.
        raise PatroniError(f"{key}: expected a mapping, got {type(value).__name__}; fix Patroni's file")
    return value


def _host_port(text: str, key: str) -> tuple[str, int]:
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not port.isdigit():
        raise PatroniError(f"{key}: expected host:port, got {text!r}")
    return host, int(port)


def _restapi(sec: dict[str, Any], out: Conversion, _base: str) -> None:
    api: dict[str, Any] = {}
    if "listen" in sec:
        host, port = _host_port(sec["listen"], "restapi.listen")
        # Patroni's listen "*:8008" or ":8008" is every address.
        api["listen"] = f"{'0.0.0.0' if host in ('', '*') else host}:{port}"
    tls = {k: str(sec[k]) for k in ("certfile", "keyfile", "cafile") if sec.get(k)}
    scheme = "https" if "certfile" in tls else "http"
    if sec.get("connect_address"):
        api["connect_url"] = f"{scheme}://{sec['connect_address']}"
    auth = sec.get("authentication")
    if isinstance(auth, dict) and auth.get("username") and auth.get("password"):
        api["auth"] = {"username": str(auth["username"]), "password": str(auth["password"])}
    if "certfile" in tls and "keyfile" in tls:
        verify = sec.get("verify_client")
        api["tls"] = {**tls, "verify_client": verify == "required"}
        if verify == "optional":
            out.notes.append("restapi.verify_client: optional became api.tls.verify_client: false "
                             "(pgha asks for a client certificate or not)")
    elif tls:
        out.leave("restapi.certfile", "HTTPS needs both certfile and keyfile")
    taken = {"listen", "connect_address", "authentication", "certfile", "keyfile", "cafile", "verify_client"}
    out.leave_rest(sec, "restapi", taken)
    out.node["api"] = api


def _dcs(data: dict[str, Any], out: Conversion) -> None:
    present = [k for k in DCS_NAMES if k in data]
    usable = [k for k in present if k in ("etcd3", "etcd", "zookeeper")]
    for k in present:
        if k not in usable[:1]:
            out.leave(k, WHY.get(k, f"pgha uses {usable[0]} from this file") if usable else "")
    if not usable:
        out.notes.append("no etcd3:, etcd: or zookeeper: section: dcs: is pgha's default (etcd on 127.0.0.1:2379)")
        return
    kind, sec = usable[0], _section(data[usable[0]], usable[0])
    if kind == "zookeeper":
        out.node["dcs"] = {"type": "zookeeper", "zookeeper": {"hosts": _hosts(sec.get("hosts"), "zookeeper.hosts")}}
        out.leave_rest(sec, "zookeeper", {"hosts"})
        return
    etcd: dict[str, Any] = {}
    protocol = str(sec.get("protocol") or ("https" if sec.get("cacert") or sec.get("cert") else "http"))
    if sec.get("url"):
        etcd["endpoints"] = [str(sec["url"]).rstrip("/")]
    else:
        hosts = _hosts(sec.get("hosts") or sec.get("host"), f"{kind}.hosts")
        etcd["endpoints"] = [f"{protocol}://{h}" for h in hosts]
    for src, dst in (("cacert", "cacert"), ("cert", "cert"), ("key", "key"), ("username", "username"),
                     ("user", "username"), ("password", "password")):
        if sec.get(src):
            etcd[dst] = str(sec[src])
    if kind == "etcd":
        out.notes.append("etcd: Patroni's etcd v2 section became dcs.etcd (pgha speaks the v3 API, on by default "
                         "since etcd 3.4; Patroni's v2 keys are not read)")
    out.node["dcs"] = {"type": "etcd", "etcd": etcd}
    out.leave_rest(sec, kind, ETCD_KEYS)


def _hosts(value: Any, key: str) -> list[str]:
    items = value if isinstance(value, list) else str(value or "").split(",")
    hosts = [str(h).strip() for h in items if str(h).strip()]
    if not hosts:
        raise PatroniError(f"{key}: no host:port given; Patroni needs one too")
    return hosts


def _bootstrap(sec: dict[str, Any], out: Conversion, _base: str) -> None:
    for key, value in sec.items():
        if key == "dcs":
            _cluster_config(_section(value, "bootstrap.dcs"), out)
        elif key == "initdb":
            out.node.setdefault("postgresql", {})["initdb"] = _initdb(value)
            out.notes.append("bootstrap.initdb became postgresql.initdb (used only if pgha ever runs initdb)")
        elif key == "pg_hba":
            # Patroni adds these after initdb: they are in the cluster's pg_hba.conf now.
            out.node.setdefault("postgresql", {}).setdefault("pg_hba", [str(x) for x in value or []])
        else:
            out.leave(f"bootstrap.{key}")


def _initdb(value: Any) -> list[str]:
    args = []
    for item in value or []:
        if isinstance(item, dict):
            args += [f"--{k}={v}" for k, v in item.items()]
        else:
            args.append(f"--{item}")
    return args


def _cluster_config(sec: dict[str, Any], out: Conversion) -> None:
    cc: dict[str, Any] = {}
    for key, value in sec.items():
        if key in SAME_CLUSTER_KEYS:
            cc[key] = value
        elif key == "master_start_timeout":
            cc["primary_start_timeout"] = value
        elif key == "synchronous_mode":
            mode = "quorum" if value == "quorum" else "on" if value in (True, "on", "true") else "off"
            cc["synchronous_mode"] = "strict" if mode == "on" and sec.get("synchronous_mode_strict") else mode
        elif key == "synchronous_mode_strict" and (not value or sec.get("synchronous_mode") in (True, "on", "true")):
            continue
        elif key == "postgresql":
            pg = _section(value, "bootstrap.dcs.postgresql")
            for k, v in pg.items():
                if k == "use_pg_rewind":
                    cc["use_pg_rewind"] = bool(v)
                elif k == "parameters":
                    cc["parameters"] = _parameters(_section(v, "parameters"), "bootstrap.dcs.postgresql", out)
                elif k == "pg_hba":
                    out.node.setdefault("postgresql", {})["pg_hba"] = [str(x) for x in v or []]
                else:
                    out.leave(f"bootstrap.dcs.postgresql.{k}")
        else:
            out.leave(f"bootstrap.dcs.{key}")
    out.node["cluster_config"] = cc


def _parameters(params: dict[str, Any], where: str, out: Conversion) -> dict[str, Any]:
    kept = {}
    for name, value in params.items():
        if str(name).lower() in PROTECTED:
            out.leave(f"{where}.parameters.{name}", "pgha sets it from the node file and the member's role")
        elif value is None:
            out.leave(f"{where}.parameters.{name}", "no value")
        else:
            kept[str(name)] = value if isinstance(value, str | int | float | bool) else str(value)
    return kept


def _postgresql(sec: dict[str, Any], out: Conversion, base: str) -> None:
    pg = out.node.setdefault("postgresql", {})
    callbacks: dict[str, Any] = {}
    for key, value in sec.items():
        if key == "listen":
            host, port = _host_port(value, "postgresql.listen")
            pg["listen"], pg["port"] = host or "*", port
        elif key == "connect_address":
            _host_port(value, "postgresql.connect_address")
            pg["connect_address"] = str(value)
        elif key in ("data_dir", "config_dir"):
            path = _absolute(str(value), base)
            if path != str(value):
                out.notes.append(f"postgresql.{key}: {value} is relative; it became {path} (from the file's "
                                 "directory: give the absolute path if Patroni ran elsewhere)")
            pg[key] = path
        elif key == "bin_dir":
            if value:
                pg["bin_dir"] = _absolute(str(value), base)
        elif key == "authentication":
            for role, login in _section(value, "postgresql.authentication").items():
                if role in ("superuser", "replication") and isinstance(login, dict):
                    pg[role] = {"username": str(login.get("username") or ""),
                                "password": str(login.get("password") or "")}
                else:
                    out.leave(f"postgresql.authentication.{role}")
        elif key == "parameters":
            pg["parameters"] = _parameters(_section(value, "postgresql.parameters"), "postgresql", out)
        elif key == "pg_hba":
            pg["pg_hba"] = [str(x) for x in value or []]
        elif key == "callbacks":
            for name, cmd in _section(value, "postgresql.callbacks").items():
                if name in CALLBACKS and cmd:
                    callbacks[name] = str(cmd)
                else:
                    out.leave(f"postgresql.callbacks.{name}")
        elif key == "pre_promote":
            if value:
                callbacks["pre_promote"] = str(value)
        elif key in ("create_replica_methods", "create_replica_method"):
            methods = value if isinstance(value, list) else [value]
            if [str(m) for m in methods] != ["basebackup"]:
                out.leave(f"postgresql.{key}", "pgha clones replicas with pg_basebackup only")
        elif key == "use_pg_rewind":
            out.node.setdefault("cluster_config", {}).setdefault("use_pg_rewind", bool(value))
        elif isinstance(value, dict) and key in _methods(sec):
            out.leave(f"postgresql.{key}", "a replica creation method's settings; pgha clones with pg_basebackup")
        else:
            out.leave(f"postgresql.{key}")
    if callbacks:
        out.node["callbacks"] = callbacks
    if pg.get("config_dir") and pg.get("config_dir") == pg.get("data_dir"):
        del pg["config_dir"]


def _methods(sec: dict[str, Any]) -> list[str]:
    methods = sec.get("create_replica_methods", sec.get("create_replica_method", []))
    return [str(m) for m in (methods if isinstance(methods, list) else [methods])]


def _absolute(path: str, base: str) -> str:
    return path if path.startswith("/") else str(PurePosixPath(base) / path)


def _tags(sec: dict[str, Any], out: Conversion, _base: str) -> None:
    """Tags pgha has (nofailover, failover_priority, nosync, and whichever others its Tags defines) carry
    over as such; Patroni's tags pgha has no use for are left behind; any other tag goes to tags.extra."""
    hints = typing.get_type_hints(Tags)
    tags: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for key, value in sec.items():
        hint = hints.get(key) if key != "extra" else None
        if hint is bool:
            tags[key] = value if isinstance(value, bool) else str(value).lower() in ("true", "on", "yes", "1")
        elif hint is int:
            if not str(value).lstrip("-").isdigit():
                raise PatroniError(f"tags.{key}: expected an integer, got {value!r}")
            tags[key] = int(value)
        elif hint is not None:
            tags[key] = value
        elif key in WHY:
            out.leave(f"tags.{key}")
        elif re.fullmatch(r"[A-Za-z0-9_.-]{1,63}", str(key)):
            extra[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
        else:
            out.leave(f"tags.{key}", "not a tag name pgha accepts (letters, digits, '_', '.', '-')")
    if extra:
        tags["extra"] = extra
    out.node["tags"] = tags


def _watchdog(sec: dict[str, Any], out: Conversion, _base: str) -> None:
    mode = str(sec.get("mode", "automatic")).lower()
    out.node["watchdog"] = {"mode": "off" if mode in ("off", "false") else "on"}
    if mode == "automatic":
        out.notes.append("watchdog.mode: automatic became on (pgha's watchdog needs no device, so it is always "
                         "available)")
    out.leave_rest(sec, "watchdog", {"mode"})


def _log(sec: dict[str, Any], out: Conversion, _base: str) -> None:
    level = str(sec.get("level", "INFO")).upper()
    levels = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "ERROR"}
    if level in levels:
        out.node["log"] = {"level": levels[level]}
    else:
        out.leave("log.level", f"{level!r} is not DEBUG, INFO, WARNING or ERROR")
    out.leave_rest(sec, "log", {"level"})


def render(conv: Conversion, source: str) -> str:
    """The node file's YAML text, with a header naming its source and what was left behind."""
    head = [f"# pgha node file converted from Patroni's {source} by `pgha generate-config --from-patroni`.",
            "# Reference: docs/configuration.md; migration steps: docs/operations.md \"Migrating from Patroni\".",
            "# bootstrap.adopt: the agent takes over the running PostgreSQL in place (pgha adopt -c FILE).",
            "# It holds passwords: keep the file mode 0600."]
    if conv.left:
        head.append("# Left behind:")
        head += [f"#   {line}" for line in conv.left]
    return "\n".join(head) + "\n" + yaml.safe_dump(conv.node, sort_keys=False, default_flow_style=False)
