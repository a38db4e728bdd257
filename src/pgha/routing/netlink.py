"""The IPv4 addresses of one interface, read over rtnetlink instead of running `ip addr show`.

The agent checks its VIP every few seconds for as long as it runs; a netlink dump is one
request and one reply on a socket, where `ip` is a fork and an exec of a program each time.
It reads the network namespace the agent runs in and needs no privilege.
"""

from __future__ import annotations

import socket
import struct

RTM_NEWADDR = 20
RTM_GETADDR = 22
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
IFA_ADDRESS = 1
IFA_LOCAL = 2
_HDR = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefix length, flags, scope, interface index
_ATTR = struct.Struct("=HH")  # rtattr: length, type


def _align(n: int) -> int:
    return (n + 3) & ~3


def _address_of(data: bytes, start: int, end: int) -> str | None:
    """IFA_LOCAL (the address itself), else IFA_ADDRESS, from one RTM_NEWADDR's attributes."""
    found: dict[int, str] = {}
    at = start
    while at + _ATTR.size <= end:
        length, kind = _ATTR.unpack_from(data, at)
        if length < _ATTR.size:
            break
        if kind in (IFA_LOCAL, IFA_ADDRESS) and length >= _ATTR.size + 4:
            found[kind] = socket.inet_ntoa(data[at + 4 : at + 8])
        at += _align(length)
    return found.get(IFA_LOCAL) or found.get(IFA_ADDRESS)


def parse_dump(data: bytes, index: int) -> tuple[set[str], bool]:
    """The IPv4 addresses on interface ``index`` in one chunk of a dump, and whether it ended."""
    out: set[str] = set()
    at = 0
    while at + _HDR.size <= len(data):
        length, kind, _, _, _ = _HDR.unpack_from(data, at)
        if length < _HDR.size:
            return out, True
        if kind == NLMSG_DONE:
            return out, True
        if kind == NLMSG_ERROR:
            (errno,) = struct.unpack_from("=i", data, at + _HDR.size)
            raise OSError(-errno, "netlink RTM_GETADDR failed")
        if kind == RTM_NEWADDR:
            family, _, _, _, ifindex = _IFADDR.unpack_from(data, at + _HDR.size)
            if family == socket.AF_INET and ifindex == index:
                address = _address_of(data, at + _HDR.size + _IFADDR.size, at + length)
                if address is not None:
                    out.add(address)
        at += _align(length)
    return out, False


def ipv4_addresses(interface: str, timeout: float = 2.0) -> set[str]:
    """Every IPv4 address on ``interface`` now; OSError if there is no such interface."""
    index = socket.if_nametoindex(interface)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(timeout)
        request = _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)
        sock.sendto(_HDR.pack(_HDR.size + len(request), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + request,
                    (0, 0))
        out: set[str] = set()
        done = False
        while not done:
            found, done = parse_dump(sock.recv(65536), index)
            out |= found
        return out
