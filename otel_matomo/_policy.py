"""Who the visitor is, what may leave the process, and which requests become hits at all.

Pure functions over :class:`HttpRequest` and :class:`Settings`. The defaults, and why:

- Trusted proxies: loopback only (uvicorn's ``--forwarded-allow-ips`` default). A forwarding header is believed
  only from a trusted peer, so a client can never choose its own address by sending one.
- Sec-GPC and DNT are honoured: server-side tracking cannot be blocked by the visitor's tracker blocker, so their
  explicit signal is the only opt-out they have (and GPC is a legal opt-out in several jurisdictions).
- IP anonymisation is off by default because Matomo applies the site owner's own anonymisation setting (on by
  default) after geolocating with the full address; masking here too would only degrade geolocation.
- Credentials in URLs are removed from ``url``, ``urlref`` and titles (``_redact.py``).
- Health checks, metrics scrapes, static assets and CORS pre-flights (``OPTIONS``) are not visits.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
from typing import NamedTuple
from urllib.parse import urlsplit

from otel_matomo._cache import text_cache
from otel_matomo._kinds import IpNetwork
from otel_matomo._settings import Settings
from otel_matomo._types import DropReason, HttpRequest

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_HOPS = 32
_MAX_HEADER = 4096
"""Forwarding headers longer than this are cut: a hostile chain must not cost unbounded CPU."""
_UNKNOWN_NODE = re.compile(r"unknown|_[A-Za-z0-9._-]+", re.IGNORECASE)
"""RFC 7239's node names that are no address: the proxy does not know the client, or hides it."""
_IPV6_KEEP_BITS = {1: 64, 2: 48, 3: 24}
"""Matomo's own IPv6 masks for its 1, 2 and 3 byte IPv4 levels."""


def skip_reason(request: HttpRequest, settings: Settings) -> DropReason | None:
    """``None`` when the request becomes a hit, else why not (``SKIPPED``, ``FOREIGN_HOST``, ``EXCLUDED``,
    ``OPTED_OUT`` or ``SYNTHETIC``)."""
    if request.tracking.skip:
        return DropReason.SKIPPED
    if settings.site_hosts and not _is_site_host(
        forwarded_origin(request, settings.trusted_proxies, settings.forwarded_header)[1], settings.site_hosts
    ):
        return DropReason.FOREIGN_HOST
    if _is_excluded(request, settings):
        return DropReason.EXCLUDED
    if (settings.honor_gpc and request.headers.get("sec-gpc", "").strip() == "1") or (
        settings.honor_dnt and request.headers.get("dnt", "").strip() == "1"
    ):
        return DropReason.OPTED_OUT
    if settings.skip_synthetic and request.synthetic_type in ("bot", "test"):
        return DropReason.SYNTHETIC
    return None


@text_cache(maxsize=1024)  # a site has a few host names, and a forged Host header is still one string
def _is_site_host(host: str | None, site_hosts: tuple[str, ...]) -> bool:
    """Whether ``host`` (as the URL shows it, any port aside) is one of ``site_hosts``: a name, or ``*.name``
    for every name under it."""
    if not host:
        return False
    name = host.lower()
    name = name[: name.index("]") + 1] if name.startswith("[") and "]" in name else name.rpartition(":")[0] or name
    name = name.rstrip(".")
    return any(name == allowed or (allowed.startswith("*.") and name.endswith(allowed[1:])) for allowed in site_hosts)


def _is_excluded(request: HttpRequest, settings: Settings) -> bool:
    if request.method in settings.exclude_methods:
        return True
    status = request.status
    if status is not None and settings.exclude_status and _status_excluded(status, settings.exclude_status):
        return True
    if _is_slash_redirect(request):
        return True
    return _path_excluded(request.path, settings.exclude_paths, settings.exclude_extensions)


