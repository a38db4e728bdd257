"""`pgha generate-config --from-patroni` on Patroni's own example configurations, and on hand-made ones.

The examples (postgres0.yml, postgres1.yml, postgres2.yml and Debian's config.yml.in) ship in Debian's patroni
package; scripts/install-patroni.sh (make venv) puts them in .venv-patroni/share/patroni-examples.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgha.config import load
from pgha.core.model import Tags
from pgha.patroni_import import convert

EXAMPLES = Path(__file__).resolve().parents[2] / ".venv-patroni" / "share" / "patroni-examples"

# Tags pgha's Tags does not define (another branch may add some) are left behind.
TAG_FIELDS = {f.name for f in dataclasses.fields(Tags)}
COMMON = {"bootstrap.users", "postgresql.pgpass", "postgresql.authentication.rewind",
          "postgresql.parameters.unix_socket_directories"} | ({"tags.clonefrom"} - {f"tags.{t}" for t in TAG_FIELDS})
LEFT = {
    "postgres0.yml": COMMON,
    "postgres1.yml": COMMON | {"postgresql.basebackup"},
    "postgres2.yml": COMMON | ({"tags.replicatefrom"} - {f"tags.{t}" for t in TAG_FIELDS}),
    "config.yml.in": {"namespace", "bootstrap.method", "bootstrap.pg_createcluster",
                      "bootstrap.dcs.postgresql.remove_data_directory_on_rewind_failure",
                      "bootstrap.dcs.postgresql.remove_data_directory_on_diverged_timelines",
                      "bootstrap.dcs.postgresql.use_slots", "postgresql.create_replica_method",
                      "postgresql.pg_clonecluster", "postgresql.use_unix_socket", "postgresql.pgpass",
                      "postgresql.parameters.unix_socket_directories"},
}
# What Debian's template gets when pg_createcluster's Patroni integration fills it in.
DEBIAN_VALUES = {"@VERSION@": "15", "@CLUSTER@": "main", "@HOSTNAME@": "db1", "@HOSTIP@": "10.0.0.11",
                 "@API_PORT@": "8008", "@PORT@": "5432", "@DATADIR_BASE@": "/var/lib/postgresql",
                 "@LISTEN_VIP@": "", "@NETWORK@": "10.0.0.0/24"}


def example(tmp: Path, name: str) -> Path:
    src = EXAMPLES / name
    assert src.exists(), f"{src} is missing: run `make venv` (scripts/install-patroni.sh)"
    text = src.read_text().replace("@DCS_CONFIG@", (EXAMPLES / "dcs.yml").read_text())
    for key, value in DEBIAN_VALUES.items():
        text = text.replace(key, value)
    path = tmp / name.replace(".in", "")
    path.write_text(text)
    return path


def from_patroni(path: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgha", "generate-config", "--from-patroni", str(path), "-o",
                           str(out), *extra], capture_output=True, text=True, timeout=60, cwd=path.parent)


def left_keys(stderr: str) -> list[str]:
    return [ln.removeprefix("left behind: ").split(": ", 1)[0] for ln in stderr.splitlines()
            if ln.startswith("left behind: ")]


@pytest.mark.parametrize("name", sorted(LEFT))
def test_patronis_examples_convert_to_files_pgha_validate_accepts(name: str, tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    src = example(tmp_path, name)
    out = tmp_path / "pgha.yaml"
    r = from_patroni(src, out)
    assert r.returncode == 0, r.stderr
    left = left_keys(r.stderr)
    assert sorted(left) == sorted(LEFT[name]), r.stderr  # one line per key, each once
    v = subprocess.run([sys.executable, "-m", "pgha", "validate", "-c", str(out)], capture_output=True, text=True,
                       timeout=60, cwd="/")
    assert v.returncode == 0, v.stdout + v.stderr
    patroni = yaml.safe_load(src.read_text())
    cfg = load(out)
    assert (cfg.cluster, cfg.name) == (str(patroni["scope"]), patroni["name"])
    assert cfg.api.listen == patroni["restapi"]["listen"]  # the port HAProxy checks stays the same
    host, port = patroni["postgresql"]["listen"].rsplit(":", 1)
    assert (cfg.postgresql.listen, cfg.postgresql.port) == (host, int(port))
    assert cfg.postgresql.connect_address == patroni["postgresql"]["connect_address"]
    assert cfg.postgresql.replication.password == patroni["postgresql"]["authentication"]["replication"]["password"]
    assert cfg.bootstrap.adopt
    dcs = patroni["bootstrap"]["dcs"]
    assert (cfg.cluster_config.ttl, cfg.cluster_config.loop_wait) == (dcs["ttl"], dcs["loop_wait"])
    assert cfg.cluster_config.maximum_lag_on_failover == dcs["maximum_lag_on_failover"]
    assert "left behind:" in out.read_text().replace("# Left behind:", "left behind:")


def test_debian_template_keeps_its_layout_and_zookeeper(tmp_path: Path) -> None:
    out = tmp_path / "pgha.yaml"
    assert from_patroni(example(tmp_path, "config.yml.in"), out).returncode == 0
    cfg = load(out)
    assert cfg.dcs.type == "zookeeper" and cfg.dcs.zookeeper.hosts == ("127.0.0.1:2181",)
    assert cfg.postgresql.config_dir == "/etc/postgresql/15/main"
    assert cfg.postgresql.data_dir == "/var/lib/postgresql/15/main"
    assert cfg.postgresql.parameters == {"logging_collector": "on", "log_directory": "/var/log/postgresql",
                                         "log_filename": "postgresql-15-main.log"}
    assert cfg.api.listen == "10.0.0.11:8008"
    assert cfg.postgresql.listen == "*"
    assert "local   replication     all                                     peer" in cfg.postgresql.pg_hba


def full() -> dict[str, Any]:
    return {
        "scope": "shop", "name": "db2", "namespace": "/service/",
        "restapi": {"listen": ":8008", "connect_address": "10.0.0.12:8008", "certfile": "/etc/p/api.pem",
                    "keyfile": "/etc/p/api.key", "cafile": "/etc/p/ca.pem", "verify_client": "required",
                    "authentication": {"username": "admin", "password": "s3cret"}, "allowlist": ["10.0.0.0/8"]},
        "etcd3": {"hosts": ["10.0.0.21:2379", "10.0.0.22:2379"], "protocol": "https", "username": "patroni",
                  "password": "e", "retry_timeout": 5},
        "bootstrap": {"dcs": {"ttl": 20, "loop_wait": 5, "retry_timeout": 5, "synchronous_mode": True,
                              "synchronous_mode_strict": True, "master_start_timeout": 60,
                              "slots": {"cdc": {"type": "logical", "database": "shop", "plugin": "pgoutput"}},
                              "postgresql": {"use_pg_rewind": False, "parameters": {"max_connections": 200}}}},
        "postgresql": {"listen": "0.0.0.0:5432", "connect_address": "10.0.0.12:5432", "data_dir": "/srv/pg/15",
                       "bin_dir": "/usr/lib/postgresql/15/bin", "config_dir": "/srv/pg/15",
                       "authentication": {"superuser": {"username": "postgres", "password": "p"},
                                          "replication": {"username": "rep", "password": "r"}},
                       "parameters": {"shared_buffers": "1GB", "port": 5432},
                       "callbacks": {"on_role_change": "/usr/local/bin/role.sh", "on_restart": "/bin/true"},
                       "pre_promote": "/usr/local/bin/fence.sh", "create_replica_methods": ["basebackup"]},
        "watchdog": {"mode": "required", "device": "/dev/watchdog"},
        "tags": {"nofailover": True, "failover_priority": 3, "noloadbalance": True, "zone": "b", "nostream": False},
        "log": {"level": "CRITICAL", "dir": "/var/log/patroni"},
        "kubernetes": {"namespace": "x"},
    }


def test_every_section_carries_over_or_is_named() -> None:
    conv = convert(full(), "/etc/patroni")
    n = conv.node
    assert n["api"] == {"listen": "0.0.0.0:8008", "connect_url": "https://10.0.0.12:8008",
                        "auth": {"username": "admin", "password": "s3cret"},
                        "tls": {"certfile": "/etc/p/api.pem", "keyfile": "/etc/p/api.key", "cafile": "/etc/p/ca.pem",
                                "verify_client": True}}
    assert n["dcs"] == {"type": "etcd", "etcd": {"endpoints": ["https://10.0.0.21:2379", "https://10.0.0.22:2379"],
                                                 "username": "patroni", "password": "e"}}
    assert n["cluster_config"] == {"ttl": 20, "loop_wait": 5, "retry_timeout": 5, "synchronous_mode": "strict",
                                   "primary_start_timeout": 60, "use_pg_rewind": False,
                                   "parameters": {"max_connections": 200},
                                   "slots": {"cdc": {"type": "logical", "database": "shop", "plugin": "pgoutput"}}}
    assert n["postgresql"]["parameters"] == {"shared_buffers": "1GB"}
    assert "config_dir" not in n["postgresql"]  # the same as data_dir: nothing to take over
    assert n["callbacks"] == {"on_role_change": "/usr/local/bin/role.sh", "pre_promote": "/usr/local/bin/fence.sh"}
    assert n["watchdog"] == {"mode": "on"} and n["log"] == {"level": "ERROR"}
    # noloadbalance is a tag of pgha's own once its Tags has it (Patroni's health checks), else an extra one.
    if "noloadbalance" in TAG_FIELDS:
        assert n["tags"] == {"nofailover": True, "failover_priority": 3, "noloadbalance": True, "nostream": False,
                             "extra": {"zone": "b"}}
    else:
        assert n["tags"] == {"nofailover": True, "failover_priority": 3,
                             "extra": {"noloadbalance": "true", "zone": "b"}}
    assert sorted(line.split(":", 1)[0] for line in conv.left) == sorted([
        "namespace", "restapi.allowlist", "etcd3.retry_timeout", "postgresql.parameters.port",
        "postgresql.callbacks.on_restart", "watchdog.device", "log.dir", "kubernetes"])


@pytest.mark.parametrize(("data", "line"), [
    ({"name": "x", "postgresql": {"data_dir": "/d"}}, "scope: missing"),
    ({"scope": "s", "name": "x", "postgresql": {"data_dir": "/d"}, "tags": {"failover_priority": "high"}},
     "tags.failover_priority: expected an integer"),
    ({"scope": "s", "name": "x", "postgresql": {"data_dir": "/d", "listen": "5432"}},
     "postgresql.listen: expected host:port"),
    ({"scope": "s", "name": "x", "postgresql": {"data_dir": "/d", "authentication": ["superuser"]}},
     "postgresql.authentication: expected a mapping"),
    ({"scope": "s", "name": "x", "postgresql": {"data_dir": "/d"}, "bootstrap": {"initdb": 5}},
     "not a Patroni configuration pgha can read"),
    ({"scope": "bad name!", "name": "x", "postgresql": {"data_dir": "/d"}}, "does not validate (cluster:"),
])
def test_a_bad_file_is_one_line(data: dict[str, Any], line: str, tmp_path: Path) -> None:
    src = tmp_path / "p.yml"
    src.write_text(yaml.safe_dump(data))
    r = from_patroni(src, tmp_path / "out.yaml")
    assert r.returncode == 1 and line in r.stderr, r.stderr
    assert [ln for ln in r.stderr.splitlines() if not ln.startswith(("left behind:", "note:"))] == \
        [r.stderr.strip().splitlines()[-1]], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out.yaml").exists()
