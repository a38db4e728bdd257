"""The VIP of a `--netns --vip` demo cluster, seen from outside: who holds it, and a client
in its own namespace that writes through it.

* ``VipWatch`` polls ``netlab.has_address`` on every node namespace (~every 50 ms) and
  remembers each change of holders, so a test can check the VIP was never on two nodes at
  once and measure how long it took to move.
* ``VipWriter`` runs this module as a script inside the client namespace: it starts a
  write through the VIP every ``interval`` (each on its own connection and thread, so one
  stuck on a dead MAC does not hide the moment the VIP works again) and prints the
  monotonic time and the member that acknowledged it (``cluster_name``).  CLOCK_MONOTONIC
  is one clock for every process on the machine, so those times compare with ours.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pgha.demo import DemoCluster, netlab
from tests.support.cluster import running_cluster
from tests.support.faults import NodeSetWatch, kill_host, restart_node

ROOT = Path(__file__).resolve().parent.parent.parent
TABLE = "pgha_vip_probe"


class VipWatch(NodeSetWatch):
    """Background sampling of which node namespaces hold the VIP."""

    def __init__(self, demo: DemoCluster, interval: float = 0.05) -> None:
        super().__init__(interval)
        self.demo = demo

    def sample(self) -> list[str]:
        return self.demo.vip_holders()

    @property
    def max_holders(self) -> int:
        return self.max_seen

    def move(self, old: str, new: str, since: float) -> tuple[float, float]:
        """(when ``old`` was first seen without the VIP, when ``new`` was first seen with it),
        both after ``since``."""
        left = arrived = None
        for t, holders in self.changes:
            if t < since:
                continue
            if left is None and old not in holders:
                left = t
            if arrived is None and new in holders:
                arrived = t
        if left is None or arrived is None:
            raise AssertionError(f"the VIP did not move from {old} to {new}: {self.changes}")
        return left, arrived


class VipWriter:
    """A client in the demo's client namespace writing through the VIP."""

    def __init__(self, demo: DemoCluster, interval: float = 0.05, persistent: bool = False) -> None:
        assert demo.state is not None and demo.state.vip and demo.state.client_netns
        self.demo = demo
        self.interval = interval
        # One connection kept open (a reconnect after an error) instead of a fresh one per write.
        self.persistent = persistent
        self.dsn = (f"host={demo.state.vip} port={demo.lab_pg_port} user=postgres dbname=postgres "
                    f"passfile={demo.dir / 'pgpass'}")
        # (monotonic time acknowledged, member that acknowledged)
        self.acks: list[tuple[float, str]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> VipWriter:
        import psycopg

        leader = self.demo.wait_vip()
        with psycopg.connect(self.demo.node(leader).dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (at timestamptz NOT NULL DEFAULT now())")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        argv = self.demo.client_exec([sys.executable, "-m", "tests.support.vip", self.dsn, str(self.interval),
                                        "persistent" if self.persistent else "fresh"])
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                      env=env, cwd=ROOT, start_new_session=True)
        self._reader = threading.Thread(target=self._read, name="vip-writer", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            with contextlib.suppress(ValueError):
                t, node = line.split()
                self.acks.append((float(t), node))

    def first(self, after: float, by: str | None = None, not_by: str | None = None,
              timeout: float = 60.0) -> tuple[float, str]:
        """The first write acknowledged after ``after`` (by ``by``, or by anyone but ``not_by``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, node in list(self.acks):
                if t > after and (by is None or node == by) and (not_by is None or node != not_by):
                    return t, node
            time.sleep(0.02)
        raise AssertionError(f"no write through the VIP within {timeout:.0f}s (last: {self.acks[-3:]})")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> VipWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def vip_cluster(ttl: float | None, **kw: Any) -> Iterator[DemoCluster]:
    """A 3-node `--netns --vip` demo on a free lab subnet (skips the test where namespaces cannot be made)."""
    import pytest

    why = netlab.unavailable()
    if why:
        pytest.skip(why)
    vip = str(netlab.free_subnet().network_address + 100)
    with running_cluster(nodes=3, ttl=ttl, netns=True, vip=vip, **kw) as demo:
        yield demo


def _host_number(demo: DemoCluster, name: str) -> int:
    return int(str(demo.node(name).address).rsplit(".", 1)[1])


def kill_lab_host(demo: DemoCluster, name: str) -> None:
    """The host dies with its network: off the bridge at once, every process killed, then its
    namespace deleted (a dead machine answers nothing and holds no address; the VIP goes with it)."""
    netns = demo.node(name).netns
    assert netns is not None and demo.lab is not None
    veth = demo.lab.veth(_host_number(demo, name))
    netlab.ip("link", "set", veth, "down")
    kill_host(demo, name)
    netlab.teardown([netns], None)
    # The kernel may keep the deleted namespace (and the veth) a while for sockets of the killed
    # processes; our end of the pair removes both.
    netlab.ip("link", "del", veth, check=False)


def revive_lab_host(demo: DemoCluster, name: str) -> None:
    """A host killed by ``kill_lab_host`` boots again: its namespace is back, then its agent."""
    assert demo.lab is not None
    node = demo.node(name)
    netns, address = demo.lab.add_host(name, _host_number(demo, name))
    assert (netns, address) == (node.netns, node.address)
    restart_node(demo, name)


def _write_forever(dsn: str, interval: float) -> None:
    import psycopg

    lock = threading.Lock()
    slots = threading.BoundedSemaphore(32)
    sql = f"INSERT INTO {TABLE} DEFAULT VALUES RETURNING current_setting('cluster_name')"

    def attempt() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=2,
                                 options="-c statement_timeout=2000") as conn:
                row: Any = conn.execute(sql).fetchone()  # type: ignore[arg-type]
            now = time.monotonic()
            with lock:
                print(f"{now:.6f} {row[0]}", flush=True)
        except psycopg.Error:
            pass
        finally:
            slots.release()

    while True:
        if slots.acquire(timeout=5):
            threading.Thread(target=attempt, daemon=True).start()
        time.sleep(interval)


def _write_on_one_connection(dsn: str, interval: float) -> None:
    """Each write on the same connection (opened again after an error), one after the other."""
    import psycopg

    sql = f"INSERT INTO {TABLE} DEFAULT VALUES RETURNING current_setting('cluster_name')"
    conn: Any = None
    while True:
        try:
            if conn is None:
                conn = psycopg.connect(dsn, autocommit=True, connect_timeout=2, options="-c statement_timeout=2000")
            row: Any = conn.execute(sql).fetchone()  # type: ignore[arg-type]
            print(f"{time.monotonic():.6f} {row[0]}", flush=True)
        except psycopg.Error:
            with contextlib.suppress(Exception):
                conn.close()
            conn = None
        time.sleep(interval)


if __name__ == "__main__":
    if sys.argv[3:] == ["persistent"]:
        _write_on_one_connection(sys.argv[1], float(sys.argv[2]))
    else:
        _write_forever(sys.argv[1], float(sys.argv[2]))
