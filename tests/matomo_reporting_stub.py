"""The ``matomo.php`` stand-in plus what ``otel-matomo check`` also asks: ``GET matomo.php`` and the Reporting API.

Bulk tracking is the stand-in's own (``MatomoStandIn._handle``). The Reporting API answers the few methods the
check calls the way Matomo 5.3.1 answered them (``tests/real_matomo/test_check_real.py`` runs the same checks
against the real one): the token only counts from the POST body, an unknown token is HTTP 401 "Unable to
authenticate", a Super User asking for an unknown site gets HTTP 200 ``{"result": "error", "message": "An
unexpected website ..."}``, a user without access gets HTTP 401 "... requires 'view' access ...".

Tokens: the stand-in's ``SUPERUSER_TOKEN`` and ``SECURE_ONLY_TOKEN`` (the same Super User; the second one refused
inside bulk bodies), ``WRITE_TOKEN`` (write role on every site), and :data:`VIEW_TOKEN` (view role).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl

from tests.matomo_standin import SECURE_ONLY_TOKEN, SUPERUSER_TOKEN, WRITE_TOKEN, MatomoStandIn, _QuickServer

VIEW_TOKEN = "d" * 32

TRACKER_PAGE = (
    b"This resource is part of Matomo. Keep full control of your data with the leading free and open source "
    b"<a href='https://matomo.org' target='_blank' rel='noopener noreferrer nofollow'>web analytics &amp; "
    b"conversion optimisation platform</a>.<br>\nThis file is the endpoint for the Matomo tracking API. If you want "
    b"to access the Matomo UI or use the Reporting API, please use <a href='index.php'>index.php</a> instead.\n"
)
"""What Matomo 5.3.1 answers to ``GET matomo.php`` without parameters (HTTP 200, text/html)."""


@dataclass
class ApiCall:
    """One Reporting API request as it arrived."""

    method: str
    query: dict[str, str]
    body: dict[str, str]


@dataclass
class MatomoReportingStub(MatomoStandIn):
    """``MatomoStandIn`` answering ``GET matomo.php`` and ``POST index.php`` too."""

    tracker_status: int = 200
    tracker_page: bytes = TRACKER_PAGE
    redirect_to: str | None = None
    reporting: bool = True
    """``False``: ``index.php`` answers HTTP 403 with an HTML page, as behind a proxy exposing only the tracker."""
    site_names: dict[int, str] = field(default_factory=lambda: {1: "shop", 2: "store"})
    api_calls: list[ApiCall] = field(default_factory=list)
    request_lines: list[str] = field(default_factory=list)
    """``METHOD path?query`` of every request, to show that no token ever travels in a URL."""

    def start(self) -> MatomoReportingStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub._note(self)
                stub._get(self)

            def do_POST(self) -> None:
                stub._note(self)
                if self.path.partition("?")[0].endswith("/index.php"):
                    stub._reporting_api(self)
                else:
                    stub._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _QuickServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True).start()
        return self

    def _note(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.request_lines.append(f"{handler.command} {handler.path}")

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str, **headers: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        if not handler.path.partition("?")[0].endswith("/matomo.php"):
            self._send(handler, 404, b"<html>Not Found</html>", "text/html")
        elif self.redirect_to is not None:
            self._send(handler, 301, b"", "text/html", Location=self.redirect_to)
        else:
            self._send(handler, self.tracker_status, self.tracker_page, "text/html; charset=UTF-8")

    def _reporting_api(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length", "0"))
        body = dict(parse_qsl(handler.rfile.read(length).decode(), keep_blank_values=True))
        query = dict(parse_qsl(handler.path.partition("?")[2], keep_blank_values=True))
        method = query.get("method", "")
        with self._lock:
            self.api_calls.append(ApiCall(method, query, body))
        if not self.reporting:
            self._send(handler, 403, b"<html><h1>403 Forbidden</h1></html>", "text/html")
            return
        status, answer = self._answer_api(method, query, body.get("token_auth"))
        self._send(handler, status, json.dumps(answer).encode(), "application/json; charset=utf-8")

    def _answer_api(self, method: str, query: dict[str, str], token: str | None) -> tuple[int, object]:
        superuser = token in (SUPERUSER_TOKEN, SECURE_ONLY_TOKEN)
        role = "superuser" if superuser else {WRITE_TOKEN: "write", VIEW_TOKEN: "view", None: "anonymous"}.get(token)
        if role is None:
            return 401, {
                "result": "error",
                "message": "Unable to authenticate with the provided token. It is either invalid or expired.",
            }
        visible = sorted(self.sites) if role in ("superuser", "write", "view") else []
        if method == "SitesManager.getSiteFromId":
            site = int(query.get("idSite", "0") or 0)
            if site in self.sites and site in visible:
                name = self.site_names.get(site, f"site {site}")
                return 200, {"idsite": site, "name": name, "main_url": f"http://{name}.example", "timezone": "UTC"}
            if superuser:
                return 200, {
                    "result": "error",
                    "message": f"An unexpected website was found in the request: website id was set to '{site}' .",
                }
            return 401, {
                "result": "error",
                "message": f"You can't access this resource as it requires 'view' access for the website id = {site}.",
            }
        if method == "UsersManager.hasSuperUserAccess":
            return 200, {"value": superuser}
        if method == "SitesManager.getSitesIdWithAdminAccess":
            return 200, visible if superuser else []
        if method == "SitesManager.getSitesIdWithWriteAccess":
            return 200, visible if role == "write" else []
        if method == "SitesManager.getSitesIdWithAtLeastViewAccess":
            return 200, visible
        module, _, name = method.partition(".")
        return 200, {
            "result": "error",
            "message": f"The method '{name}' does not exist or is not available in the module '{module}'.",
        }
