"""`pgha demo up --netns --etcd-members N`: an etcd cluster of N members, each in its own network
namespace on the lab bridge, with TLS on the client and peer ports, client certificates required,
and authentication on.

It is built with the steps of docs/multi-host.md (pgha.demo.multihost), run in the "hosts":
the CA and every certificate in <dir>/etcd-pki (the admin machine is the root namespace),
member i's environment file, data and log in <dir>/etcdI, and the users from the root namespace.
The agents get every endpoint, the CA, the client certificate ``pgha`` and the pgha user's
password (in their node YAML, mode 0600); root's password is in <dir>/etcd-pki/root.password
(mode 0600) for the operator's etcdctl.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

from pgha.config import DcsConfig, EtcdConfig, load
from pgha.demo import multihost, netlab
from pgha.demo.base import DemoBase
from pgha.demo.procs import pid_alive
from pgha.demo.state import ETCD_BIN, ETCD_HOST_BASE, DemoError, DemoEtcdMember, _chown, write_private

ETCD_CLIENT_PORT = 2379
# The etcd user the agents log in as, and the prefix its role may read and write.
PGHA_ETCD_USER = "pgha"


class EtcdMembersMixin(DemoBase):
    """Certificates, members and users of a multi-member etcd."""

    @property
    def pki(self) -> Path:
        return self.dir / "etcd-pki"

    def member_name(self, i: int) -> str:
        return f"etcd{i}"

    def member_address(self, i: int) -> str:
        assert self.lab is not None
        return self.lab.address(ETCD_HOST_BASE + i)

    def etcd_endpoints(self) -> list[str]:
        if self.etcd_members > 1:
            return [f"https://{self.member_address(i)}:{ETCD_CLIENT_PORT}" for i in range(1, self.etcd_members + 1)]
        return [self.etcd_url]

    def _check_etcd_members(self) -> None:
        n = self.etcd_members
        if n < 1 or n % 2 == 0:
            raise DemoError(f"--etcd-members {n}: use an odd number (1, 3, 5) so a majority survives a loss")
        if n > 1 and self.dcs != "etcd":
            raise DemoError(f"--etcd-members {n} runs etcd; it does not combine with --dcs {self.dcs}")
        if n > 1 and not self.netns:
            raise DemoError(f"--etcd-members {n} needs --netns: each member runs in its own network namespace")
        for tool, package in (("/usr/bin/openssl", "openssl"), ("/usr/bin/etcdctl", "etcd-client")):
            if n > 1 and not os.access(tool, os.X_OK):
                raise DemoError(f"{tool} not found; run 'make demo' (it installs {package}) for the etcd members")

    def _add_member_hosts(self) -> None:
        """Member i's namespace, .(ETCD_HOST_BASE + i) on the lab bridge (a single etcd stays in the root one)."""
        assert self.lab is not None
        if self.etcd_members > 1:
            for i in range(1, self.etcd_members + 1):
                netns, _ = self.lab.add_host(self.member_name(i), ETCD_HOST_BASE + i)
                self.member_netns[self.member_name(i)] = netns

    def _step(self, name: str, log: Path, prefix: list[str] | None = None, **inputs: str) -> str:
        try:
            return multihost.run_step(name, inputs, str(log), prefix or [])
        except multihost.StepError as exc:
            raise DemoError(str(exc)) from None

    # --- certificates ---------------------------------------------------------------------
    def _make_pki(self) -> None:
        """The guide's steps 1 and 2: a CA, a certificate per member, one for the agents, one for the admin."""
        self.pki.mkdir(mode=0o755, exist_ok=True)
        log = self.pki / "openssl.log"
        self._step("ca", log, PKI=str(self.pki))
        for i in range(1, self.etcd_members + 1):
            self._step("cert", log, PKI=str(self.pki), NAME=self.member_name(i), SUBJECT=f"/CN={self.member_name(i)}",
                       SAN=f"IP:{self.member_address(i)},IP:127.0.0.1")
        for client in (PGHA_ETCD_USER, "admin"):
            self._step("cert", log, PKI=str(self.pki), NAME=client, SUBJECT=f"/O={client}", SAN=f"DNS:{client}")
        # The agents run as postgres: their key is theirs.
        _chown(self.pki / f"{PGHA_ETCD_USER}.key")

    # --- members -----------------------------------------------------------------------------
    def _start_etcd_members(self) -> None:
        """Write each member's environment file (step 3), start the members, wait for them, add
        the users and turn authentication on (step 4)."""
        assert self.state is not None and self.lab is not None
        self._make_pki()
        n = self.etcd_members
        initial = ",".join(f"{self.member_name(i)}=https://{self.member_address(i)}:2380" for i in range(1, n + 1))
        for i in range(1, n + 1):
            mdir = self.dir / self.member_name(i)
            mdir.mkdir(mode=0o700, exist_ok=True)
            self._step("etcd-env", mdir / "steps.log", ETCD_ENV_FILE=str(mdir / "etcd.env"),
                       NAME=self.member_name(i), DATA_DIR=str(mdir / "data"), IP=self.member_address(i),
                       INITIAL_CLUSTER=initial, PKI=str(self.pki))
            member = DemoEtcdMember(name=self.member_name(i), netns=self.member_netns[self.member_name(i)],
                                    address=self.member_address(i), data_dir=str(mdir / "data"))
            self.state.etcd_members.append(member)
            self.start_etcd_member(member.name)
        self.wait_etcd_members()
        root_password = secrets.token_urlsafe(16)
        pw = self.pki / "root.password"
        write_private(pw, root_password + "\n", give_to_postgres=False)
        self.pgha_etcd_password = secrets.token_urlsafe(16)
        self._step("etcd-auth", self.pki / "auth.log", ENDPOINTS=",".join(self.etcd_endpoints()),
                   PKI=str(self.pki), ROOT_PASSWORD=root_password, PGHA_PASSWORD=self.pgha_etcd_password)

    def etcd_member(self, name: str) -> DemoEtcdMember:
        assert self.state is not None
        for m in self.state.etcd_members:
            if m.name == name:
                return m
        raise KeyError(name)

    def start_etcd_member(self, name: str) -> int:
        """Start (or restart) a member in its namespace, its settings from its environment file."""
        member = self.etcd_member(name)
        mdir = Path(member.data_dir).parent
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               **multihost.read_env_file(str(mdir / "etcd.env"))}
        if member.pid and pid_alive(member.pid):
            raise DemoError(f"etcd member {name} is already running (pid {member.pid})")
        if (mdir / "data" / "member").exists():
            env["ETCD_INITIAL_CLUSTER_STATE"] = "existing"
        with open(mdir / "etcd.log", "ab") as log:
            proc = subprocess.Popen([*netlab.in_netns(member.netns), ETCD_BIN], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
        self.procs[proc.pid] = proc
        member.pid = proc.pid
        self._save()
        return proc.pid

    def stop_etcd_member(self, name: str, sig: int = signal.SIGTERM) -> None:
        member = self.etcd_member(name)
        self.reap(member.pid, sig, timeout=10)

    def member_health(self, name: str, timeout: float = 1.0) -> bool:
        """Whether this member answers /health with "true" (it is part of a quorum)."""
        import urllib3

        member = self.etcd_member(name)
        pool = urllib3.PoolManager(ca_certs=str(self.pki / "ca.crt"), cert_file=str(self.pki / "admin.crt"),
                                   key_file=str(self.pki / "admin.key"), retries=False,
                                   timeout=urllib3.Timeout(connect=timeout, read=timeout))
        try:
            resp = pool.request("GET", f"https://{member.address}:{ETCD_CLIENT_PORT}/health")
            return resp.status == 200 and b'"true"' in resp.data
        except (urllib3.exceptions.HTTPError, OSError):
            return False
        finally:
            pool.clear()

    def wait_etcd_members(self, timeout: float = 30.0) -> None:
        assert self.state is not None
        deadline = time.monotonic() + timeout
        for m in self.state.etcd_members:
            while not self.member_health(m.name):
                if not pid_alive(m.pid):
                    raise DemoError(f"etcd member {m.name} exited at start; see {Path(m.data_dir).parent}/etcd.log")
                if time.monotonic() > deadline:
                    raise DemoError(f"etcd member {m.name} not healthy after {timeout:.0f}s; "
                                    f"see {Path(m.data_dir).parent}/etcd.log")
                time.sleep(0.2)

    def etcd_leader(self) -> str | None:
        """The member that leads the etcd cluster now (from each member's status), or None."""
        assert self.state is not None
        endpoints: dict[int, str] = {}
        leader = 0
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            for entry in json.loads(self.etcdctl("endpoint status -w json", check=False) or "[]"):
                status = entry.get("Status", {})
                endpoints[int(status.get("header", {}).get("member_id", 0))] = entry.get("Endpoint", "")
                leader = int(status.get("leader", 0)) or leader
        for m in self.state.etcd_members:
            if endpoints.get(leader) == f"https://{m.address}:{ETCD_CLIENT_PORT}":
                return m.name
        return None

    def etcdctl(self, command: str, check: bool = True) -> str:
        """An etcdctl command (words, no secrets) against every member, from the root namespace, as the
        admin client certificate."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ETCDCTL_API": "3",
               "ETCDCTL_ENDPOINTS": ",".join(self.etcd_endpoints()), "ETCDCTL_CACERT": str(self.pki / "ca.crt"),
               "ETCDCTL_CERT": str(self.pki / "admin.crt"), "ETCDCTL_KEY": str(self.pki / "admin.key"),
               "ETCDCTL_DIAL_TIMEOUT": "1s", "ETCDCTL_COMMAND_TIMEOUT": "2s"}
        res = subprocess.run(["etcdctl", *command.split()], env=env, capture_output=True, text=True,
                             timeout=30, check=False)
        if check and res.returncode != 0:
            raise DemoError(f"etcdctl {command}: {res.stderr.strip().splitlines()[-1:] or res.returncode}")
        return res.stdout

    def dcs_config(self, request_timeout: float = 2.0) -> DcsConfig:
        """With several members: every endpoint, the CA, the agents' client certificate and the pgha user."""
        if self.etcd_members == 1:
            return super().dcs_config(request_timeout)
        if not self.pgha_etcd_password and self.state is not None and self.state.nodes:
            # A demo loaded from demo.json: the password is only in the nodes' YAML.
            self.pgha_etcd_password = load(self.state.nodes[0].config).dcs.etcd.password
        etcd = EtcdConfig(endpoints=tuple(self.etcd_endpoints()), cacert=str(self.pki / "ca.crt"),
                          cert=str(self.pki / f"{PGHA_ETCD_USER}.crt"), key=str(self.pki / f"{PGHA_ETCD_USER}.key"),
                          username=PGHA_ETCD_USER, password=self.pgha_etcd_password)
        return DcsConfig(request_timeout=request_timeout, etcd=etcd)

    def _stop_etcd_members(self) -> None:
        assert self.state is not None
        for m in self.state.etcd_members:
            self.reap(m.pid, timeout=10)
