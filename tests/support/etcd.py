"""A real etcd for tests: Debian's /usr/bin/etcd on free loopback ports, stopped by PID.

Fixtures: ``etcd`` (one server for the whole session; tests isolate themselves
with unique cluster names or key prefixes), ``etcd_fresh`` (a server of their
own, for tests that stop, pause or compact it) and ``dcs`` (parametrized: the
in-memory KV with a fake clock, then EtcdKV on the shared server).
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
from pathlib import Path

import pytest
import urllib3

from pgha.dcs.etcd import EtcdKV
from pgha.dcs.memory import MemoryKV
from tests.support.procs import free_port, stop_pid

ETCD_BIN = "/usr/bin/etcd"


class EtcdServer:
    """One single-member etcd with its own data directory."""

    def __init__(self, data_dir: str | None = None) -> None:
        self._own_dir = data_dir is None
        self.dir = Path(data_dir or tempfile.mkdtemp(prefix="pgha-etcd-"))
        self.client_port = free_port()
        self.peer_port = free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.peer_url = f"http://127.0.0.1:{self.peer_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=0.5, read=0.5))

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
                 "--log-level", "warn", "--logger", "zap"],
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
    kv: MemoryKV | EtcdKV

    def expire(self, lease: int, ttl: int) -> None:
        """Return once ``lease`` (granted with ``ttl``) has expired without renewal."""
        raise NotImplementedError

    def unreachable(self) -> MemoryKV | EtcdKV:
        """A KV of this kind whose store cannot be reached."""
        raise NotImplementedError

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
        self.kv = EtcdKV((server.url,), 2.0)

    def expire(self, lease: int, ttl: int) -> None:
        deadline = time.monotonic() + ttl + 10
        while self.kv.time_to_live(lease) >= 0:
            assert time.monotonic() < deadline, f"lease {lease:x} outlived its {ttl}s TTL by 10s"
            time.sleep(0.1)

    def unreachable(self) -> EtcdKV:
        return EtcdKV((f"http://127.0.0.1:{free_port()}",), 0.5)


@pytest.fixture(params=["memory", "etcd"])
def dcs(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each backend in turn (the etcd one on the session's shared server)."""
    backend: Backend = MemoryBackend() if request.param == "memory" \
        else EtcdBackend(request.getfixturevalue("etcd"))
    try:
        yield backend
    finally:
        backend.close()
