"""``HttpRequest`` -> Matomo Tracking API parameters. The only module that knows Matomo parameter names."""

from __future__ import annotations

from urllib.parse import quote

from otel_matomo.policy import client_ip
from otel_matomo.request import HttpRequest
from otel_matomo.settings import Settings
from otel_matomo.visitor import visitor_id

__all__ = ["Hit", "page_view_hit"]

Hit = dict[str, str]
"""One tracking request's parameters, unencoded; the transport URL-encodes them."""

_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def page_view_hit(request: HttpRequest, settings: Settings) -> Hit:
    """The page view that one HTTP request becomes."""
    ip = client_ip(request)
    hit: Hit = {
        "idsite": str(settings.site_id),
        "rec": "1",
        "apiv": "1",
        # The span id is unique per request, so it serves as Matomo's cache buster and keeps this pure.
        "rand": f"{request.span_id:016x}",
        # cid, not _id: an unknown _id lets Matomo fall back to fingerprinting, and a server-side tracker's
        # fingerprint is the back end's own, which merges visitors.
        "cid": visitor_id(settings.visitor_id_secret, ip, request.user_agent),
        "action_name": action_name(request, with_error_titles=settings.error_page_titles),
        "url": page_url(request),
        # Matomo reads cdt as whole UTC seconds; the request's start is when the visitor acted.
        "cdt": str(request.start_ns // 1_000_000_000),
        "pf_srv": str(round(request.duration_ns / 1_000_000)),
    }
    optional = {
        "urlref": request.referrer,
        "ua": request.user_agent,
        "lang": request.accept_language,
        "uid": request.user_id,
        # Matomo refuses cip without a token that may write to the site; without cip it records our own IP.
        "cip": ip if settings.token_auth is not None else None,
    }
    hit.update({name: value for name, value in optional.items() if value})
    return hit


def action_name(request: HttpRequest, *, with_error_titles: bool = True) -> str:
    """``"GET /items/{item_id}"``, or Matomo's error-page title for 4xx/5xx answers.

    The route template, not the raw path, so that one route is one row in Matomo's page titles report.
    Error titles follow the convention of Matomo's JavaScript tracker FAQ and its log importer:
    ``404/URL = <encoded path?query>/From = <encoded referrer>``, which Matomo groups under "404".
    """
    if with_error_titles and request.status is not None and request.status >= 400:
        title = f"{request.status}/URL = {_encode_component(_path_and_query(request))}"
        if request.referrer:
            title += f"/From = {_encode_component(request.referrer)}"
        return title
    return f"{request.method} {request.route or request.path}"


def page_url(request: HttpRequest) -> str:
    """The full URL as the visitor requested it: scheme, Host header, path and query."""
    host = request.host or "localhost"
    default_port = _DEFAULT_PORTS.get(request.scheme)
    if default_port and host.endswith(default_port):
        host = host[: -len(default_port)]
    return f"{request.scheme}://{host}{_path_and_query(request)}"


def _path_and_query(request: HttpRequest) -> str:
    return f"{request.path}?{request.query}" if request.query else request.path


def _encode_component(text: str) -> str:
    """JavaScript's ``encodeURIComponent``, which Matomo's convention is written in."""
    return quote(text, safe="!*'()")
