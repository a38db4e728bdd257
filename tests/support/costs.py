"""What processes cost at rest, read from /proc and from etcd's /metrics (bench/idle, fleet, soak).

CPU is utime+stime from /proc/<pid>/stat (clock ticks); children that were waited for land in
the parent's cutime+cstime, which is how programs an agent runs and exits (pg_controldata, ip)
show up.  RSS is VmRSS from /proc/<pid>/status.  etcd requests are counted at the server:
``grpc_server_started_total`` by method (the JSON gateway forwards every HTTP call as one gRPC
call or stream, so each /v3/... request an agent makes starts exactly one).
"""

from __future__ import annotations

import os
import re
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pgha.postgres.processes import children_of

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cpu:
    own: float  # utime + stime, seconds
    children: float  # cutime + cstime: children waited for


def cpu(pid: int) -> Cpu:
    """CPU seconds of ``pid`` so far (zeros if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return Cpu(0.0, 0.0)
    f = stat.rsplit(")", 1)[1].split()
    # After the ')': state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return Cpu((int(f[11]) + int(f[12])) / TICK, (int(f[13]) + int(f[14])) / TICK)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def watchdog_of(agent_pid: int) -> int | None:
    """The agent's watchdog child, found by its command line."""
    for child in children_of(agent_pid):
        if "watchdog" in cmdline(child):
            return child
    return None


def tree_cpu(pid: int) -> float:
    """CPU of a process, its live children and the children it reaped (PostgreSQL: postmaster,
    backends, and backends that came and went)."""
    c = cpu(pid)
    return c.own + c.children + sum(cpu(k).own for k in children_of(pid))


def postmaster_pid(data_dir: str) -> int | None:
    try:
        return int((Path(data_dir) / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


_METRIC = re.compile(r'^grpc_server_started_total\{([^}]*)\}\s+([0-9.e+]+)$')


def etcd_requests(url: str) -> Counter[str]:
    """Requests etcd has started so far, by gRPC method (Range, Put, Txn, LeaseKeepAlive, Watch…)."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: Counter[str] = Counter()
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m:
            labels = dict(kv.split("=", 1) for kv in m.group(1).split(","))
            out[labels.get("grpc_method", "?").strip('"')] += int(float(m.group(2)))
    return out


def per_minute(value: float, seconds: float) -> float:
    return value * 60.0 / seconds


# The fast settings of bench/failover before the demo had profiles (ttl 4 s, loop_wait 0.25 s).
FAST = {"ttl": 4.0, "loop_wait": 0.25, "retry_timeout": 1.0, "fence_margin": 1.0}


def profile_kwargs(profile: str | None) -> dict[str, object]:
    """DemoCluster arguments for a profile, as `pgha demo up --profile` passes them (no explicit ttl,
    which would override the profile's timings); None: the demo's default profile.  A demo without
    profiles gets the fast settings spelled out (and nothing for the defaults)."""
    import inspect

    from pgha.demo import DemoCluster

    if "profile" in inspect.signature(DemoCluster.__init__).parameters:
        return {"profile": profile or "default", "ttl": None}
    if profile in (None, "default"):
        return {}
    extra = dict(FAST)
    return {"ttl": extra.pop("ttl"), "extra_cluster_config": extra}


def compile_sources() -> None:
    """Byte-compile pgha as pip does on install, so agents started from this tree do not compile
    their modules at every start (that leaves ~1 MB more resident than an installed agent)."""
    import compileall

    import pgha

    compileall.compile_dir(str(Path(pgha.__file__).parent), quiet=1)
