"""pgbackrest.conf for a database member and for the repository host.  Pure: text in, text out.

A member's file points ``repo1-host`` at the repository over TLS (``repo1-host-type=tls``) and
configures the member's own ``pgbackrest server`` (``tls-server-*``) that the repository connects
to when it takes a backup.  The repository's file keeps the repository (``repo1-path``,
retention) and lists every member as ``pgN-host`` (from what the members publish in the DCS).

pgBackRest passes a client's options to the remote side, so the member's file names the
repository's ``repo1-path`` and the repository's file each member's ``pgN-path``, ``pgN-port``
and ``pgN-socket-path``.  Every value is checked here, again, before it is written: a newline or
'=' in a value would add options of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from pgha.backup.settings import CN_RE, HOST_RE, PATH_RE, STANZA_RE, BackupConfig
from pgha.core.model import BackupEndpoint

MARKER = "# Managed by pgha: rewritten on every start, do not edit."


class ConfValueError(ValueError):
    """A value that must not reach pgbackrest.conf; ``str()`` is one line."""


USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")


def _check(kind: str, value: str | int) -> str:
    text = str(value)
    ok = {
        "host": lambda: bool(HOST_RE.match(text)),
        "path": lambda: bool(PATH_RE.match(text)),
        "stanza": lambda: bool(STANZA_RE.match(text)),
        "cn": lambda: bool(CN_RE.match(text)),
        "user": lambda: bool(USER_RE.match(text)),
        "port": lambda: text.isdigit() and 1 <= int(text) <= 65535,
        "count": lambda: text.isdigit(),
    }[kind]()
    if not ok:
        raise ConfValueError(f"pgbackrest.conf: {kind} {text!r} is not allowed there; fix the configuration")
    return text


def _render(sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> str:
    lines = [MARKER]
    for name, options in sections:
        lines += ["", f"[{name}]"]
        lines += [f"{k}={v}" for k, v in options]
    return "\n".join(lines) + "\n"


def state_dir(config_file: Path) -> Path:
    """Where pgBackRest keeps its logs, locks and spool next to ``config_file``."""
    return config_file.parent / "pgbackrest"


def _common(config_file: Path) -> list[tuple[str, str]]:
    base = state_dir(config_file)
    return [("log-path", _check("path", f"{base}/log")), ("lock-path", _check("path", f"{base}/lock")),
            ("spool-path", _check("path", f"{base}/spool")), ("log-level-file", "info"),
            ("log-level-console", "warn"), ("log-level-stderr", "error")]


def _tls_server(b: BackupConfig, listen: str, clients: Mapping[str, str]) -> list[tuple[str, str]]:
    opts = [("tls-server-address", _check("host", listen)), ("tls-server-port", _check("port", b.server_port)),
            ("tls-server-cert-file", _check("path", b.tls.certfile)),
            ("tls-server-key-file", _check("path", b.tls.keyfile)),
            ("tls-server-ca-file", _check("path", b.tls.cafile))]
    opts += [("tls-server-auth", f"{_check('cn', cn)}={stanza if stanza == '*' else _check('stanza', stanza)}")
             for cn, stanza in clients.items()]
    return opts


def render_member(b: BackupConfig, cluster: str, config_file: Path, listen: str, data_dir: str, pg_port: int,
                  socket_dir: str, user: str) -> str:
    """A database member's pgbackrest.conf."""
    stanza = _check("stanza", b.stanza_for(cluster))
    glob = [
        ("repo1-host", _check("host", b.repository)), ("repo1-host-type", "tls"),
        ("repo1-host-port", _check("port", b.port)),
        ("repo1-host-cert-file", _check("path", b.tls.certfile)),
        ("repo1-host-key-file", _check("path", b.tls.keyfile)),
        ("repo1-host-ca-file", _check("path", b.tls.cafile)),
        ("repo1-path", _check("path", b.path)),
        *_common(config_file),
        *_tls_server(b, b.server_listen or listen, {b.tls.repository_cn: stanza}),
    ]
    pg = [("pg1-path", _check("path", data_dir)), ("pg1-port", _check("port", pg_port)),
          ("pg1-socket-path", _check("path", socket_dir)), ("pg1-user", _check("user", user))]
    return _render([("global", glob), (stanza, pg)])


def render_repository(b: BackupConfig, cluster: str, config_file: Path, listen: str,
                      members: Mapping[str, BackupEndpoint], clients: Sequence[str] = (),
                      departed: Sequence[str] = ()) -> str:
    """The repository host's pgbackrest.conf: the repository and one pgN-host per member (by name);
    ``clients``: more certificate CNs let in for every stanza; ``departed``: former members' CNs,
    still let in for this stanza."""
    stanza = _check("stanza", b.stanza_for(cluster))
    glob = [("repo1-path", _check("path", b.path)),
            ("repo1-retention-full", _check("count", b.retention_full)),
            *([("repo1-retention-diff", _check("count", b.retention_diff))] if b.retention_diff else []),
            ("start-fast", "y"), ("archive-check", "y"), ("process-max", "2"),
            *_common(config_file),
            *_tls_server_repo(b, listen, {**dict.fromkeys(sorted({*members, *departed}), stanza),
                                          **dict.fromkeys(clients, "*")})]
    pg: list[tuple[str, str]] = []
    for i, m in enumerate((members[name] for name in sorted(members)), start=1):
        pg += [(f"pg{i}-host", _check("host", m.host)), (f"pg{i}-host-type", "tls"),
               (f"pg{i}-host-port", _check("port", m.port)),
               (f"pg{i}-host-cert-file", _check("path", b.tls.certfile)),
               (f"pg{i}-host-key-file", _check("path", b.tls.keyfile)),
               (f"pg{i}-host-ca-file", _check("path", b.tls.cafile)),
               (f"pg{i}-path", _check("path", m.data_dir)), (f"pg{i}-port", _check("port", m.pg_port)),
               (f"pg{i}-socket-path", _check("path", m.socket_dir)), (f"pg{i}-user", _check("user", m.user))]
    return _render([("global", glob), (stanza, pg)])


def _tls_server_repo(b: BackupConfig, listen: str, clients: Mapping[str, str]) -> list[tuple[str, str]]:
    """The repository's own TLS server listens on backup.port (the port the members connect to)."""
    opts = _tls_server(b, listen, clients)
    return [(k, _check("port", b.port)) if k == "tls-server-port" else (k, v) for k, v in opts]
