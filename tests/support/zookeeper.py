"""A real ZooKeeper for tests (pgha.demo.zkserver on a free loopback port), stopped by PID.

Fixtures: ``zookeeper`` (one server for the whole session; tests isolate themselves with
unique prefixes).  ``ZooKeeperBackend`` is the conformance suite's view of it.  The server is
secured as pgha expects one: TLS only (client certificates required), and every client logs in
with the digest credential ``security`` and creates znodes only that user may read or write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgha.dcs.zk_secure import ZkSecurity
from pgha.dcs.zookeeper import ZooKeeperKV
from pgha.demo import zkserver
from tests.support.etcd import Backend
from tests.support.procs import free_port, stop_pid


class ZooKeeperServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pgha-zk-"))
        self.port = free_port()
        self.hosts = (f"127.0.0.1:{self.port}",)
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls = zkserver.make_pki(self.dir / "pki", ["127.0.0.1"])
        self.security = ZkSecurity("pgha", secrets.token_urlsafe(12), tls=True, cacert=str(self.tls.ca),
                                   cert=str(self.tls.client_cert), key=str(self.tls.client_key))

    def start(self) -> ZooKeeperServer:
        with open(self.dir / "zookeeper.log", "ab") as log:
            self.proc = zkserver.spawn(self.dir, self.port, log, tls=self.tls)
        try:
            zkserver.wait_ready(self.proc, self.port, self.dir / "zookeeper.log", tls=self.tls)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                stop_pid(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
            self.proc = None

    def client(self, timeout: float = 2.0, root: str = "", **security: Any) -> ZooKeeperKV:
        """A KV with the server's credential and TLS files (``security`` overrides some of them)."""
        return ZooKeeperKV(self.hosts, timeout, security=dataclasses.replace(self.security, **security), root=root)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def zookeeper() -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer().start()
    try:
        yield server
    finally:
        server.cleanup()


def freeze(client: Any) -> None:
    """Make a kazoo client go silent like a frozen process: no close request, no pings, no reconnect.

    The server then expires its session after the session timeout, as for a host that died.
    """
    client._stopped.set()  # the connection loop will not reconnect
    sock = client._connection._socket
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class ZooKeeperBackend(Backend):
    kind = "zookeeper"
    exact_watch = False

    def __init__(self, server: ZooKeeperServer) -> None:
        self.server = server
        self.kv = server.client()
        self._others: list[ZooKeeperKV] = []

    def expire(self, lease: int, ttl: int) -> None:
        """Let the session expire: stop answering its pings by dropping the client without closing."""
        entry = self.kv._leases.pop(lease, None)
        if entry is not None:
            freeze(entry[0])
        deadline = time.monotonic() + ttl + 10
        while self.kv.time_to_live(lease) >= 0:
            assert time.monotonic() < deadline, f"lease {lease:x} outlived its {ttl}s TTL by 10s"
            time.sleep(0.1)
        if entry is not None:
            with contextlib.suppress(Exception):
                entry[0].stop()
                entry[0].close()

    def unreachable(self) -> ZooKeeperKV:
        return ZooKeeperKV((f"127.0.0.1:{free_port()}",), 0.5, security=self.server.security)

    def compact(self, revision: int) -> None:
        pytest.skip("ZooKeeper keeps no change history to compact")

    def second_client(self) -> ZooKeeperKV:
        other = self.server.client()
        self._others.append(other)
        return other

    def close(self) -> None:
        for other in self._others:
            other.close()
        self.kv.close()
