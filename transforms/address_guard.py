"""Refuse connections to non-public addresses (SSRF guard): pure decisions, no I/O.

A crawler follows URLs that strangers wrote; without this check a page could point the
downloader at a cloud metadata service (169.254.169.254, fd00:ec2::254), a router, or the
worker itself. The decisions here are pure functions over address strings; the HTTP layer
(``guarded_http``) calls ``checked_addresses`` when it opens a socket and connects only to
the addresses it returned, so the address checked is the address connected to (no
DNS-rebinding gap), on every request and every redirect hop.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any

# A getaddrinfo-compatible callable: (host, port) -> [(family, type, proto, canonname, sockaddr)].
Resolver = Callable[[str, Any], Iterable[tuple[Any, ...]]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 prefixes that carry an IPv4 address in their last 32 bits and reach it when routed.
_NAT64_PREFIXES = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


class BlockedAddressError(Exception):
    """The host resolves to an address the crawler must not contact.

    Deliberately not an ``OSError``: urllib3 would wrap an ``OSError`` raised while
    connecting into a generic connection error and lose the reason.
    """

    def __init__(self, host: str, address: str | None, reason: str = "non-public") -> None:
        detail = "resolves to no address" if address is None else f"resolves to {reason} address {address}"
        super().__init__(f"host {host!r} {detail}")
        self.host = host
        self.address = address
        self.reason = reason


def parse_ipv4_spelling(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a numeric host spells, in any form resolvers and browsers accept.

    ``2130706433``, ``0x7f.1``, ``0177.0.0.1`` and ``127.1`` all mean 127.0.0.1 to
    getaddrinfo (inet_aton rules) and to the WHATWG URL parser; a guard that only knows
    dotted quads would wave them through. None when ``host`` is not such a spelling.
    """
    parts = host.split(".")
    if parts and parts[-1] == "" and len(parts) > 1:  # one trailing dot is allowed
        parts = parts[:-1]
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        lowered = part.lower()
        try:
            if lowered.startswith("0x"):
                numbers.append(int(lowered[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part, 8))
            elif part.isdigit():
                numbers.append(int(part))
            else:
                return None
        except ValueError:
            return None
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = 0
    for n in leading:
        value = value * 256 + n
    value = (value << (8 * (5 - len(numbers)))) + last
    return ipaddress.IPv4Address(value)


def parse_address(text: str) -> Address | None:
    """An IP address from a literal (IPv6 with or without brackets/zone, odd IPv4), else None."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return parse_ipv4_spelling(text)


def non_public_reason(address: Address) -> str | None:
    """Why the crawler must not contact ``address`` (e.g. ``loopback``), or None if public."""
    if address in _METADATA:
        return "cloud-metadata"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = non_public_reason(embedded)
            return None if reason is None else f"{reason} (embedded {embedded})"
        if address.is_site_local:
            return "site-local"
    elif address == _BROADCAST:
        return "broadcast"
    elif address in _CGNAT:  # carrier-grade NAT: is_private disagrees across Python versions
        return "carrier-grade-NAT"
    for reason, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-global", not address.is_global),
    ):
        if flag:
            return reason
    return None


def is_public_address(ip_string: str) -> bool:
    """True only for a globally routable unicast address; anything unparseable is refused."""
    address = parse_address(ip_string)
    return address is not None and non_public_reason(address) is None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 spelling routes to (mapped, 6to4, NAT64, compatible), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in prefix for prefix in _NAT64_PREFIXES):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(address))
    return None


@dataclasses.dataclass(frozen=True)
class AddressPolicy:
    """Which destinations are allowed: public ones, plus what tests and intranets opt into.

    ``allowed_hosts`` holds ``host:port`` entries; an entry matches a connection when the
    port matches and the host is either the URL's host name or the IP address connected
    to. Tests name only their own loopback server, so a redirect to another port or
    address on the same machine is still refused. ``allow_private`` turns the guard off.
    """

    allow_private: bool = False
    allowed_hosts: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for entry in self.allowed_hosts:
            host, colon, port = entry.rpartition(":")
            if not colon or not host or not port.isdigit():
                raise ValueError(f"allowed_hosts entries are host:port, got {entry!r}")

    def allows(self, host: str, port: int, address: Address) -> bool:
        if self.allow_private:
            return True
        for entry in self.allowed_hosts:
            entry_host, _, entry_port = entry.rpartition(":")
            if int(entry_port) != port:
                continue
            if entry_host.lower().strip("[]") == host.lower().strip("[]") or parse_address(entry_host) == address:
                return True
        return False


def check_address(host: str, port: int, address_text: str, policy: AddressPolicy) -> None:
    """Raise ``BlockedAddressError`` unless ``policy`` lets us connect to this address."""
    address = parse_address(address_text)
    if address is None:
        raise BlockedAddressError(host, address_text, "unparseable")
    if policy.allows(host, port, address):
        return
    reason = non_public_reason(address)
    if reason is not None:
        raise BlockedAddressError(host, address_text, reason)


def checked_addresses(host: str, port: int, policy: AddressPolicy, resolver: Resolver) -> list[str]:
    """Resolve ``host`` once and return its addresses, all of them checked.

    Every address must pass, not only the first: a name mixing a public and a private
    address is refused outright. Numeric hosts in any spelling are parsed, not resolved.
    Resolution failures propagate as ``socket.gaierror`` (a download failure, not a block).
    """
    literal = parse_address(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        addresses = list(dict.fromkeys(str(info[4][0]) for info in resolver(host, port)))
    if not addresses:
        raise BlockedAddressError(host, None)
    for address in addresses:
        check_address(host, port, address, policy)
    return addresses


def check_host(host: str, allow_private: bool, resolver: Resolver = socket.getaddrinfo) -> None:
    """Raise ``BlockedAddressError`` unless every address of ``host`` is public (port-free check)."""
    if allow_private:
        return
    checked_addresses(host, 0, AddressPolicy(), resolver)
