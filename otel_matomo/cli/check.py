"""``otel-matomo check``: is the exporter's configuration one that gets hits into Matomo?

One line per check, each with a verdict (OK, WARN, FAIL, SKIP), from the same configuration as the exporter.
Nothing it sends by default is recorded by Matomo: the token is tested with a bulk request whose only item
carries the visitor IP (``cip``, which needs a token with write access) but no ``rec=1``. Matomo 5 validates
such an item (an unknown site or an unaccepted token makes it ``invalid``) and then discards it before
recording anything, answering ``tracked: 1``. ``--send-test-hit`` is the only way this command records data.

What Matomo 5.3.1 answers, as measured (see ``tests/real_matomo/test_check_real.py``):

- ``GET matomo.php`` without parameters: HTTP 200, "This resource is part of Matomo ... the endpoint for the
  Matomo tracking API" (``HEAD`` and a ``POST`` without a body: HTTP 400).
- Reporting API (``index.php``, ``module``/``method``/``format`` in the query string, ``token_auth`` in the
  POST body): ``SitesManager.getSiteFromId`` gives the site, or for a Super User HTTP 200 ``{"result": "error",
  "message": "An unexpected website was found ..."}`` for an unknown site, or HTTP 401 "... requires 'view'
  access ..." for a user without access (known or not); an unknown token gives HTTP 401 "Unable to authenticate
  with the provided token". ``UsersManager.hasSuperUserAccess``, ``SitesManager.getSitesIdWithAdminAccess`` and
  ``getSitesIdWithWriteAccess`` work with app tokens, secure-only ones included (the token is in a POST body).
- Bulk ``{"requests": ["?idsite=1&cip=..."], "token_auth": ...}`` without ``rec``: a Super User's token gives
  ``tracked: 1, invalid: 0`` and nothing in ``Live.getLastVisitsDetails``; the same user's secure-only token, a
  view-only token, an unknown token or none give ``tracked: 0, invalid: 1``; an unknown site gives
  ``invalid: 1`` with any token.
"""

from __future__ import annotations

import argparse
import enum
import html
import json
import logging
import os
import re
import secrets
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import urlsplit

import httpx

from otel_matomo._instrumentation import header_capture, header_capture_messages, semconv_mode
from otel_matomo._names import CAPTURE_ENV, ENV_PREFIX, SEMCONV_ENV, traces_exporters
from otel_matomo._sdk_exporters import sdk_exporter_problems
from otel_matomo._settings import ConfigurationError, Settings, read_flag
from otel_matomo._transport import MalformedAnswer, encode_bulk, parse_bulk_answer
from otel_matomo._types import Hit

