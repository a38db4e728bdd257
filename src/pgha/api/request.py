"""The request a route handler receives and the reply it returns (no sockets here)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pgha.api.handle import AgentHandle, NodeSnapshot


@dataclass
class Request:
    handle: AgentHandle
    method: str
    path: str
    # Validated query parameters (one value each) and JSON body (an object, {} when empty).
    query: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] = field(default_factory=dict)
    # Wall-clock epoch seconds, for schedules.
    wall_now: float = field(default_factory=time.time)
    mono_now: float = field(default_factory=time.monotonic)

    @cached_property
    def snapshot(self) -> NodeSnapshot:
        return self.handle.snapshot()


@dataclass(frozen=True)
class Reply:
    status: int
    # A JSON document, or None for no body.
    body: Any = None
    # Raw bytes (e.g. Prometheus text) sent instead of JSON, with ``content_type``.
    raw: bytes | None = None
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


def error(status: int, message: str, **headers: str) -> Reply:
    return Reply(status, {"error": message}, headers=headers)
