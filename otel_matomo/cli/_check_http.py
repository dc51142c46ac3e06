"""The HTTP calls ``otel-matomo check`` makes to Matomo, and their answers put into words for a report line.

Apart from the checks so that the verdicts read as rules about Matomo's answers, not as HTTP plumbing: the
checks ask for the tracker page, a Reporting API method or a one-item bulk request, and get back an
:class:`Answer` (or, for the bulk request, whether Matomo tracked the item) with the failure already described.
The token only ever travels in a POST body, never in a URL that a proxy might log.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from otel_matomo._bulk import MalformedAnswer, encode_bulk, parse_bulk_answer
from otel_matomo._settings import Settings
from otel_matomo._types import Hit


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, or why there was none (``status`` 0)."""

    status: int = 0
    body: bytes = b""
    problem: str = ""
    location: str = ""

    def json(self) -> object:
        """The body as JSON, ``None`` when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def matomo_error(self) -> str | None:
        """The message of a Reporting API ``{"result": "error", "message": ...}`` answer."""
        data = self.json()
        if isinstance(data, dict) and data.get("result") == "error":
            return str(data.get("message", ""))
        return None


def snippet(body: bytes, limit: int = 120) -> str:
    """The start of an answer as one line of text, tags removed."""
    text = body[:4000].decode("utf-8", "replace")
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.DOTALL | re.IGNORECASE)
    text = html.unescape(re.sub(r"<[^>]*>", " ", text))
    text = " ".join(text.split())
    return (text[:limit] + "...") if len(text) > limit else (text or "empty body")


def _describe(error: httpx.HTTPError, timeout: float) -> str:
    text = str(error) or type(error).__name__
    lowered = text.lower()
    if isinstance(error, httpx.TimeoutException):
        return f"no answer within {timeout:g} s ({type(error).__name__})"
    if "refused" in lowered:
        return "connection refused (nothing listens there: is Matomo running, and the port right?)"
    if "name or service not known" in lowered or "nodename nor servname" in lowered or "getaddrinfo" in lowered:
        return f"the host name does not resolve ({text})"
    if "ssl" in lowered or "certificate" in lowered:
        return f"TLS failed ({text})"
    return f"{type(error).__name__}: {text}"


class MatomoClient:
    """The configured Matomo as the checks reach it: its tracker endpoint and the Reporting API beside it."""

    def __init__(self, settings: Settings, client: httpx.Client | None = None) -> None:
        assert settings.endpoint is not None
        self._endpoint = settings.endpoint
        self._token = settings.token_auth
        self._timeout = settings.timeout
        self._client = client or httpx.Client(
            headers={"User-Agent": "otel-matomo-check"}, timeout=settings.timeout, follow_redirects=False
        )
        self.shown = settings.endpoint_for_logs
        """The endpoint without any password, for report lines."""

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()

    def tracker_page(self) -> Answer:
        """``GET`` the tracker endpoint without parameters: Matomo answers with a page that names itself."""
        return self._request("GET", self._endpoint)

    @property
    def reporting_url(self) -> str:
        """The Reporting API (``index.php``) beside the tracker's ``matomo.php``."""
        return self._endpoint.rsplit("/", 1)[0] + "/index.php"

    @property
    def reporting_url_shown(self) -> str:
        """:attr:`reporting_url` without any password, for report lines."""
        parts = urlsplit(self.reporting_url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"

    def api(self, method: str, **params: str) -> Answer:
        """One Reporting API call; the token only ever in the POST body."""
        query = {"module": "API", "method": method, "format": "json", **params}
        body = {"token_auth": self._token} if self._token else {}
        return self._request("POST", self.reporting_url, params=query, data=body)

    def bulk(self, item: Hit, token: str | None) -> tuple[bool | None, str]:
        """Send one bulk item: ``(tracked?, "")``, or ``(None, why)`` when Matomo did not answer as its bulk API."""
        answer = self._request(
            "POST", self._endpoint, content=encode_bulk([item], token), headers={"Content-Type": "application/json"}
        )
        if not answer.status:
            return None, f"cannot reach {self.shown}: {answer.problem}"
        if answer.status != 200:
            return None, f"Matomo answered the bulk request with HTTP {answer.status} ({snippet(answer.body)})"
        try:
            parsed = parse_bulk_answer(answer.body)
        except MalformedAnswer as error:
            return None, f"{self.shown} does not answer as Matomo's bulk tracking API ({error}: {snippet(answer.body)})"
        if parsed.tracked == 0 and parsed.invalid == 0:
            return None, f"Matomo answered neither tracked nor invalid ({snippet(answer.body)})"
        return parsed.tracked > 0 and parsed.invalid == 0, ""

    def _request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        try:
            response = self._client.request(method, url, params=params, data=data, content=content, headers=headers)
        except httpx.HTTPError as error:
            return Answer(problem=_describe(error, self._timeout))
        return Answer(response.status_code, response.content, location=response.headers.get("Location", ""))
