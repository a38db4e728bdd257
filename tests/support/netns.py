"""VirtualLAN: Linux network namespaces joined by a bridge, for fault tests.

In the spirit of pg_auto_failover's tests/network.py.  The bridge lives in the
root namespace with 198.18.0.1/24; each host is a namespace with one veth
(``eth0`` inside) attached to the bridge, ``lo`` up and no default route, so
nothing leaves the machine.  Only 198.18.0.0/15 (RFC 2544 benchmarking) is used.

Names carry the pid and a counter so parallel runs do not collide; interface
names stay within 15 characters.  ``close()`` kills the processes started with
``Host.popen`` and deletes every namespace, veth and the bridge, even after a
failure half-way through ``add_host``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from pgha.demo import netlab
from tests.support.procs import stop_pid

BRIDGE_CIDR = "198.18.0.1/24"
_counter = itertools.count()


def lab_unavailable() -> str | None:
    """Why the lab cannot run here, or None (the same check as `pgha demo up --netns`)."""
    return netlab.unavailable()


class Host:
    """One network namespace on the LAN."""

    def __init__(self, lan: VirtualLAN, name: str, ip: str, netns: str, veth: str) -> None:
        self.lan = lan
        self.name = name
        self.ip = ip
        self.netns = netns
        # Bridge-side end of the veth pair; inside the namespace it is "eth0".
        self.veth = veth
        self.interface = "eth0"

    @property
    def prefix(self) -> tuple[str, ...]:
        """Command prefix that runs a program inside this namespace."""
        return ("ip", "netns", "exec", self.netns)

    def exec(self, cmd: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 30)
        return subprocess.run([*self.prefix, *cmd], check=kw.pop("check", False), **kw)

    def popen(self, cmd: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` in the namespace; the LAN stops it on close() if still running."""
        kw.setdefault("start_new_session", True)
        proc: subprocess.Popen[Any] = subprocess.Popen([*self.prefix, *cmd], **kw)
        self.lan.processes.append(proc)
        return proc

    def ifdown(self) -> None:
        """Cut this host off the LAN (its bridge-side veth goes down)."""
        netlab.ip("link", "set", self.veth, "down")

    def ifup(self) -> None:
        netlab.ip("link", "set", self.veth, "up")

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.ip!r}, netns={self.netns!r})"


class VirtualLAN:
    """A bridge plus namespaces; use as a context manager or call close()."""

    def __init__(self) -> None:
        self.id = f"{os.getpid() % 1000000}x{next(_counter)}"
        self.bridge = f"pgb{self.id}"
        assert len(self.bridge) <= 15
        self.hosts: dict[str, Host] = {}
        self.processes: list[subprocess.Popen[Any]] = []
        # Called first by close(), last registered first.
        self.cleanups: list[Callable[[], object]] = []
        self._namespaces: list[str] = []
        self._links: list[str] = []
        self._closed = False
        try:
            netlab.ip("link", "add", self.bridge, "type", "bridge")
            self._links.append(self.bridge)
            netlab.ip("addr", "add", BRIDGE_CIDR, "dev", self.bridge)
            netlab.ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def add_host(self, name: str, ip: str) -> Host:
        """A new namespace with ``ip``/24 on eth0, attached to the bridge."""
        if not ip.startswith(("198.18.", "198.19.")):
            raise ValueError(f"{ip}: the lab uses 198.18.0.0/15 only")
        n = len(self.hosts)
        netns = f"pgha{self.id}-{name}"
        veth = f"pgv{self.id}h{n}"
        assert len(veth) <= 15, veth
        netlab.ip("netns", "add", netns)
        self._namespaces.append(netns)
        netlab.ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        self._links.append(veth)
        netlab.ip("link", "set", veth, "master", self.bridge, "up")
        netlab.ip("-n", netns, "link", "set", "lo", "up")
        netlab.ip("-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        netlab.ip("-n", netns, "link", "set", "eth0", "up")
        host = Host(self, name, ip, netns, veth)
        self.hosts[name] = host
        return host

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as exc:  # keep tearing down; report afterwards
                errors.append(exc)
        for proc in self.processes:
            if proc.poll() is None:
                stop_pid(proc.pid, timeout=5)
                proc.wait()
        for netns in self._namespaces:
            netlab.ip("netns", "del", netns, check=False)
        for link in reversed(self._links):
            # A veth goes with its peer's namespace; deleting it again is harmless.
            netlab.ip("link", "del", link, check=False)
        if errors:
            raise errors[0]

    def __enter__(self) -> VirtualLAN:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def lan() -> Iterator[VirtualLAN]:
    """A fresh VirtualLAN, always torn down; skips when namespaces are unavailable."""
    why = lab_unavailable()
    if why:
        pytest.skip(why)
    with VirtualLAN() as v:
        yield v
