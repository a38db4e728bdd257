"""`pgha generate-config`: a commented node file from flags, this host and a running PostgreSQL.

The file holds generated passwords, so it is never printed to a terminal: it goes to ``-o FILE`` (created
with mode 0600, never over an existing file) or to a pipe (``| pgha validate -c -``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import secrets
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click
import yaml

from pgha import patroni_import
from pgha.cli.context import Refused
from pgha.cli.main import cli
from pgha.config import ConfigError, load, parse
from pgha.generate_config import NAME_RE, NodeFileRequest, Secrets, Vip, parse_listen, parse_vip, render
from pgha.postgres.running import RunningError, RunningServer, live_postmaster, read_running

DEFAULT_PG_VERSION = 15
API_PORT = 8008


def _check_name(flag: str, value: str) -> None:
    if not NAME_RE.match(value):
        raise Refused(f"{flag}: {value!r}: use letters, digits, '-', '_' or '.' (at most 63), e.g. 'main'")


def _endpoints(text: str) -> tuple[str, ...]:
    eps = tuple(e.strip() for e in text.split(",") if e.strip())
    if not eps:
        raise Refused("--etcd: give at least one URL, e.g. http://10.0.0.21:2379,http://10.0.0.22:2379")
    for ep in eps:
        parts = urlsplit(ep)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Refused(f"--etcd: {ep!r} is not an http:// or https:// URL; give a comma-separated list "
                          "such as http://10.0.0.21:2379,http://10.0.0.22:2379")
    return eps


def local_address_towards(url: str) -> str:
    """This host's address on the route to ``url``'s host (no packet is sent); 127.0.0.1 if unknown."""
    parts = urlsplit(url)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((parts.hostname or "127.0.0.1", parts.port or 2379))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def interface_for_vip(address: str, prefix: int) -> str:
    """The interface holding an address in the VIP's subnet, else the one routing to it, else eth0."""
    net = ipaddress.IPv4Network(f"{address}/{prefix}", strict=False)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=5,
                             check=False).stdout
        for line in out.splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[2] == "inet" and ipaddress.IPv4Interface(fields[3]).ip in net:
                return fields[1]
        route = subprocess.run(["ip", "-o", "route", "get", address], capture_output=True, text=True, timeout=5,
                               check=False).stdout.split()
        if "dev" in route:
            return route[route.index("dev") + 1]
    return "eth0"


def installed_pg_version() -> int:
    """The newest PostgreSQL major version with a server under /usr/lib/postgresql, else 15."""
    versions = [int(p.parent.parent.name) for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")
                if p.parent.parent.name.isdigit()]
    return max(versions, default=DEFAULT_PG_VERSION)


def _postgres_uid() -> int | None:
    try:
        return pwd.getpwnam("postgres").pw_uid
    except KeyError:
        return None


def _read_server(pg_dsn: str | None, data_dir: str | None) -> tuple[RunningServer | None, str]:
    """The running server to take settings from, and a description of where it was found."""
    try:
        if pg_dsn:
            owner = Path(data_dir).stat().st_uid if data_dir and Path(data_dir).exists() else _postgres_uid()
            return read_running(pg_dsn, owner), "--pg-dsn"
        pm = live_postmaster(data_dir) if data_dir else None
        if pm is None:
            return None, ""
        return read_running(pm.dsn, pm.owner), f"postmaster pid {pm.pid}, port {pm.port}"
    except RunningError as exc:
        raise Refused(str(exc)) from None


