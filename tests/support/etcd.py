"""A real etcd for tests: Debian's /usr/bin/etcd on free loopback ports, stopped by PID.

Fixtures: ``etcd`` (one server for the whole session; tests isolate themselves
with unique cluster names or key prefixes), ``etcd_fresh`` (a server of their
own, for tests that stop, pause or compact it), ``etcd_secure`` (one server for
the session with TLS, client certificates and etcd auth on) and ``dcs``
(parametrized: the in-memory KV with a fake clock, EtcdKV on the shared server,
EtcdKV with TLS and auth, and ZooKeeperKV).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3

from pgha.dcs.base import KV
from pgha.dcs.etcd import EtcdKV
from pgha.dcs.memory import MemoryKV
from pgha.demo.certs import make_ca, make_cert
from tests.support.procs import free_port, stop_pid

ETCD_BIN = "/usr/bin/etcd"
ETCDCTL_BIN = "/usr/bin/etcdctl"


@dataclass(frozen=True)
class CertPair:
    cert: str
    key: str


@dataclass(frozen=True)
class EtcdTls:
    """A CA, the server's certificate (SAN 127.0.0.1) and a client certificate, in one directory."""

    ca: CertPair
    server: CertPair
    client: CertPair

    @classmethod
    def make(cls, directory: Path) -> EtcdTls:
        ca = make_ca(directory)
        server = make_cert(ca, directory, "etcd-server", ["127.0.0.1"])
        client = make_cert(ca, directory, "etcd-client", [], client=True)
        return cls(CertPair(str(ca.cert), str(ca.key)), CertPair(str(server[0]), str(server[1])),
                   CertPair(str(client[0]), str(client[1])))

    def client_kwargs(self) -> dict[str, str]:
        return {"cacert": self.ca.cert, "cert": self.client.cert, "key": self.client.key}


@dataclass(frozen=True)
class EtcdAuth:
    """etcd users: root (admin) and ``user`` with readwrite on ``prefix``."""

    root_password: str = "root-pw-4f2a"
    user: str = "pgha"
    password: str = "pgha-pw-9c1e"
    prefix: str = "/"


class EtcdServer:
    """One single-member etcd with its own data directory (optionally TLS on the client port)."""

    def __init__(self, data_dir: str | None = None, tls: EtcdTls | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self._own_dir = data_dir is None
        self.dir = Path(data_dir or tempfile.mkdtemp(prefix="pgha-etcd-"))
        self.tls = tls
        self.extra_args = extra_args
        self.auth: EtcdAuth | None = None
        self.client_port = free_port()
        self.peer_port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.client_port}"
        self.peer_url = f"http://127.0.0.1:{self.peer_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        pool_tls: dict[str, Any] = {}
        if tls is not None:
            pool_tls = {"ca_certs": tls.ca.cert, "cert_file": tls.client.cert, "key_file": tls.client.key}
        self._http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=0.5, read=0.5),
                                         **pool_tls)

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return ["--cert-file", self.tls.server.cert, "--key-file", self.tls.server.key,
                "--trusted-ca-file", self.tls.ca.cert, "--client-cert-auth"]

    def etcdctl(self, *args: str, user: str | None = None) -> str:
        """Run etcdctl against this server (as ``user`` "name:password" when given); its stdout."""
        cmd = [ETCDCTL_BIN, "--endpoints", self.url, "--dial-timeout", "3s"]
        if self.tls is not None:
            cmd += ["--cacert", self.tls.ca.cert, "--cert", self.tls.client.cert, "--key", self.tls.client.key]
        if user:
            cmd += ["--user", user]
        res = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=20,
                             env={**os.environ, "ETCDCTL_API": "3"}, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args[:2])} failed: {res.stderr.strip()}")
        return res.stdout

    def enable_auth(self, auth: EtcdAuth = EtcdAuth()) -> EtcdAuth:
        """Users root and ``auth.user`` (role with readwrite on ``auth.prefix``), then auth enable."""
        self.etcdctl("user", "add", f"root:{auth.root_password}", "--interactive=false")
        self.etcdctl("role", "add", auth.user)
        self.etcdctl("role", "grant-permission", auth.user, "readwrite", auth.prefix, "--prefix=true")
        self.etcdctl("user", "add", f"{auth.user}:{auth.password}", "--interactive=false")
        self.etcdctl("user", "grant-role", auth.user, auth.user)
        self.etcdctl("auth", "enable")
        self.auth = auth
        return auth

    def client(self, admin: bool = False, timeout: float = 2.0) -> EtcdKV:
        """An EtcdKV for this server with its TLS files and (pgha or root) credentials."""
        kwargs: dict[str, Any] = self.tls.client_kwargs() if self.tls else {}
        if self.auth is not None:
            kwargs.update(username="root" if admin else self.auth.user,
                          password=self.auth.root_password if admin else self.auth.password)
        return EtcdKV((self.url,), timeout, **kwargs)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("etcd is not running")
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> EtcdServer:
        """Start (or restart, on the same data directory and ports) and wait until healthy."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        with open(self.dir / "etcd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [ETCD_BIN, "--name", "test", "--data-dir", str(self.dir / "data"),
                 "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                 "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                 "--initial-cluster", f"test={self.peer_url}", "--initial-cluster-state", "new",
                 "--heartbeat-interval", "50", "--election-timeout", "500",
                 "--log-level", "warn", "--logger", "zap", *self._tls_args(), *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}; see {self.dir / 'etcd.log'}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"etcd not healthy after {timeout:g}s; see {self.dir / 'etcd.log'}")
            time.sleep(0.05)
        return self

    def healthy(self) -> bool:
        if self.auth is not None:  # /health needs no credentials, but a restart is checked with them
            try:
                self.client(admin=True, timeout=0.5).get("/health-probe")
                return True
            except Exception:
                return False
        try:
            resp = self._http.request("GET", self.url + "/health")
            return resp.status == 200 and json.loads(resp.data).get("health") == "true"
        except (urllib3.exceptions.HTTPError, ValueError):
            return False

    def stop(self) -> None:
        """SIGTERM by PID and wait for the process to go."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.resume()  # a stopped process cannot handle SIGTERM
            stop_pid(self.proc.pid, sig)
        self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        """Stop the server and remove its data directory (if this object created it)."""
        self.stop()
        self._http.clear()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def etcd_fresh() -> Iterator[EtcdServer]:
    server = EtcdServer().start()
    try:
        yield server
    finally:
        server.cleanup()


