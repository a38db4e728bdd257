"""A local cluster on one machine: its own etcd and N agents, for trying pgha out.

The same class drives `pgha demo up/down`, the integration tests and the
benchmarks, so what a new user runs is what the tests prove.

Ports, from ``port_base`` P: etcd client P, etcd peer P+1; node i (1-based):
PostgreSQL P+10i, REST API P+10i+1, PgBouncer P+10i+2.  The default P=15400 keeps every
port below Linux's ephemeral range (32768-60999), where a client retrying a closed port can
end up connected to itself.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pgha import netlab
from pgha.core.model import ClusterView, Role
from pgha.dcs.base import DCSError
from pgha.dcs.etcd import EtcdKV
from pgha.dcs.store import ClusterStore

if TYPE_CHECKING:
    from pgha.routing.pgbouncer import PgBouncer, PgBouncerProcess

# An explicit entry for the demo's database (SHOW DATABASES lists it, so one can see where it
# points) and the fallback for every other database.
DEMO_BOUNCER_DATABASES = ("postgres", "*")

ETCD_BIN = "/usr/bin/etcd"
PG_BIN = "/usr/lib/postgresql/15/bin"
# With --netns: node i is .(NODE_HOST_BASE + i) of the lab /24, the client namespace .CLIENT_HOST.
NODE_HOST_BASE = 10
CLIENT_HOST = 250


class DemoError(Exception):
    """One line naming what went wrong and where to look."""


@dataclass
class DemoNode:
    name: str
    pg_port: int
    api_port: int
    config: str
    data_dir: str
    dsn: str
    agent_pid: int = 0
    pgbouncer_port: int | None = None
    netns: str | None = None
    address: str | None = None
    pgbouncer_pid: int | None = None


@dataclass
class DemoState:
    cluster: str
    etcd: str
    etcd_pid: int
    dir: str
    nodes: list[DemoNode] = field(default_factory=list)
    client_netns: str | None = None
    vip: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for n in d["nodes"]:
            for key in ("pgbouncer_port", "netns", "address", "pgbouncer_pid"):
                if n[key] is None:
                    del n[key]
        for key in ("client_netns", "vip"):
            if d[key] is None:
                del d[key]
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DemoState:
        nodes = [DemoNode(**n) for n in data.get("nodes", [])]
        return cls(cluster=data["cluster"], etcd=data["etcd"], etcd_pid=data.get("etcd_pid", 0),
                   dir=data.get("dir", ""), nodes=nodes, client_netns=data.get("client_netns"),
                   vip=data.get("vip"))


def _pg_owner() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def _chown(path: Path) -> None:
    owner = _pg_owner()
    if owner is not None:
        os.chown(path, *owner)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class DemoCluster:
    def __init__(self, directory: str | Path, nodes: int = 3, port_base: int = 15400, ttl: float = 10.0,
                 sync: bool = False, cluster: str = "demo", loop_wait: float | None = None,
                 extra_cluster_config: dict[str, Any] | None = None,
                 netns: bool = False, vip: str | None = None,
                 extra_node_config: dict[str, dict[str, Any]] | None = None,
                 external_etcd: str | None = None,
                 say: Callable[[str], None] = lambda s: print(s, flush=True),
                 pgbouncer: bool = False) -> None:
        self.dir = Path(directory).absolute()
        self.n = nodes
        self.port_base = port_base
        self.ttl = ttl
        self.sync = sync
        self.cluster = cluster
        self.loop_wait = loop_wait
        self.extra_cluster_config = extra_cluster_config or {}
        # --netns: every node in its own network namespace on a bridge, plus a client namespace;
        # --vip: the agents manage that address (it picks the lab's /24).
        self.netns = netns
        self.vip = vip
        self.lab: netlab.Lab | None = None
        # Per-node additions to the generated pgha.yaml, by node name ("*": every node); mappings merge.
        self.extra_node_config = extra_node_config or {}
        # Share an etcd someone else runs (several clusters in one etcd) instead of starting one.
        self.external_etcd = external_etcd
        self.say = say
        # One PgBouncer per node (port P+10i+2), managed by that node's agent.
        self.pgbouncer = pgbouncer
        self.bouncer_admin_password = ""
        self.bouncer_procs: dict[int, PgBouncerProcess] = {}
        self.state: DemoState | None = None
        # Children we started, kept so they can be reaped (no zombies, no ResourceWarning).
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    # --- layout -----------------------------------------------------------------------
    @property
    def etcd_url(self) -> str:
        # In a lab etcd listens on the bridge, the root namespace's address every namespace reaches.
        host = self.lab.gateway if self.lab is not None else "127.0.0.1"
        return self.external_etcd or f"http://{host}:{self.port_base}"

    def node_name(self, i: int) -> str:
        return f"node{i}"

    def store(self) -> ClusterStore:
        return ClusterStore(EtcdKV((self.etcd_url,), 2.0), self.cluster)

    def _node_config(self, i: int, password: str, repl_password: str) -> dict[str, Any]:
        node_dir = self.dir / self.node_name(i)
        pg_port = self.port_base + 10 * i
        api_port = pg_port + 1
        cluster_config: dict[str, Any] = {"ttl": self.ttl, "loop_wait": self.loop_wait or min(1.0, self.ttl / 4),
                                          "retry_timeout": min(3.0, self.ttl / 3),
                                          "fence_margin": min(2.0, self.ttl / 4)}
        if self.sync:
            cluster_config["synchronous_mode"] = "on"
        cluster_config.update(self.extra_cluster_config)
        cfg: dict[str, Any] = {
            "cluster": self.cluster,
            "name": self.node_name(i),
            "etcd": {"endpoints": [self.etcd_url]},
            "postgresql": {
                "data_dir": str(node_dir / "data"),
                "bin_dir": PG_BIN,
                "listen": "127.0.0.1",
                "port": pg_port,
                "superuser": {"username": "postgres", "password": password},
                "replication": {"username": "replicator", "password": repl_password},
                "parameters": {"shared_buffers": "32MB", "max_connections": 50},
            },
            "api": {"listen": f"127.0.0.1:{api_port}"},
            "cluster_config": cluster_config,
            "log": {"level": "INFO"},
            **({"pgbouncer": self._pgbouncer_config(i)} if self.pgbouncer else {}),
        }
        if self.lab is not None:
            self._lab_node_config(cfg, i)
        for key in ("*", self.node_name(i)):
            _merge(cfg, self.extra_node_config.get(key, {}))
        return cfg

    def _lab_node_config(self, cfg: dict[str, Any], i: int) -> None:
        """Inside its namespace a node listens on its own address (and the VIP, bound before it is
        held thanks to ip_nonlocal_bind); every node uses the same PostgreSQL port, so the VIP's
        port does not depend on which node holds it."""
        assert self.lab is not None
        address = self.lab.address(NODE_HOST_BASE + i)
        pg = cfg["postgresql"]
        pg["port"] = self.lab_pg_port
        pg["listen"] = f"{address},{self.vip}" if self.vip else address
        pg["connect_address"] = f"{address}:{pg['port']}"
        cfg["api"]["listen"] = f"{address}:{self.port_base + 10 * i + 1}"
        if self.vip:
            cfg["vip"] = {"address": self.vip, "prefix": self.lab.subnet.prefixlen, "interface": "eth0"}

    @property
    def lab_pg_port(self) -> int:
        return self.port_base + 10

    # --- up ----------------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> DemoState:
        if (self.dir / "demo.json").exists():
            old = DemoState.from_json(json.loads((self.dir / "demo.json").read_text()))
            if pid_alive(old.etcd_pid) or any(pid_alive(n.agent_pid) for n in old.nodes):
                raise DemoError(f"a demo is already running from {self.dir}; run 'pgha demo down --dir {self.dir}'")
        self._check_pgbouncer_binary()
        for binary in (ETCD_BIN, f"{PG_BIN}/initdb", f"{PG_BIN}/pg_ctl"):
            if not os.access(binary, os.X_OK):
                raise DemoError(f"{binary} not found; run 'make demo' (it installs postgresql-15 and etcd-server)")
        lab_subnet = self._check_lab() if self.netns or self.vip else None
        self._check_ports()
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        started = time.monotonic()
        if lab_subnet is not None:
            self._create_lab(lab_subnet)
        try:
            etcd_pid = 0 if self.external_etcd else self._start_etcd()
        except BaseException:
            self._teardown_lab()
            raise
        self.state = DemoState(cluster=self.cluster, etcd=self.etcd_url, etcd_pid=etcd_pid, dir=str(self.dir),
                               client_netns=self.lab.namespaces[-1] if self.lab else None, vip=self.vip)
        self._save()
        password = secrets.token_urlsafe(12)
        repl_password = secrets.token_urlsafe(12)
        passfile = self.dir / "pgpass"
        lines = []
        self.bouncer_admin_password = secrets.token_urlsafe(12)
        for i in range(1, self.n + 1):
            node = self._write_node(i, password, repl_password)
            lines += [f"{h}:{node.pg_port}:*:postgres:{password}" for h in (node.address or "127.0.0.1", self.vip) if h]
            self.state.nodes.append(node)
        if self.pgbouncer:
            lines += self._setup_pgbouncers(password)
        passfile.write_text("\n".join(lines) + "\n")
        os.chmod(passfile, 0o600)
        self._save()
        for node in self.state.nodes:
            node.agent_pid = self.start_agent(node.name)
            self._save()
        self.say(f"started etcd and {self.n} agents; waiting for a leader and {self.n - 1} streaming replicas")
        self.wait_healthy(timeout, started)
        if self.pgbouncer:
            self.wait_bouncers_at_leader(timeout)
        return self.state

    # --- network namespaces (--netns, --vip) --------------------------------------------
    def _check_lab(self) -> ipaddress.IPv4Network:
        """The lab's /24 (the VIP's, or a free one), after checking --netns can work here."""
        if self.vip and not self.netns:
            raise DemoError("--vip needs --netns: the VIP moves between the nodes' network namespaces")
        if self.external_etcd:
            raise DemoError("--netns starts its own etcd on the lab bridge; it cannot share an external etcd")
        subnet = self._vip_subnet() if self.vip else None
        why = netlab.unavailable()
        if why:
            raise DemoError(f"--netns: {why}; run 'pgha demo up --netns' as root")
        try:
            return subnet or netlab.free_subnet()
        except netlab.NetLabError as exc:
            raise DemoError(f"--netns: {exc}") from None

    def _vip_subnet(self) -> ipaddress.IPv4Network:
        """The VIP's /24, which must leave room for the bridge, the nodes and the client."""
        assert self.vip is not None
        try:
            subnet = netlab.subnet_of(self.vip)
        except netlab.NetLabError as exc:
            raise DemoError(f"--vip: {exc}") from None
        taken = {subnet.network_address, subnet.broadcast_address, subnet.network_address + 1,
                 subnet.network_address + CLIENT_HOST}
        taken |= {subnet.network_address + NODE_HOST_BASE + i for i in range(1, self.n + 1)}
        if ipaddress.IPv4Address(self.vip) in taken:
            raise DemoError(f"--vip {self.vip}: that address is the lab's bridge, a node or the client "
                            f"(.1, .{NODE_HOST_BASE + 1}-.{NODE_HOST_BASE + self.n}, .{CLIENT_HOST}); "
                            f"pick another one in {subnet}, e.g. {subnet.network_address + 100}")
        return subnet

    def _create_lab(self, subnet: ipaddress.IPv4Network) -> None:
        """The bridge, one namespace per node and the client's; one-line DemoError otherwise."""
        try:
            self.lab = netlab.Lab.create(subnet)
            for i in range(1, self.n + 1):
                self.lab.add_host(self.node_name(i), NODE_HOST_BASE + i)
            self.lab.add_host("client", CLIENT_HOST)
        except netlab.NetLabError as exc:
            self._teardown_lab()
            raise DemoError(f"--netns: {exc}") from None
        except BaseException:
            self._teardown_lab()
            raise
        self.say(f"network lab {subnet}: bridge {self.lab.bridge} ({self.lab.gateway}), namespaces "
                 f"{', '.join(self.lab.namespaces)}" + (f", VIP {self.vip}" if self.vip else ""))

    def _teardown_lab(self) -> None:
        if self.lab is not None:
            self.lab.teardown()

    def client_exec(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the client namespace (as is, without a lab)."""
        return netlab.in_netns(self.state.client_netns if self.state else None) + argv

    def vip_holders(self) -> list[str]:
        """The nodes whose namespace holds the VIP right now."""
        assert self.state is not None
        vip = self.state.vip
        return [n.name for n in self.state.nodes if vip and n.netns and netlab.has_address(n.netns, vip)]

    def _vip_on_leader(self, view: ClusterView) -> bool:
        """With --vip, a healthy cluster also has the VIP on its leader, and only there."""
        if self.state is None or not self.state.vip or view.leader is None:
            return True
        return self.vip_holders() == [view.leader.name]

    def wait_vip(self, timeout: float = 20.0) -> str:
        """Wait until exactly the leader holds the VIP; return the leader's name."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(DCSError):
                view = self.view()
                if view.leader is not None and self.vip_holders() == [view.leader.name]:
                    return view.leader.name
            if time.monotonic() > deadline:
                raise DemoError(f"the leader did not take the VIP {self.vip} within {timeout:.0f}s; "
                                f"see {self.dir}/node*/agent.log")
            time.sleep(0.1)

    def _check_ports(self) -> None:
        from pgha.preflight import port_free

        ports = [] if self.external_etcd else [self.port_base, self.port_base + 1]
        for i in range(1, self.n + 1):
            ports += [self.port_base + 10 * i, self.port_base + 10 * i + 1]
            ports += [self.port_base + 10 * i + 2] if self.pgbouncer else []
        for p in ports:
            if not port_free("127.0.0.1", p):
                raise DemoError(f"port {p} on 127.0.0.1 is already in use; stop what uses it or pass --port-base")

    def _start_etcd(self) -> int:
        data = self.dir / "etcd"
        peer = f"http://127.0.0.1:{self.port_base + 1}"
        with open(self.dir / "etcd.log", "ab") as log:
            proc = self._spawn_etcd(data, peer, log)
        self.procs[proc.pid] = proc
        kv = EtcdKV((self.etcd_url,), 1.0)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DemoError(f"etcd exited at start; see {self.dir / 'etcd.log'}")
            try:
                kv.get_prefix("/pgha-ping/")
                return proc.pid
            except DCSError:
                time.sleep(0.1)
        self.reap(proc.pid)
        raise DemoError(f"etcd did not become ready in 20 s; see {self.dir / 'etcd.log'}")

    def _spawn_etcd(self, data: Path, peer: str, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [ETCD_BIN, "--name", "demo", "--data-dir", str(data),
             "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"demo={peer}", "--initial-cluster-state", "new",
             "--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000",
             "--log-level", "warn", "--logger", "zap"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def reap(self, pid: int, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        """Stop ``pid`` and, if we started it, collect its exit status."""
        stop_pid(pid, sig, timeout)
        proc = self.procs.pop(pid, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def _write_node(self, i: int, password: str, repl_password: str) -> DemoNode:
        name = self.node_name(i)
        node_dir = self.dir / name
        node_dir.mkdir(exist_ok=True)
        os.chmod(node_dir, 0o755)
        _chown(node_dir)
        cfg = self._node_config(i, password, repl_password)
        path = node_dir / "pgha.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        os.chmod(path, 0o600)
        _chown(path)
        pg_port = cfg["postgresql"]["port"]
        api_port = int(cfg["api"]["listen"].rsplit(":", 1)[1])
        address = self.lab.address(NODE_HOST_BASE + i) if self.lab else None
        dsn = (f"host={address or '127.0.0.1'} port={pg_port} user=postgres dbname=postgres "
               f"passfile={self.dir / 'pgpass'}")
        return DemoNode(name=name, pg_port=pg_port, api_port=api_port, config=str(path),
                        data_dir=cfg["postgresql"]["data_dir"], dsn=dsn,
                        netns=self.lab.namespaces[i - 1] if self.lab else None, address=address)

    def start_agent(self, name: str) -> int:
        node = self.node(name)
        kwargs: dict[str, Any] = {}
        owner = _pg_owner()
        prefix: list[str] = []
        if node.netns:
            # Inside the node's namespace, as postgres with CAP_NET_ADMIN and CAP_NET_RAW only
            # (the VIP's `ip addr` and arping), as systemd's AmbientCapabilities= would run it.
            prefix = netlab.in_netns(node.netns) + netlab.as_postgres(caps=True)
        elif owner is not None:
            kwargs = {"user": owner[0], "group": owner[1], "extra_groups": []}
        with open(Path(node.config).parent / "agent.log", "ab") as log:
            proc = subprocess.Popen([*prefix, sys.executable, "-m", "pgha", "agent", "-c", node.config],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd="/", **kwargs)
        self.procs[proc.pid] = proc
        node.agent_pid = proc.pid
        self._save()
        return proc.pid

    def node(self, name: str) -> DemoNode:
        assert self.state is not None
        for n in self.state.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def _save(self) -> None:
        assert self.state is not None
        (self.dir / "demo.json").write_text(json.dumps(self.state.to_json(), indent=2) + "\n")

    # --- health -------------------------------------------------------------------------
    def view(self) -> ClusterView:
        return self.store().read()

    def wait_healthy(self, timeout: float = 120.0, started: float | None = None) -> ClusterView:
        started = started or time.monotonic()
        deadline = time.monotonic() + timeout
        last = ""
        store = self.store()
        while True:
            try:
                view = store.read()
                status = describe(view, self.n)
            except DCSError as exc:
                view, status = None, f"etcd: {exc}"
            if status != last:
                self.say(f"  [{time.monotonic() - started:5.1f}s] {status}")
                last = status
            if view is not None and healthy(view, self.n) and self._vip_on_leader(view):
                return view
            if time.monotonic() > deadline:
                logs = ", ".join(str(self.dir / n.name / "agent.log") for n in (self.state.nodes if self.state
                                                                             else []))
                raise DemoError(f"cluster not healthy after {timeout:.0f}s ({status}); see the logs: {logs}")
            for n in self.state.nodes if self.state else []:
                if n.agent_pid and not pid_alive(n.agent_pid):
                    raise DemoError(f"the agent of {n.name} exited; see {self.dir / n.name / 'agent.log'}")
            time.sleep(0.2)

    # --- down ---------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | Path) -> DemoCluster:
        d = Path(directory).absolute()
        try:
            data = json.loads((d / "demo.json").read_text())
        except FileNotFoundError:
            raise DemoError(f"no demo in {d} (no demo.json); start one with 'pgha demo up --dir {d}'") from None
        state = DemoState.from_json(data)
        port_base = int(state.etcd.rsplit(":", 1)[1])
        demo = cls(d, nodes=len(state.nodes), port_base=port_base, cluster=state.cluster,
                   external_etcd=None if state.etcd_pid else state.etcd,
                   netns=any(n.netns for n in state.nodes), vip=state.vip)
        demo.state = state
        demo.lab = _recorded_lab(state)
        return demo

    def down(self, remove_files: bool = False) -> None:
        assert self.state is not None
        for node in self.state.nodes:
            self.stop_agent(node.name)
        for node in self.state.nodes:
            self.stop_pgbouncer(node.name)
            self._stop_leftovers(node)
        if self.state.etcd_pid:
            self.reap(self.state.etcd_pid, timeout=10)
        # Namespaces (and whatever still runs in them), their veths and the bridge.
        self._teardown_lab()
        if remove_files:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / "demo.json").unlink()

    def stop_agent(self, name: str, sig: int = signal.SIGTERM) -> None:
        self.reap(self.node(name).agent_pid, sig, timeout=60)

    # --- PgBouncer (--pgbouncer) -------------------------------------------------------------
    def _check_pgbouncer_binary(self) -> None:
        from pgha.routing.pgbouncer import PGBOUNCER_BIN

        if self.pgbouncer and not os.access(PGBOUNCER_BIN, os.X_OK):
            raise DemoError(f"{PGBOUNCER_BIN} not found; install the Debian package pgbouncer (or run 'make demo')")

    def bouncer_dir(self, i: int) -> Path:
        return self.dir / self.node_name(i) / "pgbouncer"

    def _pgbouncer_config(self, i: int) -> dict[str, Any]:
        """The node file's pgbouncer section: the agent rewrites this ini and uses the admin console."""
        return {"config": str(self.bouncer_dir(i) / "pgbouncer.ini"), "admin_port": self.port_base + 10 * i + 2,
                "admin_user": "pgbouncer", "admin_password": self.bouncer_admin_password,
                "databases": list(DEMO_BOUNCER_DATABASES)}

    def _setup_pgbouncers(self, password: str) -> list[str]:
        """Write each node's pgbouncer.ini and userlist.txt, start them; return their pgpass lines.

        Clients log in as postgres with the superuser password (userlist.txt, scram-sha-256), and
        PgBouncer logs in to PostgreSQL with it; the agent uses the admin user ``pgbouncer``.
        """
        from pgha.routing.pgbouncer import render_pgbouncer_ini, render_userlist

        assert self.state is not None
        lines = []
        for i, node in enumerate(self.state.nodes, start=1):
            d = self.bouncer_dir(i)
            d.mkdir(exist_ok=True)
            os.chmod(d, 0o700)
            _chown(d)
            port = self.port_base + 10 * i + 2
            ini = d / "pgbouncer.ini"
            ini.write_text(render_pgbouncer_ini(listen_port=port, target_host="127.0.0.1",
                                                target_port=node.pg_port, dir=str(d), admin_users=("pgbouncer",),
                                                databases=DEMO_BOUNCER_DATABASES))
            users = d / "userlist.txt"
            users.write_text(render_userlist({"postgres": password, "pgbouncer": self.bouncer_admin_password}))
            for f in (ini, users):
                os.chmod(f, 0o600)
                _chown(f)
            node.pgbouncer_port = port
            lines.append(f"127.0.0.1:{port}:*:postgres:{password}")
            self.start_pgbouncer(node.name)
        return lines

    def start_pgbouncer(self, name: str) -> int:
        """Start the node's PgBouncer (as postgres) and record its PID."""
        from pgha.routing.pgbouncer import PgBouncerError, PgBouncerProcess

        node = self.node(name)
        assert node.pgbouncer_port is not None
        proc = PgBouncerProcess(self.bouncer_dir(self.node_index(name)) / "pgbouncer.ini")
        try:
            pid = proc.start("127.0.0.1", node.pgbouncer_port)
        except PgBouncerError as exc:
            raise DemoError(f"PgBouncer of {name}: {exc}") from None
        self.bouncer_procs[pid] = proc
        node.pgbouncer_pid = pid
        self._save()
        return pid

    def stop_pgbouncer(self, name: str) -> None:
        pid = self.node(name).pgbouncer_pid
        if not pid:
            return
        proc = self.bouncer_procs.pop(pid, None)
        if proc is not None:
            proc.stop()
        else:
            stop_pid(pid, timeout=10)

    def node_index(self, name: str) -> int:
        assert self.state is not None
        return [n.name for n in self.state.nodes].index(name) + 1

    def bouncer_dsn(self, name: str) -> str:
        """libpq keywords to reach the database through the node's PgBouncer (password from pgpass)."""
        node = self.node(name)
        return (f"host=127.0.0.1 port={node.pgbouncer_port} user=postgres dbname=postgres "
                f"passfile={self.dir / 'pgpass'}")

    def bouncer(self, name: str) -> PgBouncer:
        """The routing adapter of the node's PgBouncer (admin console credentials from its node file)."""
        from pgha.config import load
        from pgha.routing.pgbouncer import PgBouncer

        cfg = load(self.node(name).config).pgbouncer
        if cfg is None:
            raise DemoError(f"{name} runs no PgBouncer; start the demo with --pgbouncer")
        return PgBouncer(cfg, connect_timeout=1.0)

    def bouncer_target(self, name: str) -> tuple[str, int] | None:
        """host:port the node's pgbouncer.ini sends clients to."""
        from pgha.routing.pgbouncer import read_target

        try:
            return read_target((self.bouncer_dir(self.node_index(name)) / "pgbouncer.ini").read_text(),
                               DEMO_BOUNCER_DATABASES)
        except OSError:
            return None

    def wait_bouncers_at_leader(self, timeout: float = 30.0) -> None:
        """Until every running node's PgBouncer points at the leader (its agent repoints it)."""
        assert self.state is not None
        deadline = time.monotonic() + timeout
        while True:
            view = self.view()
            leader = self.node(view.leader.name) if view.leader is not None else None
            wrong = [n.name for n in self.state.nodes if pid_alive(n.pgbouncer_pid or 0)
                     and (leader is None or self.bouncer_target(n.name) != ("127.0.0.1", leader.pg_port))]
            if not wrong:
                return
            if time.monotonic() > deadline:
                raise DemoError(f"the PgBouncer of {', '.join(wrong)} does not point at the leader after "
                                f"{timeout:.0f}s; see {self.dir / wrong[0] / 'agent.log'}")
            time.sleep(0.1)

    def _stop_leftovers(self, node: DemoNode) -> None:
        """PostgreSQL left running by a killed agent: stop it by the PID in postmaster.pid."""
        pidfile = Path(node.data_dir) / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().split("\n", 1)[0])
            stop_pid(pid, signal.SIGQUIT, timeout=10)
        for wd in _watchdogs_of(node.config):
            stop_pid(wd, signal.SIGKILL, timeout=5)


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    """Merge ``extra`` into ``into``; nested mappings merge, anything else replaces."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _recorded_lab(state: DemoState) -> netlab.Lab | None:
    """The lab `demo up` made, rebuilt from the names demo.json records (for `demo down`)."""
    address = next((n.address for n in state.nodes if n.address), None)
    if address is None:
        return None
    subnet = netlab.subnet_of(address)
    names = [n.netns for n in state.nodes if n.netns] + ([state.client_netns] if state.client_netns else [])
    return netlab.Lab(subnet, bridge=netlab.bridge_name(subnet), namespaces=names)


def _watchdogs_of(config_path: str) -> list[int]:
    """Watchdog processes are started by the agent; find orphans by their command line."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pgha.agent.watchdog" in cmd and os.getppid() != int(entry):
            # Only orphans (reparented to init) belong to agents that are gone.
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == 1:
                out.append(int(entry))
    return out


def healthy(view: ClusterView, n: int) -> bool:
    if view.leader is None:
        return False
    leader = view.members.get(view.leader.name)
    if leader is None or leader.role != Role.PRIMARY or leader.state != "running":
        return False
    streaming = [m for m in view.members.values() if m.role == Role.REPLICA and m.state == "streaming"
                 and m.following == view.leader.name]
    if len(streaming) < n - 1:
        return False
    # In synchronous mode the cluster is only as safe as its /sync key: a failover needs it.
    return n == 1 or view.config.synchronous_mode == "off" or sync_published(view)


def sync_published(view: ClusterView) -> bool:
    return (view.leader is not None and view.sync is not None and view.sync.leader == view.leader.name
            and bool(view.sync.standbys))


def describe(view: ClusterView, n: int) -> str:
    if view.system_id is None:
        return f"initializing ({view.initializing or 'racing for /initialize'})"
    if view.leader is None:
        return "no leader yet"
    parts = []
    for name in sorted(view.members):
        m = view.members[name]
        parts.append(f"{name}: {'leader' if name == view.leader.name else m.role.value} {m.state}")
    if not parts:
        return "waiting for members"
    if view.config.synchronous_mode != "off" and not sync_published(view):
        parts.append("no synchronous standby yet")
    return "; ".join(parts)
