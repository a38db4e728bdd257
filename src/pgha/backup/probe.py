"""Can this host reach the repository's pgbackrest server?  A TLS handshake with the configured files."""

from __future__ import annotations

import socket
import ssl

from pgha.backup.settings import BackupConfig


def reach_repository(b: BackupConfig, timeout: float = 3.0) -> str | None:
    """None when a TLS handshake with the repository succeeds; one line naming the problem otherwise."""
    where = f"backup.repository: {b.repository}:{b.port}"
    try:
        ctx = ssl.create_default_context(cafile=b.tls.cafile)
        ctx.load_cert_chain(b.tls.certfile, b.tls.keyfile)
    except (OSError, ssl.SSLError) as exc:
        return f"backup.tls: cannot load the certificate, key or CA ({exc.__class__.__name__}: {exc}); fix the files"
    try:
        with socket.create_connection((b.repository, b.port), timeout=timeout) as sock, \
                ctx.wrap_socket(sock, server_hostname=b.repository):
            return None
    except ssl.SSLCertVerificationError as exc:
        return f"{where}: its certificate is not trusted ({exc.verify_message}); check backup.tls.cafile"
    except (OSError, ssl.SSLError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or exc.__class__.__name__
        return f"{where}: unreachable ({why}); start 'pgha repository run' there or fix backup.repository/port"
