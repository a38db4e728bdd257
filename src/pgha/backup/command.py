"""Run ``pgbackrest`` as the PostgreSQL user, with one-line errors.

``PgBackRest(config_file, run_as)`` runs commands against one pgbackrest.conf.  A failure raises
BackupError whose text is pgBackRest's own ERROR line (its code and message, without the hints
that follow), so the CLI, the log and the DCS all show one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgha.postgres.binaries import RunAs

PGBACKREST = "pgbackrest"
# Exit code of `pgbackrest server` and of the commands when they are killed by a signal.
DEFAULT_TIMEOUT = 120.0


class BackupError(Exception):
    """A pgBackRest command failed or could not run; ``str()`` is one line."""


def binary() -> str:
    found = shutil.which(PGBACKREST, path="/usr/bin:/usr/local/bin:/bin")
    if found is None:
        raise BackupError("pgbackrest not found; install it (apt-get install pgbackrest)")
    return found


def first_error(text: str) -> str:
    """pgBackRest's ERROR line (or the last non-empty line) of ``text``, squeezed to one line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "ERROR:" in ln:
            return " ".join(ln[ln.index("ERROR:"):].split())[:400]
    return " ".join(lines[-1].split())[:400] if lines else "no output"


class PgBackRest:
    """pgbackrest commands with one configuration file, run as ``run_as``."""

    def __init__(self, config_file: Path, stanza: str, run_as: RunAs) -> None:
        self.config_file = config_file
        self.stanza = stanza
        self.run_as = run_as

    def argv(self, command: str, args: Sequence[str] = (), stanza: bool = True) -> list[str]:
        opts = [f"--config={self.config_file}", *([f"--stanza={self.stanza}"] if stanza else [])]
        return [binary(), *opts, command, *args]

    def env(self) -> dict[str, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": self.run_as.home or "/", "LC_ALL": "C",
               "LANG": "C", "USER": self.run_as.name, "LOGNAME": self.run_as.name}
        if os.environ.get("TZ"):
            env["TZ"] = os.environ["TZ"]
        return env

    def run(self, command: str, args: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT,
            stanza: bool = True) -> str:
        """Run ``pgbackrest COMMAND``; its standard output, or BackupError with one line."""
        argv = self.argv(command, args, stanza)
        try:
            proc = subprocess.run(argv, env=self.env(), cwd="/", capture_output=True, text=True, errors="replace",
                                  timeout=timeout, stdin=subprocess.DEVNULL, check=False,
                                  **self.run_as.popen_kwargs())
        except subprocess.TimeoutExpired:
            raise BackupError(f"pgbackrest {command} did not finish within {timeout:.0f} s") from None
        except OSError as exc:
            raise BackupError(f"pgbackrest {command} could not start ({exc.strerror})") from None
        if proc.returncode != 0:
            raise BackupError(f"pgbackrest {command} failed: {first_error(proc.stderr + proc.stdout)}")
        return str(proc.stdout)

    def popen(self, command: str, args: Sequence[str] = (), stanza: bool = True,
              log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``pgbackrest COMMAND`` in the background (its output to ``log``)."""
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            return subprocess.Popen(self.argv(command, args, stanza), env=self.env(), cwd="/", stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    **self.run_as.popen_kwargs())
        except OSError as exc:
            raise BackupError(f"pgbackrest {command} could not start ({exc.strerror})") from None
        finally:
            if log is not None and not isinstance(out, int):
                out.close()

    def info(self, timeout: float = 60.0) -> dict[str, Any]:
        """``pgbackrest info --output=json`` for this stanza (an empty dict when it does not exist)."""
        text = self.run("info", ["--output=json"], timeout=timeout)
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise BackupError("pgbackrest info --output=json printed something that is not JSON") from None
        if not isinstance(data, list):
            raise BackupError("pgbackrest info --output=json did not print a list of stanzas")
        for stanza in data:
            if isinstance(stanza, dict) and stanza.get("name") == self.stanza:
                return stanza
        return {}
