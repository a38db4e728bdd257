"""ZooKeeper with a credential, a closed ACL and TLS: what kazoo is given, and the open-znode check.

Every znode pgha creates carries the ACL ``digest:<user>:<hash>:cdrwa`` (plus the extra entries of
``dcs.zookeeper.acl``), and every session authenticates as that user, so a client without the
credential can neither read nor write the cluster's keys.  With ``tls`` the session runs over TLS to
ZooKeeper's ``secureClientPort``, the server verified against ``cacert`` (or the system's CAs) and its
host name checked; ``cert``/``key`` are the client certificate a server with ``ssl.clientAuth=need``
asks for.

``open_znodes`` is run once per new connection: a znode under the prefix that anyone may read or
write (``world:anyone``, left by an older pgha or created by someone else) is refused with one line.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.retry import KazooRetry
from kazoo.security import ACL, Id, make_digest_acl

from pgha.dcs.base import DCSError

PERMS = {"r": 1, "w": 2, "c": 4, "d": 8, "a": 16}
TLS_FIX = "check dcs.zookeeper.cacert, cert and key"
NO_CREDENTIAL = ("ZooKeeper: no credential (dcs.zookeeper.username and password), and pgha keeps no znode anyone "
                 "could read or write; set them (CLI: -c FILE, or --dcs-user USER with PGHA_DCS_PASSWORD)")


@dataclass(frozen=True)
class ZkSecurity:
    username: str
    password: str = field(repr=False)
    # Extra "scheme:id:perms" entries (validated by pgha.config.check_zookeeper).
    acl: tuple[str, ...] = ()
    tls: bool = False
    cacert: str = ""
    cert: str = ""
    key: str = ""

    def acls(self) -> list[ACL]:
        """The ACL of every znode pgha creates: the credential's user with every right, then the extras."""
        entries = [make_digest_acl(self.username, self.password, all=True)]
        for entry in self.acl:
            scheme, _, rest = entry.partition(":")
            ident, _, perms = rest.rpartition(":")
            entries.append(ACL(sum(PERMS[p] for p in set(perms)), Id(scheme, ident)))
        return entries

    def context(self) -> ssl.SSLContext:
        """TLS 1.2+, the server verified against ``cacert`` (or the system's CAs) and its host name checked."""
        ctx = ssl.create_default_context(cafile=self.cacert or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key or None)
        return ctx

    def client_options(self) -> dict[str, Any]:
        """KazooClient keyword arguments: the digest login, the default ACL and TLS (a handler of its own)."""
        options: dict[str, Any] = {"auth_data": [("digest", f"{self.username}:{self.password}")],
                                   "default_acl": self.acls()}
        if self.tls:
            options.update(use_ssl=True, handler=TlsHandler(self.context()))
        return options


class TlsHandler(SequentialThreadingHandler):  # type: ignore[misc]
    """kazoo's threading handler, with TLS connections made from our context.

    kazoo's own TLS connect leaks the socket when the TCP connect fails, and builds a context per
    attempt; this one connects, then wraps, and closes whatever failed.  ``last_error`` says why the
    latest attempt failed (a refused certificate, a refused connection), for the error line.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self.context = context
        self.last_error = ""

    def create_connection(self, address: tuple[str, int], hostname: str | None = None,
                          timeout: float | None = None, use_ssl: bool = False, **_: Any) -> socket.socket:
        try:
            raw = socket.create_connection(address, timeout)
        except OSError as exc:
            self.last_error = exc.strerror or type(exc).__name__
            raise
        try:
            sock = self.context.wrap_socket(raw, server_hostname=hostname)
        except (OSError, ValueError) as exc:
            raw.close()
            self.last_error = f"TLS: {getattr(exc, 'verify_message', None) or getattr(exc, 'reason', None) or exc}"
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.last_error = ""
        return sock


def connect(hosts: tuple[str, ...], session_timeout: float, wait: float, security: ZkSecurity | None,
            logger: logging.Logger, fix: str) -> KazooClient:
    """A started kazoo client with ``security``'s login, ACL and TLS; DCSError (one line) within ``wait``."""
    options = session_options(security)
    client = KazooClient(hosts=",".join(hosts), timeout=session_timeout,
                         connection_retry=KazooRetry(max_tries=-1, delay=0.1, backoff=1.5, max_delay=1.0),
                         logger=logger, **options)
    try:
        client.start(timeout=wait)
    except Exception as exc:
        with contextlib.suppress(Exception):
            client.stop()
            client.close()
        why = f"no session within {wait:g}s"
        tls = str(getattr(options.get("handler"), "last_error", ""))
        raise DCSError(f"ZooKeeper unreachable at {','.join(hosts)} ({why}{'; ' + tls if tls else ''}); "
                       f"{TLS_FIX if tls.startswith('TLS:') else fix}") from exc
    return client


def refused(security: ZkSecurity | None, root: str) -> str:
    """The line for a znode whose ACL does not let our user in."""
    user = security.username if security is not None else ""
    return (f"ZooKeeper refused user {user!r} a znode under {root} (its ACL names other users); use the "
            "cluster's credential (dcs.zookeeper.username/password) or another dcs.prefix")


def session_options(security: ZkSecurity | None) -> dict[str, Any]:
    """KazooClient keyword arguments for ``security``; DCSError (one line) without one or with bad files."""
    if security is None:
        raise DCSError(NO_CREDENTIAL)
    try:
        return security.client_options()
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise DCSError(f"ZooKeeper: cannot load the TLS files ({getattr(exc, 'strerror', None) or exc}); "
                       f"{TLS_FIX}") from None


def refuse_open_tree(client: KazooClient, root: str, wait: Callable[[Any], Any]) -> None:
    """DCSError (one line) when a znode at or under ``root`` is open to anyone."""
    opened = open_znodes(client, root, wait)
    if opened:
        raise DCSError(open_problem(opened, root))


def is_open(acl: ACL) -> bool:
    """True for an entry that lets anyone in (world:anyone, any right: the values may be secrets)."""
    return bool(acl.id.scheme == "world")


def open_znodes(client: KazooClient, root: str, wait: Callable[[Any], Any]) -> list[str]:
    """Paths at or under ``root`` whose ACL lets anyone read or write them (``wait`` resolves async results)."""
    found: list[str] = []
    level = [root]
    while level:
        reads = [(p, client.get_acls_async(p), client.get_children_async(p)) for p in level]
        level = []
        for path, acls, children in reads:
            try:
                entries, _ = wait(acls)
                names = wait(children)
            except NoNodeError:
                continue
            # ZooKeeper's own root and /zookeeper are open by design: pgha keeps nothing in them.
            if path != "/" and any(is_open(a) for a in entries):
                found.append(path)
            level += [f"{path.rstrip('/')}/{name}" for name in names if path != "/" or name != "zookeeper"]
    return found


def open_problem(paths: list[str], root: str) -> str:
    """The one line refusing a tree with open znodes."""
    more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
    return (f"ZooKeeper: {paths[0]}{more} can be read and written by anyone (ACL world:anyone), so anyone who "
            f"reaches ZooKeeper could rewrite the cluster; delete them (deleteall {root} with the cluster stopped) "
            "or give them the cluster's ACL (setAcl -R), then start again")
