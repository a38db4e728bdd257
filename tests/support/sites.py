"""Two sites in the netns lab (issue 17): site A (3 members and its own etcd) and site B (2 members and
its own etcd), sharing nothing but a routed network.

* Each site is a `pgha demo up --netns` cluster (``SiteCluster``) on its own bridge and /24 inside
  198.18.0.0/15; its etcd runs on its bridge address (.1) and only its own members use it.  Member
  names carry the site's letter (a1-a3, b1-b2), so a member of one site is never taken for one of the
  other's (application_name, synchronous_standby_names).
* A router namespace has one leg on each bridge (.254 of each /24) and forwards between them; every
  member namespace routes the other site's /24 through its own site's .254 and nothing else.  Taking
  the router's leg on a site's bridge down (``cut_off``) separates the sites; each keeps its members
  and its etcd.  The test process (root namespace) is on both bridges, so it still sees either site.
* With ``standby``, site B is a standby cluster of site A (``standby_cluster:`` in its cluster config,
  streaming through the permanent slot ``site_b`` that docs/multi-host.md's step ``site-slot`` makes
  on site A, as the lab runs it), with site A's PostgreSQL passwords.  Without it, site B is a
  cluster of its own: the lab itself (routing, cuts, one etcd per site) works either way.

``TwoSites.close()`` stops every process either site started, by PID, and deletes every namespace,
veth and bridge, even after a failure half-way through ``start()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pgha.config import load
from pgha.core import standby
from pgha.core.model import ClusterConfig, ClusterView
from pgha.core.rules import RULES
from pgha.demo import DemoCluster, multihost, netlab
from pgha.faults.procs import restart_node
from tests.support.cluster import free_port_base, postgres_readable_dir
from tests.support.vip import kill_lab_host

# The router's address on each site's /24 (.254: no member, client, etcd member or repository uses it).
ROUTER_HOST = 254
# The physical slot on site A that site B's standby leader streams through.
SITE_SLOT = "site_b"
VENV_BIN = str(Path(sys.executable).parent)


def standby_supported() -> bool:
    """Whether this pgha's agents run standby clusters: ``standby_cluster:`` in the cluster config and
    the rules that act on it (``standby-*``) in the rules table."""
    return (any(f.name == "standby_cluster" for f in dataclasses.fields(ClusterConfig))
            and any(r.id.startswith("standby-") for r in RULES))


def standby_active(view: ClusterView) -> bool:
    """Whether the site runs as a standby cluster now (``standby_cluster`` in its cluster config)."""
    return standby.active(view.config.standby_cluster)


def standby_section(hosts: str, port: int) -> dict[str, Any]:
    """Site B's ``standby_cluster:`` (docs/multi-host.md section 10 shows the same keys)."""
    return {"host": hosts, "port": port, "primary_slot_name": SITE_SLOT}


