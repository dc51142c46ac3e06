"""``HttpRequest`` -> Matomo Tracking API parameters. The only module that knows Matomo parameter names."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import quote

from otel_matomo.policy import client_ip, forwarded_origin, is_event, mask_ip, redact_url
from otel_matomo.request import HttpRequest
from otel_matomo.settings import Settings
from otel_matomo.visitor import visitor_id

__all__ = ["Hit", "action_name", "request_hit"]

Hit = dict[str, str]
"""One tracking request's parameters, unencoded; the transport URL-encodes them."""

_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
_BRAND = re.compile(r'"((?:[^"\\]|\\.)*)"\s*;\s*v\s*=\s*"((?:[^"\\]|\\.)*)"')


def request_hit(request: HttpRequest, settings: Settings) -> Hit:
    """The hit one HTTP request becomes: a page view, or an event for routes listed in ``event_routes``."""
    ip = client_ip(request, settings.trusted_proxies)
    day = time.strftime("%Y-%m-%d", time.gmtime(request.start_ns // 1_000_000_000))
    hit: Hit = {
        "idsite": str(settings.site_id),
        "rec": "1",
        "apiv": "1",
        # The span id is unique per request, so it serves as Matomo's cache buster and keeps this pure.
        "rand": f"{request.span_id:016x}",
        # cid, not _id: an unknown _id lets Matomo fall back to fingerprinting, and a server-side tracker's
        # fingerprint is the back end's own, which merges visitors. Computed from the full address, before any
        # masking, so that visitor counts stay right.
        "cid": visitor_id(
            settings.visitor_id_secret, ip, request.user_agent, day if settings.daily_visitor_id else None
        ),
        "url": redact_url(page_url(request, settings), settings.redact_query_params),
        # Matomo reads cdt as whole UTC seconds; the request's start is when the visitor acted.
        "cdt": str(request.start_ns // 1_000_000_000),
    }
    duration = request.duration_ns
    # A request tracked at its start has no duration yet: no server time rather than a false zero.
    server_ms = None if duration is None else str(round(duration / 1_000_000))
    if is_event(request, settings):
        hit.update(ca="1", e_c=settings.event_category, e_a=f"{request.method} {request.route or request.path}")
        hit.update(e_n=request.path)
        if server_ms is not None:
            hit["e_v"] = server_ms
    else:
        hit["action_name"] = action_name(request, with_error_titles=settings.error_page_titles)
        if server_ms is not None:
            hit["pf_srv"] = server_ms
    optional = {
        "urlref": redact_url(request.referrer, settings.redact_query_params) if request.referrer else None,
        "ua": request.user_agent,
        "uadata": _client_hints(request),
        "lang": request.accept_language,
        "uid": request.user_id,
        # Matomo refuses cip without a token that may write to the site; without cip it records our own IP.
        "cip": mask_ip(ip, settings.anonymize_ip) if ip and settings.token_auth is not None else None,
        "bots": "1" if settings.track_bots else None,
        "bw_bytes": str(request.response_size) if request.response_size is not None else None,
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


def page_url(request: HttpRequest, settings: Settings) -> str:
    """The full URL as the visitor requested it: scheme, Host header, path and query."""
    scheme, host = forwarded_origin(request, settings.trusted_proxies)
    if scheme in ("ws", "wss"):
        scheme = "https" if scheme == "wss" else "http"
    host = host or "localhost"
    default_port = _DEFAULT_PORTS.get(scheme)
    if default_port and host.endswith(default_port):
        host = host[: -len(default_port)]
    return f"{scheme}://{host}{_path_and_query(request)}"


def _client_hints(request: HttpRequest) -> str | None:
    """``Sec-CH-UA*`` request headers as the JSON ``uadata`` Matomo's JavaScript tracker sends."""
    headers = request.headers
    hints: dict[str, object] = {}
    if "sec-ch-ua" in headers:
        hints["brands"] = [
            {"brand": brand, "version": version} for brand, version in _BRAND.findall(headers["sec-ch-ua"])
        ]
    if "sec-ch-ua-full-version-list" in headers:
        hints["fullVersionList"] = [
            {"brand": brand, "version": version}
            for brand, version in _BRAND.findall(headers["sec-ch-ua-full-version-list"])
        ]
    if "sec-ch-ua-mobile" in headers:
        hints["mobile"] = headers["sec-ch-ua-mobile"].strip() == "?1"
    for header, key in (
        ("sec-ch-ua-platform", "platform"),
        ("sec-ch-ua-platform-version", "platformVersion"),
        ("sec-ch-ua-model", "model"),
    ):
        if header in headers:
            hints[key] = headers[header].strip().strip('"')
    return json.dumps(hints, separators=(",", ":")) if hints else None


def _path_and_query(request: HttpRequest) -> str:
    return f"{request.path}?{request.query}" if request.query else request.path


def _encode_component(text: str) -> str:
    """JavaScript's ``encodeURIComponent``, which Matomo's convention is written in."""
    return quote(text, safe="!*'()")
