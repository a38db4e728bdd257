"""Patroni's example HAProxy config, and a real HAProxy started from a config file (stopped by PID)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.procs import stop_pid

# The HAProxy config of Patroni's own example (haproxy.cfg in its repository), as deployments copy it:
# `option httpchk` (HAProxy's default check, OPTIONS /), `http-check expect status 200`, and a
# `server … check port <REST API port>` line per member.  Only ports and check timings are filled in.
SEED_CONFIG = """\
global
    maxconn 100
defaults
    log global
    mode tcp
    retries 2
    timeout client 30m
    timeout connect 4s
    timeout server 30m
    timeout check 5s
listen batman
    bind 127.0.0.1:{port}
    option httpchk
    http-check expect status 200
    default-server inter {inter} fall 3 rise 2 on-marked-down shutdown-sessions
{servers}
"""


def seed_config(port: int, servers: list[str], inter: str = "300ms") -> str:
    """SEED_CONFIG listening on ``port``; ``servers`` are the text after ``server NAME ADDR:PORT``."""
    return SEED_CONFIG.format(port=port, inter=inter, servers="\n".join(f"    server {s}" for s in servers))


def haproxy_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, check=False)


@contextlib.contextmanager
def running_haproxy(cfg: Path) -> Iterator[subprocess.Popen[bytes]]:
    """HAProxy in the foreground on ``cfg`` (its output next to it, in haproxy.log)."""
    check = haproxy_check(cfg)
    assert check.returncode == 0, check.stdout + check.stderr
    with open(cfg.with_name("haproxy.log"), "ab") as log:
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        stop_pid(proc.pid, timeout=5)
        proc.wait()
