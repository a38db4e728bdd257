"""A fake AgentHandle with fixed snapshots, a ClusterStore over MemoryKV, and a small HTTP client.

Nothing here touches PostgreSQL: the API only reads snapshots and writes intents to the store.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from pgha.api import AgentMetrics, ApiServer
from pgha.api.handle import NodeSnapshot
from pgha.config import NodeConfig, parse
from pgha.core.actions import Decision
from pgha.core.model import (
    ClusterConfig,
    ClusterView,
    Leader,
    LocalPostgres,
    LocalState,
    MemberInfo,
    PgRunState,
    Role,
    SyncState,
    Tags,
)
from pgha.dcs.memory import MemoryKV
from pgha.dcs.store import ClusterStore

SUPERUSER_PASSWORD = "superuser-s3cret-xyz"
REPLICATION_PASSWORD = "replication-s3cret-xyz"
API_USER, API_PASSWORD = "admin", "api-s3cret-xyz"
SECRETS = (SUPERUSER_PASSWORD, REPLICATION_PASSWORD, API_PASSWORD)

MB = 1024 * 1024
LEADER_LSN = 500 * MB

MEMBERS = {
    "n1": MemberInfo("n1", Role.PRIMARY, "running", timeline=2, wal_lsn=LEADER_LSN,
                     api_url="http://127.0.0.1:1", host="127.0.0.1", port=5432),
    "n2": MemberInfo("n2", Role.REPLICA, "streaming", timeline=2, received_lsn=LEADER_LSN - 1000,
                     replayed_lsn=LEADER_LSN - 2000, following="n1",
                     tags=Tags(extra={"zone": "a"})),
    # Streaming but 50 MB behind: not a switchover target.
    "n3": MemberInfo("n3", Role.REPLICA, "streaming", timeline=2, received_lsn=LEADER_LSN - 50 * MB,
                     replayed_lsn=LEADER_LSN - 50 * MB, following="n1"),
    "n4": MemberInfo("n4", Role.REPLICA, "stopped", timeline=2, tags=Tags(nofailover=True)),
    "n5": MemberInfo("n5", Role.REPLICA, "streaming", timeline=2, received_lsn=LEADER_LSN,
                     replayed_lsn=LEADER_LSN, following="n1", tags=Tags(nofailover=True)),
}
VIEW = ClusterView(
    name="main", revision=10, system_id="7300000000000000001", leader=Leader("n1", 1, 5),
    members=MEMBERS, sync=SyncState("n1", ("n2",), 1), last_leader="n1",
)

LOCALS = {
    "leader": LocalState("n1", LocalPostgres(run_state=PgRunState.RUNNING, in_recovery=False, timeline=2,
                                             wal_lsn=LEADER_LSN), lease_deadline=1e12),
    "replica": LocalState("n2", LocalPostgres(run_state=PgRunState.RUNNING, in_recovery=True, timeline=2,
                                              received_lsn=LEADER_LSN - 1000, replayed_lsn=LEADER_LSN - 2000,
                                              receiver_status="streaming", following="n1"),
                          tags=Tags(extra={"zone": "a"})),
    "lagging": LocalState("n3", LocalPostgres(run_state=PgRunState.RUNNING, in_recovery=True, timeline=2,
                                              received_lsn=LEADER_LSN - 50 * MB,
                                              replayed_lsn=LEADER_LSN - 50 * MB,
                                              receiver_status="streaming", following="n1")),
    "stopped": LocalState("n4", LocalPostgres(run_state=PgRunState.STOPPED, timeline=2),
                          tags=Tags(nofailover=True)),
}


def node_config(name: str, auth: bool = False, tls: Mapping[str, Any] | None = None) -> NodeConfig:
    data: dict[str, Any] = {
        "cluster": "main",
        "name": name,
        "postgresql": {
            "data_dir": "/nonexistent/pgha-api-test",
            "superuser": {"username": "postgres", "password": SUPERUSER_PASSWORD},
            "replication": {"username": "replicator", "password": REPLICATION_PASSWORD},
        },
        "api": {"listen": "127.0.0.1:0", "auth": "none"},
    }
    if auth:
        data["api"]["auth"] = {"username": API_USER, "password": API_PASSWORD}
    if tls is not None:
        data["api"]["tls"] = dict(tls)
    return parse(data)


@dataclass
class FakeHandle:
    """Implements AgentHandle with a fixed snapshot of one node of the cluster above."""

    config: NodeConfig
    store: ClusterStore
    registry: CollectorRegistry
    snap: NodeSnapshot
    # The dashboard reads its recorder (lag samples, events).
    metrics: AgentMetrics = field(default_factory=lambda: AgentMetrics(CollectorRegistry()))
    wakes: int = 0
    confirms: list[str] = field(default_factory=list)
    confirm_leader: str = "n1"

    def snapshot(self) -> NodeSnapshot:
        return self.snap

    def wake(self) -> None:
        self.wakes += 1

    live: int | None = None

    def live_lsn(self) -> int | None:
        return self.live

    def failsafe_confirm(self, leader: str) -> bool:
        self.confirms.append(leader)
        return leader == self.confirm_leader


def make_snapshot(kind: str, view: ClusterView | None = VIEW) -> NodeSnapshot:
    local = LOCALS[kind]
    member = MEMBERS[local.name]
    holds = kind == "leader"
    decision = Decision((), "leader-renews" if holds else "replica-follows", f"{kind} reason")
    return NodeSnapshot(view=view, local=local, decision=decision, member=member,
                        cluster_config=view.config if view else ClusterConfig(),
                        holds_lease=holds, at=time.monotonic())


def make_handle(kind: str, auth: bool = False, tls: Mapping[str, Any] | None = None) -> FakeHandle:
    snap = make_snapshot(kind)
    name = LOCALS[kind].name
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    metrics.observe_loop(snap)
    metrics.count_action("Promote", True)
    metrics.count_action("Rewind", False)
    return FakeHandle(node_config(name, auth, tls), ClusterStore(MemoryKV(), "main"), registry, snap, metrics)


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    data: bytes

    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def error(self) -> str:
        return str(self.json()["error"])


class Client:
    """One keep-alive HTTP/1.1 connection (reopened when the server closes it)."""

    def __init__(self, port: int, context: ssl.SSLContext | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        self.port, self.context, self.auth = port, context, auth
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            if self.context is not None:
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=self.context)
            else:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        return self.conn

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                headers: Mapping[str, str] | None = None, auth: tuple[str, str] | bool | None = True) -> Response:
        hdrs = dict(headers or {})
        creds = self.auth if auth is True else (auth or None)
        if creds:
            hdrs["Authorization"] = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None or method in ("POST", "PUT", "PATCH", "DELETE"):
            hdrs.setdefault("Content-Type", "application/json")
        conn = self._connection()
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            payload = r.read()
        except (ConnectionError, http.client.HTTPException):
            self.close()
            raise
        out = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, payload)
        if r.will_close:
            self.close()
        return out

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@contextlib.contextmanager
def serving(handle: FakeHandle, context: ssl.SSLContext | None = None) -> Iterator[Client]:
    server = ApiServer(handle)
    server.start()
    client = Client(server.port, context, (API_USER, API_PASSWORD))
    try:
        yield client
    finally:
        client.close()
        server.stop()


def with_view(handle: FakeHandle, **changes: Any) -> None:
    """Replace fields of the handle's cluster view (e.g. leader=None)."""
    assert handle.snap.view is not None
    view = replace(handle.snap.view, **changes)
    handle.snap = replace(handle.snap, view=view, cluster_config=view.config)


def make_ca(tmp: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""
    import subprocess

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=pgha test CA")
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client", "rogue"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "client.crt", "-days", "2")
    # Self-signed: not signed by the CA.
    run("x509", "-req", "-in", "rogue.csr", "-signkey", "rogue.key", "-out", "rogue.crt", "-days", "2")
    return {p.stem + p.suffix.replace(".", "_"): p for p in tmp.iterdir()}
