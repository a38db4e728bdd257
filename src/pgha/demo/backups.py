"""`pgha demo up --backup`: a pgBackRest repository host next to the nodes.

The repository host runs ``pgha repository run`` (which runs ``pgbackrest server`` over TLS with
the repository in DIR/repository/repo); each node runs its own ``pgbackrest server`` (the
repository connects to it to take backups).  With --netns the repository host has its own
namespace (.REPOSITORY_HOST of the lab).  Certificates come from a CA made for the demo
(DIR/backup-pki): CN "repository" for the repository host, the node name for each node.

Ports from P (--port-base): the repository's TLS server P+3 (its restore tests' scratch server P+4), node
i's P+10i+3.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from pgha.dcs.base import DCSError
from pgha.demo import netlab
from pgha.demo.base import DemoBase
from pgha.demo.certs import CA, CertError, make_ca, make_cert
from pgha.demo.state import REPOSITORY_HOST, DemoError, DemoNode, _chown, _pg_owner

PGBACKREST_BIN = "/usr/bin/pgbackrest"
REPOSITORY_CN = "repository"
RESTORE_CN = "restore"


class BackupMixin(DemoBase):
    """The repository host of a --backup demo and each node's pgbackrest server."""

    backup = False
    _backup_ca: CA | None = None

    def _check_pgbackrest_binary(self) -> None:
        if self.backup and not os.access(PGBACKREST_BIN, os.X_OK):
            raise DemoError(f"{PGBACKREST_BIN} not found; install the Debian package pgbackrest (or run 'make demo')")

    @property
    def backup_pki(self) -> Path:
        return self.dir / "backup-pki"

    @property
    def repository_address(self) -> str:
        return self.lab.address(REPOSITORY_HOST) if self.lab is not None else "127.0.0.1"

    @property
    def repository_port(self) -> int:
        return self.port_base + 3

    @property
    def repository_path(self) -> Path:
        return self.dir / "repository" / "repo"

    def backup_server_port(self, i: int) -> int:
        return self.port_base + 10 * i + 3

    def _backup_cert(self, name: str, address: str) -> tuple[Path, Path]:
        try:
            if self._backup_ca is None:
                self._backup_ca = make_ca(self.backup_pki)
                os.chmod(self.backup_pki, 0o755)
            cert, key = make_cert(self._backup_ca, self.backup_pki, name, [address], dns=[address])
        except CertError as exc:
            raise DemoError(f"cannot make pgBackRest's TLS certificates: {exc}") from None
        _chown(cert)
        _chown(key)
        return cert, key

    def _backup_node_config(self, i: int, address: str | None) -> dict[str, Any]:
        """Node i's ``backup:`` section (and its certificate).  The demo's replicas are built from the
        repository once it holds a backup (postgresql.create_replica_methods, set by the caller)."""
        cert, key = self._backup_cert(self.node_name(i), address or "127.0.0.1")
        section: dict[str, Any] = {
            "repository": self.repository_address, "port": self.repository_port,
            "path": str(self.repository_path), "server_port": self.backup_server_port(i),
            "tls": {"certfile": str(cert), "keyfile": str(key), "cafile": str(self.backup_pki / "ca.crt"),
                    "repository_cn": REPOSITORY_CN},
        }
        if address:
            section["server_listen"] = address
        return section

    def _prefix(self, netns: str | None) -> tuple[list[str], dict[str, Any]]:
        owner = _pg_owner()
        if netns:
            return netlab.in_netns(netns) + netlab.as_postgres(), {}
        if owner is not None:
            return [], {"user": owner[0], "group": owner[1], "extra_groups": []}
        return [], {}

    def start_backup_server(self, node: DemoNode) -> int:
        """Node ``node``'s pgbackrest server, with the pgbackrest.conf its agent writes too."""
        from pgha import config
        from pgha.backup import archive
        from pgha.postgres.binaries import RunAs

        if node.pgbackrest_pid:
            self.reap(node.pgbackrest_pid, timeout=5)  # a previous one (killed by a test, or still running)
        cfg = config.load(node.config)
        run_as = RunAs.for_data_dir(Path(cfg.postgresql.data_dir))
        conf = archive.write_config(cfg, run_as)
        prefix, kwargs = self._prefix(node.netns)
        with open(conf.parent / "pgbackrest-server.log", "ab") as log:
            proc = subprocess.Popen([*prefix, PGBACKREST_BIN, f"--config={conf}", "server"], stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, cwd="/", **kwargs)
        self.procs[proc.pid] = proc
        node.pgbackrest_pid = proc.pid
        return proc.pid

    def _write_repository_config(self) -> Path:
        assert self.state is not None
        repo_dir = self.dir / "repository"
        repo_dir.mkdir(exist_ok=True)
        os.chmod(repo_dir, 0o755)
        _chown(repo_dir)
        address = self.repository_address
        cert, key = self._backup_cert(REPOSITORY_CN, address)
        self._backup_cert(RESTORE_CN, "127.0.0.1")
        cfg = {
            "cluster": self.cluster, "name": REPOSITORY_CN, "dcs": self._dcs_section(), "listen": address,
            # The first member of a cluster restored with `pgha restore` (its certificate: restore.crt).
            "clients": [RESTORE_CN],
            "backup": {"repository": address, "port": self.repository_port, "path": str(self.repository_path),
                       "tls": {"certfile": str(cert), "keyfile": str(key),
                               "cafile": str(self.backup_pki / "ca.crt")}},
            # Restore tests (`pgha backup verify`): the scratch server's port, P+4.
            "verify": {"port": self.port_base + 4},
        }
        path = repo_dir / "repository.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        os.chmod(path, 0o600)
        _chown(path)
        return path

    def _dcs_section(self) -> dict[str, Any]:
        raise NotImplementedError

    def start_repository(self) -> int:
        """The repository host's `pgha repository run` (in its own namespace with --netns)."""
        assert self.state is not None
        path = Path(self.state.repository_config)
        netns = self.state.repository_netns or None
        prefix, kwargs = self._prefix(netns)
        with open(path.parent / "repository.log", "ab") as log:
            proc = subprocess.Popen([*prefix, sys.executable, "-m", "pgha", "repository", "run", "-c", str(path)],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd="/",
                                    **kwargs)
        self.procs[proc.pid] = proc
        self.state.repository_pid = proc.pid
        self._save()
        return proc.pid

    def _setup_backup(self) -> None:
        """Before the agents start: the repository host and each node's pgbackrest server."""
        assert self.state is not None
        self.state.repository_config = str(self._write_repository_config())
        if self.lab is not None:
            self.state.repository_netns = self.lab.namespaces[self.lab.namespaces.index(
                next(n for n in self.lab.namespaces if n.endswith("-repository")))]
        self.start_repository()
        for node in self.state.nodes:
            self.start_backup_server(node)
        self._save()

    def _stop_backup(self) -> None:
        assert self.state is not None
        if self.state.repository_pid:
            self.reap(self.state.repository_pid, timeout=30)
        for node in self.state.nodes:
            if node.pgbackrest_pid:
                self.reap(node.pgbackrest_pid, timeout=10)

    def wait_stanza(self, timeout: float = 120.0) -> None:
        """Wait until the repository host publishes a stanza that exists (the first member made it)."""
        from pgha.backup import keys

        deadline = time.monotonic() + timeout
        while True:
            try:
                info = keys.read_info(self.store())
            except DCSError:
                info = None
            if info is not None and info.status not in ("no stanza", "unknown", "") and not info.error:
                return
            if time.monotonic() > deadline:
                raise DemoError(f"the backup repository has no stanza after {timeout:.0f}s; see "
                                f"{self.dir}/repository/repository.log and the agents' logs")
            time.sleep(0.5)
