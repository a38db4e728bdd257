"""Network namespaces on a bridge, for `pgha demo up --netns` (and tests built on the demo).

One /24 inside 198.18.0.0/15 (RFC 2544 benchmarking addresses) per lab: the bridge
lives in the root namespace with .1, each host is a namespace with ``eth0`` (one end of a
veth pair whose other end is on the bridge), ``lo`` up and no default route, so nothing
leaves the machine.  Processes reach the root namespace (etcd) at the bridge address.

Names carry a tag derived from the subnet (``198.19.42.0/24`` -> ``1042``), so labs on
different subnets never collide, and interface names stay within 15 characters.
Everything is removed by ``teardown()`` from the names alone, so `pgha demo down`
(another process) can clean up what `pgha demo up` created.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

LAB_NET = ipaddress.ip_network("198.18.0.0/15")
POSTGRES_CAPS = "+net_admin,+net_raw"


class NetLabError(Exception):
    """One line naming the command that failed and why."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        res = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=10)
    except FileNotFoundError:
        raise NetLabError("`ip` not found; install the Debian package iproute2") from None
    if check and res.returncode != 0:
        raise NetLabError(f"ip {' '.join(args)}: {res.stderr.strip() or f'exit code {res.returncode}'}")
    return res


def unavailable() -> str | None:
    """Why namespaces cannot be created here, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    probe = f"pghaprobe{os.getpid()}"
    try:
        ok = ip("netns", "add", probe, check=False).returncode == 0
    except NetLabError as exc:
        return str(exc)
    if not ok:
        return "`ip netns add` is not permitted here (needs CAP_SYS_ADMIN)"
    ip("netns", "del", probe, check=False)
    return None


def used_subnets() -> set[ipaddress.IPv4Network]:
    """The /24s of 198.18.0.0/15 that an address or route in the root namespace already uses."""
    used: set[ipaddress.IPv4Network] = set()
    text = ip("-o", "-4", "addr", "show").stdout + ip("-4", "route", "show").stdout
    for word in text.split():
        with contextlib.suppress(ValueError):
            net = ipaddress.ip_network(word, strict=False)
            if isinstance(net, ipaddress.IPv4Network) and net.subnet_of(LAB_NET):  # type: ignore[arg-type]
                used.add(net.supernet(new_prefix=24) if net.prefixlen > 24 else net)
    return used


def subnet_of(address: str) -> ipaddress.IPv4Network:
    """The /24 of ``address``, which must lie in 198.18.0.0/15."""
    try:
        addr = ipaddress.IPv4Address(address)
    except ValueError:
        raise NetLabError(f"{address!r} is not an IPv4 address") from None
    if addr not in LAB_NET:
        raise NetLabError(f"{address} is outside 198.18.0.0/15; the lab only uses those addresses")
    return ipaddress.IPv4Network(f"{address}/24", strict=False)


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 198.19.0.0/16 that nothing here uses (198.18.x is left to explicit choices)."""
    used = used_subnets()
    candidates = [ipaddress.IPv4Network(f"198.19.{n}.0/24") for n in range(1, 255)]
    random.shuffle(candidates)
    for net in candidates:
        if not any(net.overlaps(u) for u in used):
            return net
    raise NetLabError("no free /24 left in 198.19.0.0/16")


def tag_of(subnet: ipaddress.IPv4Network) -> str:
    o = subnet.network_address.packed
    return f"{o[1] - 18}{o[2]:03d}"


def bridge_name(subnet: ipaddress.IPv4Network) -> str:
    """The bridge of the lab on ``subnet`` (so another process can find it from an address)."""
    return f"pgdbr{tag_of(subnet)}"


def in_netns(netns: str | None) -> list[str]:
    """Command prefix that runs a program inside ``netns`` (nothing for the root namespace)."""
    return ["ip", "netns", "exec", netns] if netns else []


def as_postgres(caps: bool = False, user: str = "postgres") -> list[str]:
    """Command prefix that drops from root to ``user``, optionally keeping CAP_NET_ADMIN and
    CAP_NET_RAW as ambient capabilities (what systemd's AmbientCapabilities= does)."""
    argv = ["setpriv", "--reuid", user, "--regid", user, "--init-groups"]
    if caps:
        argv += ["--inh-caps", POSTGRES_CAPS, "--ambient-caps", POSTGRES_CAPS]
    return [*argv, "--"]


