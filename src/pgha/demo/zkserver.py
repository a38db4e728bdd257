"""A standalone ZooKeeper for demos and tests: Debian's jars, a generated zoo.cfg, our own ports.

Debian's zookeeperd starts ``org.apache.zookeeper.server.quorum.QuorumPeerMain`` with the
classpath ``/etc/zookeeper/conf:/usr/share/java/zookeeper.jar`` (the jar's manifest names its
dependencies); a standalone server is the same with ``ZooKeeperServerMain``.  The packaged
service never runs (install-deps keeps it from starting): each demo or test starts its own.

tickTime is 500 ms so a session (= lease) of ttl 2-4 s is allowed (ZooKeeper refuses sessions
shorter than 2 ticks) and expires within one tick of its timeout; maxSessionTimeout is raised
to 5 minutes so any ttl pgha accepts is granted as asked.

With ``tls`` (the demo and the tests always give it) the server listens only on its
``secureClientPort``, through Netty, with PEM files (ZooKeeper reads them as key stores since 3.5.5
with ``ssl.keyStore.type=PEM``): the key store holds the server's key and certificate, the trust
store the CA, and ``ssl.clientAuth=need`` refuses a client without a certificate that CA signed.
Debian's zookeeper.jar names only part of Netty in its manifest; the rest is added to the classpath.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pgha.demo.certs import make_ca, make_cert

JAVA = "/usr/bin/java"
ZK_JAR = "/usr/share/java/zookeeper.jar"
ZK_CONF = "/etc/zookeeper/conf"
TICK_MS = 500
# Netty jars the server's TLS needs that zookeeper.jar's manifest leaves out (Debian's libnetty-java).
NETTY_JARS = ("/usr/share/java/netty-codec.jar", "/usr/share/java/netty-resolver.jar",
              "/usr/share/java/netty-transport-native-unix-common.jar")


@dataclass(frozen=True)
class ServerTLS:
    """The server's key and certificate (one PEM file, key first), the CA, and the client's pair."""

    keystore: Path
    ca: Path
    client_cert: Path
    client_key: Path

    def context(self) -> ssl.SSLContext:
        """A client context for the readiness check: the server verified, our certificate presented."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def make_pki(directory: Path, hosts: Sequence[str]) -> ServerTLS:
    """A CA, the server's certificate for ``hosts`` (as a PEM key store) and a client certificate for
    pgha (``directory``/pgha.crt, .key), all in ``directory``; raises CertError."""
    ca = make_ca(directory)
    cert, key = make_cert(ca, directory, "zookeeper", hosts)
    keystore = directory / "zookeeper.pem"
    keystore.touch(mode=0o600)
    keystore.write_text(key.read_text() + cert.read_text())
    client_cert, client_key = make_cert(ca, directory, "pgha", hosts, client=True)
    return ServerTLS(keystore, ca.cert, client_cert, client_key)


class ZooKeeperStartError(Exception):
    """One line: what is missing or why ZooKeeper did not come up, and where to look."""


def missing_binaries() -> str | None:
    """None when java and the ZooKeeper jar are installed, else the line saying what to install."""
    for path in (JAVA, ZK_JAR):
        if not os.access(path, os.R_OK):
            return f"{path} not found; install zookeeperd (make venv / scripts/install-deps.sh)"
    return None


def write_config(directory: Path, port: int, tick_ms: int = TICK_MS, host: str = "127.0.0.1",
                 tls: ServerTLS | None = None) -> Path:
    """zoo.cfg for a standalone server on ``host``:``port`` with its data in ``directory``/data."""
    (directory / "data").mkdir(parents=True, exist_ok=True)
    cfg = directory / "zoo.cfg"
    listen = [f"clientPort={port}", f"clientPortAddress={host}"]
    if tls is not None:
        listen = [f"secureClientPort={port}", f"secureClientPortAddress={host}",
                  "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
                  f"ssl.keyStore.location={tls.keystore}", "ssl.keyStore.type=PEM",
                  f"ssl.trustStore.location={tls.ca}", "ssl.trustStore.type=PEM", "ssl.clientAuth=need"]
    cfg.write_text("\n".join([
        f"tickTime={tick_ms}", "initLimit=10", "syncLimit=5", f"dataDir={directory / 'data'}", *listen,
        f"minSessionTimeout={2 * tick_ms}", "maxSessionTimeout=300000",
        "admin.enableServer=false", "4lw.commands.whitelist=ruok,srvr",
        # A throwaway server on a shared machine: no fsync per transaction (a session is one).
        "forceSync=no",
        # Every agent, CLI and test connects from the same address (the default allows 60).
        "maxClientCnxns=0",
        "",
    ]))
    return cfg


def spawn(directory: Path, port: int, log: IO[bytes], host: str = "127.0.0.1",
          tls: ServerTLS | None = None) -> subprocess.Popen[bytes]:
    """Start ZooKeeper in its own session (stop it by PID); ``wait_ready`` tells when it serves."""
    problem = missing_binaries()
    if problem:
        raise ZooKeeperStartError(problem)
    cfg = write_config(directory, port, host=host, tls=tls)
    classpath = ":".join([ZK_CONF, ZK_JAR, *(NETTY_JARS if tls is not None else ())])
    return subprocess.Popen(
        # Small heap, one GC thread, the quick JIT only: a light server that starts fast on a busy machine.
        [JAVA, "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", f"-Dzookeeper.log.dir={directory}",
         "-Dzookeeper.root.logger=INFO,CONSOLE", "-cp", classpath,
         "org.apache.zookeeper.server.ZooKeeperServerMain", str(cfg)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=directory,
    )


def serving(port: int, timeout: float = 0.5, host: str = "127.0.0.1", tls: ServerTLS | None = None) -> bool:
    """True when the server on ``host``:``port`` serves requests (four-letter 'srvr', over TLS with
    ``tls``; 'ruok' says 'imok' before the database is loaded)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            if tls is None:
                raw.sendall(b"srvr")
                return raw.recv(64).startswith(b"Zookeeper version")
            with tls.context().wrap_socket(raw, server_hostname=host) as sock:
                sock.sendall(b"srvr")
                return sock.recv(64).startswith(b"Zookeeper version")
    except OSError:  # ssl.SSLError too
        return False


def wait_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float = 90.0,
               host: str = "127.0.0.1", tls: ServerTLS | None = None) -> None:
    """Return once the server serves; ZooKeeperStartError (one line) if it exits or takes ``timeout``."""
    deadline = time.monotonic() + timeout
    while not serving(port, host=host, tls=tls):
        if proc.poll() is not None:
            raise ZooKeeperStartError(f"ZooKeeper exited at start (code {proc.returncode}); see {log_path}")
        if time.monotonic() > deadline:
            raise ZooKeeperStartError(f"ZooKeeper did not answer on port {port} in {timeout:g} s; see {log_path}")
        time.sleep(0.1)


def remove_data(directory: Path) -> None:
    shutil.rmtree(directory / "data", ignore_errors=True)
