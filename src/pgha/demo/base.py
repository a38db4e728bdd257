"""What every part of a demo shares: its settings, where things are, and its processes."""

from __future__ import annotations

import contextlib
import json
import netrc
import secrets
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3

from pgha.config import DcsConfig, EtcdConfig, ZooKeeperConfig
from pgha.core.model import ClusterView
from pgha.dcs.base import KV
from pgha.dcs.factory import dcs_url, open_kv
from pgha.dcs.store import ClusterStore
from pgha.demo import netlab
from pgha.demo.certs import CA
from pgha.demo.procs import stop_pid
from pgha.demo.state import PG_BIN, DemoNode, DemoState

if TYPE_CHECKING:
    from pgha.demo.pgbouncer_process import PgBouncerProcess


class DemoBase:
    """Settings and the bookkeeping every part of DemoCluster uses (nodes, demo.json, PIDs)."""

    def __init__(self, directory: str | Path, nodes: int = 3, port_base: int = 15400, ttl: float | None = 10.0,
                 sync: bool = False, cluster: str = "demo", loop_wait: float | None = None,
                 extra_cluster_config: dict[str, Any] | None = None,
                 netns: bool = False, vip: str | None = None,
                 extra_node_config: dict[str, dict[str, Any]] | None = None,
                 external_etcd: str | None = None,
                 say: Callable[[str], None] = lambda s: print(s, flush=True),
                 pgbouncer: bool = False, dcs: str = "etcd", etcd_members: int = 1,
                 profile: str | None = None, api_tls: bool = True, pg_tls: bool = False,
                 pg_bin: str = PG_BIN) -> None:
        self.dir = Path(directory).absolute()
        # PostgreSQL's bin directory (postgresql.bin_dir): it picks the major the demo runs.
        self.pg_bin = str(Path(pg_bin).absolute())
        self.n = nodes
        self.port_base = port_base
        # A timing profile (cluster_config.profile); an explicit ttl (and loop_wait) overrides its timings.
        self.profile = profile
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
        # The DCS the demo starts and the agents use: "etcd" or "zookeeper" (its client port is P too).
        if dcs not in ("etcd", "zookeeper"):
            raise ValueError(f"dcs {dcs!r}: use etcd or zookeeper")
        self.dcs = dcs
        # ZooKeeper's digest credential (user pgha); its CA, server and client certificates are in zk_pki.
        self.zk_password = ""
        self.bouncer_admin_password = ""
        self.bouncer_procs: dict[int, PgBouncerProcess] = {}
        # --etcd-members N > 1: an etcd cluster with TLS and auth, one namespace per member (etcd_members.py).
        self.etcd_members = etcd_members
        self.member_netns: dict[str, str] = {}
        self.pgha_etcd_password = ""
        # The REST API: basic auth with a generated password (always) and TLS with a demo CA.
        self.api_tls = api_tls
        # With api_tls: PostgreSQL serves TLS with the node's certificate and the members connect to
        # each other with sslmode=verify-full against the demo's CA (postgresql.ssl).
        self.pg_tls = pg_tls and api_tls
        self.api_user = "pgha"
        # PostgreSQL's superuser and replication passwords (None: new random ones); a second site
        # (tests/support/sites.py) takes the first site's, since its leader replicates from there.
        self.pg_passwords: tuple[str, str] | None = None
        self.api_password = secrets.token_urlsafe(16)
        self.ca: CA | None = None
        self.state: DemoState | None = None
        self._kv: KV | None = None
        # Children we started, kept so they can be reaped (no zombies, no ResourceWarning).
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    # --- layout -----------------------------------------------------------------------
    @property
    def etcd_url(self) -> str:
        return self.external_etcd or f"http://{self.dcs_host}:{self.port_base}"

    def node_name(self, i: int) -> str:
        return f"node{i}"

    @property
    def dcs_host(self) -> str:
        # In a lab the DCS listens on the bridge, the root namespace's address every namespace reaches.
        return self.lab.gateway if self.lab is not None else "127.0.0.1"

    @property
    def dcs_url(self) -> str:
        """What ``--dcs`` takes for this demo's DCS (http://… for etcd, zk://… for ZooKeeper)."""
        return dcs_url(self.dcs_config())

    def dcs_config(self, request_timeout: float = 2.0) -> DcsConfig:
        """The ``dcs:`` settings the agents, the CLI and the demo itself use."""
        if self.dcs == "zookeeper":
            if not self.zk_password and self.state is not None and self.state.nodes:
                # A demo loaded from demo.json: the password is only in the nodes' YAML.
                from pgha.config import load

                self.zk_password = load(self.state.nodes[0].config).dcs.zookeeper.password
            pki = self.zk_pki
            zk = ZooKeeperConfig((f"{self.dcs_host}:{self.port_base}",), username="pgha", password=self.zk_password,
                                 tls=True, cacert=str(pki / "ca.crt"), cert=str(pki / "pgha.crt"),
                                 key=str(pki / "pgha.key"))
            return DcsConfig(type="zookeeper", request_timeout=request_timeout, zookeeper=zk)
        return DcsConfig(request_timeout=request_timeout, etcd=EtcdConfig(endpoints=(self.etcd_url,)))

    @property
    def zk_pki(self) -> Path:
        """ZooKeeper's CA (ca.crt), its server key store and the agents' client certificate (pgha.crt)."""
        return self.dir / "zookeeper-pki"

    def open_kv(self, request_timeout: float = 2.0) -> KV:
        return open_kv(self.dcs_config(request_timeout))

    def store(self) -> ClusterStore:
        """A store on the demo's one shared KV (a ZooKeeper client holds a session and threads: one is enough)."""
        if self._kv is None:
            self._kv = self.open_kv()
        return ClusterStore(self._kv, self.cluster)

    def close_kv(self) -> None:
        kv, self._kv = self._kv, None
        if kv is not None:
            kv.close()

    def reap(self, pid: int, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        """Stop ``pid`` and, if we started it, collect its exit status."""
        stop_pid(pid, sig, timeout)
        proc = self.procs.pop(pid, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    @property
    def api_netrc(self) -> Path:
        """The API credentials, as a netrc file (``curl --netrc-file``), mode 0600."""
        return self.dir / "api.netrc"

    @property
    def api_ca(self) -> Path:
        return self.dir / "certs" / "ca.crt"

    def api_call(self, name: str, method: str, path: str, body: Any = None, raw: bytes | None = None,
                 auth: tuple[str, str] | bool = True, timeout: float = 5.0) -> tuple[int, Any]:
        """One request to node ``name``'s API, with the demo's credentials (``auth=True``), others, or
        none; verified against the demo's CA.  Returns (status, JSON body or raw bytes)."""
        assert self.state is not None
        if auth is True:
            creds = netrc.netrc(self.state.api_netrc).authenticators("pgha")
            assert creds is not None and creds[0] is not None
            auth = (creds[0], creds[2] or "")
        headers = {"Content-Type": "application/json"}
        if auth:
            headers.update(urllib3.make_headers(basic_auth=f"{auth[0]}:{auth[1]}"))
        http = urllib3.PoolManager(retries=False, timeout=timeout, ca_certs=self.state.api_ca or None)
        try:
            r = http.request(method, self.node(name).api_url + path, headers=headers,
                             body=raw if raw is not None else json.dumps(body).encode() if body is not None
                             else None)
        finally:
            http.clear()
        data = r.data
        if data and (r.headers.get("Content-Type") or "").startswith("application/json"):
            return r.status, json.loads(data)
        return r.status, data

    def api_tls_files(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of node ``name``'s API."""
        return self.dir / name / "api.crt", self.dir / name / "api.key"

    def node(self, name: str) -> DemoNode:
        assert self.state is not None
        for n in self.state.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def _save(self) -> None:
        assert self.state is not None
        (self.dir / "demo.json").write_text(json.dumps(self.state.to_json(), indent=2) + "\n")

    def view(self) -> ClusterView:
        return self.store().read()

    def node_index(self, name: str) -> int:
        assert self.state is not None
        return [n.name for n in self.state.nodes].index(name) + 1
