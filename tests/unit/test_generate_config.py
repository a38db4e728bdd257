"""`pgha generate-config` without a running PostgreSQL: the file, its passwords, where it goes, bad flags."""

from __future__ import annotations

import os
import pty
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from pgha.cli.main import _register, cli
from pgha.config import loads
from tests.support.procs import free_port
from tests.unit.test_cli_world import refusal


def generate(*args: str) -> Result:
    _register()
    return CliRunner().invoke(cli, ["generate-config", *args])


def flags(tmp: Path, *extra: str) -> list[str]:
    os.chmod(tmp, 0o755)
    return ["--cluster", "main", "--name", "node1", "--data-dir", str(tmp / "data"), "--port", str(free_port()),
            "--api-listen", f"127.0.0.1:{free_port()}", *extra]


def secrets_of(text: str) -> list[str]:
    data = yaml.safe_load(text)
    pg = data["postgresql"]
    return [pg["superuser"]["password"], pg["replication"]["password"], data["api"]["auth"]["password"]]


def test_the_file_carries_the_flags_and_fresh_passwords(tmp_path: Path) -> None:
    r = generate(*flags(tmp_path, "--etcd", "https://10.9.0.1:2379, https://10.9.0.2:2379", "--vip",
                        "10.9.0.50/25", "--vip-interface", "bond0", "--pg-version", "15",
                        "--connect-address", "10.9.0.11"))
    assert r.exit_code == 0, r.output
    cfg = loads(r.stdout, "generated")
    assert (cfg.cluster, cfg.name) == ("main", "node1")
    assert cfg.etcd.endpoints == ("https://10.9.0.1:2379", "https://10.9.0.2:2379")
    assert cfg.vip is not None
    assert (cfg.vip.address, cfg.vip.prefix, cfg.vip.interface) == ("10.9.0.50", 25, "bond0")
    assert cfg.postgresql.bin_dir == "/usr/lib/postgresql/15/bin"
    assert cfg.postgresql.data_dir == str(tmp_path / "data")
    assert cfg.postgresql.connect_address == f"10.9.0.11:{cfg.postgresql.port}"
    assert cfg.api.auth is not None and cfg.api.auth.username == "pgha"
    assert "no running server was read" in r.stdout
    passwords = secrets_of(r.stdout)
    assert len(set(passwords)) == 3 and all(len(p) >= 32 for p in passwords)
    assert secrets_of(generate(*flags(tmp_path)).stdout) != passwords  # generated afresh each time
    # Every section is a paragraph that opens with its comment.
    paragraphs = r.stdout.split("\n\n")
    assert len(paragraphs) >= 10
    assert all(p.startswith("#") for p in paragraphs), [p for p in paragraphs if not p.startswith("#")]


def test_defaults_take_the_vip_interface_from_the_subnet_and_a_wildcard_api_gets_a_connect_url(
        tmp_path: Path) -> None:
    r = generate(*flags(tmp_path, "--vip", "127.0.0.77/8", "--api-listen", "0.0.0.0:8008",
                        "--connect-address", "10.9.0.11"))
    cfg = loads(r.stdout, "generated")
    assert cfg.vip is not None and (cfg.vip.interface, cfg.vip.prefix) == ("lo", 8)
    assert cfg.api.url == "http://10.9.0.11:8008"
    assert cfg.postgresql.listen == "*"


def test_secrets_from_copies_every_members_shared_logins(tmp_path: Path) -> None:
    first = tmp_path / "node1.yaml"
    assert generate(*flags(tmp_path, "-o", str(first))).exit_code == 0
    r = generate(*flags(tmp_path, "--name", "node2", "--secrets-from", str(first)))
    assert r.exit_code == 0, r.output
    assert secrets_of(r.stdout) == secrets_of(first.read_text())
    assert f"The passwords are those of {first}." in r.stdout


