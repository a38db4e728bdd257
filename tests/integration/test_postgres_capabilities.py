"""PostgreSQL's programs start without the capabilities the agent holds for the VIP.

Under packaging/systemd the agent runs as postgres with CAP_NET_ADMIN and CAP_NET_RAW as ambient
capabilities, which every child would inherit. Here the agent side is a Python process started the same
way (setpriv as root: user postgres, those two capabilities ambient); the "PostgreSQL program" is a stub
in a bin_dir that prints its own capability sets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pgbouncer import scratch_dir

pytestmark = pytest.mark.integration

VIP_CAPS = 0x3000  # CAP_NET_ADMIN (12) | CAP_NET_RAW (13)

RUN_STUB = """
import sys
from pathlib import Path
from pgha.postgres.binaries import Binaries, RunAs
bin_dir = sys.argv[1]
print(open('/proc/self/status').read())
print('----')
print(Binaries(bin_dir, RunAs.for_data_dir(Path(bin_dir) / 'data'), Path('/')).run('pg_ctl', [], timeout=10).stdout)
"""


def caps(status: str) -> dict[str, int]:
    return {k: int(v, 16) for k, v in (line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))}


@pytest.mark.skipif(os.geteuid() != 0, reason="setpriv needs root to start a process with ambient capabilities")
def test_postgres_programs_do_not_inherit_the_agents_ambient_capabilities() -> None:
    bin_dir = scratch_dir("pgha-caps-")  # pytest's tmp_path is private to root
    try:
        agent, program = run_as_agent(bin_dir)
    finally:
        shutil.rmtree(bin_dir, ignore_errors=True)
    assert caps(agent)["CapAmb"] == caps(agent)["CapEff"] == VIP_CAPS  # the agent as systemd starts it
    assert caps(program) and {k: v for k, v in caps(program).items() if k != "CapBnd"} == \
        {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapAmb": 0}


def run_as_agent(bin_dir: Path) -> list[str]:
    stub = bin_dir / "pg_ctl"
    stub.write_text("#!/bin/sh\ngrep ^Cap /proc/self/status\n")
    stub.chmod(0o755)
    res = subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups",
                          "--inh-caps=+net_admin,+net_raw", "--ambient-caps=+net_admin,+net_raw", "--",
                          sys.executable, "-c", RUN_STUB, str(bin_dir)],
                         capture_output=True, text=True, timeout=60, check=False, cwd="/")
    assert res.returncode == 0, res.stderr
    return res.stdout.split("----")
