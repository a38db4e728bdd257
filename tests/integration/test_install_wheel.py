"""The wheel built from this checkout installs into a clean virtualenv, and the `pgha` it installs runs.

The build works on a copy of the sources (no build/ or egg-info left in the checkout, and nothing stale
from an earlier build/ directory in the wheel). The clean venv gets its dependencies the way an operator's
would: pip's own index configuration and cache (PyPI on a fresh CI machine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import pgha
from tests.support.procs import PG_BIN, free_port

# Building and installing take seconds on an idle machine, minutes on a loaded one.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Installed:
    wheel: Path
    bin: Path  # the clean venv's bin directory

    def pgha(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / "pgha"), *args], input=stdin, capture_output=True, text=True,
                              timeout=60, check=False, cwd="/")


def build_wheel(dest: Path) -> Path:
    src = dest / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest / "dist"), "."],
                   cwd=src, check=True, capture_output=True, text=True, timeout=180)
    wheels = sorted((dest / "dist").glob("pgha-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(root)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    res = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
                         capture_output=True, text=True, timeout=240, check=False)
    assert res.returncode == 0, res.stderr
    yield Installed(wheel, venv / "bin")
    shutil.rmtree(root, ignore_errors=True)


def package_files() -> set[str]:
    """Every file under src/pgha that belongs in the wheel (no bytecode caches)."""
    base = REPO / "src"
    return {str(p.relative_to(base)) for p in (base / "pgha").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_the_wheel_holds_every_package_file_and_the_version(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
        meta = whl.read(f"pgha-{pgha.__version__}.dist-info/METADATA").decode()
    assert installed.wheel.name == f"pgha-{pgha.__version__}-py3-none-any.whl"
    assert f"\nVersion: {pgha.__version__}\n" in meta
    assert "pgha/py.typed" in names
    assert package_files() <= names, sorted(package_files() - names)
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]


def test_the_installed_pgha_runs_from_the_clean_venv(installed: Installed) -> None:
    res = installed.pgha("--version")
    assert (res.returncode, res.stdout.strip()) == (0, f"pgha, version {pgha.__version__}"), res.stderr
    # It is the wheel's copy that runs, not this checkout's.
    where = subprocess.run([str(installed.bin / "python"), "-c", "import pgha; print(pgha.__file__)"],
                           capture_output=True, text=True, check=True, cwd="/").stdout
    assert where.startswith(str(installed.bin.parent)), where


def test_the_installed_pgha_validates_a_node_file(installed: Installed, tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    node = {"cluster": "main", "name": "node1",
            "postgresql": {"data_dir": str(tmp_path / "data"), "bin_dir": PG_BIN, "port": free_port()},
            "api": {"listen": f"127.0.0.1:{free_port()}", "auth": {"username": "pgha", "password": "pw"}}}
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(node))
    res = installed.pgha("validate", "-c", str(path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"{path}: OK (cluster main, node node1)"
    assert not (tmp_path / "data").exists()


def test_the_installed_pgha_validates_what_it_generates(installed: Installed, tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    gen = installed.pgha("generate-config", "--cluster", "main", "--name", "node1", "--data-dir",
                         str(tmp_path / "data"), "--pg-version", "15", "--port", str(free_port()),
                         "--api-listen", f"127.0.0.1:{free_port()}")
    assert gen.returncode == 0, gen.stderr
    res = installed.pgha("validate", "-c", "-", stdin=gen.stdout)
    assert (res.returncode, res.stdout.strip()) == (0, "<stdin>: OK (cluster main, node node1)"), res.stderr
