"""The Matomo visitor id of a request: a keyed hash of who is asking, nothing else."""

from __future__ import annotations

import functools
import hashlib
import hmac

from otel_matomo._cache import CACHED_LENGTH

__all__ = ["visitor_id"]


def visitor_id(secret: bytes, client_ip: str | None, user_agent: str | None, day: str | None = None) -> str:
    """Return 16 lower-case hex characters, stable for one client IP and user agent.

    Sent as ``cid`` so that Matomo recognises the visitor by this id alone: with no id (or an unknown ``_id``)
    Matomo falls back to fingerprinting, and every visitor of a server-side tracker then shares the back end's
    fingerprint. An HMAC rather than a plain hash, because IPv4 x common user agents is small enough to
    brute-force an unsalted hash back to the visitor's address. With ``day`` (a UTC date) the id rotates daily
    and no id links one visitor across two days.
    """
    if user_agent is not None and len(user_agent) > CACHED_LENGTH:
        return _visitor_id(secret, client_ip, user_agent, day)
    return _visitor_id_cached(secret, client_ip, user_agent, day)


def _visitor_id(secret: bytes, client_ip: str | None, user_agent: str | None, day: str | None) -> str:
    message = f"{client_ip or ''}\0{user_agent or ''}\0{day or ''}".encode("utf-8", "surrogatepass")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:16]


_visitor_id_cached = functools.lru_cache(maxsize=4096)(_visitor_id)
"""A batch holds many requests of each visitor; the HMAC costs more than the lookup."""
