"""--netns and --vip: every node in its own network namespace on a bridge, the VIP on the leader."""

from __future__ import annotations

import contextlib
import ipaddress
import time
from typing import Any

from pgha.core.model import ClusterView
from pgha.dcs.base import DCSError
from pgha.demo import netlab
from pgha.demo.base import DemoBase
from pgha.demo.state import (
    CLIENT_HOST,
    ETCD_HOST_BASE,
    NODE_HOST_BASE,
    REPOSITORY_HOST,
    DemoError,
    DemoState,
)


class LabMixin(DemoBase):
    """The network lab of a --netns demo, and the VIP checks of a --vip one."""

    def _lab_node_config(self, cfg: dict[str, Any], i: int) -> None:
        """Inside its namespace a node listens on its own address (and the VIP, bound before it is
        held thanks to ip_nonlocal_bind); every node uses the same PostgreSQL port, so the VIP's
        port does not depend on which node holds it."""
        assert self.lab is not None
        address = self.lab.address(NODE_HOST_BASE + i)
        pg = cfg["postgresql"]
        pg["port"] = self.lab_pg_port
        pg["listen"] = f"{address},{self.vip}" if self.vip else address
        pg["connect_address"] = f"{address}:{pg['port']}"
        cfg["api"]["listen"] = f"{address}:{self.port_base + 10 * i + 1}"
        if self.vip:
            cfg["vip"] = {"address": self.vip, "prefix": self.lab.subnet.prefixlen, "interface": "eth0"}

    @property
    def lab_pg_port(self) -> int:
        return self.port_base + 10

    def _check_lab(self) -> ipaddress.IPv4Network:
        """The lab's /24 (the VIP's, or a free one), after checking --netns can work here."""
        if self.vip and not self.netns:
            raise DemoError("--vip needs --netns: the VIP moves between the nodes' network namespaces")
        if self.pgbouncer:
            # The demo's PgBouncers listen on 127.0.0.1 of the root namespace, not in the nodes'.
            raise DemoError("--pgbouncer does not combine with --netns yet; start the demo with one of them")
        if self.external_etcd:
            raise DemoError("--netns starts its own etcd on the lab bridge; it cannot share an external etcd")
        subnet = self._vip_subnet() if self.vip else None
        why = netlab.unavailable()
        if why:
            raise DemoError(f"--netns: {why}; run 'pgha demo up --netns' as root")
        try:
            return subnet or netlab.free_subnet()
        except netlab.NetLabError as exc:
            raise DemoError(f"--netns: {exc}") from None

    def _vip_subnet(self) -> ipaddress.IPv4Network:
        """The VIP's /24, which must leave room for the bridge, the nodes and the client."""
        assert self.vip is not None
        try:
            subnet = netlab.subnet_of(self.vip)
        except netlab.NetLabError as exc:
            raise DemoError(f"--vip: {exc}") from None
        taken = {subnet.network_address, subnet.broadcast_address, subnet.network_address + 1,
                 subnet.network_address + CLIENT_HOST}
        taken |= {subnet.network_address + NODE_HOST_BASE + i for i in range(1, self.n + 1)}
        taken |= {subnet.network_address + ETCD_HOST_BASE + i for i in range(1, self.etcd_members + 1)}
        if ipaddress.IPv4Address(self.vip) in taken:
            raise DemoError(f"--vip {self.vip}: that address is the lab's bridge, a node or the client "
                            f"(.1, .{NODE_HOST_BASE + 1}-.{NODE_HOST_BASE + self.n}, .{CLIENT_HOST}, etcd members "
                            f".{ETCD_HOST_BASE + 1}-); "
                            f"pick another one in {subnet}, e.g. {subnet.network_address + 100}")
        return subnet

    def _create_lab(self, subnet: ipaddress.IPv4Network) -> None:
        """The bridge, one namespace per node and the client's; one-line DemoError otherwise."""
        try:
            self.lab = netlab.Lab.create(subnet)
            for i in range(1, self.n + 1):
                self.lab.add_host(self.node_name(i), NODE_HOST_BASE + i)
            self.lab.add_host("client", CLIENT_HOST)
            if getattr(self, "backup", False):
                self.lab.add_host("repository", REPOSITORY_HOST)
            self._add_member_hosts()
        except netlab.NetLabError as exc:
            self._teardown_lab()
            raise DemoError(f"--netns: {exc}") from None
        except BaseException:
            self._teardown_lab()
            raise
        self.say(f"network lab {subnet}: bridge {self.lab.bridge} ({self.lab.gateway}), namespaces "
                 f"{', '.join(self.lab.namespaces)}" + (f", VIP {self.vip}" if self.vip else ""))

    def _add_member_hosts(self) -> None:
        """The etcd members' namespaces (EtcdMembersMixin; none by default)."""

    def _teardown_lab(self) -> None:
        if self.lab is not None:
            self.lab.teardown()

    def client_exec(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the client namespace (as is, without a lab)."""
        return netlab.in_netns(self.state.client_netns if self.state else None) + argv

    def vip_holders(self) -> list[str]:
        """The nodes whose namespace holds the VIP right now."""
        assert self.state is not None
        vip = self.state.vip
        return [n.name for n in self.state.nodes if vip and n.netns and netlab.has_address(n.netns, vip)]

    def _vip_on_leader(self, view: ClusterView) -> bool:
        """With --vip, a healthy cluster also has the VIP on its leader, and only there."""
        if self.state is None or not self.state.vip or view.leader is None:
            return True
        return self.vip_holders() == [view.leader.name]

    def wait_vip(self, timeout: float = 20.0) -> str:
        """Wait until exactly the leader holds the VIP; return the leader's name."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(DCSError):
                view = self.view()
                if view.leader is not None and self.vip_holders() == [view.leader.name]:
                    return view.leader.name
            if time.monotonic() > deadline:
                raise DemoError(f"the leader did not take the VIP {self.vip} within {timeout:.0f}s; "
                                f"see {self.dir}/node*/agent.log")
            time.sleep(0.1)


def _recorded_lab(state: DemoState) -> netlab.Lab | None:
    """The lab `demo up` made, rebuilt from the names demo.json records (for `demo down`)."""
    address = next((n.address for n in state.nodes if n.address), None)
    if address is None:
        return None
    subnet = netlab.subnet_of(address)
    names = [n.netns for n in state.nodes if n.netns] + ([state.client_netns] if state.client_netns else [])
    names += [m.netns for m in state.etcd_members]
    names += [state.repository_netns] if state.repository_netns else []
    return netlab.Lab(subnet, bridge=netlab.bridge_name(subnet), namespaces=names)
