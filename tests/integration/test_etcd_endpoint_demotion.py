"""An etcd endpoint that stops answering is tried last from then on, so a partitioned member costs one
request timeout, not one per request (a write that timed out there is not retried on another
endpoint, so without this every write would go to the dead member first again)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from pgha.dcs.base import DCSError
from pgha.dcs.etcd import EtcdKV
from tests.support.etcd import EtcdServer


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A TCP port that accepts connections (in the kernel's backlog) and never answers: like a member
    behind a partition whose pooled connection still looks open."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_a_write_that_timed_out_moves_the_next_request_to_another_endpoint(etcd: EtcdServer,
                                                                           silent_url: str) -> None:
    kv = EtcdKV((silent_url, etcd.url), 0.5)
    with pytest.raises(DCSError, match="may or may not have been applied"):
        kv.create("/pgha-demotion/key", b"v")
    started = time.monotonic()
    kv.get("/pgha-demotion/key")
    kv.create("/pgha-demotion/other", b"v")
    assert time.monotonic() - started < 0.4, "the silent endpoint was tried again"
    kv.delete_prefix("/pgha-demotion/")
    kv.close()
