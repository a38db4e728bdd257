"""The REST API server: HTTP/1.1 keep-alive, optional TLS and basic auth.

``conns.py`` owns the sockets (one selector thread, a few workers, caps and deadlines); a worker
parses each complete request with stdlib http.server here.  Requests are dispatched from the
routing table in ``routes.py``; mutating ones pass ``guard.py`` first (Content-Type, Origin, Host).  Every
answer is JSON (except /metrics), errors are ``{"error": "<one line>"}``, and
an unexpected exception is logged and answered with 500 (the only 5xx besides
503 for "the DCS or the agent is not ready" and the health checks' 503).
"""

from __future__ import annotations

import base64
import binascii
import errno
import hmac
import io
import json
import logging
import socket
import ssl
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

from pgha import redact
from pgha.api import guard
from pgha.api.conns import MAX_HEAD, Answer, Connections, Incoming
from pgha.api.handle import AgentHandle
from pgha.api.request import Reply, Request, error
from pgha.api.routes import BY_PATH, HEALTH_METHODS
from pgha.api.schema import MAX_BODY, BadRequest, check_query, parse_json_object, validate_body
from pgha.config import ApiConfig, TLSConfig
from pgha.dcs.base import DCSError

log = logging.getLogger("pgha.api")

# Connections the kernel queues before the API thread accepts them.
BACKLOG = 128


class ApiStartError(Exception):
    """The API cannot start; ``str()`` is one line naming the setting and the fix."""


class AddressInUseError(ApiStartError):
    """api.listen names a port another process already listens on."""


