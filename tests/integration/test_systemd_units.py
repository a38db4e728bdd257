"""packaging/systemd: both units pass `systemd-analyze verify` and grant the VIP's two capabilities only.

verify needs ExecStart's binary to exist, so each unit is checked from a copy whose ExecStart names a
stub script; any warning (an unknown or misspelt key, a bad value) fails the test, not only errors.
"""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

UNITS = Path(__file__).resolve().parents[2] / "packaging" / "systemd"
INSTALLED_PGHA = "/opt/pgha/bin/pgha"


def verify(unit: Path, tmp: Path, pgha: str) -> subprocess.CompletedProcess[str]:
    copy = tmp / unit.name
    copy.write_text(unit.read_text().replace(INSTALLED_PGHA, pgha))
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True,
                          timeout=60, check=False)


def service_section(unit: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    return dict(parser["Service"])


@pytest.mark.parametrize("name", ["pgha.service", "pgha@.service"])
def test_unit_verifies_without_a_warning(name: str, tmp_path: Path) -> None:
    stub = tmp_path / "pgha"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    res = verify(UNITS / name, tmp_path, str(stub))
    assert (res.returncode, res.stderr, res.stdout) == (0, "", "")


def test_verify_does_check_the_units(tmp_path: Path) -> None:
    """The negative control: the same check fails for a unit whose binary is missing."""
    res = verify(UNITS / "pgha.service", tmp_path, str(tmp_path / "missing"))
    assert res.returncode != 0 and "is not executable" in res.stderr


def test_units_run_as_postgres_with_the_vip_capabilities_and_nothing_more() -> None:
    for name in ("pgha.service", "pgha@.service"):
        svc = service_section(UNITS / name)
        assert (svc["User"], svc["Group"]) == ("postgres", "postgres")
        assert svc["AmbientCapabilities"] == svc["CapabilityBoundingSet"] == "CAP_NET_ADMIN CAP_NET_RAW"
        assert svc["NoNewPrivileges"] == "yes"
        # SIGTERM to the agent alone: it stops PostgreSQL, drops the VIP, releases the key; a crash
        # leaves the watchdog alive to fence.
        assert (svc["KillMode"], svc["Restart"]) == ("process", "on-failure")


def test_the_template_differs_only_in_the_config_path_and_description() -> None:
    single = service_section(UNITS / "pgha.service")
    template = service_section(UNITS / "pgha@.service")
    assert single["ExecStart"] == f"{INSTALLED_PGHA} agent -c /etc/pgha/pgha.yaml"
    assert template["ExecStart"] == f"{INSTALLED_PGHA} agent -c /etc/pgha/%i.yaml"
    assert {k: v for k, v in single.items() if k != "ExecStart"} == \
        {k: v for k, v in template.items() if k != "ExecStart"}


def test_units_limit_files_tasks_and_system_calls() -> None:
    """Issue 20: no client load can exhaust the host through the agent; a backstop to the API's own caps."""
    for name in ("pgha.service", "pgha@.service"):
        svc = service_section(UNITS / name)
        assert int(svc["LimitNOFILE"]) >= 4096
        assert 1024 <= int(svc["TasksMax"]) <= 65536
        assert svc["SystemCallFilter"] == "@system-service"
        assert svc["SystemCallErrorNumber"] == "EPERM"
