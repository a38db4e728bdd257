"""Mutating requests come from pgha's own clients, not from a web page the operator happens to visit.

A browser lets any page send a cross-site POST with a ``text/plain`` or form body, without
asking the server first, and the browser adds cached basic-auth credentials to it.  So a
request that can change something (POST, PUT, PATCH, DELETE) must

1. carry ``Content-Type: application/json`` (or the route's own JSON type, e.g. PATCH /config's
   ``application/merge-patch+json``), even with an empty body: a page can send that type to
   another site only after a CORS preflight, which this API never grants;
2. carry no ``Origin``, or the agent's own (``<scheme>://<the Host header>``): the dashboard's
   own requests pass, another site's do not;
3. name in ``Host`` an address or name the agent answers to (``accepted_hosts``): a DNS
   rebinding page, whose Host is the attacker's name, is refused.

Each refusal is one JSON line with its own status (415, 403, 421) and nothing is changed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from email.message import Message
from urllib.parse import urlsplit

from pgha.api.request import Reply, error

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON = "application/json"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "127.0.0.1", "::1"})
# The statuses a refused mutating request gets (routes.responses_of lists them for every route).
REFUSALS = {
    403: "Cross-site request refused: the Origin is not this agent's (JSON {error})",
    415: "The request is not Content-Type: application/json (JSON {error})",
    421: "The Host header names no address or name of this agent (JSON {error})",
}


def host_name(value: str) -> str:
    """The name or address of a Host header or URL authority, without port, brackets or case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value[1:]
    name, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name
    return value


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _plain_ip(address: str) -> str:
    """``::ffff:1.2.3.4`` (an IPv4 client on a dual-stack socket) as ``1.2.3.4``."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def configured_names(listen_host: str, url: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names the agent answers to whatever the connection: its listen address (unless it is
    a wildcard), the host of its API URL (api.connect_url, else derived from api.listen) and this
    machine's host name."""
    names = {host_name(urlsplit(url).netloc if url else ""), socket.gethostname().lower(), *extra}
    listen = host_name(listen_host)
    if listen not in ("", "0.0.0.0", "::"):
        names.add(_plain_ip(listen))
    return frozenset(n for n in names if n)


def accepted_hosts(names: frozenset[str], local: str) -> frozenset[str]:
    """``names``, the address this connection arrived on, and localhost on a loopback address."""
    out = set(names) | {_plain_ip(local)}
    if _is_loopback(local):
        out |= LOOPBACK_NAMES
    return frozenset(out)


def refusal(method: str, headers: Message, media_type: str, scheme: str, accepted: frozenset[str]) -> Reply | None:
    """Why a mutating request is refused (a reply), or None when it may go on."""
    if method not in MUTATING:
        return None
    ctype = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    allowed = {JSON, media_type.lower()}
    if ctype not in allowed:
        got = f"got {ctype[:60]!r}" if ctype else "none was sent"
        return error(415, f"{method} needs Content-Type: {' or '.join(sorted(allowed))} ({got}), "
                     "also with an empty body")
    host = headers.get("Host")
    if host is None or host_name(host) not in accepted:
        shown = repr(host[:100]) if host is not None else "missing"
        return error(421, f"Host {shown} is not an address or name of this agent; call it by its "
                     "api.connect_url or api.listen address")
    origin = headers.get("Origin")
    if origin is not None and origin.strip().lower() != f"{scheme}://{host.strip().lower()}":
        return error(403, f"cross-site request refused: Origin {origin[:100]!r} is not this agent "
                     f"({scheme}://{host.strip()[:100]}); send mutating requests from pgha's CLI, "
                     "its dashboard or a client that sends no Origin")
    return None
