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


def test_a_renewal_gives_a_silent_endpoint_only_its_own_timeout(etcd: EtcdServer, silent_url: str) -> None:
    """A lease renewal bounds each endpoint's answer by the time its lease has (the fast profile gives
    0.65 s), not by the request timeout, so a member cut off from its agent costs a fraction of ttl."""
    direct = EtcdKV((etcd.url,), 5.0)
    lease = direct.grant(10)
    kv = EtcdKV((silent_url, etcd.url), 5.0)  # the silent endpoint first, the live one next
    started = time.monotonic()
    assert kv.keepalive(lease, timeout=0.3) == 10
    assert time.monotonic() - started < 1.5, "the silent endpoint held the renewal for the request timeout"
    direct.revoke(lease)
    kv.close()
    direct.close()
