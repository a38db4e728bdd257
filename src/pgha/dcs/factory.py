"""One place that turns a ``dcs:`` configuration (or a ``--dcs URL``) into a KV backend.

The agent, the CLI and the demo all open their DCS here, so a new backend is
one more branch in ``open_kv`` and nothing else changes.

``--dcs`` URLs: ``http(s)://host:port[,http(s)://host:port…]`` is etcd,
``zk://host:port[,host:port…]`` is ZooKeeper (``zks://`` over TLS).
"""

from __future__ import annotations

from dataclasses import replace

from pgha.config import DcsConfig, EtcdConfig, ZooKeeperConfig
from pgha.dcs.base import KV

ZK_SCHEME = "zk://"
ZKS_SCHEME = "zks://"


def open_kv(dcs: DcsConfig) -> KV:
    """The KV backend ``dcs`` describes (nothing is contacted until the first request)."""
    if dcs.type == "zookeeper":
        from pgha.dcs.zk_secure import ZkSecurity
        from pgha.dcs.zookeeper import ZooKeeperKV

        zk = dcs.zookeeper
        security = (ZkSecurity(zk.username, zk.password, zk.acl, zk.tls, zk.cacert, zk.cert, zk.key)
                    if zk.username and zk.password else None)
        return ZooKeeperKV(zk.hosts, dcs.request_timeout, lease_dir=f"{dcs.prefix.rstrip('/')}/.leases",
                           security=security, root=dcs.prefix)
    from pgha.dcs.etcd import EtcdKV

    etcd = dcs.etcd
    return EtcdKV(etcd.endpoints, dcs.request_timeout, cacert=etcd.cacert, cert=etcd.cert, key=etcd.key,
                  username=etcd.username, password=etcd.password)


def parse_dcs_url(text: str, base: DcsConfig | None = None) -> DcsConfig:
    """``--dcs`` into a DcsConfig; TLS/auth settings of ``base`` (from -c FILE) are kept for its backend.

    Raises ValueError with one line naming the bad URL and the accepted forms.
    """
    base = base or DcsConfig()
    text = text.strip()
    if text.startswith((ZK_SCHEME, ZKS_SCHEME)):
        scheme = ZKS_SCHEME if text.startswith(ZKS_SCHEME) else ZK_SCHEME
        hosts = tuple(h.strip() for h in text[len(scheme):].split(",") if h.strip())
        if not hosts:
            raise ValueError(f"give at least one host:port after {scheme}, e.g. {scheme}127.0.0.1:2181")
        for host in hosts:
            name, _, port = host.rpartition(":")
            if not name or not port.isdigit():
                raise ValueError(f"{host!r} is not host:port; use {scheme}127.0.0.1:2181[,host:port…]")
        zk = base.zookeeper if base.type == "zookeeper" else ZooKeeperConfig()
        zk = replace(zk, hosts=hosts, tls=zk.tls or scheme == ZKS_SCHEME)
        return replace(base, type="zookeeper", zookeeper=zk)
    urls = tuple(u.strip().rstrip("/") for u in text.split(",") if u.strip())
    if not urls:
        raise ValueError("give at least one URL, e.g. http://127.0.0.1:2379 or zk://127.0.0.1:2181")
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise ValueError(f"{u!r} must start with http:// or https:// (etcd), or zk:// (ZooKeeper)")
    return replace(base, type="etcd", etcd=replace(base.etcd if base.type == "etcd" else EtcdConfig(),
                                                     endpoints=urls))


def dcs_url(dcs: DcsConfig) -> str:
    """The ``--dcs`` form of ``dcs`` (without TLS files or credentials)."""
    if dcs.type == "zookeeper":
        return (ZKS_SCHEME if dcs.zookeeper.tls else ZK_SCHEME) + ",".join(dcs.zookeeper.hosts)
    return ",".join(dcs.etcd.endpoints)