def secure_etcd_server(extra_args: tuple[str, ...] = ()) -> EtcdServer:
    """A started etcd with TLS (client certificates required) and auth on; the caller cleans it up."""
    directory = Path(tempfile.mkdtemp(prefix="pgha-etcd-tls-"))
    server = EtcdServer(str(directory), tls=EtcdTls.make(directory / "tls"), extra_args=extra_args)
    server._own_dir = True
    try:
        server.start()
        server.enable_auth()
    except BaseException:
        server.cleanup()
        raise
    return server


@pytest.fixture(scope="session")
def etcd_secure() -> Iterator[EtcdServer]:
    """TLS + client certificates + auth (user pgha); simple auth tokens expire after 2 s idle."""
    server = secure_etcd_server(("--auth-token", "simple", "--auth-token-ttl", "2"))
    try:
        yield server
    finally:
        server.cleanup()


# --- either backend, for the DCS conformance and store tests -----------------------------------
class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Backend:
    """A KV under test, and how to make time pass or the store disappear for it."""

    kind: str
    kv: Any  # MemoryKV, EtcdKV or ZooKeeperKV
    # True: watches replay every event with its revision (etcd, memory); False: they signal that
    # something changed, several changes possibly as one event (ZooKeeper).
    exact_watch = True

    def expire(self, lease: int, ttl: int) -> None:
        """Return once ``lease`` (granted with ``ttl``) has expired without renewal."""
        raise NotImplementedError

    def unreachable(self) -> KV:
        """A KV of this kind whose store cannot be reached."""
        raise NotImplementedError

    def compact(self, revision: int) -> None:
        """Forget the change history before ``revision`` (an admin operation)."""
        self.kv.compact(revision)

    def second_client(self) -> Any:
        """Another client of the same store (another agent's connection)."""
        return self.kv

    def close(self) -> None:
        self.kv.close()


class MemoryBackend(Backend):
    kind = "memory"

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.memory = MemoryKV(self.clock)
        self.kv = self.memory

    def expire(self, lease: int, ttl: int) -> None:
        self.clock.advance(ttl + 0.1)
        self.memory.expire_leases()

    def unreachable(self) -> MemoryKV:
        kv = MemoryKV(self.clock)
        kv.set_unreachable(True)
        return kv


class EtcdBackend(Backend):
    kind = "etcd"

    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self.kv = server.client()

    def compact(self, revision: int) -> None:
        admin = self.server.client(admin=True)
        try:
            admin.compact(revision)
        finally:
            admin.close()

    def second_client(self) -> EtcdKV:
        return self.server.client()

    def expire(self, lease: int, ttl: int) -> None:
        deadline = time.monotonic() + ttl + 10
        while self.kv.time_to_live(lease) >= 0:
            assert time.monotonic() < deadline, f"lease {lease:x} outlived its {ttl}s TTL by 10s"
            time.sleep(0.1)

    def unreachable(self) -> EtcdKV:
        return EtcdKV((f"http://127.0.0.1:{free_port()}",), 0.5)


def make_backend(request: pytest.FixtureRequest, kind: str) -> Backend:
    if kind == "memory":
        return MemoryBackend()
    if kind == "etcd":
        return EtcdBackend(request.getfixturevalue("etcd"))
    if kind == "etcd-tls-auth":
        return EtcdBackend(request.getfixturevalue("etcd_secure"))
    from tests.support.zookeeper import ZooKeeperBackend

    return ZooKeeperBackend(request.getfixturevalue("zookeeper"))


@pytest.fixture(params=["memory", "etcd", "etcd-tls-auth", "zookeeper"])
def dcs(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each backend in turn (the real ones on the session's shared servers)."""
    backend = make_backend(request, request.param)
    try:
        yield backend
    finally:
        backend.close()
