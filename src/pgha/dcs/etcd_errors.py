"""How etcd requests fail, in one line each: transport and TLS reasons, gateway errors, auth answers."""

from __future__ import annotations

import re
from typing import Any

from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from pgha.dcs.base import DCSError

GRPC_UNAUTHENTICATED = 16


def tls_reason(exc: BaseException) -> str:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        detail = "hostname mismatch" if "match" in text.lower() else "not signed by the CA"
        return f"TLS: the server's certificate is not trusted ({detail}); check dcs.etcd.cacert"
    if "PEM" in text or "No such file" in text or "KEY_VALUES_MISMATCH" in text:
        return "TLS: cannot load the client certificate or key; check dcs.etcd.cert and dcs.etcd.key"
    if "WRONG_VERSION_NUMBER" in text or "wrong version" in text.lower():
        return "TLS: the endpoint does not speak TLS; use http:// for it"
    if "CERTIFICATE" in text.upper() or "ALERT" in text.upper():
        return "TLS: the server refused the client certificate; check dcs.etcd.cert and dcs.etcd.key"
    return "TLS handshake failed; check dcs.etcd.cacert, cert and key"


def reason(exc: BaseException, timeout: float) -> str:
    """A short lowercase reason for a failed request: 'connection refused', 'no answer within 2s'…"""
    if isinstance(exc, SSLError):
        return tls_reason(exc)
    if isinstance(exc, ReadTimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(exc, NewConnectionError):
        match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
        return match.group(1).strip().lower() if match else "cannot connect"
    if isinstance(exc, ConnectTimeoutError):
        return f"no connection within {timeout:g}s"
    if isinstance(exc, ProtocolError):
        return "connection lost"
    return " ".join(str(exc).split())[:120] or type(exc).__name__


def grpc_error(data: Any) -> tuple[str, int] | None:
    """(message, gRPC code) of an error answer, in either of the gateway's two shapes."""
    if not isinstance(data, dict):
        return None
    err = data.get("error")
    if isinstance(err, dict):  # streaming endpoints: {"error": {"grpc_code", "message", ...}}
        return str(err.get("message", "error")), int(err.get("grpc_code") or err.get("code") or 0)
    if err:  # unary endpoints: {"error": "...", "message": "...", "code": N}
        return str(data.get("message") or err), int(data.get("code") or 0)
    return None


class TokenRejected(DCSError):
    """A member rejected our auth token (expired, or issued before a restart): log in again."""

    def __init__(self, token: str) -> None:
        super().__init__("etcd rejected the auth token")
        self.token = token


def is_auth_error(message: str, code: int) -> bool:
    text = message.lower()
    return code == GRPC_UNAUTHENTICATED or any(
        s in text for s in ("auth token", "authentication failed", "user name is empty", "permission denied",
                            "user name not found"))
