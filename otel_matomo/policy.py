"""Who the visitor is: the client address behind trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from otel_matomo.request import HttpRequest

__all__ = ["DEFAULT_TRUSTED_PROXIES", "client_ip"]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TRUSTED_PROXIES: tuple[IpNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
"""Loopback only, as uvicorn's ``--forwarded-allow-ips`` default: a proxy on the same host."""

_MAX_HOPS = 32


def client_ip(request: HttpRequest, trusted: Iterable[IpNetwork] = DEFAULT_TRUSTED_PROXIES) -> str | None:
    """The visitor's address: walk ``X-Forwarded-For`` from the right while the hop is a trusted proxy.

    Starting from the socket peer means a client can never choose its own address by sending the header: an
    untrusted peer is the client, whatever it claims. A garbage hop ends the walk at the last good address.
    """
    peer = _parse(request.peer_address)
    if peer is None:
        return None
    networks = tuple(trusted)
    chain = [hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",") if hop.strip()]
    current = peer
    for hop in reversed(chain[-_MAX_HOPS:]):
        if not _is_trusted(current, networks):
            break
        parsed = _parse(hop)
        if parsed is None:
            break
        current = parsed
    return str(current)


def _is_trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: tuple[IpNetwork, ...]) -> bool:
    return any(address in network for network in networks)


def _parse(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
