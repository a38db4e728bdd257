"""The virtual IP: add or remove one IPv4 address on an interface, idempotently.

Adding the address is followed by gratuitous ARP (``arping -U``) so that the
neighbours' caches point at this machine at once.  arping takes about a second
per packet, so it is spawned and reaped later: ``acquire()`` never blocks on it.

The agent runs as the postgres OS user; ``ip addr add`` needs CAP_NET_ADMIN and
arping needs CAP_NET_RAW.  With systemd, grant both as ambient capabilities::

    [Service]
    User=postgres
    AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW

Commands run through a ``Runner`` so that tests can run them inside a network
namespace (``Runner(prefix=("ip", "netns", "exec", "ns1"))``).
"""

from __future__ import annotations

import logging
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from pgha.config import VipConfig
from pgha.routing import netlink
from pgha.routing.errors import RoutingError

log = logging.getLogger("pgha.routing.vip")

CAP_FIX = "grant CAP_NET_ADMIN: AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW in the agent's systemd unit"
PACKAGES = {"ip": "iproute2", "arping": "iputils-arping"}


@dataclass
class Runner:
    """Runs ``ip`` and spawns ``arping``, optionally behind a prefix such as ``ip netns exec NS``."""

    prefix: Sequence[str] = ()
    timeout: float = 5.0
    _children: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        cmd = [*self.prefix, *argv]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise RoutingError(_missing(cmd[0])) from None
        except subprocess.TimeoutExpired:
            raise RoutingError(f"`{' '.join(argv)}` did not finish within {self.timeout:g}s") from None

    def spawn(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` without waiting; ``reap()`` collects it later."""
        self.reap()
        cmd = [*self.prefix, *argv]
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except FileNotFoundError:
            raise RoutingError(_missing(cmd[0])) from None
        self._children.append(proc)
        return proc

    def reap(self) -> None:
        """Collect finished children; log one line for each that failed."""
        still: list[subprocess.Popen[bytes]] = []
        for proc in self._children:
            if proc.poll() is None:
                still.append(proc)
                continue
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            if proc.stderr:
                proc.stderr.close()
            if proc.returncode != 0:
                args = proc.args if isinstance(proc.args, list) else [str(proc.args)]
                log.warning("%s", _explain(" ".join(map(str, args[len(self.prefix):])), err, proc.returncode))
        self._children = still

    def wait_children(self, timeout: float = 5.0) -> None:
        """Wait for spawned children (tests, shutdown); kill any still running after ``timeout``."""
        for proc in self._children:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.reap()

    def close(self) -> None:
        """Stop waiting for announcements: wait briefly for arping, then kill it."""
        self.wait_children(timeout=3.0)


def _missing(binary: str) -> str:
    name = binary.rsplit("/", 1)[-1]
    package = PACKAGES.get(name)
    if package:
        return f"`{name}` not found; install the Debian package {package} (apt-get install {package})"
    return f"`{name}` not found; install it or fix PATH"


def _explain(what: str, stderr: str, code: int) -> str:
    low = stderr.lower()
    if "operation not permitted" in low or "permission denied" in low:
        return f"{what}: operation not permitted; {CAP_FIX}"
    detail = stderr.splitlines()[-1] if stderr else f"exit code {code}"
    return f"{what}: {detail}"


class Vip:
    """One IPv4 address on one interface, held or not held by this machine."""

    def __init__(self, cfg: VipConfig, runner: Runner | None = None) -> None:
        self.cfg = cfg
        self.runner = runner if runner is not None else Runner()

    @property
    def cidr(self) -> str:
        return f"{self.cfg.address}/{self.cfg.prefix}"

    def held(self) -> bool:
        """Whether the address is on the interface now.

        In the agent's own network namespace this is read over netlink (no process per check); a
        runner with a prefix (``ip netns exec NS``) works elsewhere, so there `ip addr show` runs.
        """
        if self.runner.prefix:
            res = self.runner.run(["ip", "-o", "-4", "addr", "show", "dev", self.cfg.interface])
            if res.returncode != 0:
                raise RoutingError(self._describe("ip addr show", res))
            return parse_held(res.stdout, self.cfg.address)
        try:
            return self.cfg.address in netlink.ipv4_addresses(self.cfg.interface)
        except OSError as exc:
            if not _interface_exists(self.cfg.interface):
                raise RoutingError(f"reading the addresses of {self.cfg.interface}: interface "
                                   f"{self.cfg.interface!r} does not exist; set vip.interface to one shown by "
                                   "`ip -br link`") from None
            raise RoutingError(f"reading the addresses of {self.cfg.interface}: {exc}") from None

    def acquire(self) -> None:
        """Add the address (no-op if present), then announce it with gratuitous ARP in the background."""
        res = self.runner.run(["ip", "-4", "addr", "add", self.cidr, "dev", self.cfg.interface])
        if res.returncode != 0 and not _present(res.stderr):
            raise RoutingError(self._describe(f"ip addr add {self.cidr}", res))
        self.announce()

    def announce(self) -> None:
        """Send gratuitous ARP for the address without waiting for arping to finish."""
        try:
            self.runner.spawn(["arping", "-q", "-U", "-c", "2", "-I", self.cfg.interface, self.cfg.address])
        except RoutingError as exc:
            # The address is ours already; neighbours learn it on their next ARP request.
            log.warning("gratuitous ARP not sent: %s", exc)

    def release(self) -> None:
        """Remove the address (no-op if absent)."""
        self.runner.reap()
        res = self.runner.run(["ip", "-4", "addr", "del", self.cidr, "dev", self.cfg.interface])
        if res.returncode != 0 and not _absent(res.stderr):
            raise RoutingError(self._describe(f"ip addr del {self.cidr}", res))

    def ensure(self, present: bool) -> None:
        """Make the interface hold the address (``present``) or not; idempotent."""
        self.runner.reap()
        if self.held() == present:
            return
        if present:
            self.acquire()
        else:
            self.release()

    def close(self) -> None:
        """On shutdown: let a running arping finish (briefly), then kill it."""
        self.runner.close()

    def _describe(self, what: str, res: subprocess.CompletedProcess[str]) -> str:
        err = res.stderr.strip()
        if "cannot find device" in err.lower() or "does not exist" in err.lower():
            return (f"{what}: interface {self.cfg.interface!r} does not exist; "
                    "set vip.interface to one shown by `ip -br link`")
        return _explain(what, err, res.returncode)


def parse_held(ip_o_output: str, address: str) -> bool:
    """Whether ``ip -o -4 addr show`` output lists ``address`` (any prefix length)."""
    for line in ip_o_output.splitlines():
        words = line.split()
        for i, word in enumerate(words[:-1]):
            if word == "inet" and words[i + 1].split("/", 1)[0] == address:
                return True
    return False


def _interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


def _present(stderr: str) -> bool:
    low = stderr.lower()
    return "file exists" in low or "already assigned" in low


def _absent(stderr: str) -> bool:
    low = stderr.lower()
    return "cannot assign requested address" in low or "address not found" in low
