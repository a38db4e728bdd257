"""A standalone ZooKeeper for demos and tests: Debian's jars, a generated zoo.cfg, our own ports.

Debian's zookeeperd starts ``org.apache.zookeeper.server.quorum.QuorumPeerMain`` with the
classpath ``/etc/zookeeper/conf:/usr/share/java/zookeeper.jar`` (the jar's manifest names its
dependencies); a standalone server is the same with ``ZooKeeperServerMain``.  The packaged
service never runs (install-deps keeps it from starting): each demo or test starts its own.

tickTime is 500 ms so a session (= lease) of ttl 2-4 s is allowed (ZooKeeper refuses sessions
shorter than 2 ticks) and expires within one tick of its timeout; maxSessionTimeout is raised
to 5 minutes so any ttl pgha accepts is granted as asked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO

JAVA = "/usr/bin/java"
ZK_JAR = "/usr/share/java/zookeeper.jar"
ZK_CONF = "/etc/zookeeper/conf"
TICK_MS = 500


class ZooKeeperStartError(Exception):
    """One line: what is missing or why ZooKeeper did not come up, and where to look."""


def missing_binaries() -> str | None:
    """None when java and the ZooKeeper jar are installed, else the line saying what to install."""
    for path in (JAVA, ZK_JAR):
        if not os.access(path, os.R_OK):
            return f"{path} not found; install zookeeperd (make venv / scripts/install-deps.sh)"
    return None


def write_config(directory: Path, port: int, tick_ms: int = TICK_MS, host: str = "127.0.0.1") -> Path:
    """zoo.cfg for a standalone server on ``host``:``port`` with its data in ``directory``/data."""
    (directory / "data").mkdir(parents=True, exist_ok=True)
    cfg = directory / "zoo.cfg"
    cfg.write_text("\n".join([
        f"tickTime={tick_ms}", "initLimit=10", "syncLimit=5",
        f"dataDir={directory / 'data'}", f"clientPort={port}", f"clientPortAddress={host}",
        f"minSessionTimeout={2 * tick_ms}", "maxSessionTimeout=300000",
        "admin.enableServer=false", "4lw.commands.whitelist=ruok,srvr",
        # A throwaway server on a shared machine: no fsync per transaction (a session is one).
        "forceSync=no",
        # Every agent, CLI and test connects from the same address (the default allows 60).
        "maxClientCnxns=0",
        "",
    ]))
    return cfg


def spawn(directory: Path, port: int, log: IO[bytes], host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    """Start ZooKeeper in its own session (stop it by PID); ``wait_ready`` tells when it serves."""
    problem = missing_binaries()
    if problem:
        raise ZooKeeperStartError(problem)
    cfg = write_config(directory, port, host=host)
    classpath = f"{ZK_CONF}:{ZK_JAR}"
    return subprocess.Popen(
        # Small heap, one GC thread, the quick JIT only: a light server that starts fast on a busy machine.
        [JAVA, "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", f"-Dzookeeper.log.dir={directory}",
         "-Dzookeeper.root.logger=INFO,CONSOLE", "-cp", classpath,
         "org.apache.zookeeper.server.ZooKeeperServerMain", str(cfg)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=directory,
    )


def serving(port: int, timeout: float = 0.5, host: str = "127.0.0.1") -> bool:
    """True when the server on 127.0.0.1:``port`` serves requests (four-letter 'srvr'; 'ruok' says
    'imok' before the database is loaded)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"srvr")
            return sock.recv(64).startswith(b"Zookeeper version")
    except OSError:
        return False


def wait_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float = 90.0,
               host: str = "127.0.0.1") -> None:
    """Return once the server serves; ZooKeeperStartError (one line) if it exits or takes ``timeout``."""
    deadline = time.monotonic() + timeout
    while not serving(port, host=host):
        if proc.poll() is not None:
            raise ZooKeeperStartError(f"ZooKeeper exited at start (code {proc.returncode}); see {log_path}")
        if time.monotonic() > deadline:
            raise ZooKeeperStartError(f"ZooKeeper did not answer on port {port} in {timeout:g} s; see {log_path}")
        time.sleep(0.1)


def remove_data(directory: Path) -> None:
    shutil.rmtree(directory / "data", ignore_errors=True)
