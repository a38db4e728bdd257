"""The netlink address dump the VIP check reads instead of running `ip addr show`."""

from __future__ import annotations

import socket
import struct

import pytest

from pgha.routing import netlink


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _newaddr(index: int, address: str, family: int = socket.AF_INET, local: bool = True) -> bytes:
    body = struct.pack("=BBBBI", family, 24, 0, 0, index)
    body += _attr(netlink.IFA_ADDRESS, socket.inet_aton("198.18.9.9" if local else address))
    if local:
        body += _attr(netlink.IFA_LOCAL, socket.inet_aton(address))
    body += _attr(3, b"v0\0")  # IFA_LABEL: skipped
    return struct.pack("=IHHII", 16 + len(body), netlink.RTM_NEWADDR, 2, 1, 0) + body


def _done() -> bytes:
    return struct.pack("=IHHII", 20, netlink.NLMSG_DONE, 2, 1, 0) + struct.pack("=i", 0)


def test_addresses_of_the_interface_only_and_the_end_of_the_dump() -> None:
    chunk = _newaddr(4, "198.18.7.1") + _newaddr(4, "198.18.7.100", local=False) + _newaddr(5, "198.18.7.2")
    assert netlink.parse_dump(chunk, 4) == ({"198.18.7.1", "198.18.7.100"}, False)
    assert netlink.parse_dump(_newaddr(4, "198.18.7.3") + _done(), 4) == ({"198.18.7.3"}, True)


def test_an_error_reply_raises() -> None:
    err = struct.pack("=IHHII", 20, netlink.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -1)
    with pytest.raises(OSError):
        netlink.parse_dump(err, 1)


def test_loopback_holds_127_0_0_1() -> None:
    assert "127.0.0.1" in netlink.ipv4_addresses("lo")


def test_no_such_interface() -> None:
    with pytest.raises(OSError):
        netlink.ipv4_addresses("pgha-nope0")
