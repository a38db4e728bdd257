"""A standby cluster (``standby_cluster:`` in the cluster config): the whole cluster follows a remote
source, another cluster's primary (``host``/``port``) or its archive (``restore_command``).  Pure.

Its leader, the *standby leader*, holds the leader key and runs as a replica of that source; the
other members stream from it.  Every value is checked here (``StandbyCluster.problem``) before it
reaches postgresql.conf or a connection string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pgha.core import names
from pgha.core.slotspec import SLOT_NAME_RE

# The upstream name the standby leader's postgresql.conf records for the remote source.  Member
# names start with a letter or digit, so no member can be called this.
REMOTE = "@standby_cluster"
# recovery_min_apply_delay as PostgreSQL reads it: a number and an optional time unit.
DELAY_RE = re.compile(r"\d{1,9}\s*(us|ms|s|min|h|d)?")
# One entry of ``host``: "h", "h:5433", "[::1]" or "[::1]:5433".
_BRACKETED = re.compile(r"\[([0-9A-Fa-f:.%]+)\](?::(\d{1,5}))?")
_PLAIN = re.compile(r"([^:\[\]]+)(?::(\d{1,5}))?")
# Its line in docs/configuration.md's table of cluster settings (ClusterConfig.standby_cluster).
STANDBY_DOC = ("makes this a standby cluster following another one (Patroni's keys): `{host: H or \"h1:p1,h2:p2\", "
               "port: 5432, primary_slot_name: S, restore_command: CMD, recovery_min_apply_delay: \"5min\"}`, host "
               "and/or restore_command; its leader replicates from there and never promotes (`pgha promote-cluster`)")
MAX_HOSTS = 8
MAX_RESTORE_COMMAND = 1024


@dataclass(frozen=True)
class StandbyCluster:
    """``standby_cluster:`` (Patroni's keys): where the standby leader takes its WAL from."""

    # One host, or a list "h1:p1,h2:p2" (libpq tries them in turn); a port left out is ``port``.
    host: str = ""
    port: int = 5432
    # The physical slot on the remote primary the standby leader streams through ("": none).
    primary_slot_name: str = ""
    # Fetches WAL from the remote site's archive, e.g. pgBackRest's archive-get ("": stream only).
    restore_command: str = ""
    # Replay this long behind the source, e.g. "5min" ("": at once).
    recovery_min_apply_delay: str = ""

    @property
    def active(self) -> bool:
        """Whether this makes the cluster a standby cluster (a host or a restore_command is given)."""
        return bool(self.host or self.restore_command)

    def hosts(self) -> tuple[tuple[str, int], ...]:
        """``host`` as (host, port) pairs; only for a config ``problem()`` accepted."""
        out = []
        for item in self.host.split(","):
            item = item.strip()
            m = _BRACKETED.fullmatch(item) or _PLAIN.fullmatch(item)
            if m is None:  # a bare IPv6 address
                out.append((item, self.port))
            else:
                out.append((m.group(1), int(m.group(2)) if m.group(2) else self.port))
        return tuple(out)

    def problem(self) -> str | None:
        """One line naming the first bad value and the fix, or None."""
        p = "standby_cluster"
        if not self.active:
            if self.primary_slot_name or self.recovery_min_apply_delay:
                return f"{p}: give host (the remote primary) or restore_command, or remove standby_cluster"
            return None
        if (why := names.port_problem(self.port)) is not None:
            return f"{p}.port: {why}"
        if self.host and (why := _hosts_problem(self.host)) is not None:
            return f"{p}.host: {why}"
        if self.primary_slot_name and not SLOT_NAME_RE.fullmatch(self.primary_slot_name):
            return (f"{p}.primary_slot_name: {names.shown(self.primary_slot_name)} is not a slot name; use 1 to 63 "
                    "lowercase letters, digits or underscores")
        if self.restore_command:
            rc = self.restore_command
            if names.CONTROL.search(rc) or len(rc) > MAX_RESTORE_COMMAND or not rc.strip():
                return (f"{p}.restore_command: {names.shown(rc)} is not allowed; give one line of at most "
                        f"{MAX_RESTORE_COMMAND} characters, e.g. 'pgbackrest --stanza=main archive-get %f \"%p\"'")
        if self.recovery_min_apply_delay and not DELAY_RE.fullmatch(self.recovery_min_apply_delay):
            return (f"{p}.recovery_min_apply_delay: {names.shown(self.recovery_min_apply_delay)} is not a delay; "
                    "use a number and a unit, e.g. '5min', '30s', '500ms'")
        return None


def _hosts_problem(text: str) -> str | None:
    items = [i.strip() for i in text.split(",")]
    if len(items) > MAX_HOSTS:
        return f"at most {MAX_HOSTS} hosts, got {len(items)}"
    for item in items:
        if not item:
            return f"{names.shown(text)} has an empty entry; write 'h1:5432,h2:5432' or one host"
        m = _BRACKETED.fullmatch(item) or _PLAIN.fullmatch(item)
        host, port = (m.group(1), m.group(2)) if m else (item, None)
        if (why := names.problem("host", host)) is not None:
            return why
        if port is not None and (why := names.port_problem(int(port))) is not None:
            return f"{names.shown(item)}: {why}"
    return None


def rotated(sc: StandbyCluster | None, turn: int) -> StandbyCluster | None:
    """``sc`` with its hosts tried from the ``turn``-th on (libpq tries a list in order, and a host that
    accepts the connection but never answers, a frozen one, holds the WAL receiver forever)."""
    if sc is None or not sc.host or turn == 0:
        return sc
    items = [i.strip() for i in sc.host.split(",")]
    k = turn % len(items)
    return replace(sc, host=",".join(items[k:] + items[:k]))


def several_hosts(sc: StandbyCluster | None) -> bool:
    return sc is not None and "," in sc.host


def source_hosts(sc: StandbyCluster | None) -> set[tuple[str, int]]:
    """The other site's (host, port) pairs, for the password file (none when not a valid standby cluster)."""
    return set(sc.hosts()) if sc is not None and sc.host and sc.problem() is None else set()


def active(sc: StandbyCluster | None) -> bool:
    """Whether ``standby_cluster`` (as the config holds it) makes the cluster a standby cluster."""
    return sc is not None and sc.active
