"""Refuse image URLs whose host resolves to a non-public address (SSRF guard).

A crawler follows URLs that strangers wrote; without this check a page could point the
downloader at a cloud metadata service (169.254.169.254), a router, or the worker itself.

Known gap: the addresses checked here are resolved again by the HTTP client when it
connects, so a DNS-rebinding host can answer differently the second time; a later change
pins the connection to the checked address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any

# A getaddrinfo-compatible callable: (host, port) -> [(family, type, proto, canonname, sockaddr)].
Resolver = Callable[[str, Any], Iterable[tuple[Any, ...]]]

# IPv6 prefixes that carry an IPv4 address in their last 32 bits and reach it when routed.
_NAT64_PREFIXES = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")


class BlockedAddressError(Exception):
    """The host resolves to an address the crawler must not contact."""

    def __init__(self, host: str, address: str | None) -> None:
        reason = "resolves to no address" if address is None else f"resolves to non-public address {address}"
        super().__init__(f"host {host!r} {reason}")
        self.host = host
        self.address = address


def is_public_address(ip_string: str) -> bool:
    """True only for a globally routable unicast address; anything unparseable is refused."""
    try:
        address = ipaddress.ip_address(ip_string.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public_address(str(embedded))
        if address.is_site_local:
            return False
    else:
        if address in _CGNAT:  # carrier-grade NAT: is_private disagrees across Python versions
            return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 spelling routes to (mapped, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in prefix for prefix in _NAT64_PREFIXES):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def check_host(host: str, allow_private: bool, resolver: Resolver = socket.getaddrinfo) -> None:
    """Raise ``BlockedAddressError`` unless every address of ``host`` is public.

    Every address must pass, not just one, because the HTTP client may connect to any of
    them. ``allow_private`` skips the check (tests and intranet crawls opt in explicitly).
    Resolution failures propagate as ``socket.gaierror`` (a download failure, not a block).
    """
    if allow_private:
        return
    addresses = sorted({str(info[4][0]) for info in resolver(host, None)})
    if not addresses:
        raise BlockedAddressError(host, None)
    for address in addresses:
        if not is_public_address(address):
            raise BlockedAddressError(host, address)