def _write_private(path: Path, text: str) -> str:
    """Create ``path`` mode 0600 (never over an existing file); as root, give it to postgres."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Refused(f"-o: {path} already exists; remove it or choose another path") from None
    except OSError as exc:
        raise Refused(f"-o: cannot create {path} ({exc.strerror}); check the directory") from None
    uid = _postgres_uid()
    with os.fdopen(fd, "w") as f:
        if os.geteuid() == 0 and uid is not None:
            # By descriptor: the path could be swapped for a link between open and chown.
            pw = pwd.getpwuid(uid)
            os.fchown(f.fileno(), pw.pw_uid, pw.pw_gid)
        f.write(text)
    return "mode 0600, owner postgres" if os.geteuid() == 0 and uid is not None else "mode 0600"


@cli.command("generate-config")
@click.option("--cluster", help="Cluster name, the same on every member (required).")
@click.option("--name", help="This member's name [default: the short host name].")
@click.option("--etcd", "etcd", default="http://127.0.0.1:2379", show_default=True,
              help="etcd client URLs, comma-separated.")
@click.option("--vip", help="Virtual IP the leader holds: ADDR[/PREFIX] (prefix 24 by default).")
@click.option("--vip-interface", help="Interface for the VIP [default: the one on the VIP's subnet].")
@click.option("--data-dir", help="PostgreSQL data directory [default: the running server's, else "
                                 "/var/lib/pgha/VERSION/CLUSTER].")
@click.option("--pg-version", help="PostgreSQL major version, for bin_dir [default: the running server's, "
                                   "else the newest installed].")
@click.option("--port", help="PostgreSQL port [default: the running server's, else 5432].")
@click.option("--connect-address", help="This host's address for the other members and clients "
                                        "[default: the local address on the route to the first etcd URL].")
@click.option("--api-listen", help="host:port of the REST API [default: CONNECT-ADDRESS:8008].")
@click.option("--pg-dsn", help="Read settings from the server at this libpq DSN (a superuser login) "
                               "[default: the server running on --data-dir, if any].")
@click.option("--secrets-from", type=click.Path(), help="Copy the passwords from this member's node file "
                                                        "(every member needs the same) instead of generating them.")
@click.option("-o", "--output", type=click.Path(), help="Write here (mode 0600, never over an existing file) "
                                                        "instead of standard output.")
@click.option("--from-patroni", type=click.Path(), help="Convert this Patroni configuration (one line on stderr "
                                                        "per key left behind); only --secrets-from and -o go with it.")
def generate_config(cluster: str | None, name: str | None, etcd: str, vip: str | None, vip_interface: str | None,
                    data_dir: str | None, pg_version: str | None, port: str | None, connect_address: str | None,
                    api_listen: str | None, pg_dsn: str | None, secrets_from: str | None,
                    output: str | None, from_patroni: str | None) -> None:
    """Write a commented node file with generated passwords; it never prints them to a terminal."""
    if from_patroni:
        extra = [flag for flag, value in (("--cluster", cluster), ("--name", name), ("--vip", vip),
                                          ("--vip-interface", vip_interface), ("--data-dir", data_dir),
                                          ("--pg-version", pg_version), ("--port", port),
                                          ("--connect-address", connect_address), ("--api-listen", api_listen),
                                          ("--pg-dsn", pg_dsn)) if value]
        if extra or etcd != "http://127.0.0.1:2379":
            flags = ", ".join(extra or ["--etcd"])
            raise Refused(f"--from-patroni takes everything from Patroni's file; drop {flags} (edit the result)")
        write_output(output, convert_patroni(from_patroni, secrets_from))
        return
    if not cluster:
        raise Refused("--cluster: required; name the cluster, e.g. --cluster main")
    name = name or socket.gethostname().split(".")[0]
    _check_name("--cluster", cluster)
    _check_name("--name", name)
    endpoints = _endpoints(etcd)
    vip_addr = None
    if vip:
        try:
            vip_addr = parse_vip(vip)
        except ValueError as exc:
            raise Refused(f"--vip: {exc}") from None
    if api_listen:
        try:
            parse_listen(api_listen)
        except ValueError as exc:
            raise Refused(f"--api-listen: {exc}") from None
    if data_dir and not Path(data_dir).is_absolute():
        raise Refused(f"--data-dir: {data_dir!r} must be an absolute path, e.g. /var/lib/pgha/15/main")
    if pg_version and not (pg_version.isdigit() and 10 <= int(pg_version) <= 99):
        raise Refused(f"--pg-version: expected a PostgreSQL major version such as 15, got {pg_version!r}")
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise Refused(f"--port: expected a TCP port 1-65535, got {port!r}")
    if output and Path(output).exists():
        raise Refused(f"-o: {output} already exists; remove it or choose another path")
    if not output and sys.stdout.isatty():
        raise Refused("the file holds generated passwords and is not printed to a terminal; write it with "
                      "-o FILE, or pipe it (| pgha validate -c -)")
    try:
        sec = Secrets.of(load(secrets_from)) if secrets_from else Secrets.generate()
    except ConfigError as exc:
        raise Refused(f"--secrets-from: {exc}") from None

    server, read_from = _read_server(pg_dsn, data_dir)
    if server is not None:
        if data_dir and Path(data_dir).resolve() != Path(server.data_dir).resolve():
            raise Refused(f"--data-dir {data_dir} but the server at --pg-dsn runs on {server.data_dir}; "
                          "drop one of them")
        for flag, given, actual in (("--pg-version", pg_version, server.major), ("--port", port, server.port)):
            if given and int(given) != actual:
                raise Refused(f"{flag} {given} but the running server has {actual}; drop {flag}")
    version = server.major if server else int(pg_version) if pg_version else installed_pg_version()
    host = connect_address or local_address_towards(endpoints[0])
    req = NodeFileRequest(
        cluster=cluster, name=name, etcd=endpoints,
        data_dir=server.data_dir if server else data_dir or f"/var/lib/pgha/{version}/{cluster}",
        pg_version=version,
        port=server.port if server else int(port) if port else 5432,
        listen=server.listen if server else "*",
        connect_host=host,
        api_listen=api_listen or f"{host}:{API_PORT}",
        vip=Vip(vip_addr[0], vip_addr[1], vip_interface or interface_for_vip(*vip_addr)) if vip_addr else None,
        parameters=server.parameters if server else {},
        read_from=read_from,
        secrets_from=secrets_from or "",
        config_dir=server.config_dir if server else "",
        server_bin_dir=server.bin_dir if server else "",
    )
    text = render(req, sec)
    try:
        parse(yaml.safe_load(text))
    except ConfigError as exc:  # the flags were checked above; this would be a bug here
        raise Refused(f"the generated file does not validate ({exc}); please report it") from None
    write_output(output, text)


def convert_patroni(path: str, secrets_from: str | None) -> str:
    """The node file for Patroni's ``path``; every key left behind (and every change) as a line on stderr."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise Refused(f"--from-patroni: cannot read {path} ({exc.strerror}); give Patroni's YAML file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise Refused(f"--from-patroni: {path} is not valid YAML; give Patroni's configuration file") from None
    try:
        conv = patroni_import.convert(data, str(Path(path).resolve().parent))
        first = load(secrets_from) if secrets_from else None
        sec = Secrets.of(first) if first is not None else None
    except (patroni_import.PatroniError, ConfigError) as exc:
        raise Refused(f"{'--secrets-from' if isinstance(exc, ConfigError) else path}: {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:  # a section of an unexpected shape
        raise Refused(f"{path}: not a Patroni configuration pgha can read ({type(exc).__name__}: {exc}); "
                      "check it with `patroni --validate-config`") from None
    api = conv.node.setdefault("api", {})
    if sec is not None:
        api["auth"] = {"username": sec.api.username, "password": sec.api.password}
    elif "auth" not in api:
        api["auth"] = {"username": "pgha", "password": Secrets.generate().api.password}
        conv.notes.append("api.auth: Patroni's REST API had no authentication; pgha's actions need one, so a "
                          "login was generated: give every member the same (--secrets-from FIRST_FILE)")
    zk = conv.node.get("dcs", {}).get("zookeeper")
    if zk is not None and not zk.get("username"):
        # pgha's znodes carry an ACL naming one digest credential (Patroni's are world-writable).
        theirs = first.dcs.zookeeper if first is not None else None
        zk["username"] = theirs.username if theirs and theirs.username else "pgha"
        zk["password"] = theirs.password if theirs and theirs.password else secrets.token_urlsafe(24)
        if theirs is None or not theirs.username:
            conv.notes.append("dcs.zookeeper: pgha's znodes are readable and writable only with a digest "
                              "credential, so one was generated: give every member the same (--secrets-from "
                              "FIRST_FILE)")
    pg = conv.node.setdefault("postgresql", {})
    pg.setdefault("bin_dir", f"/usr/lib/postgresql/{installed_pg_version()}/bin")
    for line in conv.left:
        click.echo(f"left behind: {line}", err=True)
    for line in conv.notes:
        click.echo(f"note: {line}", err=True)
    out = patroni_import.render(conv, path)
    try:
        parse(yaml.safe_load(out))
    except ConfigError as exc:
        raise Refused(f"{path}: the converted file does not validate ({exc}); fix it in Patroni's file "
                      "or edit the result") from None
    return out


def write_output(output: str | None, text: str) -> None:
    """The node file to ``-o`` (0600) or to a pipe, never to a terminal (it holds passwords)."""
    if not output and sys.stdout.isatty():
        raise Refused("the file holds passwords and is not printed to a terminal; write it with "
                      "-o FILE, or pipe it (| pgha validate -c -)")
    if output:
        how = _write_private(Path(output), text)
        click.echo(f"{output}: written ({how}); it holds the passwords. Check it: pgha validate -c {output}",
                   err=True)
    else:
        click.echo(text, nl=False)