class SiteCluster(DemoCluster):
    """One site: a --netns demo whose members are named after the site's letter."""

    def __init__(self, directory: Path, letter: str, on_lab: Callable[[SiteCluster], None] | None = None,
                 **kw: Any) -> None:
        super().__init__(directory, netns=True, cluster=f"site{letter}", say=lambda s: None, **kw)
        self.letter = letter
        # Called once the site's bridge and namespaces exist, before any agent starts.
        self.on_lab = on_lab

    def node_name(self, i: int) -> str:
        return f"{self.letter}{i}"

    def _create_lab(self, subnet: ipaddress.IPv4Network) -> None:
        super()._create_lab(subnet)
        if self.on_lab is not None:
            try:
                self.on_lab(self)
            except BaseException:
                self._teardown_lab()
                raise

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        assert self.lab is not None
        return self.lab.subnet

    @property
    def router_address(self) -> str:
        assert self.lab is not None
        return self.lab.address(ROUTER_HOST)

    @property
    def router_leg(self) -> str:
        """The bridge-side end of the router's veth on this site's bridge."""
        assert self.lab is not None
        return self.lab.veth(ROUTER_HOST)

    def addresses(self) -> list[str]:
        assert self.state is not None
        return [str(n.address) for n in self.state.nodes]

    def hosts(self) -> str:
        """Every member as ``address:port``, comma-separated (what standby_cluster.host takes), the
        leader's first: the other site's standby leader connects to the first that answers, and a
        pg_basebackup from a replica waits for that replica's next restartpoint (up to
        checkpoint_timeout after the primary's next checkpoint)."""
        assert self.state is not None
        view = self.view()
        first = [n for n in self.state.nodes if view.leader is not None and n.name == view.leader.name]
        nodes = first + [n for n in self.state.nodes if n not in first]
        return ",".join(f"{n.address}:{self.lab_pg_port}" for n in nodes)

    def etcd_pid(self) -> int:
        assert self.state is not None
        return self.state.etcd_pid

    def run_step(self, step: str, member: str, timeout: float = 60.0, **inputs: str) -> str:
        """A step of docs/multi-host.md, run on ``member``'s host (its namespace) with its config."""
        node = self.node(member)
        env = {"PGHA_CONFIG": node.config, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", **inputs}
        env = {k: v for k, v in env.items() if k in multihost.STEP_INPUTS[step]}
        return multihost.run_step(step, env, str(self.dir / "guide-steps.log"), netlab.in_netns(node.netns),
                                  timeout)


class TwoSites:
    """Site A and site B, each with its own etcd, on two bridges joined by a router namespace."""

    def __init__(self, directory: Path, ttl: float = 10.0, standby: bool = True, nodes_a: int = 3,
                 nodes_b: int = 2) -> None:
        self.dir = directory
        self.standby = standby
        base_a = free_port_base(nodes_a)
        base_b = base_a
        while base_b == base_a:
            base_b = free_port_base(nodes_b)
        self.a = SiteCluster(directory / "site-a", "a", nodes=nodes_a, port_base=base_a, ttl=ttl)
        self.b = SiteCluster(directory / "site-b", "b", on_lab=self._join, nodes=nodes_b, port_base=base_b, ttl=ttl)
        self.router_netns = ""

    @property
    def sites(self) -> tuple[SiteCluster, SiteCluster]:
        return self.a, self.b

    def start(self, timeout: float = 180.0) -> None:
        try:
            self.a.up(timeout=timeout)
            # The guide's step, as written, on a site A host (run whether or not site B follows it).
            self.a.run_step("site-slot", self.a.node_name(1), SLOT=SITE_SLOT)
            a_cfg = load(self.a.node(self.a.node_name(1)).config).postgresql
            self.b.pg_passwords = (a_cfg.superuser.password, a_cfg.replication.password)
            if self.standby:
                self.b.extra_cluster_config = {"standby_cluster": standby_section(self.a.hosts(), self.a.lab_pg_port)}
            self.b.up(timeout=timeout)
            self._write_passfile()
        except BaseException:
            self.close()
            raise

    def _join(self, b: SiteCluster) -> None:
        """The router between the two bridges (once site B's exists), and each member's route to the other site."""
        a = self.a
        assert a.lab is not None and b.lab is not None
        self.router_netns = f"pgdemo{a.lab.tag}-router"
        netlab.ip("netns", "add", self.router_netns)
        for site, ifname in ((a, "eth0"), (b, "eth1")):
            netlab.ip("link", "add", site.router_leg, "type", "veth", "peer", "name", ifname, "netns",
                      self.router_netns)
            netlab.ip("link", "set", site.router_leg, "master", site.lab.bridge, "up")  # type: ignore[union-attr]
            netlab.ip("-n", self.router_netns, "addr", "add", f"{site.router_address}/24", "dev", ifname)
            netlab.ip("-n", self.router_netns, "link", "set", ifname, "up")
        netlab.ip("-n", self.router_netns, "link", "set", "lo", "up")
        netlab.ip("netns", "exec", self.router_netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for site, other in ((a, b), (b, a)):
            for netns in site.lab.namespaces:  # type: ignore[union-attr]
                self.route(site, netns, other)

    def route(self, site: SiteCluster, netns: str, other: SiteCluster) -> None:
        """``netns`` (of ``site``) reaches ``other``'s /24 through the router."""
        netlab.ip("-n", netns, "route", "replace", str(other.subnet), "via", site.router_address)

    def other(self, site: SiteCluster) -> SiteCluster:
        return self.b if site is self.a else self.a

    def kill_host(self, site: SiteCluster, name: str) -> None:
        """Member ``name``'s host dies: off its bridge, every process killed, its namespace gone (its
        address answers nothing, so the other site's connections to it fail instead of hanging)."""
        kill_lab_host(site, name)

    def revive_host(self, site: SiteCluster, name: str) -> None:
        """The host boots again: its namespace and route to the other site, then its agent."""
        assert site.lab is not None
        node = site.node(name)
        netns, address = site.lab.add_host(name, int(str(node.address).rsplit(".", 1)[1]))
        assert (netns, address) == (node.netns, node.address)
        self.route(site, netns, self.other(site))
        restart_node(site, name)

    def cut_off(self, site: SiteCluster) -> None:
        """The site loses the other one (its members and etcd still reach each other)."""
        netlab.ip("link", "set", site.router_leg, "down")

    def reconnect(self, site: SiteCluster) -> None:
        netlab.ip("link", "set", site.router_leg, "up")

    def freeze_etcd(self, site: SiteCluster) -> None:
        """The site's DCS vanishes (SIGSTOP: it refuses nothing, it just never answers)."""
        os.kill(site.etcd_pid(), signal.SIGSTOP)

    def thaw_etcd(self, site: SiteCluster) -> None:
        os.kill(site.etcd_pid(), signal.SIGCONT)

    @property
    def passfile(self) -> Path:
        return self.dir / "pgpass"

    def _write_passfile(self) -> None:
        """Both sites' .pgpass lines in one file (the same password, with ``standby``), for a client
        naming both sites."""
        text = "".join((s.dir / "pgpass").read_text() for s in self.sites)
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)

    def dsn(self, session_attrs: str = "read-write") -> str:
        """A multi-host DSN naming every member of both sites (site A first)."""
        hosts = [*self.a.addresses(), *self.b.addresses()]
        ports = [str(self.a.lab_pg_port)] * self.a.n + [str(self.b.lab_pg_port)] * self.b.n
        return (f"host={','.join(hosts)} port={','.join(ports)} user=postgres dbname=postgres "
                f"target_session_attrs={session_attrs} passfile={self.passfile} connect_timeout=2")

    def close(self) -> None:
        """Stop both sites (every process by PID), then the router; namespaces, veths and bridges go."""
        for site in (self.b, self.a):
            if site.state is not None:
                if site.etcd_pid():
                    # A frozen etcd (a test that failed half-way) must run again to hear SIGTERM.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(site.etcd_pid(), signal.SIGCONT)
                site.down()
            else:
                site._teardown_lab()
        if self.router_netns:
            # The sites' teardown removed the router's legs with their other veths.
            netlab.teardown([self.router_netns], None)


def reaches(netns: str | None, address: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a TCP connection from ``netns`` to ``address``:``port`` opens within ``timeout``."""
    ipaddress.IPv4Address(address)  # only an address we made
    script = f"exec 3<>/dev/tcp/{address}/{int(port)}"
    res = subprocess.run([*netlab.in_netns(netns), "timeout", str(timeout), "bash", "-c", script],
                         capture_output=True, timeout=timeout + 10, check=False)
    return res.returncode == 0


@contextmanager
def two_sites(ttl: float = 10.0, standby: bool = True) -> Iterator[TwoSites]:
    """Two sites on free subnets and ports (skips where namespaces cannot be made); always torn down."""
    import pytest

    why = netlab.unavailable()
    if why:
        pytest.skip(why)
    with postgres_readable_dir("pgha-sites-") as tmp:
        sites = TwoSites(tmp, ttl=ttl, standby=standby)
        sites.start()
        try:
            yield sites
        finally:
            sites.close()


class SiteWriter:
    """A client writing one row at a time through ``TwoSites.dsn()`` (every member of both sites,
    target_session_attrs=read-write), on one connection opened again after an error, each attempt
    with its own deadlines (connect 2 s, statement 2 s).  Remembers every acknowledged id and when."""

    def __init__(self, sites: TwoSites, table: str = "site_rows", interval: float = 0.02,
                 first_id: int = 10**12) -> None:
        self.dsn = sites.dsn()
        self.table = table
        self.interval = interval
        self._ids = itertools.count(first_id)
        # (id, monotonic time acknowledged)
        self.acks: list[tuple[int, float]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="site-writer", daemon=True)

    @property
    def acked(self) -> list[int]:
        return [i for i, _ in self.acks]

    def _run(self) -> None:
        import psycopg

        conn: Any = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True, options="-c statement_timeout=2000")
                i = next(self._ids)
                conn.execute(f"INSERT INTO {self.table} (id) VALUES (%s)", (i,))
                self.acks.append((i, time.monotonic()))
            except psycopg.Error:
                self.errors += 1
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
            self._stop.wait(self.interval)
        with contextlib.suppress(Exception):
            conn.close()

    def wait_acks(self, count: int, after: float = 0.0, timeout: float = 60.0) -> None:
        """Until ``count`` writes acknowledged after ``after`` (monotonic)."""
        deadline = time.monotonic() + timeout
        while sum(1 for _, t in self.acks if t > after) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the client got fewer than {count} writes acknowledged in {timeout:.0f}s "
                                     f"({self.errors} errors)")
            time.sleep(0.05)

    def max_gap(self, since: float) -> float:
        """The longest time between two acknowledged writes after ``since``."""
        times = [since] + [t for _, t in self.acks if t > since]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def lost(self, dsn: str) -> list[int]:
        """The acknowledged ids the server at ``dsn`` does not have."""
        import psycopg

        acked = self.acked
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute(f"SELECT id FROM {self.table} WHERE id = ANY(%s)", (acked,)).fetchall()
        have = {r[0] for r in rows}
        return [i for i in acked if i not in have]

    def __enter__(self) -> SiteWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
