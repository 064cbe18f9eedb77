"""The SSRF guard: address classification and host checks with a stub resolver (no DNS)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from clipcrawl.transforms.address_guard import (
    AddressPolicy,
    BlockedAddressError,
    check_host,
    checked_addresses,
    is_public_address,
    non_public_reason,
    parse_address,
    parse_ipv4_spelling,
)

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
    "fd00:ec2::254",  # AWS metadata over IPv6
    "64:ff9b::a9fe:a9fe",  # NAT64 wrapping 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64 prefix
    "2002:a9fe:a9fe::1",  # 6to4 wrapping the metadata address
    "2002:c0a8:101::1",  # 6to4 wrapping 192.168.1.1
    "::ffff:100.64.0.1",  # mapped CGNAT
    "0.1.2.3",  # "this network"
    "192.0.0.1",  # IETF protocol assignments
    "2130706433",  # decimal 127.0.0.1
    "0177.0.0.1",  # octal
    "0x7f.1",  # hex, short form
    "127.1",  # short form
    "0x7f000001",
    "017700000001",
    "[::1]",
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
    "64:ff9b::808:808",  # NAT64 wrapping 8.8.8.8
    "2002:808:808::1",  # 6to4 wrapping 8.8.8.8
    "134744072",  # decimal 8.8.8.8
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


@pytest.mark.parametrize(
    ("spelling", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7F.0.0.0x1", "127.0.0.1"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("169.254.43518", "169.254.169.254"),
        ("10.0.0.1.", "10.0.0.1"),  # trailing dot
        ("0", "0.0.0.0"),
        ("4294967295", "255.255.255.255"),
        ("4294967296", None),  # too big
        ("256.0.0.1", None),
        ("1.2.3.4.5", None),
        ("08.0.0.1", None),  # 8 is not an octal digit
        ("1..2", None),
        ("example.com", None),
        ("0x", "0.0.0.0"),
        ("", None),
    ],
)
def test_ipv4_spellings_parse_like_resolvers_do(spelling: str, address: str | None) -> None:
    parsed = parse_ipv4_spelling(spelling)
    assert (None if parsed is None else str(parsed)) == address


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "cloud-metadata"),
        ("fd00:ec2::254", "cloud-metadata"),
        ("100.64.0.1", "carrier-grade-NAT"),
        ("255.255.255.255", "broadcast"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("10.1.2.3", "private"),
        ("240.0.0.1", "reserved"),
        ("fe80::1", "link-local"),
        ("::ffff:10.0.0.1", "private (embedded 10.0.0.1)"),
        ("64:ff9b::7f00:1", "loopback (embedded 127.0.0.1)"),
        ("8.8.8.8", None),
    ],
)
def test_each_refusal_names_its_reason(address: str, reason: str | None) -> None:
    parsed = parse_address(address)
    assert parsed is not None and non_public_reason(parsed) == reason


def test_allow_list_names_one_host_and_port_only() -> None:
    policy = AddressPolicy(allowed_hosts=frozenset({"127.0.0.1:8080", "intranet.example:443"}))
    assert checked_addresses("127.0.0.1", 8080, policy, RESOLVER) == ["127.0.0.1"]
    assert checked_addresses("2130706433", 8080, policy, RESOLVER) == ["127.0.0.1"]  # same address, same port
    for host, port in [("127.0.0.1", 8081), ("127.0.0.2", 8080), ("metadata.example", 8080)]:
        with pytest.raises(BlockedAddressError):
            checked_addresses(host, port, policy, RESOLVER)
    by_name = stub_resolver({"intranet.example": ["10.0.0.5"]})
    assert checked_addresses("intranet.example", 443, policy, by_name) == ["10.0.0.5"]
    with pytest.raises(BlockedAddressError, match="private address 10.0.0.5"):
        checked_addresses("intranet.example", 80, policy, by_name)


@pytest.mark.parametrize("entry", ["127.0.0.1", "host:", ":80", "host:http"])
def test_allow_list_entries_must_be_host_and_port(entry: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        AddressPolicy(allowed_hosts=frozenset({entry}))


def test_numeric_hosts_are_parsed_not_resolved() -> None:
    def must_not_resolve(host: str, port: object) -> list[tuple]:
        raise AssertionError(f"resolver called for numeric host {host}")

    with pytest.raises(BlockedAddressError, match="loopback address 127.0.0.1"):
        checked_addresses("0x7f.1", 80, AddressPolicy(), must_not_resolve)
    assert checked_addresses("8.8.8.8", 80, AddressPolicy(), must_not_resolve) == ["8.8.8.8"]
