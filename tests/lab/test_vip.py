"""The virtual IP on a real (namespaced) LAN: add, announce, move, remove, capabilities."""

from __future__ import annotations

import sys
import time

import pytest

from pgha.config import VipConfig
from pgha.routing.vip import CAP_FIX, Runner, Vip
from tests.support.netns import Host, VirtualLAN

pytestmark = pytest.mark.lab

VIP = "198.18.0.100"

SNIPPET = f"""
import sys
from pgha.config import VipConfig
from pgha.routing.vip import Vip
v = Vip(VipConfig({VIP!r}, 24, "eth0"))
try:
    v.ensure(True)
except OSError as exc:
    print(exc)
    sys.exit(3)
v.runner.wait_children()
print("held" if v.held() else "not held")
"""


def vip_on(host: Host) -> Vip:
    runner = Runner(prefix=host.prefix)
    # arping children are reaped before the LAN goes away.
    host.lan.cleanups.append(runner.close)
    return Vip(VipConfig(VIP, 24, host.interface), runner)


def arping(src: Host, ip: str) -> str:
    """Ask for ``ip`` from ``src``; return the MAC that answered ("" if none)."""
    res = src.exec(["arping", "-c", "1", "-w", "1", "-I", "eth0", ip])
    for line in res.stdout.splitlines():
        if "reply from" in line and "[" in line:
            return line.split("[", 1)[1].split("]", 1)[0].lower()
    return ""


def mac(host: Host) -> str:
    return host.exec(["cat", "/sys/class/net/eth0/address"]).stdout.strip().lower()


def neighbour(host: Host, ip: str) -> str:
    words = host.exec(["ip", "neigh", "show", ip, "dev", "eth0"]).stdout.split()
    return words[words.index("lladdr") + 1].lower() if "lladdr" in words else ""


def as_postgres(host: Host, *, caps: bool) -> tuple[int, str]:
    setpriv = ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups"]
    if caps:
        setpriv += ["--inh-caps", "+net_admin,+net_raw", "--ambient-caps", "+net_admin,+net_raw"]
    res = host.exec([*setpriv, "--", sys.executable, "-c", SNIPPET], cwd="/")
    return res.returncode, (res.stdout + res.stderr).strip()


def test_acquire_release_idempotent(lan: VirtualLAN) -> None:
    a = lan.add_host("a", "198.18.0.11")
    b = lan.add_host("b", "198.18.0.12")
    vip = vip_on(a)
    assert not vip.held()
    vip.ensure(True)
    vip.ensure(True)
    vip.acquire()
    assert vip.held()
    assert arping(b, VIP) == mac(a)
    vip.runner.wait_children()
    vip.ensure(False)
    vip.ensure(False)
    vip.release()
    assert not vip.held()
    assert arping(b, VIP) == ""


def test_move_updates_neighbour_cache(lan: VirtualLAN) -> None:
    a = lan.add_host("a", "198.18.0.11")
    b = lan.add_host("b", "198.18.0.12")
    client = lan.add_host("c", "198.18.0.13")
    va, vb = vip_on(a), vip_on(b)
    va.ensure(True)
    va.runner.wait_children()
    # The client talks to the VIP once, so its kernel caches A's MAC for it.
    udp = f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ({VIP!r}, 9))"
    client.exec([sys.executable, "-c", udp])
    deadline = time.monotonic() + 5
    while neighbour(client, VIP) != mac(a) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert neighbour(client, VIP) == mac(a)

    va.ensure(False)
    vb.ensure(True)
    assert vb.held() and not va.held()
    # B's gratuitous ARP (not any traffic from the client) rewrites the client's entry.
    vb.runner.wait_children()
    assert neighbour(client, VIP) == mac(b)
    assert arping(client, VIP) == mac(b)


def test_missing_interface_is_one_line(lan: VirtualLAN) -> None:
    a = lan.add_host("a", "198.18.0.11")
    vip = Vip(VipConfig(VIP, 24, "eth9"), Runner(prefix=a.prefix))
    with pytest.raises(OSError) as err:
        vip.ensure(True)
    assert "vip.interface" in str(err.value) and "\n" not in str(err.value)


def test_postgres_without_cap_net_admin_gets_the_fix(lan: VirtualLAN) -> None:
    a = lan.add_host("a", "198.18.0.11")
    code, out = as_postgres(a, caps=False)
    assert code == 3, out
    assert out.count("\n") == 0
    assert "operation not permitted" in out and CAP_FIX in out
    assert not vip_on(a).held()


def test_postgres_with_ambient_caps_holds_the_vip(lan: VirtualLAN) -> None:
    a = lan.add_host("a", "198.18.0.11")
    b = lan.add_host("b", "198.18.0.12")
    code, out = as_postgres(a, caps=True)
    assert (code, out) == (0, "held")
    assert arping(b, VIP) == mac(a)
