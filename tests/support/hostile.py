"""Hostile clients of an agent's REST API, and what the cluster went through meanwhile.

``run_load`` runs in a process of its own (``start_load``), so that its threads and thousands of
sockets never slow the measuring side: ``PrimaryProbe`` times /primary from the caller's process,
each probe on a new connection with its own deadline, as HAProxy's checks do.  ``Watch`` records
what must not happen to the cluster under that load: a late lease renewal, a fencing, a new leader.
Used by tests/integration/test_api_hostile.py and bench/api_load.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import re
import resource
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgha.demo import DemoCluster

# What an idle client sends after its handshake: half a request line, never finished.
HALF_LINE = b"GET /prim"


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    # The CA of the API's certificate; "" for plain HTTP.
    cafile: str = ""

    @classmethod
    def of(cls, demo: DemoCluster, name: str) -> Target:
        assert demo.state is not None
        node = demo.node(name)
        host = node.address or "127.0.0.1"
        return cls(host, node.api_port, demo.state.api_ca if demo.api_tls else "")

    def context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.cafile) if self.cafile else None

    def connect(self, timeout: float, ctx: ssl.SSLContext | None) -> socket.socket:
        """A connection with the TLS handshake done (when the API has TLS)."""
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if ctx is None:
            return sock
        try:
            return ctx.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def raise_nofile(want: int) -> int:
    """Raise this process's RLIMIT_NOFILE (soft) towards ``want``, within the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


# --- the load, in a process of its own -----------------------------------------------------
@dataclass(frozen=True)
class LoadSpec:
    target: Target
    seconds: float
    # Idle TLS connections opened (HALF_LINE sent) and held, in rounds: all opened (however long
    # that takes: the rounds may outlast ``seconds``), held ``hold`` seconds, released; 0 rounds:
    # opened once and held for the whole run.
    idle: int = 0
    rounds: int = 0
    hold: float = 10.0
    # Requests whose body (or head) trickles in a byte a second; reopened when the server closes them.
    slow_bodies: int = 0
    slow_heads: int = 0
    # Valid GET /status requests per second, over keep-alive connections.
    rate: float = 0.0
    # Threads that connect, handshake and hang up as fast as they can.
    flood: int = 0
    # Threads opening connections (idle rounds).
    openers: int = 8


@dataclass
class LoadStats:
    idle_opened: int = 0
    idle_failed: int = 0
    slow_reopened: int = 0
    requests_ok: int = 0
    requests_failed: int = 0
    flood_connections: int = 0
    flood_failed: int = 0
    errors: list[str] = field(default_factory=list)