__all__ = [
    "EXIT_CONFIGURATION",
    "EXIT_FAILED",
    "EXIT_OK",
    "PROBE_TITLE",
    "TEST_HIT_TITLE",
    "Check",
    "Checker",
    "Verdict",
    "add_parser",
    "run",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIGURATION = 2

PROBE_IP = "192.0.2.1"
"""The visitor IP of the probe: TEST-NET-1 (RFC 5737), an address no visitor has."""
PROBE_TITLE = "otel-matomo check probe (not recorded)"
TEST_HIT_TITLE = "otel-matomo check"
TEST_HIT_PATH = "/otel-matomo-check"

_TRACKER_PAGE = re.compile(rb"(Matomo|Piwik)\b.*tracking API", re.DOTALL | re.IGNORECASE)
_NAME_WIDTH = 15

_HELP = "check that the configured Matomo answers, the site exists and the token works for bulk tracking"
_DESCRIPTION = (
    "Reads the exporter's configuration (OTEL_EXPORTER_MATOMO_* variables; --endpoint and --site-id override "
    "them) and checks, one line each: that the endpoint answers as Matomo's tracker; that the site exists and "
    "the token may write to it (Reporting API, token in the POST body); that Matomo accepts the token inside "
    "bulk requests (the 'secure only' token trap), with a probe that Matomo validates but does not record; the "
    "SDK exporters opentelemetry-instrument would load; the request-header capture and the HTTP semantic "
    "conventions the instrumentation would use. Run it with the application's environment. Nothing is "
    "recorded in Matomo unless --send-test-hit is given. The token is never printed."
)
_EPILOG = """verdicts:
  OK    works as needed
  WARN  works, but some analytics will be missing or wrong
  FAIL  hits will be lost
  SKIP  not checked (not configured, or an earlier check failed)

exit codes:
  0  no check failed (warnings allowed)
  1  at least one check failed
  2  configuration error (an invalid OTEL_EXPORTER_MATOMO_* value or argument)

Colour is used only when standard output is a terminal and NO_COLOR is unset."""


class Verdict(enum.Enum):
    """How one check came out."""

    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


_COLOURS = {Verdict.OK: "32", Verdict.WARN: "33", Verdict.FAIL: "31;1", Verdict.SKIP: "2"}


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    verdict: Verdict
    message: str


@dataclass(frozen=True)
class _Answer:
    """An HTTP answer, or why there was none (``status`` 0)."""

    status: int = 0
    body: bytes = b""
    problem: str = ""
    location: str = ""

    def json(self) -> object:
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


def _snippet(body: bytes, limit: int = 120) -> str:
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


@dataclass
class _State:
    """What earlier checks found out, for the later ones."""

    reachable: bool = False
    site: dict[str, object] | None = None
    site_known: bool | None = None
    """``True`` the site exists, ``False`` it does not, ``None`` unknown."""
    may_write: bool | None = None
    """The token may write to the site (per the Reporting API); ``None`` unknown."""
    failures: list[str] = field(default_factory=list)


class Checker:
    """Runs the checks for one configuration; :meth:`checks` yields each line as soon as it is known."""

    def __init__(
        self,
        settings: Settings,
        environ: Mapping[str, str],
        *,
        client: httpx.Client | None = None,
        configuration_warnings: tuple[str, ...] = (),
    ) -> None:
        self._settings = settings
        self._environ = environ
        self._client = client or httpx.Client(
            headers={"User-Agent": "otel-matomo-check"}, timeout=settings.timeout, follow_redirects=False
        )
        self._warnings = configuration_warnings
        self._state = _State()
        self._probe_id = secrets.token_hex(8)

    @property
    def probe_visitor_id(self) -> str:
        """The ``cid`` of this run's non-recording probe (to look it up in Matomo's Live API)."""
        return self._probe_id

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()

    def checks(self, *, send_test_hit: bool = False) -> Iterator[Check]:
        """Every check, in order."""
        yield from self._configuration()
        if self._settings.endpoint is None:
            for name in ("endpoint", "site", "token access", "token in bulk", "test hit"):
                yield Check(name, Verdict.SKIP, "no endpoint configured (dry run)")
        else:
            yield self._endpoint()
            yield from self._site_and_access()
            yield self._bulk_token()
            yield self._test_hit(send_test_hit)
        yield from self._local()

    # --- configuration ------------------------------------------------------------------------------------

    def _configuration(self) -> Iterator[Check]:
        settings = self._settings
        token = "set" if settings.token_auth else "not set"
        yield Check(
            "configuration",
            Verdict.OK,
            f"endpoint {settings.endpoint_for_logs}, site {settings.site_id}, token_auth {token}, "
            f"timeout {settings.timeout:g} s",
        )
        if settings.dry_run:
            yield Check(
                "configuration",
                Verdict.WARN,
                f"{ENV_PREFIX}DRY_RUN is on: the exporter logs hits on the otel_matomo.hits logger instead of "
                "sending them",
            )
        for warning in self._warnings:
            yield Check("configuration", Verdict.WARN, warning)

    # --- the tracker endpoint -----------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Answer:
        try:
            response = self._client.request(method, url, params=params, data=data, content=content, headers=headers)
        except httpx.HTTPError as error:
            return _Answer(problem=_describe(error, self._settings.timeout))
        return _Answer(response.status_code, response.content, location=response.headers.get("Location", ""))

    def _endpoint(self) -> Check:
        assert self._settings.endpoint is not None
        shown = self._settings.endpoint_for_logs
        answer = self._request("GET", self._settings.endpoint)
        if not answer.status:
            return self._fail("endpoint", f"cannot reach {shown}: {answer.problem}")
        status = answer.status
        if 300 <= status < 400:
            target = re.split(r"[?#]", answer.location, maxsplit=1)[0] or "elsewhere"
            return self._fail(
                "endpoint",
                f"{shown} redirects (HTTP {status}) to {target}: the exporter does not follow redirects (a POST "
                f"body is not sent again); set {ENV_PREFIX}ENDPOINT to the final URL",
            )
        if status == 200 and _TRACKER_PAGE.search(answer.body):
            self._state.reachable = True
            return Check("endpoint", Verdict.OK, f"Matomo's tracker answers at {shown}")
        if status in (200, 204) and not answer.body.strip():
            self._state.reachable = True
            return Check(
                "endpoint",
                Verdict.WARN,
                f"{shown} answers HTTP {status} with an empty page instead of Matomo's tracker page; the bulk "
                "check below tells whether Matomo is behind it",
            )
        if status == 200:
            return self._fail(
                "endpoint",
                f"not Matomo: {shown} answers HTTP 200 with a page that is not Matomo's tracker page "
                f"({_snippet(answer.body)!r}); {ENV_PREFIX}ENDPOINT must be the Matomo base URL or its matomo.php",
            )
        if status == 404:
            return self._fail(
                "endpoint",
                f"HTTP 404 at {shown}: there is no matomo.php; {ENV_PREFIX}ENDPOINT must be the Matomo base URL "
                "or its matomo.php URL",
            )
        return self._fail("endpoint", f"HTTP error {status} at {shown} ({_snippet(answer.body)})")

    # --- site and token access (Reporting API) ------------------------------------------------------------

    @property
    def _reporting_url(self) -> str:
        assert self._settings.endpoint is not None
        return self._settings.endpoint.rsplit("/", 1)[0] + "/index.php"

    def _api(self, method: str, **params: str) -> _Answer:
        """One Reporting API call; the token only ever in the POST body."""
        query = {"module": "API", "method": method, "format": "json", **params}
        body = {"token_auth": self._settings.token_auth} if self._settings.token_auth else {}
        return self._request("POST", self._reporting_url, params=query, data=body)

    def _site_and_access(self) -> Iterator[Check]:
        if not self._state.reachable:
            yield Check("site", Verdict.SKIP, "not checked: the endpoint check failed")
            yield Check("token access", Verdict.SKIP, "not checked: the endpoint check failed")
            return
        if not self._settings.token_auth:
            yield self._site_by_tracker()
            yield Check(
                "token access",
                Verdict.WARN,
                f"no token_auth: Matomo cannot be given the visitor IP (cip) and records this server's IP for "
                f"every visitor, so geolocation is wrong. Set {ENV_PREFIX}TOKEN_AUTH to a token with write access "
                "to the site",
            )
            return
        site = self._site_by_reporting_api()
        yield site
        yield self._access(site)

    def _site_by_tracker(self) -> Check:
        """Without a token the Reporting API hides sites; the tracker validates the site of a probe instead."""
        site = self._settings.site_id
        verdict, tracked, detail = self._bulk(self._probe(cip=False), token=None)
        if verdict is None:
            return self._fail("site", detail)
        if tracked:
            self._state.site_known = True
            return Check(
                "site", Verdict.OK, f"site {site} exists (Matomo's tracker accepted a probe, which it does not record)"
            )
        self._state.site_known = False
        return self._fail("site", f"Matomo's tracker refuses site {site}: there is no site with that id")

    def _site_by_reporting_api(self) -> Check:
        site = self._settings.site_id
        answer = self._api("SitesManager.getSiteFromId", idSite=str(site))
        data = answer.json()
        if isinstance(data, dict) and "idsite" in data:
            self._state.site, self._state.site_known = data, True
            name, url = data.get("name"), data.get("main_url")
            return Check("site", Verdict.OK, f"site {site} exists: {name!r} ({url})")
        error = answer.matomo_error()
        if error is None:
            why = answer.problem or f"HTTP {answer.status}, {_snippet(answer.body)}"
            return Check(
                "site",
                Verdict.WARN,
                f"Matomo's Reporting API does not answer at {self._shown(self._reporting_url)} ({why}), so the "
                "site and the token's access are not checked there; the bulk check below still tests the token",
            )
        lowered = error.lower()
        if "authenticate" in lowered or ("token" in lowered and "valid" in lowered):
            self._state.may_write = False
            return self._fail(
                "site",
                f"Matomo does not accept the token_auth: it is invalid, expired or deleted (Matomo: {error!r})",
            )
        if "unexpected website" in lowered or ("website id" in lowered and "access" not in lowered):
            self._state.site_known = False
            return self._fail("site", f"site {site} does not exist in this Matomo (Matomo: {error!r})")
        if "access" in lowered:
            self._state.may_write = False
            return self._fail(
                "site",
                f"the token has no access to site {site}, or there is no site {site} (Matomo does not tell users "
                f"without access which): check {ENV_PREFIX}SITE_ID and the token's user (Matomo: {error!r})",
            )
        return self._fail("site", f"Matomo's Reporting API answered an error: {error!r}")

    def _access(self, site_check: Check) -> Check:
        site = self._settings.site_id
        if site_check.verdict is Verdict.FAIL:
            return Check("token access", Verdict.SKIP, "not checked: see the site check")
        if site_check.verdict is not Verdict.OK:
            return Check("token access", Verdict.SKIP, "not checked: the Reporting API does not answer")
        superuser = self._api("UsersManager.hasSuperUserAccess").json()
        if isinstance(superuser, dict) and superuser.get("value") is True:
            self._state.may_write = True
            return Check("token access", Verdict.OK, "the token has Super User access")
        for method, role in (
            ("SitesManager.getSitesIdWithAdminAccess", "admin"),
            ("SitesManager.getSitesIdWithWriteAccess", "write"),
        ):
            ids = self._api(method).json()
            if not isinstance(ids, list):
                return Check(
                    "token access", Verdict.WARN, f"could not read the token's access ({method} answered {ids!r})"
                )
            if site in {int(item) for item in ids if str(item).isdigit()}:
                self._state.may_write = True
                return Check("token access", Verdict.OK, f"the token has {role} access to site {site}")
        self._state.may_write = False
        return self._fail(
            "token access",
            f"the token has view access only to site {site}: Matomo accepts the visitor IP (cip) only from a "
            "token with write or admin access, so every hit would be refused. Give the token's user write access "
            "to the site, or use another user's token",
        )

    # --- the token inside bulk requests -------------------------------------------------------------------

    def _probe(self, *, cip: bool) -> Hit:
        """A bulk item that Matomo validates but does not record: no ``rec=1``."""
        probe: Hit = {"idsite": str(self._settings.site_id), "apiv": "1"}
        if cip:
            probe["cip"] = PROBE_IP
        probe.update({"cid": self._probe_id, "action_name": PROBE_TITLE})
        return probe

    def _bulk(self, item: Hit, token: str | None) -> tuple[Verdict | None, bool, str]:
        """``(None, False, why)`` when Matomo did not answer as its bulk API; else ``(OK, tracked?, "")``."""
        assert self._settings.endpoint is not None
        shown = self._settings.endpoint_for_logs
        answer = self._request(
            "POST",
            self._settings.endpoint,
            content=encode_bulk([item], token),
            headers={"Content-Type": "application/json"},
        )
        if not answer.status:
            return None, False, f"cannot reach {shown}: {answer.problem}"
        if answer.status != 200:
            return None, False, f"Matomo answered the bulk request with HTTP {answer.status} ({_snippet(answer.body)})"
        try:
            parsed = parse_bulk_answer(answer.body)
        except MalformedAnswer as error:
            return (
                None,
                False,
                f"{shown} does not answer as Matomo's bulk tracking API ({error}: {_snippet(answer.body)})",
            )
        if parsed.tracked == 0 and parsed.invalid == 0:
            return None, False, f"Matomo answered neither tracked nor invalid ({_snippet(answer.body)})"
        return Verdict.OK, parsed.tracked > 0 and parsed.invalid == 0, ""

    def _bulk_token(self) -> Check:
        name = "token in bulk"
        state = self._state
        if not state.reachable:
            return Check(name, Verdict.SKIP, "not checked: the endpoint check failed")
        if not self._settings.token_auth:
            return Check(name, Verdict.SKIP, "no token_auth")
        if state.site_known is False or state.may_write is False:
            return Check(name, Verdict.SKIP, "not checked: the token cannot write to this site (see above)")
        verdict, tracked, detail = self._bulk(self._probe(cip=True), self._settings.token_auth)
        if verdict is None:
            return self._fail(name, detail)
        site = self._settings.site_id
        if tracked:
            return Check(
                name,
                Verdict.OK,
                "Matomo accepts the token inside bulk requests (a probe with the visitor IP but without rec=1: "
                "validated, not recorded)",
            )
        if state.may_write:
            return self._fail(
                name,
                f"Matomo refused the probe although the token may write to site {site}: the token was created as "
                "'secure only' (the Matomo 5 default), which Matomo refuses inside bulk requests (Matomo bug "
                "#22910), so every hit would be lost. Create a token without 'Only allow secure requests' "
                "(Administration > Personal > Security > Auth tokens)",
            )
        return self._fail(
            name,
            f"Matomo refused the probe: the token may not write to site {site}, there is no site {site}, or the "
            "token is 'secure only', which Matomo refuses inside bulk requests (Matomo bug #22910)",
        )

    # --- an optional real page view -----------------------------------------------------------------------

    def _test_hit(self, send: bool) -> Check:
        name = "test hit"
        if not send:
            return Check(name, Verdict.SKIP, "not sent (--send-test-hit sends one page view)")
        if not self._state.reachable or self._state.site_known is False:
            return Check(name, Verdict.SKIP, "not sent: see the checks above")
        visitor = secrets.token_hex(8)
        hit: Hit = {
            "idsite": str(self._settings.site_id),
            "rec": "1",
            "apiv": "1",
            "bots": "1",
            "action_name": TEST_HIT_TITLE,
            "cid": visitor,
            "rand": secrets.token_hex(8),
            "ua": "otel-matomo check",
        }
        main_url = (self._state.site or {}).get("main_url")
        if isinstance(main_url, str) and main_url.startswith(("http://", "https://")):
            hit["url"] = main_url.rstrip("/") + TEST_HIT_PATH
        verdict, tracked, detail = self._bulk(hit, self._settings.token_auth)
        if verdict is None:
            return self._fail(name, detail)
        if tracked:
            return Check(
                name,
                Verdict.OK,
                f"Matomo tracked one page view {TEST_HIT_TITLE!r} for visitor {visitor} (Visitors > Visits Log)",
            )
        return self._fail(name, f"Matomo refused the test page view (invalid) for site {self._settings.site_id}")

    # --- what the application's process would run with ----------------------------------------------------

    def _local(self) -> Iterator[Check]:
        env = self._environ
        named = "matomo" in traces_exporters(env)
        if named:
            problems = sdk_exporter_problems(env, load=True)
            if problems:
                for problem in problems:
                    yield self._fail("sdk start-up", problem)
            else:
                shown = ", ".join(
                    f"{variable}={env.get(variable, 'unset')}"
                    for variable in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER")
                )
                yield Check(
                    "sdk start-up", Verdict.OK, f"every exporter opentelemetry-instrument would load is there ({shown})"
                )
        else:
            yield Check(
                "sdk start-up",
                Verdict.SKIP,
                "OTEL_TRACES_EXPORTER does not name matomo: otel-matomo runs only where the application builds "
                "MatomoSpanExporter in code",
            )
        capture = header_capture(env)
        messages = header_capture_messages(capture)
        if messages:
            for message in messages:
                yield Check("header capture", Verdict.WARN, message)
        else:
            source = (
                "added by otel-matomo under opentelemetry-instrument"
                if capture.added_by_otel_matomo
                else f"from {CAPTURE_ENV}"
            )
            yield Check(
                "header capture",
                Verdict.OK,
                f"all {len(capture.captured)} request headers otel-matomo reads are captured ({source})",
            )
        mode = semconv_mode(env)
        names = {
            "old": "the old HTTP attribute names (http.method, http.target ...)",
            "new": "the stable HTTP attribute names (http.request.method, url.path ...)",
            "dup": "both the old and the stable HTTP attribute names",
        }[mode]
        setting = env.get(SEMCONV_ENV)
        yield Check(
            "semconv",
            Verdict.OK,
            f"{SEMCONV_ENV}={setting if setting is not None else 'unset'}: spans carry {names}; otel-matomo "
            "reads all of them",
        )

    # --- helpers ------------------------------------------------------------------------------------------

    def _fail(self, name: str, message: str) -> Check:
        self._state.failures.append(name)
        return Check(name, Verdict.FAIL, message)

    @staticmethod
    def _shown(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


class _Redactor:
    """Removes the token (and any password of the endpoint URL) from every line printed."""

    def __init__(self, settings: Settings) -> None:
        secrets_ = [settings.token_auth or ""]
        if settings.endpoint:
            secrets_.append(urlsplit(settings.endpoint).password or "")
        self._secrets = sorted((item for item in secrets_ if len(item) >= 4), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _use_colour(out: TextIO, environ: Mapping[str, str]) -> bool:
    if environ.get("NO_COLOR", "") != "":
        return False
    isatty = getattr(out, "isatty", None)
    try:
        return bool(isatty and isatty()) and environ.get("TERM") != "dumb"
    except ValueError:  # closed stream
        return False


def format_check(check: Check, *, colour: bool) -> str:
    """``VERDICT  name           message``, the verdict coloured when ``colour``."""
    verdict = f"{check.verdict.value:<4}"
    if colour:
        verdict = f"\033[{_COLOURS[check.verdict]}m{verdict}\033[0m"
    return f"{verdict}  {check.name:<{_NAME_WIDTH}} {check.message}"


@contextmanager
def _collected_warnings() -> Iterator[list[str]]:
    """Warnings the settings log while being read, to show as WARN lines instead of log records."""
    logger = logging.getLogger("otel_matomo")
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                found.append(record.getMessage())

    handler = Collect()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``check`` to the ``otel-matomo`` sub-commands."""
    parser = commands.add_parser(
        "check",
        help=_HELP,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--endpoint", metavar="URL", help=f"the Matomo URL (overrides {ENV_PREFIX}ENDPOINT)")
    parser.add_argument("--site-id", metavar="ID", help=f"the Matomo site id (overrides {ENV_PREFIX}SITE_ID)")
    parser.add_argument(
        "--send-test-hit",
        action="store_true",
        help=f"also send one real page view titled {TEST_HIT_TITLE!r}, recorded in the site's reports",
    )


def run(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``otel-matomo check`` with parsed ``args``; returns the exit code."""
    env = os.environ if environ is None else environ
    stdout = sys.stdout if out is None else out
    stderr = sys.stderr if err is None else err
    try:
        with _collected_warnings() as warnings:
            settings = Settings.from_env(env, endpoint=args.endpoint, site_id=args.site_id)
            read_flag("CAPTURE_HEADERS", True, env)
    except ConfigurationError as error:
        print(f"otel-matomo check: invalid configuration: {error}", file=stderr)
        return EXIT_CONFIGURATION
    redact = _Redactor(settings)
    colour = _use_colour(stdout, env)
    checker = Checker(settings, env, configuration_warnings=tuple(warnings))
    counts = dict.fromkeys(Verdict, 0)
    try:
        for check in checker.checks(send_test_hit=args.send_test_hit):
            counts[check.verdict] += 1
            print(redact(format_check(check, colour=colour)), file=stdout, flush=True)
        failed, warned = counts[Verdict.FAIL], counts[Verdict.WARN]
        summary = f"{failed} failed, {warned} warning{'s' if warned != 1 else ''}"
        print(
            f"otel-matomo check: {summary}" if failed or warned else "otel-matomo check: all checks passed", file=stdout
        )
        stdout.flush()
    except BrokenPipeError:  # `otel-matomo check | head`: the reader left; say nothing more
        if out is None:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        checker.close()
    return EXIT_FAILED if counts[Verdict.FAIL] else EXIT_OK