def test_output_file_is_private_new_and_its_passwords_are_not_echoed(tmp_path: Path) -> None:
    out = tmp_path / "node.yaml"
    r = generate(*flags(tmp_path, "-o", str(out)))
    assert r.exit_code == 0, r.output
    st = out.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    if os.geteuid() == 0:
        import pwd

        assert st.st_uid == pwd.getpwnam("postgres").pw_uid  # the agent's user must read it
    assert r.output.startswith(f"{out}: written (mode 0600")
    assert not any(p in r.output for p in secrets_of(out.read_text()))
    before = out.read_text()
    assert refusal(generate(*flags(tmp_path, "-o", str(out)))) == \
        f"pgha: -o: {out} already exists; remove it or choose another path"
    assert out.read_text() == before


def test_a_terminal_gets_no_passwords(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        res = subprocess.run([sys.executable, "-m", "pgha", "generate-config", *flags(tmp_path)],
                             stdout=terminal, stderr=subprocess.PIPE, text=True, timeout=30, check=False)
        os.set_blocking(controller, False)
        try:
            printed = os.read(controller, 65536)
        except BlockingIOError:
            printed = b""
    finally:
        os.close(controller)
        os.close(terminal)
    assert res.returncode == 1 and printed == b""
    assert res.stderr.strip() == ("pgha: the file holds generated passwords and is not printed to a terminal; "
                                  "write it with -o FILE, or pipe it (| pgha validate -c -)")


@pytest.mark.parametrize(("args", "line"), [
    (["--name", "n1"], "pgha: --cluster: required; name the cluster, e.g. --cluster main"),
    (["--cluster", "my cluster"],
     "pgha: --cluster: 'my cluster': use letters, digits, '-', '_' or '.' (at most 63), e.g. 'main'"),
    (["--cluster", "main", "--name", "-x"],
     "pgha: --name: '-x': use letters, digits, '-', '_' or '.' (at most 63), e.g. 'main'"),
    (["--cluster", "main", "--etcd", "10.0.0.1:2379"],
     "pgha: --etcd: '10.0.0.1:2379' is not an http:// or https:// URL; give a comma-separated list such as "
     "http://10.0.0.21:2379,http://10.0.0.22:2379"),
    (["--cluster", "main", "--etcd", " , "],
     "pgha: --etcd: give at least one URL, e.g. http://10.0.0.21:2379,http://10.0.0.22:2379"),
    (["--cluster", "main", "--vip", "10.0.0.300"],
     "pgha: --vip: '10.0.0.300' is not an IPv4 address with an optional /prefix, e.g. 10.0.0.50/24"),
    (["--cluster", "main", "--vip", "10.0.0.5/0"], "pgha: --vip: '10.0.0.5/0': the prefix must be 1-32, e.g. "
                                                   "10.0.0.50/24"),
    (["--cluster", "main", "--api-listen", "8008"],
     "pgha: --api-listen: expected host:port with a port 1-65535, e.g. 10.0.0.11:8008, got '8008'"),
    (["--cluster", "main", "--data-dir", "pgdata"],
     "pgha: --data-dir: 'pgdata' must be an absolute path, e.g. /var/lib/pgha/15/main"),
    (["--cluster", "main", "--pg-version", "15.4"],
     "pgha: --pg-version: expected a PostgreSQL major version such as 15, got '15.4'"),
    (["--cluster", "main", "--port", "70000"], "pgha: --port: expected a TCP port 1-65535, got '70000'"),
    (["--cluster", "main", "--secrets-from", "/nonexistent/node1.yaml"],
     "pgha: --secrets-from: /nonexistent/node1.yaml: file not found; pass the path of the node's YAML file "
     "with -c"),
])
def test_a_bad_flag_is_one_line_and_writes_nothing(args: list[str], line: str, tmp_path: Path) -> None:
    out = tmp_path / "node.yaml"
    r = generate(*args, "-o", str(out))
    assert r.exit_code == 1
    assert refusal(r) == line
    assert r.output.strip() == line
    assert not out.exists()
