"""PostgreSQL's programs in bin_dir, and the user they run as.

PostgreSQL refuses to run as root.  In production the agent runs as the
``postgres`` user and runs the binaries as itself.  When the agent runs as
root (tests, CI, hosts without systemd) every binary runs as the owner of the
data directory's parent directory (or ``postgres`` when root owns that
directory), with that user's primary group and no supplementary groups.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pgha.postgres.common import PostgresError


@dataclass(frozen=True)
class RunAs:
    """The OS user PostgreSQL runs as; ``switch`` is True when we must change to it (we are root)."""

    uid: int
    gid: int
    home: str
    name: str
    switch: bool

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> RunAs:
        if os.geteuid() != 0:
            pw = _pw(os.geteuid())
            return cls(os.geteuid(), os.getegid(), pw.pw_dir if pw else "/", pw.pw_name if pw else "", False)
        owner = 0
        for d in (data_dir.parent, *data_dir.parent.parents):
            try:
                owner = d.stat().st_uid
                break
            except FileNotFoundError:
                continue
        if owner == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresError(
                    "no 'postgres' user on this host and the data directory's parent is "
                    "owned by root; chown it to the user PostgreSQL should run as"
                ) from None
        else:
            found = _pw(owner)
            if found is None:
                raise PostgresError(
                    f"{data_dir.parent}: owned by uid {owner}, which has no user entry; "
                    "chown it to the postgres user"
                )
            pw = found
        return cls(pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_name, True)

    def popen_kwargs(self) -> dict[str, Any]:
        if not self.switch:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        """Give ``path`` to this user when we run as root (a no-op otherwise)."""
        if self.switch:
            os.chown(path, self.uid, self.gid)


def _pw(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


# Under systemd the agent holds CAP_NET_ADMIN and CAP_NET_RAW as ambient capabilities (for the VIP), and
# ambient capabilities pass to every program it runs. PostgreSQL needs neither (a superuser's COPY TO
# PROGRAM could change the host's addresses), so its programs start through setpriv without them.
DROP_CAPABILITIES = ("setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--")


def holds_ambient_capabilities() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapAmb:"):
                    return int(line.split()[1], 16) != 0
    except (OSError, ValueError, IndexError):
        pass
    return False


class Binaries:
    """Locates PostgreSQL's programs and runs them as the right user with a clean environment."""

    def __init__(self, bin_dir: str, run_as: RunAs, cwd: Path) -> None:
        self.bin_dir = Path(bin_dir)
        self.run_as = run_as
        self.cwd = cwd

    def path(self, name: str) -> str:
        p = self.bin_dir / name
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise PostgresError(f"postgresql.bin_dir: {p} not found; install postgresql-15 or fix bin_dir")
        return str(p)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": self.run_as.home or "/",
            "USER": self.run_as.name,
            "LOGNAME": self.run_as.name,
            # English messages: we parse pg_controldata and keep the gist of errors.
            "LC_ALL": "C",
            "LANG": "C",
        }
        if os.environ.get("TZ"):
            env["TZ"] = os.environ["TZ"]
        env.update(extra or {})
        return env

    def argv(self, name: str, args: Sequence[str]) -> list[str]:
        """The command line for ``name``: without our ambient capabilities when we hold any."""
        drop = DROP_CAPABILITIES if holds_ambient_capabilities() else ()
        return [*drop, self.path(name), *args]

    def _cwd(self) -> str:
        return str(self.cwd) if self.cwd.is_dir() else "/"

    def run(
        self,
        name: str,
        args: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        new_session: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run a program to completion; output is captured as text.  Never raises for a non-zero exit."""
        try:
            return subprocess.run(
                self.argv(name, args),
                env=self.env(env),
                cwd=self._cwd(),
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                start_new_session=new_session,
                check=False,
                **self.run_as.popen_kwargs(),
            )
        except subprocess.TimeoutExpired:
            raise PostgresError(f"{name} did not finish within {timeout:.0f} s") from None
        except OSError as exc:
            raise PostgresError(f"cannot run {name}: {exc.strerror}") from None

    def popen(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = subprocess.PIPE,
    ) -> subprocess.Popen[bytes]:
        """Start a program and return it (the caller reads its output and waits)."""
        try:
            return subprocess.Popen(
                self.argv(name, args),
                env=self.env(env),
                cwd=self._cwd(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                **self.run_as.popen_kwargs(),
            )
        except OSError as exc:
            raise PostgresError(f"cannot run {name}: {exc.strerror}") from None


def last_line(text: str, default: str = "") -> str:
    """The last non-empty line of ``text`` (the gist of most PostgreSQL tool errors)."""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1] if lines else default
