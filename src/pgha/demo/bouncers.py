"""--pgbouncer: one PgBouncer per node, managed by that node's agent."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgha.demo.base import DemoBase
from pgha.demo.procs import pid_alive, stop_pid
from pgha.demo.state import DEMO_BOUNCER_DATABASES, DemoError, _chown, write_private

if TYPE_CHECKING:
    from pgha.routing.pgbouncer import PgBouncer


class BouncerMixin(DemoBase):
    """The PgBouncers of a --pgbouncer demo: files, processes, and where they point."""

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
        from pgha.demo.pgbouncer_process import pgbouncer_version, render_pgbouncer_ini, render_userlist

        assert self.state is not None
        lines = []
        for i, node in enumerate(self.state.nodes, start=1):
            d = self.bouncer_dir(i)
            d.mkdir(exist_ok=True)
            os.chmod(d, 0o700)
            _chown(d)
            port = self.port_base + 10 * i + 2
            ini = d / "pgbouncer.ini"
            write_private(ini, render_pgbouncer_ini(
                listen_port=port, target_host="127.0.0.1", target_port=node.pg_port, dir=str(d),
                admin_users=("pgbouncer",), databases=DEMO_BOUNCER_DATABASES, version=pgbouncer_version()))
            users = d / "userlist.txt"
            write_private(users, render_userlist({"postgres": password, "pgbouncer": self.bouncer_admin_password}))
            node.pgbouncer_port = port
            lines.append(f"127.0.0.1:{port}:*:postgres:{password}")
            self.start_pgbouncer(node.name)
        return lines

    def start_pgbouncer(self, name: str) -> int:
        """Start the node's PgBouncer (as postgres) and record its PID."""
        from pgha.demo.pgbouncer_process import PgBouncerProcess
        from pgha.routing.pgbouncer import PgBouncerError

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
