"""`pgha validate` against the machine: ports in use, data-dir ownership, missing binaries."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pgha.cli.main import _register, cli
from tests.support.procs import chown_postgres, free_port


def write_config(tmp: Path, **overrides: Any) -> Path:
    os.chmod(tmp, 0o755)
    data: dict[str, Any] = {
        "cluster": "main",
        "name": "node1",
        "postgresql": {"data_dir": str(tmp / "data"), "port": free_port()},
        "api": {"listen": f"127.0.0.1:{free_port()}", "auth": "none"},
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        data.setdefault(section, {})[field] = value
    path = tmp / "node.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def validate(path: Path) -> tuple[int, list[str]]:
    _register()
    result = CliRunner().invoke(cli, ["validate", "-c", str(path)])
    return result.exit_code, [line for line in result.output.splitlines() if line]


def listen_on(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def test_valid_config_passes(tmp_path: Path) -> None:
    code, lines = validate(write_config(tmp_path))
    assert code == 0, lines
    assert not (tmp_path / "data").exists()


def test_postgres_port_in_use(tmp_path: Path) -> None:
    port = free_port()
    with listen_on(port):
        code, lines = validate(write_config(tmp_path, postgresql__port=port))
    assert code == 1 and len(lines) == 1
    assert f"postgresql.port: 127.0.0.1:{port} is already in use" in lines[0]


def test_api_port_in_use(tmp_path: Path) -> None:
    port = free_port()
    with listen_on(port):
        code, lines = validate(write_config(tmp_path, api__listen=f"127.0.0.1:{port}"))
    assert code == 1 and len(lines) == 1
    assert "api.listen" in lines[0] and "already in use" in lines[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a directory owned by someone else")
def test_data_dir_wrong_owner(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)  # owned by root, but PostgreSQL runs as postgres
    code, lines = validate(write_config(tmp_path))
    assert code == 1 and len(lines) == 1
    assert "is owned by root, not postgres" in lines[0] and "chown" in lines[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to postgres")
def test_data_dir_bad_mode(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    os.chmod(data, 0o777)
    chown_postgres(str(data))
    code, lines = validate(write_config(tmp_path))
    assert code == 1 and "chmod 700" in lines[0]


def test_missing_binary(tmp_path: Path) -> None:
    code, lines = validate(write_config(tmp_path, postgresql__bin_dir=str(tmp_path / "nobin")))
    assert code == 1 and len(lines) == 1
    assert "initdb not found" in lines[0] and "install postgresql-15" in lines[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to postgres")
def test_data_dir_of_another_major_than_bin_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "PG_VERSION").write_text("18\n")
    chown_postgres(str(data))
    code, lines = validate(write_config(tmp_path))
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"pgha: postgresql.data_dir: {data} is PostgreSQL 18 but postgresql.bin_dir "
                               "/usr/lib/postgresql/15/bin is PostgreSQL 15; point bin_dir at"), lines
