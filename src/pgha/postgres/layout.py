"""Where this node's PostgreSQL files are.

Inside the data directory: initdb's ``postgresql.base.conf``, pgha's
``postgresql.conf`` and ``pg_hba.conf``, ``standby.signal`` for replicas, and
``pgha.slots`` (the replication slots pgha created).  Next to it, in the data
directory's parent: ``postgresql.log`` (pg_ctl's server log) and
``pgha.pgpass`` (0600, the passwords libpq needs for replication, clone and
rewind, so they never appear on a command line) and, unless
postgresql.socket_dir is set, ``pg_socket/`` (mode 0700) for the Unix socket.

The socket is not kept in the data directory itself: pg_rewind lists the
source's data directory over SQL and fails on the socket file
("could not open file .s.PGSQL.5432 ... No such device or address").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pgha.config import NodeConfig


@dataclass(frozen=True)
class Layout:
    data: Path
    socket_dir: Path
    # The server's configuration directory before pgha, when outside the data directory (postgresql.config_dir).
    config_dir: Path | None = None

    @classmethod
    def of(cls, config: NodeConfig) -> Layout:
        data = Path(config.postgresql.data_dir)
        sock = config.postgresql.socket_dir
        cdir = Path(config.postgresql.config_dir) if config.postgresql.config_dir else None
        return cls(data=data, socket_dir=Path(sock) if sock else data.parent / "pg_socket",
                   config_dir=cdir if cdir is not None and cdir != data else None)

    @property
    def parent(self) -> Path:
        return self.data.parent

    @property
    def conf(self) -> Path:
        return self.data / "postgresql.conf"

    @property
    def base_conf(self) -> Path:
        return self.data / "postgresql.base.conf"

    @property
    def auto_conf(self) -> Path:
        return self.data / "postgresql.auto.conf"

    @property
    def hba(self) -> Path:
        return self.data / "pg_hba.conf"

    @property
    def standby_signal(self) -> Path:
        return self.data / "standby.signal"

    @property
    def pid_file(self) -> Path:
        return self.data / "postmaster.pid"

    @property
    def slots(self) -> Path:
        return self.data / "pgha.slots"

    @property
    def log_file(self) -> Path:
        return self.parent / "postgresql.log"

    @property
    def passfile(self) -> Path:
        return self.parent / "pgha.pgpass"
