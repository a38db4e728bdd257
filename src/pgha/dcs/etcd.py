"""The KV contract on etcd v3, through its JSON gateway (``/v3/...``), with urllib3 only.

The gateway speaks protobuf-as-JSON: keys and values are base64, int64
fields arrive as strings, and fields equal to their zero value are left out
(a missing ``succeeded`` means false, a missing ``TTL`` means 0).

Requests go to the endpoint that answered last; on a connection error or
timeout the next endpoint is tried, and when none answers ``DCSError`` says
so in one line naming every endpoint and the fix.  A transaction that timed
out or lost its connection is not retried, since it may have been applied.

``https://`` endpoints are verified against ``cacert`` (the system's CAs when
empty), and ``cert``/``key`` present a client certificate.  With ``username``
the client logs in (``/v3/auth/authenticate``) and sends the token it gets in
the ``Authorization`` header; when a member answers that the token is invalid
or expired it logs in again once and repeats the request.  The password is
kept out of ``repr``, logs and every error message.

Watches stream over their own connection pool.  A reader thread parses the
stream into a queue, and the calling thread waits on that queue in short
steps, so ``stop`` is honoured promptly and ``on_event`` runs on the caller's
thread.  Every public method is safe to call from several threads.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.exceptions import (
    HTTPError,
    ProtocolError,
    ReadTimeoutError,
)

from pgha.dcs.base import Compacted, DCSError, KeyValue, LeaseNotFound, WatchEvent
from pgha.dcs.etcd_errors import TokenRejected, grpc_error, is_auth_error, reason
from pgha.dcs.etcd_wire import b64 as _b64
from pgha.dcs.etcd_wire import int_field as _int
from pgha.dcs.etcd_wire import json_objects as _json_objects
from pgha.dcs.etcd_wire import keyvalue as _keyvalue
from pgha.dcs.etcd_wire import prefix_end
from pgha.dcs.etcd_wire import shutdown_stream as _shutdown
from pgha.dcs.etcd_wire import unb64 as _unb64

# gRPC status codes the gateway reports that mean "this member cannot serve now".
_UNAVAILABLE_CODES = {1, 4, 8, 10, 13, 14}  # canceled, deadline, exhausted, aborted, internal, unavailable
_GRPC_NOT_FOUND = 5
_GRPC_OUT_OF_RANGE = 11
# How long a watch stream may stay silent before it is reopened (seconds).
WATCH_IDLE = 3600.0
KEEPALIVE_OPTIONS = [
    *HTTPConnection.default_socket_options,
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
]
# How often a waiting watch checks ``stop`` (seconds).
WATCH_POLL = 1.0

FIX = "start etcd or fix etcd.endpoints"


class EtcdKV:
    """``KV`` on one etcd cluster reachable at any of ``endpoints`` (``http://host:port``)."""

    def __init__(self, endpoints: tuple[str, ...], timeout: float = 2.0, *, cacert: str = "",
                 cert: str = "", key: str = "", username: str = "", password: str = "") -> None:
        if not endpoints:
            raise ValueError("etcd.endpoints is empty; list at least one http://host:port")
        self.endpoints = tuple(e.rstrip("/") for e in endpoints)
        self.timeout = timeout
        self.username = username
        self._password = password
        self._token: str | None = None
        tls: dict[str, Any] = {}
        if cacert:
            tls["ca_certs"] = cacert
        if cert:
            tls.update(cert_file=cert, key_file=key or None)
        self._pool = urllib3.PoolManager(
            num_pools=max(4, len(self.endpoints)), maxsize=8, retries=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout), **tls,
        )
        # A watch can be silent for as long as nothing changes: TCP keepalives, not a read timeout,
        # find a dead peer (about 25 s), so an idle watch costs etcd no requests.
        self._watch_pool = urllib3.PoolManager(
            num_pools=max(4, len(self.endpoints)), maxsize=4, retries=False, socket_options=KEEPALIVE_OPTIONS,
            **tls)
        self._pools: dict[str, urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()
        self._auth_lock = threading.Lock()
        self._preferred = 0
        # The newest store revision any answer carried (a lease keepalive too): a reader that
        # caches what a watch told it compares this with the revision it knows.
        self.seen_revision = 0

    def __repr__(self) -> str:
        user = f", user {self.username}" if self.username else ""
        return f"EtcdKV({', '.join(self.endpoints)}{user})"

    # --- authentication -------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.username:
            headers["Authorization"] = self._login()
        return headers

    def _login(self) -> str:
        """The current auth token, logging in first when there is none (one login at a time)."""
        with self._auth_lock:
            if self._token is None:
                body = {"name": self.username, "password": self._password}
                result = self._call("/v3/auth/authenticate", body, authenticate=False)
                token = result.get("token")
                if not token:
                    raise DCSError(f"etcd did not return an auth token for user {self.username}; "
                                   "check that etcd auth is enabled")
                self._token = str(token)
            return self._token

    def _forget_token(self, used: str | None) -> None:
        with self._auth_lock:
            if self._token == used:
                self._token = None

    # --- transport ------------------------------------------------------------------------
    def _order(self) -> list[int]:
        with self._lock:
            first = self._preferred
        n = len(self.endpoints)
        return [(first + i) % n for i in range(n)]

    def _demote(self, idx: int) -> None:
        """Endpoint ``idx`` failed: later requests start at the next one (a partitioned member costs one timeout)."""
        with self._lock:
            if self._preferred == idx:
                self._preferred = (idx + 1) % len(self.endpoints)

    def _unreachable(self, failures: list[tuple[str, str]]) -> DCSError:
        where = ", ".join(f"{ep} ({why})" for ep, why in failures)
        return DCSError(f"etcd unreachable at {where}; {FIX}")

    def _call(self, path: str, body: dict[str, Any], *, idempotent: bool = True,
              authenticate: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first endpoint that answers within ``timeout`` (None: the
        request timeout); returns the answer object."""
        try:
            return self._call_once(path, body, idempotent, authenticate, timeout)
        except TokenRejected as rejected:
            # The token expired or this member does not know it: log in again, once.
            self._forget_token(rejected.token)
            return self._call_once(path, body, idempotent, authenticate, timeout)

    def _call_once(self, path: str, body: dict[str, Any], idempotent: bool, authenticate: bool,
                   timeout: float | None) -> dict[str, Any]:
        limit = timeout or self.timeout
        payload = json.dumps(body).encode()
        headers = self._headers() if authenticate else {"Content-Type": "application/json"}
        failures: list[tuple[str, str]] = []
        for idx in self._order():
            endpoint = self.endpoints[idx]
            try:
                resp = self._post(endpoint, path, payload, headers, idempotent, limit)
            except (ReadTimeoutError, ProtocolError) as exc:
                self._demote(idx)
                if not idempotent:
                    raise DCSError(
                        f"etcd at {endpoint} did not answer {path} ({reason(exc, limit)}); "
                        "the write may or may not have been applied") from None
                failures.append((endpoint, reason(exc, limit)))
                continue
            except HTTPError as exc:
                self._demote(idx)
                failures.append((endpoint, reason(exc, limit)))
                continue
            try:
                data = json.loads(resp.data)
            except ValueError:
                failures.append((endpoint, f"HTTP {resp.status}, not an etcd answer"))
                continue
            error = grpc_error(data)
            if resp.status == 200 and error is None:
                result = data.get("result", data) if isinstance(data, dict) else {}
                header = result.get("header") if isinstance(result, dict) else None
                with self._lock:
                    self._preferred = idx
                    if isinstance(header, dict):
                        self.seen_revision = max(self.seen_revision, _int(header, "revision"))
                return result if isinstance(result, dict) else {}
            message, code = error or (f"HTTP {resp.status}", 0)
            if code == _GRPC_NOT_FOUND and "lease not found" in message:
                raise LeaseNotFound(f"etcd: {message.removeprefix('etcdserver: ')}")
            if is_auth_error(message, code):
                raise self._auth_error(endpoint, path, message, headers)
            if code in _UNAVAILABLE_CODES or resp.status >= 500:
                self._demote(idx)
                failures.append((endpoint, message.removeprefix("etcdserver: ")))
                continue
            raise DCSError(f"etcd at {endpoint} rejected {path}: {message} (code {code})")
        raise self._unreachable(failures)

    def _auth_error(self, endpoint: str, path: str, message: str, headers: dict[str, str]) -> DCSError:
        """The one-line error for an authentication answer (never with the password in it)."""
        message = message.removeprefix("etcdserver: ")
        token = headers.get("Authorization")
        if token is not None and "token" in message:
            return TokenRejected(token)
        if path == "/v3/auth/authenticate":
            return DCSError(f"etcd at {endpoint} refused the login of user {self.username}: {message}; "
                            "fix dcs.etcd.username and dcs.etcd.password")
        if "permission denied" in message and self.username:
            return DCSError(f"etcd at {endpoint} refused {path} to user {self.username}: permission denied; "
                            "grant the user's role readwrite on dcs.prefix")
        return DCSError(f"etcd at {endpoint} requires authentication ({message}); "
                        "set dcs.etcd.username and dcs.etcd.password")

    def _post(self, endpoint: str, path: str, payload: bytes, headers: dict[str, str], idempotent: bool,
              timeout: float) -> urllib3.BaseHTTPResponse:
        """One POST within ``timeout`` seconds; an idempotent one is retried once when the connection
        broke under it."""
        limit = urllib3.Timeout(connect=timeout, read=timeout)
        pool = self._pools.get(endpoint)
        if pool is None:
            # The endpoint's pool, looked up once: the pool manager's per-request URL parsing was a
            # sixth of an idle agent's lease renewal (it holds one pool per endpoint, never evicted).
            pool = self._pools[endpoint] = self._pool.connection_from_url(endpoint)
        try:
            return pool.urlopen("POST", path, body=payload, headers=headers, timeout=limit, retries=False)
        except ProtocolError:
            if not idempotent:
                raise
            return pool.urlopen("POST", path, body=payload, headers=headers, timeout=limit, retries=False)

    def _range(self, key: str, range_end: bytes | None = None) -> tuple[int, list[KeyValue]]:
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        result = self._call("/v3/kv/range", body)
        return _int(result.get("header", {}), "revision"), [_keyvalue(kv) for kv in result.get("kvs", [])]

    def _txn(self, compare: dict[str, Any], success: dict[str, Any]) -> bool:
        result = self._call("/v3/kv/txn", {"compare": [compare], "success": [success]}, idempotent=False)
        return bool(result.get("succeeded"))

    @staticmethod
    def _put_request(key: str, value: bytes, lease: int) -> dict[str, Any]:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return body

    # --- KV ---------------------------------------------------------------------------------
    def get_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        return self._range(prefix, prefix_end(prefix))

    def get(self, key: str) -> KeyValue | None:
        _, kvs = self._range(key)
        return kvs[0] if kvs else None

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        result = self._call("/v3/kv/put", self._put_request(key, value, lease))
        return _int(result.get("header", {}), "revision")

    def create(self, key: str, value: bytes, lease: int = 0) -> bool:
        return self._txn(
            {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"},
            {"request_put": self._put_request(key, value, lease)},
        )

    def replace(self, key: str, value: bytes, mod_revision: int, lease: int = 0) -> bool:
        if mod_revision <= 0:
            return False  # an absent key has mod_revision 0 in etcd; "replace" needs an existing one
        return self._txn(
            {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)},
            {"request_put": self._put_request(key, value, lease)},
        )

    def delete(self, key: str) -> None:
        self._call("/v3/kv/deleterange", {"key": _b64(key)})

    def delete_if(self, key: str, mod_revision: int) -> bool:
        if mod_revision <= 0:
            return False
        return self._txn(
            {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)},
            {"request_delete_range": {"key": _b64(key)}},
        )

    def delete_prefix(self, prefix: str) -> None:
        self._call("/v3/kv/deleterange", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})

    def grant(self, ttl: int) -> int:
        if ttl <= 0:
            raise DCSError(f"cannot grant a lease of {ttl} s: the TTL must be positive")
        result = self._call("/v3/lease/grant", {"TTL": str(ttl)})
        if result.get("error"):
            raise DCSError(f"etcd refused a lease of {ttl} s: {result['error']}")
        return _int(result, "ID")

    def keepalive(self, lease: int, timeout: float | None = None) -> int:
        # A shorter timeout is only worth it when another endpoint can answer instead: with one,
        # giving up early on an etcd that is slow (not gone) would lose answers that still count.
        short = timeout if len(self.endpoints) > 1 else None
        result = self._call("/v3/lease/keepalive", {"ID": str(lease)}, timeout=short)
        ttl = _int(result, "TTL")
        if ttl <= 0:
            raise LeaseNotFound(f"lease {lease:x} not found: it expired or was revoked")
        return ttl

    def revoke(self, lease: int) -> None:
        with contextlib.suppress(LeaseNotFound):
            self._call("/v3/lease/revoke", {"ID": str(lease)})

    def time_to_live(self, lease: int) -> int:
        """Whole seconds the lease has left without renewal; -1 when it is gone."""
        result = self._call("/v3/lease/timetolive", {"ID": str(lease)})
        return int(result.get("TTL") or 0)

    def compact(self, revision: int) -> None:
        """Compact the history up to ``revision`` (physically, so watches see it at once)."""
        try:
            self._call("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        except DCSError as exc:
            if "has been compacted" not in str(exc):
                raise

    # --- watch ----------------------------------------------------------------------------
    def watch_prefix(
        self,
        prefix: str,
        start_revision: int,
        on_event: Callable[[WatchEvent], None],
        stop: threading.Event,
        poll: float | None = None,
    ) -> int:
        create: dict[str, Any] = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                                  "progress_notify": True}
        if start_revision > 0:
            create["start_revision"] = str(start_revision)
        headers = self._headers()
        resp = self._open_watch(json.dumps({"create_request": create}).encode(), headers)
        items: queue.Queue[dict[str, Any] | BaseException | None] = queue.Queue()
        reader = threading.Thread(
            target=self._read_stream, args=(resp, items), name="etcd-watch", daemon=True)
        reader.start()
        next_rev = start_revision
        try:
            while not stop.is_set():
                try:
                    item = items.get(timeout=poll or WATCH_POLL)
                except queue.Empty:
                    continue
                if item is None or isinstance(item, BaseException):
                    return next_rev  # the stream ended or broke: the caller reopens it
                try:
                    next_rev = self._watch_response(item, start_revision, next_rev, on_event)
                except TokenRejected:
                    # Log in again on the next open; the caller resumes from next_rev.
                    self._forget_token(headers.get("Authorization"))
                    return next_rev
            return next_rev
        finally:
            _shutdown(resp)
            reader.join(timeout=1.0)
            if not reader.is_alive():
                # Only now may the (closed) connection go back to the pool for reuse.
                resp.release_conn()

    def _open_watch(self, payload: bytes, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        failures: list[tuple[str, str]] = []
        for idx in self._order():
            endpoint = self.endpoints[idx]
            try:
                resp = self._watch_pool.request(
                    "POST", endpoint + "/v3/watch", body=payload, headers=headers,
                    preload_content=False, timeout=urllib3.Timeout(connect=self.timeout, read=WATCH_IDLE),
                )
            except HTTPError as exc:
                self._demote(idx)
                failures.append((endpoint, reason(exc, self.timeout)))
                continue
            if resp.status == 200:
                return resp
            failures.append((endpoint, f"HTTP {resp.status}"))
            resp.release_conn()
        raise self._unreachable(failures)

    @staticmethod
    def _read_stream(resp: urllib3.BaseHTTPResponse,
                     items: queue.Queue[dict[str, Any] | BaseException | None]) -> None:
        try:
            for obj in _json_objects(resp):
                items.put(obj)
            items.put(None)
        except Exception as exc:  # the socket was shut down, timed out or broke
            items.put(exc)
        finally:
            with contextlib.suppress(Exception):
                resp.close()

    @staticmethod
    def _watch_response(item: dict[str, Any], start_revision: int, next_rev: int,
                        on_event: Callable[[WatchEvent], None]) -> int:
        error = grpc_error(item)
        if error is not None:
            if is_auth_error(*error) and "token" in error[0]:
                raise TokenRejected("")
            raise DCSError(f"etcd watch failed: {error[0]}")
        result = item.get("result", item)
        header_rev = _int(result.get("header", {}), "revision")
        if result.get("canceled"):
            compact = _int(result, "compact_revision")
            if compact:
                raise Compacted(f"revision {start_revision} was compacted (oldest kept: {compact})")
            raise DCSError(f"etcd cancelled the watch: {result.get('cancel_reason') or 'no reason given'}")
        events = result.get("events") or []
        if result.get("created"):
            # Watching "from now": resume after the revision the watch started at.
            return next_rev if start_revision > 0 else header_rev + 1
        if not events and header_rev:
            # A progress notification: every change up to header_rev was delivered.
            return max(next_rev, header_rev + 1)
        for ev in events:
            kv = ev.get("kv", {})
            revision = _int(kv, "mod_revision")
            kind = "delete" if ev.get("type") == "DELETE" else "put"
            on_event(WatchEvent(kind, _unb64(kv.get("key")).decode(errors="replace"), revision))
            next_rev = max(next_rev, revision + 1)
        return next_rev

    # --- health -------------------------------------------------------------------------------
    def status(self) -> dict[str, str]:
        """Per endpoint: 'ok, etcd 3.4.23, leader <id>' or why it did not answer."""
        out: dict[str, str] = {}
        for endpoint in self.endpoints:
            try:
                resp = self._pool.request("POST", endpoint + "/v3/maintenance/status", body=b"{}",
                                          headers=self._headers())
                data = json.loads(resp.data)
            except (HTTPError, ValueError, DCSError) as exc:
                out[endpoint] = reason(exc, self.timeout) if not isinstance(exc, DCSError) else str(exc)
                continue
            error = grpc_error(data)
            if resp.status != 200 or error is not None or not isinstance(data, dict):
                out[endpoint] = error[0] if error else f"HTTP {resp.status}"
            elif not _int(data, "leader"):
                out[endpoint] = f"no leader (etcd {data.get('version', '?')})"
            else:
                out[endpoint] = f"ok, etcd {data.get('version', '?')}, leader {_int(data, 'leader'):x}"
        return out

    def cluster_healthy(self) -> bool:
        """True when some endpoint's /health says the etcd cluster can serve requests."""
        for endpoint in self.endpoints:
            try:
                resp = self._pool.request("GET", endpoint + "/health")
                if resp.status == 200 and json.loads(resp.data).get("health") == "true":
                    return True
            except (HTTPError, ValueError, AttributeError):
                continue
        return False

    def close(self) -> None:
        self._pool.clear()
        self._watch_pool.clear()
