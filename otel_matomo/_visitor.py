"""The Matomo visitor id of a request: a keyed hash of who is asking, nothing else."""

from __future__ import annotations

import hashlib
import hmac

from otel_matomo._cache import text_cache


def visitor_id(secret: bytes, client_ip: str | None, user_agent: str | None, day: str | None = None) -> str:
    """Return 16 lower-case hex characters, stable for one client IP and user agent.

    Sent as ``cid`` so that Matomo recognises the visitor by this id alone: with no id (or an unknown ``_id``)
    Matomo falls back to fingerprinting, and every visitor of a server-side tracker then shares the back end's
    fingerprint. An HMAC rather than a plain hash, because IPv4 x common user agents is small enough to
    brute-force an unsalted hash back to the visitor's address. With ``day`` (a UTC date) the id rotates daily
    and no id links one visitor across two days.
    """
    return _visitor_id(user_agent, secret, client_ip, day)


@text_cache(maxsize=4096)  # a batch holds many requests of each visitor; the HMAC costs more than the lookup
def _visitor_id(user_agent: str | None, secret: bytes, client_ip: str | None, day: str | None) -> str:
    message = f"{client_ip or ''}\0{user_agent or ''}\0{day or ''}".encode("utf-8", "surrogatepass")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:16]
