"""DemoCluster: `pgha demo up/down` — its own etcd (or ZooKeeper), N agents, optionally PgBouncers, a lab.

The port layout and what the demo is for are described in the package docstring (pgha/demo/__init__.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from pgha.core.model import ClusterView
from pgha.dcs.base import DCSError
from pgha.demo import netlab, zkserver
from pgha.demo.backups import BackupMixin
from pgha.demo.bouncers import BouncerMixin
from pgha.demo.certs import CertError, make_ca, make_cert
from pgha.demo.etcd_members import EtcdMembersMixin
from pgha.demo.lab import LabMixin, _recorded_lab
from pgha.demo.procs import pid_alive, stop_pid
from pgha.demo.state import (
    ETCD_BIN,
    NODE_HOST_BASE,
    PG_BIN,
    DemoError,
    DemoNode,
    DemoState,
    _chown,
    _merge,
    _pg_owner,
    describe,
    healthy,
    orphan_watchdogs,
    write_private,
)


class DemoCluster(EtcdMembersMixin, LabMixin, BouncerMixin, BackupMixin):
    """A local cluster: etcd, N agents and, as asked, PgBouncers and a network lab."""

    def _node_config(self, i: int, password: str, repl_password: str) -> dict[str, Any]:
        node_dir = self.dir / self.node_name(i)
        pg_port = self.port_base + 10 * i
        api_port = pg_port + 1
        cluster_config: dict[str, Any] = {"profile": self.profile} if self.profile else {}
        if self.ttl is not None:
            cluster_config.update({"ttl": self.ttl, "loop_wait": self.loop_wait or min(1.0, self.ttl / 4),
                                   "retry_timeout": min(3.0, self.ttl / 3), "fence_margin": min(2.0, self.ttl / 4)})
        if self.sync:
            cluster_config["synchronous_mode"] = "on"
        cluster_config.update(self.extra_cluster_config)
        cfg: dict[str, Any] = {
            "cluster": self.cluster,
            "name": self.node_name(i),
            "dcs": self._dcs_section(),
            "postgresql": {
                "data_dir": str(node_dir / "data"),
                "bin_dir": self.pg_bin,
                "listen": "127.0.0.1",
                "port": pg_port,
                "superuser": {"username": "postgres", "password": password},
                "replication": {"username": "replicator", "password": repl_password},
                "parameters": {"shared_buffers": "32MB", "max_connections": 50},
            },
            "api": {"listen": f"127.0.0.1:{api_port}",
                    "auth": {"username": self.api_user, "password": self.api_password}},
            "cluster_config": cluster_config,
            "log": {"level": "INFO"},
            **({"pgbouncer": self._pgbouncer_config(i)} if self.pgbouncer else {}),
        }
        if self.api_tls:
            certfile, keyfile = self.api_tls_files(self.node_name(i))
            cfg["api"]["tls"] = {"certfile": str(certfile), "keyfile": str(keyfile), "cafile": str(self.api_ca)}
            if self.pg_tls:
                cfg["postgresql"]["ssl"] = {"sslmode": "verify-full", "sslrootcert": str(self.api_ca)}
                cfg["postgresql"]["parameters"].update(ssl=True, ssl_cert_file=str(certfile),
                                                       ssl_key_file=str(keyfile))
        if self.lab is not None:
            self._lab_node_config(cfg, i)
        if self.backup:
            cfg["backup"] = self._backup_node_config(i, self.lab.address(NODE_HOST_BASE + i) if self.lab else None)
            cfg["postgresql"]["create_replica_methods"] = ["pgbackrest", "basebackup"]
        for key in ("*", self.node_name(i)):
            _merge(cfg, self.extra_node_config.get(key, {}))
        return cfg

    def _dcs_section(self) -> dict[str, Any]:
        """The nodes' ``dcs:`` section: ``dcs_config()`` as YAML (defaults left out)."""
        dcs = self.dcs_config()
        section: dict[str, Any] = {"type": dcs.type}
        if dcs.type == "zookeeper":
            zk = {k: v for k, v in dataclasses.asdict(dcs.zookeeper).items() if v}
            section["zookeeper"] = {**zk, "hosts": list(dcs.zookeeper.hosts)}
        else:
            etcd = {k: v for k, v in dataclasses.asdict(dcs.etcd).items() if v}
            section["etcd"] = {**etcd, "endpoints": list(dcs.etcd.endpoints)}
        return section

    # --- up ----------------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> DemoState:
        if (self.dir / "demo.json").exists():
            old = DemoState.from_json(json.loads((self.dir / "demo.json").read_text()))
            if any(pid_alive(p) for p in [old.etcd_pid, *(n.agent_pid for n in old.nodes),
                                          *(m.pid for m in old.etcd_members)]):
                raise DemoError(f"a demo is already running from {self.dir}; run 'pgha demo down --dir {self.dir}'")
        self._check_pgbouncer_binary()
        self._check_pgbackrest_binary()
        self._check_etcd_members()
        for binary in ((ETCD_BIN,) if self.dcs == "etcd" else ()) + (f"{self.pg_bin}/initdb", f"{self.pg_bin}/pg_ctl"):
            if not os.access(binary, os.X_OK):
                fix = ("fix --pg-bin" if self.pg_bin != PG_BIN else
                       "run 'make demo' (it installs postgresql-15 and etcd-server)")
                raise DemoError(f"{binary} not found; {fix}")
        if self.dcs == "zookeeper" and zkserver.missing_binaries():
            raise DemoError(str(zkserver.missing_binaries()))
        lab_subnet = self._check_lab() if self.netns or self.vip else None
        self._check_ports()
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        started = time.monotonic()
        if lab_subnet is not None:
            self._create_lab(lab_subnet)
        try:
            etcd_pid = 0 if self.external_etcd or self.etcd_members > 1 else self._start_dcs()
            self.state = DemoState(cluster=self.cluster, etcd=self.dcs_url, etcd_pid=etcd_pid, dir=str(self.dir),
                                   client_netns=self.lab.namespaces[self.n] if self.lab else None, vip=self.vip,
                                   dcs=self.dcs, port_base=self.port_base, api_netrc=str(self.api_netrc),
                                   api_ca=str(self.api_ca) if self.api_tls else "")
            self._save()
            if self.etcd_members > 1:
                self._start_etcd_members()
        except BaseException:
            if self.state is not None:
                self._stop_etcd_members()
            self._teardown_lab()
            raise
        self._write_api_credentials()
        password, repl_password = self.pg_passwords or (secrets.token_urlsafe(12), secrets.token_urlsafe(12))
        passfile = self.dir / "pgpass"
        lines = []
        self.bouncer_admin_password = secrets.token_urlsafe(12)
        for i in range(1, self.n + 1):
            node = self._write_node(i, password, repl_password)
            lines += [f"{h}:{node.pg_port}:*:postgres:{password}" for h in (node.address or "127.0.0.1", self.vip) if h]
            self.state.nodes.append(node)
        if self.pgbouncer:
            lines += self._setup_pgbouncers(password)
        write_private(passfile, "\n".join(lines) + "\n", give_to_postgres=False)
        self._save()
        if self.backup:
            self._setup_backup()
        for node in self.state.nodes:
            node.agent_pid = self.start_agent(node.name)
            self._save()
        members = f" ({self.etcd_members} members)" if self.etcd_members > 1 else ""
        self.say(f"started {'ZooKeeper' if self.dcs == 'zookeeper' else 'etcd'}{members} and {self.n} agents; "
                 f"waiting for a leader and {self.n - 1} streaming replicas")
        self.wait_healthy(timeout, started)
        if self.backup:
            self.say("waiting for the first member to create the pgBackRest stanza")
            self.wait_stanza(timeout)
        if self.pgbouncer:
            self.wait_bouncers_at_leader(timeout)
        return self.state

    def _check_ports(self) -> None:
        from pgha.preflight import port_free

        ports = [] if self.external_etcd or self.etcd_members > 1 else [self.port_base, self.port_base + 1]
        ports += [self.port_base + 3] if self.backup else []
        for i in range(1, self.n + 1):
            ports += [self.port_base + 10 * i, self.port_base + 10 * i + 1]
            ports += [self.port_base + 10 * i + 2] if self.pgbouncer else []
            ports += [self.port_base + 10 * i + 3] if self.backup else []
        for p in ports:
            if not port_free("127.0.0.1", p):
                raise DemoError(f"port {p} on 127.0.0.1 is already in use; stop what uses it or pass --port-base")

    def _start_dcs(self) -> int:
        """Start the demo's etcd or ZooKeeper and wait until it serves; its PID."""
        name = "ZooKeeper" if self.dcs == "zookeeper" else "etcd"
        log_path = self.dir / f"{self.dcs}.log"
        proc: subprocess.Popen[bytes] | None = None
        with open(log_path, "ab") as log:
            if self.dcs == "zookeeper":
                zk_dir = self.dir / "zookeeper"
                zk_dir.mkdir(exist_ok=True)
                try:
                    tls = self._make_zk_pki()
                    proc = zkserver.spawn(zk_dir, self.port_base, log, host=self.dcs_host, tls=tls)
                    self.procs[proc.pid] = proc
                    # The JVM takes seconds to start (more on a busy machine): wait for it to serve first.
                    zkserver.wait_ready(proc, self.port_base, log_path, host=self.dcs_host, tls=tls)
                except zkserver.ZooKeeperStartError as exc:
                    if proc is not None:
                        self.reap(proc.pid)
                    raise DemoError(str(exc)) from None
            else:
                proc = self._spawn_etcd(self.dir / "etcd", f"http://127.0.0.1:{self.port_base + 1}", log)
        self.procs[proc.pid] = proc
        kv = self.open_kv(1.0)
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise DemoError(f"{name} exited at start; see {log_path}")
                try:
                    kv.get_prefix("/pgha-ping/")
                    return proc.pid
                except DCSError:
                    time.sleep(0.1)
        finally:
            kv.close()
        self.reap(proc.pid)
        raise DemoError(f"{name} did not become ready in 30 s; see {log_path}")

    def _make_zk_pki(self) -> zkserver.ServerTLS:
        """ZooKeeper's TLS files and the agents' credential: TLS only, client certificates, digest ACLs."""
        self.zk_password = secrets.token_urlsafe(16)
        try:
            tls = zkserver.make_pki(self.zk_pki, sorted({"127.0.0.1", self.dcs_host}))
        except CertError as exc:
            raise DemoError(f"cannot make ZooKeeper's TLS certificates: {exc}") from None
        os.chmod(self.zk_pki, 0o755)
        _chown(tls.client_key)  # the agents run as postgres
        return tls

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

    def _write_api_credentials(self) -> None:
        """The API password where the operator (curl --netrc-file) and the tests find it."""
        write_private(self.api_netrc, f"default login {self.api_user} password {self.api_password}\n",
                      give_to_postgres=False)

    def _make_api_cert(self, name: str, address: str | None) -> None:
        """Node ``name``'s API certificate, signed by the demo's CA (made with the first one)."""
        cert, key = self.api_tls_files(name)
        try:
            if self.ca is None:
                self.ca = make_ca(self.api_ca.parent)
                os.chmod(self.api_ca.parent, 0o755)
            made = make_cert(self.ca, cert.parent, "api", ["127.0.0.1", *([address] if address else [])])
        except CertError as exc:
            raise DemoError(f"cannot make the API's TLS certificates: {exc}") from None
        assert made == (cert, key)
        _chown(cert)
        _chown(key)

    def _write_node(self, i: int, password: str, repl_password: str) -> DemoNode:
        name = self.node_name(i)
        node_dir = self.dir / name
        node_dir.mkdir(exist_ok=True)
        os.chmod(node_dir, 0o755)
        _chown(node_dir)
        cfg = self._node_config(i, password, repl_password)
        path = node_dir / "pgha.yaml"
        write_private(path, yaml.safe_dump(cfg, sort_keys=False))
        pg_port = cfg["postgresql"]["port"]
        api_port = int(cfg["api"]["listen"].rsplit(":", 1)[1])
        address = self.lab.address(NODE_HOST_BASE + i) if self.lab else None
        if self.api_tls:
            self._make_api_cert(name, address)
        dsn = (f"host={address or '127.0.0.1'} port={pg_port} user=postgres dbname=postgres "
               f"passfile={self.dir / 'pgpass'}")
        api_url = f"{'https' if self.api_tls else 'http'}://{address or '127.0.0.1'}:{api_port}"
        return DemoNode(name=name, pg_port=pg_port, api_port=api_port, config=str(path), api_url=api_url,
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
        port_base = state.port_base or int(state.etcd.rsplit(":", 1)[1])
        members = len(state.etcd_members) or 1
        demo = cls(d, nodes=len(state.nodes), port_base=port_base, cluster=state.cluster,
                   external_etcd=None if state.etcd_pid or members > 1 else state.etcd,
                   netns=any(n.netns for n in state.nodes), vip=state.vip, dcs=state.dcs, etcd_members=members,
                   api_tls=bool(state.api_ca))
        demo.backup = bool(state.repository_config)
        demo.state = state
        demo.lab = _recorded_lab(state)
        return demo

    def down(self, remove_files: bool = False) -> None:
        assert self.state is not None
        for node in self.state.nodes:
            self.stop_agent(node.name)
        self._stop_backup()
        for node in self.state.nodes:
            self.stop_pgbouncer(node.name)
            self._stop_leftovers(node)
        self.close_kv()
        if self.state.etcd_pid:
            self.reap(self.state.etcd_pid, timeout=10)
        self._stop_etcd_members()
        # Namespaces (and whatever still runs in them), their veths and the bridge.
        self._teardown_lab()
        if remove_files:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / "demo.json").unlink()

    def stop_agent(self, name: str, sig: int = signal.SIGTERM) -> None:
        self.reap(self.node(name).agent_pid, sig, timeout=60)

    def _stop_leftovers(self, node: DemoNode) -> None:
        """PostgreSQL left running by a killed agent: stop it by the PID in postmaster.pid."""
        pidfile = Path(node.data_dir) / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().split("\n", 1)[0])
            stop_pid(pid, signal.SIGQUIT, timeout=10)
        for wd in orphan_watchdogs():
            stop_pid(wd, signal.SIGKILL, timeout=5)
