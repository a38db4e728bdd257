"""An HAProxy configuration that sends clients to the primary or to the replicas.

HAProxy asks every member's REST API: ``GET /primary`` answers 200 only on
the primary, ``GET /replica?lag=<max>`` only on a streaming replica within the
lag limit.  The read-write port goes to the one member that answers 200 on
/primary; the read-only port balances over the replicas.  When a member is
marked down its sessions are cut (``on-marked-down shutdown-sessions``), so no
client stays connected to a demoted primary.

The output passes ``haproxy -c -f`` on HAProxy 2.6.  It has no ``user``,
``chroot`` or ``daemon`` line so that it also runs as an unprivileged process;
add those for a system service.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from pgha.core import names

# (name, host, PostgreSQL port, REST API URL)
Member = tuple[str, str, int, str]


def _server_lines(members: Sequence[Member], ca_file: str | None) -> list[str]:
    lines = []
    if ca_file is not None and (not ca_file or re.search(r"[\s#'\"\\]", ca_file) or names.CONTROL.search(ca_file)):
        raise ValueError(f"CA file {names.shown(ca_file)}: use a path without spaces, quotes or '#'")
    for name, host, pg_port, api_url in members:
        why = names.member_problem(name, host, pg_port, api_url) or names.problem("host", host)
        if why is not None:
            raise ValueError(f"{names.shown(name)}: {why}")
        url = urlsplit(api_url)
        if url.port is None:
            raise ValueError(f"{name}: API URL {api_url!r} must look like http://host:port")
        tls = ""
        if url.scheme == "https":
            tls = f" check-ssl verify required ca-file {ca_file}" if ca_file else " check-ssl verify none"
        check_addr = ""
        if url.hostname and url.hostname != host:
            # HAProxy checks another address only when it is given as an IP.
            try:
                ipaddress.ip_address(url.hostname)
            except ValueError:
                raise ValueError(f"{name}: the API host {url.hostname!r} differs from {host!r}; "
                                 "use the same host or an IP address in the API URL") from None
            check_addr = f" addr {url.hostname}"
        lines.append(f"    server {name} {host}:{pg_port} check port {url.port}{check_addr}{tls}")
    return lines


def render_haproxy_config(
    members: Sequence[Member],
    rw_port: int,
    ro_port: int,
    max_lag: str = "16MB",
    stats_port: int | None = None,
    check_interval: str = "1s",
    bind_address: str = "*",
    ca_file: str | None = None,
) -> str:
    """haproxy.cfg text: a read-write listen (checked on /primary) and a read-only one (/replica).

    HTTPS APIs are checked with TLS: verified against ``ca_file`` when given, else unverified
    (the checks are read-only GETs without credentials)."""
    if not members:
        raise ValueError("members: list at least one member")
    if bind_address != "*" and names.problem("host", bind_address) is not None:
        raise ValueError(f"bind address {names.shown(bind_address)}: use '*', a host name or an IP address")
    default_server = (f"    default-server inter {check_interval} fall 2 rise 1 "
                      "on-marked-down shutdown-sessions")
    servers = _server_lines(members, ca_file)
    out = [
        "# Written by pgha: clients to the primary (read-write) or the replicas (read-only).",
        "global",
        "    maxconn 2000",
        "",
        "defaults",
        "    mode tcp",
        "    retries 2",
        "    timeout connect 4s",
        # PostgreSQL sessions sit idle for long; do not cut them.
        "    timeout client 30m",
        "    timeout server 30m",
        "    timeout check 2s",
        "",
    ]
    if stats_port is not None:
        out += [
            "listen stats",
            "    mode http",
            f"    bind {bind_address}:{stats_port}",
            "    stats enable",
            "    stats uri /",
            "    stats refresh 5s",
            "",
        ]
    out += [
        "listen primary",
        f"    bind {bind_address}:{rw_port}",
        # Never spread writes: should two members claim /primary, use the first one listed.
        "    balance first",
        "    option httpchk",
        "    http-check send meth GET uri /primary",
        "    http-check expect status 200",
        default_server,
        *servers,
        "",
        "listen replicas",
        f"    bind {bind_address}:{ro_port}",
        "    balance roundrobin",
        "    option httpchk",
        f"    http-check send meth GET uri /replica?lag={max_lag}",
        "    http-check expect status 200",
        default_server,
        *servers,
        "",
    ]
    return "\n".join(out)
