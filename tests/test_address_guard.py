"""The SSRF guard: address classification and host checks with a stub resolver (no DNS)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from clipcrawl.transforms.address_guard import BlockedAddressError, check_host, is_public_address

BLOCKED = [
    "127.0.0.1",
    "127.255.255.254",
    "::1",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata service
    "fe80::1",
    "fe80::1%eth0",
    "100.64.0.1",  # carrier-grade NAT
    "100.127.255.254",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 wrapping 10.0.0.1
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",  # deprecated site-local
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "ff0e::1",  # global-scope multicast is still not a web server
    "0.0.0.0",
    "::",
    "240.0.0.1",
    "255.255.255.255",
    "198.18.0.1",
    "192.0.2.1",
    "2001:db8::1",
    "::7f00:1",  # deprecated IPv4-compatible
    "not-an-address",
    "",
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.128.0.1",  # just past CGNAT
    "172.32.0.1",  # just past 172.16/12
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
]


@pytest.mark.parametrize("address", BLOCKED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert is_public_address(address) is False


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(address) is True


def stub_resolver(table: dict[str, list[str]]) -> Callable[[str, object], list[tuple]]:
    """getaddrinfo's shape, from a table; unknown names fail like getaddrinfo does."""

    def resolve(host: str, port: object) -> list[tuple]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0))
            for ip in table[host]
        ]

    return resolve


RESOLVER = stub_resolver(
    {
        "images.example": ["93.184.216.34", "2606:2800:220:1::1"],
        "metadata.example": ["169.254.169.254"],
        "mixed.example": ["93.184.216.34", "10.0.0.7"],
        "mapped.example": ["::ffff:127.0.0.1"],
        "empty.example": [],
    }
)


def test_host_with_only_public_addresses_passes() -> None:
    check_host("images.example", allow_private=False, resolver=RESOLVER)


@pytest.mark.parametrize(
    ("host", "address"),
    [("metadata.example", "169.254.169.254"), ("mixed.example", "10.0.0.7"), ("mapped.example", "::ffff:127.0.0.1")],
)
def test_host_with_any_non_public_address_is_blocked(host: str, address: str) -> None:
    with pytest.raises(BlockedAddressError) as caught:
        check_host(host, allow_private=False, resolver=RESOLVER)
    assert caught.value.address == address
    assert host in str(caught.value) and address in str(caught.value)


def test_host_resolving_to_nothing_is_blocked() -> None:
    with pytest.raises(BlockedAddressError, match="resolves to no address"):
        check_host("empty.example", allow_private=False, resolver=RESOLVER)


def test_resolution_failure_propagates_as_gaierror() -> None:
    with pytest.raises(socket.gaierror):
        check_host("unknown.example", allow_private=False, resolver=RESOLVER)


def test_allow_private_skips_resolution_entirely() -> None:
    def must_not_resolve(host: str, port: object) -> list[tuple]:
        raise AssertionError("resolver called although private addresses are allowed")

    check_host("metadata.example", allow_private=True, resolver=must_not_resolve)


def numeric_only(host: str, port: object) -> list[tuple]:
    """The real getaddrinfo, forbidden from sending DNS queries."""
    return socket.getaddrinfo(host, port, flags=socket.AI_NUMERICHOST)


@pytest.mark.parametrize("spelling", ["127.1", "2130706433", "0x7f000001", "0177.0.0.1", "::1", "0:0:0:0:0:0:0:1"])
def test_odd_loopback_spellings_are_caught_after_resolution(spelling: str) -> None:
    with pytest.raises(BlockedAddressError):
        check_host(spelling, allow_private=False, resolver=numeric_only)