@functools.lru_cache(maxsize=256)
def _status_excluded(status: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(low <= status <= high for low, high in ranges)


@text_cache(maxsize=2048)  # one application has few distinct paths, and the globs are matched one by one
def _path_excluded(path: str, patterns: tuple[str, ...], extensions: tuple[str, ...]) -> bool:
    name = path.rpartition("/")[2]
    extension = name.rpartition(".")[2].lower() if "." in name else ""
    if extension and extension in extensions:
        return True
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def _is_slash_redirect(request: HttpRequest) -> bool:
    """A redirect that only adds or removes a trailing slash (Starlette, Django's APPEND_SLASH): the page
    view is the request it leads to, and counting both would make one visit two page views."""
    if request.status not in (301, 302, 307, 308) or not request.redirect_location:
        return False
    try:
        target = urlsplit(request.redirect_location)
    except ValueError:
        return False
    return (
        target.path != request.path
        and target.path.rstrip("/") == request.path.rstrip("/")
        and target.query == request.query
    )


def is_event(request: HttpRequest, settings: Settings) -> bool:
    """Whether the request is tracked as an event (its route or path matches ``event_routes``)."""
    if not settings.event_routes:
        return False
    candidates = (request.route, request.path) if request.route else (request.path,)
    return any(fnmatch.fnmatchcase(candidate, pattern) for pattern in settings.event_routes for candidate in candidates)


class ClientAddress(NamedTuple):
    """The visitor's address as the forwarding walk found it."""

    address: str | None
    malformed: bool = False
    """A trusted proxy's header was malformed (an unbalanced quote, a hop that is no address where the visitor's
    should be): counted, and ``address`` is ``None`` when the walk could not get past it."""


def client_address(
    request: HttpRequest, trusted: tuple[IpNetwork, ...], header: str = "x-forwarded-for"
) -> ClientAddress:
    """The visitor's address: walk the forwarding chain from the right while the hop is a trusted proxy.

    Starting from the socket peer means a client can never choose its own address by sending the header: an
    untrusted peer is the client, whatever it claims. Only the one header the proxies are known to write is
    read (``X-Forwarded-For`` or RFC 7239 ``Forwarded``): a proxy that appends to one passes the other through
    from the client untouched. The hop just left of the trusted proxies is what the last of them saw: when it is
    garbage the visitor is unknown (never the proxy, never a hop further left, which the client may have
    written); ``unknown`` and obfuscated identifiers (RFC 7239) leave the proxy as the best address there is.
    """
    chain = request.headers.get("forwarded" if header == "forwarded" else "x-forwarded-for", "")
    return _walk(chain, request.peer_address, trusted, header)


@text_cache(maxsize=4096)  # a batch holds many requests of each visitor, and the walk parses addresses and networks
def _walk(chain: str, peer_address: str | None, trusted: tuple[IpNetwork, ...], header: str) -> ClientAddress:
    current = _parse_ip(peer_address)
    if current is None or not chain or not _is_trusted(current, trusted):
        return ClientAddress(None if current is None else str(current))
    hops, malformed = _forwarded_for(chain, header)
    for hop in reversed(hops[-_MAX_HOPS:]):
        if not _is_trusted(current, trusted):
            break
        parsed = _parse_ip(hop)
        if parsed is None:
            if _UNKNOWN_NODE.fullmatch(hop.strip().strip('"')):
                break
            return ClientAddress(None, malformed=True)
        current = parsed
    return ClientAddress(str(current), malformed)


def forwarded_origin(
    request: HttpRequest, trusted: tuple[IpNetwork, ...], header: str = "x-forwarded-for"
) -> tuple[str, str | None]:
    """Scheme and host the visitor used, as a trusted proxy reports them (TLS ends at the proxy)."""
    if not _is_trusted_peer(request.peer_address, trusted):
        return request.scheme, request.host
    if header == "forwarded":
        elements = _forwarded_elements(request.headers.get("forwarded", ""))[0]
        last = elements[-1] if elements else {}
        proto, host = last.get("proto"), last.get("host")
    else:
        proto = _last_item(request.headers.get("x-forwarded-proto", ""))
        host = _last_item(request.headers.get("x-forwarded-host", ""))
    scheme = proto.lower() if proto and proto.lower() in ("http", "https") else request.scheme
    return scheme, host or request.host


def mask_ip(address: str, mask_bytes: int) -> str:
    """Zero the last ``mask_bytes`` bytes of an IPv4 address, or Matomo's matching IPv6 prefix."""
    if mask_bytes == 0:
        return address
    parsed = ipaddress.ip_address(address)
    keep = 32 - 8 * mask_bytes if parsed.version == 4 else _IPV6_KEEP_BITS[mask_bytes]
    return str(ipaddress.ip_network(f"{parsed}/{keep}", strict=False).network_address)


def _forwarded_for(chain: str, header: str) -> tuple[list[str], bool]:
    """The hops, left to right, and whether the header was malformed (a ``Forwarded`` quote left open)."""
    if header == "forwarded":
        elements, malformed = _forwarded_elements(chain)
        # An element without "for" is a proxy that does not say who its client was, as "for=unknown".
        return [element.get("for", "unknown") for element in elements], malformed
    return [hop.strip() for hop in _right_end(chain).split(",") if hop.strip()], False


def _right_end(value: str) -> str:
    """The last ``_MAX_HEADER`` characters, without the hop the cut split: proxies append on the right, so a
    client padding the header can only push out its own hops, never a trusted proxy's."""
    if len(value) <= _MAX_HEADER:
        return value
    return value[-_MAX_HEADER:].partition(",")[2]


def _forwarded_elements(value: str) -> tuple[list[dict[str, str]], bool]:
    """RFC 7239 elements: ``for=192.0.2.60;proto=https, for="[2001:db8::1]:4711"`` -> list of dicts, and whether
    a quote was left open.

    A client can send an unbalanced quote so that the element its proxy appends disappears inside the quote; the
    proxies' elements are on the right, so an odd quote is read from the right: every element right of it is
    whole, and the one holding it is garbage.
    """
    value = _right_end(value)
    malformed = value.count('"') % 2 == 1
    if malformed:
        parts = [part[::-1] for part in reversed(_split_outside_quotes(value[::-1], ","))]
        parts[0] = "for=?"  # the element holding the open quote: a hop that is no address
    else:
        parts = _split_outside_quotes(value, ",")
    elements = []
    for element in parts:
        pairs: dict[str, str] = {}
        for pair in _split_outside_quotes(element, ";"):
            key, sep, raw = pair.partition("=")
            if sep:
                pairs[key.strip().lower()] = raw.strip().strip('"')
        elements.append(pairs)
    return elements, malformed


def _split_outside_quotes(value: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def _last_item(value: str) -> str:
    return value.rpartition(",")[2].strip()


@text_cache(maxsize=4096)  # one lookup by the peer's text instead of two (an address hashes in Python code)
def _is_trusted_peer(peer_address: str | None, networks: tuple[IpNetwork, ...]) -> bool:
    peer = _parse_ip(peer_address)
    return peer is not None and _is_trusted(peer, networks)


@functools.lru_cache(maxsize=1024)
def _is_trusted(address: IpAddress, networks: tuple[IpNetwork, ...]) -> bool:
    return any(address in network for network in networks if address.version == network.version)


@functools.lru_cache(maxsize=4096)
def _parse_ip(text: str | None) -> IpAddress | None:
    """An address from a header hop: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]``, ``[::1]:80``, ``::1``, without any
    IPv6 zone id."""
    if not text:
        return None
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    if ":" in text:
        text = text.partition("%")[0]  # an IPv6 zone id (fe80::1%eth0) names an interface of the proxy, not the visitor
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
