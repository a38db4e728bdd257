"""The etcd v3 JSON gateway's encoding: base64 keys and values, int64 fields as strings, range ends,
and a streamed body of concatenated JSON objects (pgha.dcs.etcd speaks it)."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
from collections.abc import Iterator
from typing import Any

import urllib3

from pgha.dcs.base import DCSError, KeyValue


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(data: str | None) -> bytes:
    return base64.b64decode(data) if data else b""


def prefix_end(prefix: str) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (etcd's range_end)."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"  # every key
    raw[-1] += 1
    return bytes(raw)


def int_field(obj: dict[str, Any], field: str) -> int:
    return int(obj.get(field) or 0)


def keyvalue(kv: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=unb64(kv.get("key")).decode(errors="replace"),
        value=unb64(kv.get("value")),
        create_revision=int_field(kv, "create_revision"),
        mod_revision=int_field(kv, "mod_revision"),
        lease=int_field(kv, "lease"),
    )


def shutdown_stream(resp: urllib3.BaseHTTPResponse) -> None:
    """Wake a reader blocked on ``resp``'s socket (from another thread) by shutting it down."""
    conn = getattr(resp, "connection", None)
    sock = getattr(conn, "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def json_objects(resp: urllib3.BaseHTTPResponse) -> Iterator[dict[str, Any]]:
    """The JSON objects of a streamed body (newline-separated or simply concatenated)."""
    decoder = json.JSONDecoder()
    buf = ""
    for chunk in resp.stream(None):
        buf += chunk.decode(errors="replace")
        while True:
            buf = buf.lstrip()
            if not buf:
                break
            try:
                obj, end = decoder.raw_decode(buf)
            except ValueError:
                if len(buf) > 64 * 1024 * 1024:
                    raise DCSError("etcd watch stream sent an unparseable answer") from None
                break  # incomplete: wait for more
            buf = buf[end:]
            if isinstance(obj, dict):
                yield obj