class _Load:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.t = spec.target
        self.ctx = spec.target.context()
        self.stats = LoadStats()
        self.lock = threading.Lock()
        self.end = time.monotonic() + spec.seconds

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    def running(self) -> bool:
        return time.monotonic() < self.end

    def idle_rounds(self) -> None:
        rounds = self.spec.rounds or 1
        hold = self.spec.hold if self.spec.rounds else self.spec.seconds
        for _ in range(rounds):
            held: list[socket.socket] = []
            per = -(-self.spec.idle // self.spec.openers)
            openers = [threading.Thread(target=self._open_idle, args=(per, held)) for _ in range(self.spec.openers)]
            for t in openers:
                t.start()
            for t in openers:
                t.join()
            time.sleep(hold if self.spec.rounds else max(0.0, self.end - time.monotonic()))
            for s in held:
                s.close()
            time.sleep(1.0)

    def _open_idle(self, n: int, held: list[socket.socket]) -> None:
        for _ in range(n):
            if not self.spec.rounds and not self.running():
                return
            try:
                s = self.t.connect(5.0, self.ctx)
                s.sendall(HALF_LINE)
            except OSError:
                self.count("idle_failed")
                continue
            with self.lock:
                held.append(s)
                self.stats.idle_opened += 1

    def slow(self, n: int, body: bool) -> None:
        head = (f"POST /switchover HTTP/1.1\r\nHost: {self.t.host}\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000\r\n\r\n" if body else
                f"GET /primary HTTP/1.1\r\nHost: {self.t.host}\r\n").encode()
        socks: list[socket.socket | None] = [None] * n
        while self.running():
            for i in range(n):
                s = socks[i]
                try:
                    if s is None:
                        s = socks[i] = self.t.connect(5.0, self.ctx)
                        s.sendall(head)
                        self.count("slow_reopened")
                    else:
                        s.sendall(b"X" if not body else b" ")
                except OSError:
                    if s is not None:
                        s.close()
                    socks[i] = None
            time.sleep(1.0)
        for s in socks:
            if s is not None:
                s.close()

    def requests(self) -> None:
        import http.client

        conn: http.client.HTTPConnection | None = None
        every = 1.0 / self.spec.rate
        next_at = time.monotonic()
        while self.running():
            try:
                if conn is None:
                    conn = (http.client.HTTPSConnection(self.t.host, self.t.port, timeout=5, context=self.ctx)
                            if self.ctx else http.client.HTTPConnection(self.t.host, self.t.port, timeout=5))
                conn.request("GET", "/status")
                r = conn.getresponse()
                r.read()
                self.count("requests_ok" if r.status == 200 else "requests_failed")
                if r.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                self.count("requests_failed")
                if conn is not None:
                    conn.close()
                conn = None
            next_at += every
            time.sleep(max(0.0, next_at - time.monotonic()))
        if conn is not None:
            conn.close()

    def flood(self) -> None:
        while self.running():
            try:
                self.t.connect(2.0, self.ctx).close()
                self.count("flood_connections")
            except OSError:
                self.count("flood_failed")

    def run(self) -> LoadStats:
        jobs: list[Callable[[], None]] = []
        if self.spec.idle:
            jobs.append(self.idle_rounds)
        if self.spec.slow_bodies:
            jobs.append(lambda: self.slow(self.spec.slow_bodies, True))
        if self.spec.slow_heads:
            jobs.append(lambda: self.slow(self.spec.slow_heads, False))
        if self.spec.rate:
            jobs.append(self.requests)
        jobs += [self.flood] * self.spec.flood
        threads = [threading.Thread(target=self._guard(j), daemon=True) for j in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return self.stats

    def _guard(self, job: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                job()
            except Exception as exc:  # reported, not raised: the parent decides
                with self.lock:
                    self.stats.errors.append(f"{type(exc).__name__}: {exc}")
        return run


def run_load(spec: LoadSpec, out: Any) -> None:
    """The load process's body: run ``spec`` and send its LoadStats to ``out`` (a Connection)."""
    raise_nofile(spec.idle + 4 * (spec.slow_bodies + spec.slow_heads) + 1024)
    out.send(_Load(spec).run())
    out.close()


class LoadProcess:
    """``spec`` running in a child process; ``result()`` waits for its figures."""

    def __init__(self, spec: LoadSpec) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=run_load, args=(spec, send), name="api-load", daemon=True)
        self.proc.start()
        send.close()
        self.spec = spec

    def result(self) -> LoadStats:
        try:
            if not self._recv.poll(self.spec.seconds + 600):
                raise RuntimeError("the load process sent nothing")
            stats: LoadStats = self._recv.recv()
            return stats
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# --- measuring -------------------------------------------------------------------------------
class PrimaryProbe:
    """GET /primary every ``interval`` s on a new connection, each within ``deadline`` seconds."""

    def __init__(self, target: Target, interval: float = 0.25, deadline: float = 1.0) -> None:
        self.target, self.interval, self.deadline = target, interval, deadline
        self.ctx = target.context()
        # Seconds per probe; None: no 200 within the deadline (refused, timed out, not primary).
        self.results: list[float | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="primary-probe", daemon=True)

    def __enter__(self) -> PrimaryProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def once(self) -> float | None:
        started = time.monotonic()
        request = f"GET /primary HTTP/1.1\r\nHost: {self.target.host}\r\nConnection: close\r\n\r\n".encode()
        try:
            with self.target.connect(self.deadline, self.ctx) as s:
                s.settimeout(max(0.01, started + self.deadline - time.monotonic()))
                s.sendall(request)
                data = b""
                while b"\r\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            return None
        took = time.monotonic() - started
        return took if data.startswith(b"HTTP/1.1 200") and took <= self.deadline else None

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.results.append(self.once())
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def summary(self) -> dict[str, float | int | None]:
        ok = sorted(r for r in self.results if r is not None)
        return {
            "probes": len(self.results),
            "failed": len(self.results) - len(ok),
            "median_ms": round(statistics.median(ok) * 1000, 1) if ok else None,
            "p99_ms": round(ok[min(len(ok) - 1, int(len(ok) * 0.99))] * 1000, 1) if ok else None,
            "max_ms": round(ok[-1] * 1000, 1) if ok else None,
        }


FENCED = re.compile(r"fencing PostgreSQL")
LATE = re.compile(r"the lease renewal ran ([0-9.]+) s late")
LATE_METRIC = re.compile(r"^pgha_lease_renewal_late_max_seconds ([0-9.e+-]+)$", re.M)


@dataclass
class Watch:
    """What happened to the cluster between ``Watch.start(demo)`` and ``finish()``."""

    demo: DemoCluster
    leader: str
    log_offsets: dict[str, int]
    late_before: dict[str, float | None]
    leader_after: str | None = None
    fencings: list[str] = field(default_factory=list)
    late_logged: list[float] = field(default_factory=list)
    # Per member: the worst lateness of a renewal during the watch (0 when no worse than before;
    # None: the agent has no such metric, i.e. older code).
    worst_late: dict[str, float | None] = field(default_factory=dict)

    @classmethod
    def start(cls, demo: DemoCluster) -> Watch:
        view = demo.view()
        assert view.leader is not None and demo.state is not None
        names = [n.name for n in demo.state.nodes]
        return cls(demo, view.leader.name, {n: _log(demo, n).stat().st_size for n in names},
                   {n: late_max(demo, n) for n in names})

    def finish(self) -> Watch:
        view = self.demo.view()
        self.leader_after = view.leader.name if view.leader else None
        for name, offset in self.log_offsets.items():
            with open(_log(self.demo, name), "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            self.fencings += [f"{name}: {line}" for line in text.splitlines() if FENCED.search(line)]
            self.late_logged += [float(m) for m in LATE.findall(text)]
            after, before = late_max(self.demo, name), self.late_before[name]
            self.worst_late[name] = None if after is None or before is None else after if after > before else 0.0
        return self

    @property
    def worst(self) -> float:
        return max((w for w in self.worst_late.values() if w is not None), default=0.0)


def _log(demo: DemoCluster, name: str) -> Path:
    return demo.dir / name / "agent.log"


def late_max(demo: DemoCluster, name: str, attempts: int = 20) -> float | None:
    """pgha_lease_renewal_late_max_seconds of a member (its /metrics; retried while it is busy);
    None when its agent does not export it."""
    for _ in range(attempts):
        with contextlib.suppress(Exception):  # urllib3's errors, a busy agent: try again
            status, data = demo.api_call(name, "GET", "/metrics", auth=False, timeout=3.0)
            if status == 200:
                m = LATE_METRIC.search(data.decode() if isinstance(data, bytes) else str(data))
                return float(m.group(1)) if m else None
        time.sleep(0.5)
    raise RuntimeError(f"no pgha_lease_renewal_late_max_seconds from {name}")