def tls_context(tls: TLSConfig) -> ssl.SSLContext:
    """A server context from api.tls; verify_client requires certificates signed by cafile."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.certfile, tls.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ApiStartError(f"api.tls.certfile/keyfile: cannot load {tls.certfile} and {tls.keyfile} "
                            f"({_reason(exc)}); check the paths and that the key matches") from None
    if tls.verify_client and not tls.cafile:
        raise ApiStartError("api.tls.verify_client: needs api.tls.cafile, the CA that signs "
                            "client certificates")
    if tls.cafile:
        try:
            ctx.load_verify_locations(tls.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ApiStartError(f"api.tls.cafile: cannot load {tls.cafile} ({_reason(exc)})") from None
    if tls.verify_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return " ".join(str(exc).split()) or type(exc).__name__


def _split_listen(listen: str) -> tuple[str, int, socket.AddressFamily]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ApiStartError(f"api.listen: expected host:port, got {listen!r}")
    family = socket.AF_INET
    if host.startswith("[") and host.endswith("]"):
        host, family = host[1:-1], socket.AF_INET6
    elif ":" in host:
        family = socket.AF_INET6
    return host or "0.0.0.0", int(port), family


class ApiServer:
    """The agent's REST API; ``start()`` serves from a background thread until ``stop()``."""

    def __init__(self, handle: AgentHandle) -> None:
        self.handle = handle
        self.config: ApiConfig = handle.config.api
        self.tls: ssl.SSLContext | None = None
        creds = self.config.credentials
        # None: the mutating endpoints are open (api.auth: none); otherwise (user, password).
        # A config without api.auth never gets here (pgha.config refuses it); built in code
        # without one, nobody can authenticate.
        self._open = self.config.auth == "none"
        self._auth: tuple[bytes, bytes] | None = (
            (creds.username.encode(), creds.password.encode()) if creds is not None else None)
        self.scheme = "https" if self.config.tls is not None else "http"
        # The names a mutating request's Host may give besides the connection's own address.
        self.names = guard.configured_names(self.config.host, self.config.url)
        self._bound: tuple[str, int] | None = None
        self._conns: Connections | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with api.listen port 0)."""
        return self._bound[1] if self._bound is not None else self.config.port

    @property
    def url(self) -> str:
        host = self._bound[0] if self._bound is not None else self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def open_connections(self) -> int:
        return self._conns.open_connections if self._conns is not None else 0

    def start(self) -> None:
        """Bind and serve in a daemon thread; raise ApiStartError (one line) when that is impossible."""
        if self._conns is not None:
            return
        listen = self.config.listen
        host, port, family = _split_listen(listen)
        self.tls = tls_context(self.config.tls) if self.config.tls is not None else None
        try:
            # No name lookup (HTTPServer's getfqdn can stall); SO_REUSEADDR for a quick restart.
            # "[::]" also takes IPv4 clients, as the kernel's default (and http.server) did.
            dual = family == socket.AF_INET6 and host == "::" and socket.has_dualstack_ipv6()
            sock = socket.create_server((host, port), family=family, backlog=BACKLOG, dualstack_ipv6=dual)
        except OSError as exc:
            where = f"api.listen {listen}"
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUseError(f"{where}: address already in use; pick a free port") from None
            if exc.errno == errno.EACCES:
                raise ApiStartError(f"{where}: permission denied; use a port above 1023") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ApiStartError(f"{where}: no such address on this host; use one of its "
                                    "addresses, 127.0.0.1 or 0.0.0.0") from None
            raise ApiStartError(f"{where}: cannot listen ({_reason(exc)})") from None
        bound = sock.getsockname()
        self._bound = (str(bound[0]), int(bound[1]))
        self._conns = Connections(sock, self.tls, self.serve)
        self._conns.start()
        log.info("REST API listening on %s", self.url)
        if self._open:
            log.warning("api.auth is none: anyone who reaches %s can switch over, restart and reinitialize "
                        "members; set api.auth credentials", self.url)

    def stop(self) -> None:
        """Stop accepting, close every open connection and release the port."""
        conns = self._conns
        if conns is None:
            return
        conns.stop()
        conns.listener.close()
        self._conns = self._bound = None

    def serve(self, incoming: Incoming) -> Answer:
        """One complete request -> the bytes of its answer, and whether to close after them."""
        if incoming.head_too_large:
            return _head_too_large(), True
        handler = _Handler(incoming, incoming.client, self)  # type: ignore[arg-type]
        return handler.out.getvalue(), handler.close_connection or incoming.eof

    def authorized(self, header: str | None) -> bool:
        if self._open:
            return True
        if self._auth is None:
            return False
        scheme, _, value = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        # Both compared in constant time, always both: no early exit tells a right user name.
        ok_user = hmac.compare_digest(user, self._auth[0])
        ok_password = hmac.compare_digest(password, self._auth[1])
        return bool(sep) & ok_user & ok_password


def _head_too_large() -> bytes:
    body = json.dumps({"error": f"the request line and headers are larger than {MAX_HEAD} bytes"}).encode()
    return (b"HTTP/1.1 431 Request Header Fields Too Large\r\nServer: pgha\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % len(body)) + body


class _Handler(BaseHTTPRequestHandler):
    """Parses and answers one request that conns.py has read whole; writes into a buffer."""

    protocol_version = "HTTP/1.1"
    server: ApiServer  # type: ignore[assignment]
    request: Incoming

    def version_string(self) -> str:
        return "pgha"

    def setup(self) -> None:
        self.rfile = io.BytesIO(self.request.data)
        self.out = io.BytesIO()
        self.wfile = self.out

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def finish(self) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[[], None]:
        # Every method (GET, POST, PROPFIND…) goes through the routing table: 404/405, never 501.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._send(Reply(code, {"error": message or phrase}), "GET")

    # --- one request ----------------------------------------------------------------------
    def _dispatch(self) -> None:
        method = self.command
        try:
            reply = self._handle(method)
        except Exception:
            log.exception("API %s %s failed", method, self.path[:200])
            self.close_connection = True
            reply = error(500, "internal error; see the agent log")
        self._send(reply, method)

    def _read_body(self) -> bytes:
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            raise _Refused(error(411, "chunked bodies are not accepted; send Content-Length"))
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text.strip())
            if length < 0 or not length_text.strip().isdigit():
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise _Refused(error(400, "Content-Length is not a number of bytes")) from None
        if length > MAX_BODY:
            self.close_connection = True
            if length <= 8 * MAX_BODY:
                # Read what the client is still sending, so that it gets the 413 and not a
                # broken pipe; anything larger is cut off.
                self._discard(length)
            raise _Refused(error(413, f"the body is larger than {MAX_BODY} bytes"))
        data = self.rfile.read(length)
        if len(data) < length:
            self.close_connection = True
            raise _Refused(error(400, "the body is shorter than Content-Length"))
        return data

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                return
            length -= len(chunk)

    def _handle(self, method: str) -> Reply:
        try:
            raw = self._read_body()
        except _Refused as exc:
            return exc.reply
        path, _, query_text = self.path.partition("?")
        routes = BY_PATH.get(path)
        if routes is None:
            return error(404, f"no such endpoint: {path[:100]}; see /openapi.json")
        allow = ", ".join(sorted(set(routes) | {"OPTIONS"}))
        route = routes.get(method)
        if route is None:
            if method == "OPTIONS":
                return Reply(204, headers={"Allow": allow})
            return error(405, f"{method[:20]} is not allowed on {path}; use {allow}", Allow=allow)
        refused = guard.refusal(method, self.headers, route.body.media_type if route.body else guard.JSON,
                                self.server.scheme, guard.accepted_hosts(self.server.names, self.request.local))
        if refused is not None:
            return refused
        if route.auth and not self.server.authorized(self.headers.get("Authorization")):
            return error(401, "authentication required: send the api.auth user and password (HTTP basic)",
                         **{"WWW-Authenticate": 'Basic realm="pgha", charset="UTF-8"'})
        try:
            try:
                fields = parse_qs(query_text, keep_blank_values=True, max_num_fields=64)
            except ValueError:
                raise BadRequest("too many query parameters") from None
            query = check_query(route.params, fields)
            body = validate_body(route.body, parse_json_object(raw)) if route.body is not None else {}
            reply = route.handler(Request(self.server.handle, method, path, query, body))
        except BadRequest as exc:
            return error(400, str(exc))
        except DCSError as exc:
            return error(503, f"the DCS is unreachable ({' '.join(str(exc).split())[:200]}); retry")
        if route.health and method == "OPTIONS":
            return Reply(reply.status, headers={"Allow": ", ".join(HEALTH_METHODS)})
        return reply

    def _send(self, reply: Reply, method: str) -> None:
        if reply.raw is not None:
            data = reply.raw
        elif reply.body is not None:
            data = json.dumps(redact.scrub(reply.body), separators=(",", ":"), allow_nan=False).encode()
        else:
            data = b""
        self.send_response(reply.status)
        if data:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if method != "HEAD" and data:
            self.wfile.write(data)


class _Refused(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


__all__ = ["AddressInUseError", "ApiServer", "ApiStartError"]