def netns_pids(netns: str) -> list[int]:
    res = ip("netns", "pids", netns, check=False)
    return [int(w) for w in res.stdout.split() if w.isdigit()]


def has_address(netns: str, address: str) -> bool:
    """Whether any interface in ``netns`` holds ``address`` (``ip -o addr``)."""
    res = ip("-n", netns, "-o", "-4", "addr", "show", check=False)
    return any(w.split("/", 1)[0] == address for w in res.stdout.split() if "/" in w)


@dataclass
class Lab:
    subnet: ipaddress.IPv4Network
    bridge: str = ""
    namespaces: list[str] = field(default_factory=list)

    @property
    def tag(self) -> str:
        return tag_of(self.subnet)

    @property
    def gateway(self) -> str:
        """The bridge's address in the root namespace (where etcd listens)."""
        return str(self.subnet.network_address + 1)

    def address(self, host: int) -> str:
        return str(self.subnet.network_address + host)

    @classmethod
    def create(cls, subnet: ipaddress.IPv4Network) -> Lab:
        if any(subnet.overlaps(u) for u in used_subnets()):
            raise NetLabError(f"{subnet} is already used on this machine; pick an address in another /24")
        lab = cls(subnet, bridge=bridge_name(subnet))
        if ip("link", "show", lab.bridge, check=False).returncode == 0:
            raise NetLabError(f"bridge {lab.bridge} already exists; is another demo running on {subnet}?")
        # A bridge takes the lowest MAC address of its ports unless it has its own: a host that
        # dies with the lowest one would change the gateway's MAC under every other host, which
        # then cannot reach etcd until its ARP entry goes stale (seconds).  So it gets its own,
        # locally administered (02:...) and derived from the subnet.
        a, b, c, _ = subnet.network_address.packed
        ip("link", "add", lab.bridge, "address", f"02:70:67:{a:02x}:{b:02x}:{c:02x}", "type", "bridge")
        try:
            ip("addr", "add", f"{lab.gateway}/24", "dev", lab.bridge)
            ip("link", "set", lab.bridge, "up")
        except BaseException:
            lab.teardown()
            raise
        return lab

    def veth(self, host: int) -> str:
        """The bridge-side end of host .``host``'s veth pair (``eth0`` inside its namespace)."""
        return f"pgdv{self.tag}h{host}"

    def add_host(self, name: str, host: int) -> tuple[str, str]:
        """A namespace named after ``name`` with .``host``/24 on eth0; returns (netns, address)."""
        netns = f"pgdemo{self.tag}-{name}"
        veth = self.veth(host)
        address = self.address(host)
        ip("netns", "add", netns)
        self.namespaces.append(netns)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        ip("link", "set", veth, "master", self.bridge, "up")
        ip("-n", netns, "link", "set", "lo", "up")
        ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", netns, "link", "set", "eth0", "up")
        # Let PostgreSQL listen on the VIP before this node holds it (no wildcard listen).
        ip("netns", "exec", netns, "sysctl", "-q", "-w", "net.ipv4.ip_nonlocal_bind=1")
        return netns, address

    def teardown(self) -> None:
        teardown(self.namespaces, self.bridge)


def teardown(namespaces: Sequence[str], bridge: str | None) -> None:
    """Kill what still runs in the namespaces, delete them, their veths and the bridge."""
    for netns in namespaces:
        for pid in netns_pids(netns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        ip("netns", "del", netns, check=False)
    if bridge:
        # A deleted namespace lives on (with its veth) while the kernel still holds one of its
        # sockets, e.g. a killed PostgreSQL's connection retrying its FIN to a peer that is gone,
        # for up to a few minutes.  Deleting our end of each veth removes the pair at once.
        veth_prefix = "pgdv" + bridge.removeprefix("pgdbr") + "h"
        for word in ip("-o", "link", "show", check=False).stdout.split():
            name = word.rstrip(":").split("@", 1)[0]
            if name.startswith(veth_prefix):
                ip("link", "del", name, check=False)
        ip("link", "del", bridge, check=False)
