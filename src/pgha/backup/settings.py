"""The ``backup:`` section: where the pgBackRest repository is, the TLS files, retention.  Pure.

The same section serves a database member (where to reach the repository, and its own
``pgbackrest server`` for the repository to reach it) and the repository host (``pgha repository
run``: where it listens and keeps the repository).  ``problem()`` gives one line naming the first
invalid value and the fix; ``pgha.config`` raises it as a ConfigError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pgha.core.gaprepair import MODES as GAP_REPAIR_MODES

# Host names and addresses written into pgbackrest.conf (pgBackRest checks a TLS peer's name
# against its certificate's DNS names, so an address must be one of them too).
HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.:-]{0,252})$")
# Stanza names: pgBackRest makes directories of them.
STANZA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Paths written into pgbackrest.conf and archive_command: no spaces, quotes or '%'.
PATH_RE = re.compile(r"^/[A-Za-z0-9_./+-]*$")
# A certificate's CommonName as tls-server-auth names it ('=' and ',' would change its meaning).
CN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$")

DEFAULT_PORT = 8432


@dataclass(frozen=True)
class BackupTLS:
    # This host's certificate and key (PEM): the server certificate of its `pgbackrest server`
    # and its client certificate toward the other side.  Its CN is what the other side authorizes
    # (a member's CN is its member name; the repository's is tls.repository_cn).
    certfile: str
    keyfile: str
    # The CA that signed the other side's certificate.
    cafile: str
    # The CommonName of the repository host's certificate (members let only it in).
    repository_cn: str = "repository"


@dataclass(frozen=True)
class BackupConfig:
    # Host name of the repository host, as in its certificate's DNS names.
    repository: str
    tls: BackupTLS
    # TCP port of the repository's `pgbackrest server`.
    port: int = DEFAULT_PORT
    # The repository's directory on the repository host (repo1-path).
    path: str = "/var/lib/pgbackrest"
    # The pgBackRest stanza; empty: the cluster name.
    stanza: str = ""
    # A member: the address its own `pgbackrest server` listens on (empty: postgresql.listen)
    # and its port; the repository reaches it there to take backups.
    server_listen: str = ""
    server_port: int = DEFAULT_PORT
    # Full backups kept (repo1-retention-full); `expire` removes older ones and their WAL.
    retention_full: int = 2
    # Differential backups kept (repo1-retention-diff); 0: pgBackRest's default.
    retention_diff: int = 0
    # Take backups from a streaming standby when there is one (backup-standby).
    from_standby: bool = True
    # Where pgha writes this host's pgbackrest.conf; empty: next to the data directory (a member)
    # or in the repository's parent directory (the repository host).
    config_file: str = ""
    # What the agent does about a hole the gap check finds after a timeline change
    # (pgha.core.gaprepair): push (members push what they hold, else a full backup), full, none.
    gap_repair: str = "push"

    def stanza_for(self, cluster: str) -> str:
        return self.stanza or cluster


@dataclass(frozen=True)
class RestoreSource:
    """bootstrap.pgbackrest: the stanza a new cluster is restored from, and the recovery target."""

    stanza: str
    # At most one target; none: replay the whole archive (the latest point).
    target_time: str = ""
    target_lsn: str = ""
    target_name: str = ""


def problem(b: BackupConfig, cluster: str, path: str = "backup") -> str | None:
    """One line naming the first invalid value of ``b`` and the fix, or None."""
    if not HOST_RE.match(b.repository):
        return f"{path}.repository: {b.repository!r} is not a host name; give the repository host's name, e.g. backup1"
    for key, port in (("port", b.port), ("server_port", b.server_port)):
        if not 1 <= port <= 65535:
            return f"{path}.{key}: {port} is not a TCP port; use 1-65535"
    if b.server_listen and not HOST_RE.match(b.server_listen):
        return f"{path}.server_listen: {b.server_listen!r} is not an address; e.g. 0.0.0.0 or 10.0.0.5"
    if not STANZA_RE.match(b.stanza_for(cluster)):
        return (f"{path}.stanza: {b.stanza_for(cluster)!r} is not a stanza name; use letters, digits, '-', '_' "
                "or '.'")
    for key, value in (("path", b.path), ("config_file", b.config_file), ("tls.certfile", b.tls.certfile),
                       ("tls.keyfile", b.tls.keyfile), ("tls.cafile", b.tls.cafile)):
        if (value or key != "config_file") and not PATH_RE.match(value):
            return (f"{path}.{key}: {value!r} must be an absolute path of letters, digits and '_./+-', "
                    "e.g. /etc/pgha/backup.crt")
    if not CN_RE.match(b.tls.repository_cn):
        return f"{path}.tls.repository_cn: {b.tls.repository_cn!r} is not a certificate CommonName; e.g. repository"
    if not 1 <= b.retention_full <= 9999999:
        return f"{path}.retention_full: {b.retention_full} must be 1 or more full backups"
    if not 0 <= b.retention_diff <= 9999999:
        return f"{path}.retention_diff: {b.retention_diff} must be 0 (pgBackRest's default) or more"
    if b.gap_repair not in GAP_REPAIR_MODES:
        return f"{path}.gap_repair: {b.gap_repair!r} is not one of {', '.join(GAP_REPAIR_MODES)}; e.g. push"
    for key in ("certfile", "keyfile", "cafile"):
        value = getattr(b.tls, key)
        if not Path(value).is_file():
            return f"{path}.tls.{key}: file {value} not found; give the path of a PEM file"
    return None
