"""DCS injection: hostile values written straight into etcd never reach a file, and the cluster runs on.

A 2-node synchronous cluster with a PgBouncer per node.  Member records whose name, host or API URL
hold a newline, '=' or a quote are written into etcd directly (as anyone able to write there could),
looking like the most advanced streaming replica of the leader: were they believed, the leader would
name them in synchronous_standby_names and its writes would wait for them.  A /sync naming a quote and
a /config with hostile parameter names and values follow, and PATCH /config is tried with a newline in
a parameter name.  Then: nothing with the marker is in any member's postgresql.conf,
postgresql.auto.conf, password file or pgbouncer.ini, nor in `pgha haproxy-config`; each agent logged
one line per hostile record (not one per loop); the leader is unchanged and writes still commit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgha.demo import DemoCluster
from tests.support.cluster import connect, leader_name, replicas, running_cluster, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists(),
                       reason="needs pgbouncer (Debian package pgbouncer)"),
]

MARK = "INJECTED"
# members/<key>: (the log names the key, the record's fields)
HOSTILE = {
    "evil-newline": {"host": f"127.0.0.1\nlisten_addresses = '*' # {MARK}"},
    "evil-equals": {"host": f"h={MARK}"},
    "evil-quote": {"host": f"h'{MARK}\""},
    f"evil\n{MARK} = on": {"host": "127.0.0.1"},
    "evil-url": {"host": "127.0.0.1", "api_url": f"http://127.0.0.1:1/\n{MARK}"},
}


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoCluster]:
    with running_cluster(2, pgbouncer=True, sync=True) as d:
        yield d


def _agent_log(demo: DemoCluster, name: str) -> str:
    return (Path(demo.node(name).config).parent / "agent.log").read_text(errors="replace")


def _files(demo: DemoCluster, name: str) -> list[Path]:
    node = demo.node(name)
    data = Path(node.data_dir)
    files = [data / "postgresql.conf", data / "postgresql.auto.conf", data.parent / "pgha.pgpass"]
    i = [n.name for n in demo.state.nodes].index(name) + 1 if demo.state else 0
    return [*files, demo.bouncer_dir(i) / "pgbouncer.ini"]


def _write(demo: DemoCluster, key: str, value: object) -> None:
    store = demo.store()
    store.kv.put(store.key(key), json.dumps(value).encode())


def test_hostile_values_in_the_dcs_reach_no_file_and_the_cluster_runs_on(demo: DemoCluster) -> None:
    lead = leader_name(demo)
    names = [lead, *replicas(demo)]
    view = demo.view()
    top = max(m.lsn for m in view.members.values())
    for key, fields in HOSTILE.items():
        record = {"role": "replica", "state": "streaming", "following": lead, "port": 5432,
                  "api_url": "http://127.0.0.1:1", "received_lsn": top + 10**9, "replayed_lsn": top + 10**9,
                  "tags": {"failover_priority": 100}, **fields}
        _write(demo, f"members/{key}", record)
        shown = repr(key)[1:-1] if "\n" in key else key
        wait_for(f"every agent to log members/{shown}",
                 lambda shown=shown: all(f"members/{shown}" in _agent_log(demo, n) or f"'members/{shown}'"
                                         in _agent_log(demo, n) for n in names), timeout=20)
    _write(demo, "sync", {"leader": lead, "standbys": [f'x"{MARK}'], "quorum": 1})

    status, body = demo.api_call(lead, "PATCH", "/config", {"parameters": {f"work_mem\n{MARK}": "1MB"}})
    assert status == 400 and "\n" not in body["error"] and "not allowed" in body["error"], body

    store = demo.store()
    current = store.kv.get(store.key("config"))
    assert current is not None
    config = json.loads(current.value)
    config["parameters"] = {**config.get("parameters", {}), "work_mem": "7MB", f"evil\n{MARK}": "1",
                            "log_line_prefix": f"x\n{MARK} = on", "a=b": "1"}
    _write(demo, "config", config)
    # A valid parameter next to the hostile ones is applied: the files were rewritten with them present.
    wait_for("work_mem = '7MB' in every postgresql.conf",
             lambda: all("work_mem = '7MB'" in _files(demo, n)[0].read_text() for n in names), timeout=30)

    time.sleep(3)  # a few loops: the problems must not be logged again
    for name in names:
        for path in _files(demo, name):
            if path.exists():
                assert MARK not in path.read_text(errors="replace"), f"{name}: {path}"
        log = _agent_log(demo, name)
        assert not any(line.startswith(MARK) or line.startswith("listen_addresses") for line in log.splitlines())
        for key in ("evil-newline", "evil-equals", "evil-quote", "evil-url"):
            assert log.count(f"members/{key}:") == 1, f"{name}: {key} logged {log.count(f'members/{key}:')} times"
        assert log.count("sync: member name") == 1 and log.count("parameter name 'a=b' is not allowed") == 1
    haproxy = subprocess.run([sys.executable, "-m", "pgha", "haproxy-config", "--dcs", demo.dcs_url,
                              "--cluster", demo.cluster], capture_output=True, text=True, timeout=30)
    assert haproxy.returncode == 0, haproxy.stderr
    assert MARK not in haproxy.stdout and "evil" not in haproxy.stdout

    assert leader_name(demo) == lead
    with connect(demo, lead) as conn:
        conn.execute("SET statement_timeout = '10s'")
        conn.execute("CREATE TABLE IF NOT EXISTS injection_probe (x int)")
        conn.execute("INSERT INTO injection_probe VALUES (1)")
        row = conn.execute("SHOW synchronous_standby_names").fetchone()
    assert row is not None and MARK not in row[0] and "evil" not in row[0]
