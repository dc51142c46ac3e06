"""The checks of the live Matomo: the endpoint answers as its tracker, the site exists, the token may write to it
and Matomo accepts it inside bulk requests; optionally one real page view.

Nothing it sends by default is recorded by Matomo: the token is tested with a bulk request whose only item
carries the visitor IP (``cip``, which needs a token with write access) but no ``rec=1``. Matomo 5 validates
such an item (an unknown site or an unaccepted token makes it ``invalid``) and then discards it before
recording anything, answering ``tracked: 1``. ``--send-test-hit`` is the only way the command records data.

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

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from otel_matomo._names import ENV_PREFIX
from otel_matomo._settings import Settings
from otel_matomo._types import Hit
from otel_matomo.cli._check_http import MatomoClient, snippet
from otel_matomo.cli._check_report import Check, Verdict

PROBE_IP = "192.0.2.1"
"""The visitor IP of the probe: TEST-NET-1 (RFC 5737), an address no visitor has."""
PROBE_TITLE = "otel-matomo check probe (not recorded)"
TEST_HIT_TITLE = "otel-matomo check"
TEST_HIT_PATH = "/otel-matomo-check"
NAMES = ("endpoint", "site", "token access", "token in bulk", "test hit")
"""The lines these checks give, in order (each SKIP when there is no endpoint)."""

_TRACKER_PAGE = re.compile(rb"(Matomo|Piwik)\b.*tracking API", re.DOTALL | re.IGNORECASE)


@dataclass
class _State:
    """What earlier checks found out, for the later ones."""

    reachable: bool = False
    site: dict[str, object] | None = None
    site_known: bool | None = None
    """``True`` the site exists, ``False`` it does not, ``None`` unknown."""
    may_write: bool | None = None
    """The token may write to the site (per the Reporting API); ``None`` unknown."""


def _fail(name: str, message: str) -> Check:
    return Check(name, Verdict.FAIL, message)


class MatomoChecks:
    """The checks of one configured Matomo, each later one told what the earlier ones found."""

    def __init__(self, settings: Settings, matomo: MatomoClient, probe_id: str) -> None:
        self._settings = settings
        self._matomo = matomo
        self._probe_id = probe_id
        self._state = _State()

    def checks(self, *, send_test_hit: bool) -> Iterator[Check]:
        """The lines of :data:`NAMES`, in order."""
        yield self._endpoint()
        yield from self._site_and_access()
        yield self._bulk_token()
        yield self._test_hit(send_test_hit)

    # --- the tracker endpoint -----------------------------------------------------------------------------

    def _endpoint(self) -> Check:
        shown = self._matomo.shown
        answer = self._matomo.tracker_page()
        if not answer.status:
            return _fail("endpoint", f"cannot reach {shown}: {answer.problem}")
        status = answer.status
        if 300 <= status < 400:
            target = re.split(r"[?#]", answer.location, maxsplit=1)[0] or "elsewhere"
            return _fail(
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
            return _fail(
                "endpoint",
                f"not Matomo: {shown} answers HTTP 200 with a page that is not Matomo's tracker page "
                f"({snippet(answer.body)!r}); {ENV_PREFIX}ENDPOINT must be the Matomo base URL or its matomo.php",
            )
        if status == 404:
            return _fail(
                "endpoint",
                f"HTTP 404 at {shown}: there is no matomo.php; {ENV_PREFIX}ENDPOINT must be the Matomo base URL "
                "or its matomo.php URL",
            )
        return _fail("endpoint", f"HTTP error {status} at {shown} ({snippet(answer.body)})")

    # --- site and token access (Reporting API) ------------------------------------------------------------

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
        tracked, detail = self._matomo.bulk(self._probe(cip=False), token=None)
        if tracked is None:
            return _fail("site", detail)
        if tracked:
            self._state.site_known = True
            return Check(
                "site", Verdict.OK, f"site {site} exists (Matomo's tracker accepted a probe, which it does not record)"
            )
        self._state.site_known = False
        return _fail("site", f"Matomo's tracker refuses site {site}: there is no site with that id")

    def _site_by_reporting_api(self) -> Check:
        site = self._settings.site_id
        answer = self._matomo.api("SitesManager.getSiteFromId", idSite=str(site))
        data = answer.json()
        if isinstance(data, dict) and "idsite" in data:
            self._state.site, self._state.site_known = data, True
            name, url = data.get("name"), data.get("main_url")
            return Check("site", Verdict.OK, f"site {site} exists: {name!r} ({url})")
        error = answer.matomo_error()
        if error is None:
            why = answer.problem or f"HTTP {answer.status}, {snippet(answer.body)}"
            return Check(
                "site",
                Verdict.WARN,
                f"Matomo's Reporting API does not answer at {self._matomo.reporting_url_shown} ({why}), so the "
                "site and the token's access are not checked there; the bulk check below still tests the token",
            )
        lowered = error.lower()
        if "authenticate" in lowered or ("token" in lowered and "valid" in lowered):
            self._state.may_write = False
            return _fail(
                "site",
                f"Matomo does not accept the token_auth: it is invalid, expired or deleted (Matomo: {error!r})",
            )
        if "unexpected website" in lowered or ("website id" in lowered and "access" not in lowered):
            self._state.site_known = False
            return _fail("site", f"site {site} does not exist in this Matomo (Matomo: {error!r})")
        if "access" in lowered:
            self._state.may_write = False
            return _fail(
                "site",
                f"the token has no access to site {site}, or there is no site {site} (Matomo does not tell users "
                f"without access which): check {ENV_PREFIX}SITE_ID and the token's user (Matomo: {error!r})",
            )
        return _fail("site", f"Matomo's Reporting API answered an error: {error!r}")

    def _access(self, site_check: Check) -> Check:
        site = self._settings.site_id
        if site_check.verdict is Verdict.FAIL:
            return Check("token access", Verdict.SKIP, "not checked: see the site check")
        if site_check.verdict is not Verdict.OK:
            return Check("token access", Verdict.SKIP, "not checked: the Reporting API does not answer")
        superuser = self._matomo.api("UsersManager.hasSuperUserAccess").json()
        if isinstance(superuser, dict) and superuser.get("value") is True:
            self._state.may_write = True
            return Check("token access", Verdict.OK, "the token has Super User access")
        for method, role in (
            ("SitesManager.getSitesIdWithAdminAccess", "admin"),
            ("SitesManager.getSitesIdWithWriteAccess", "write"),
        ):
            ids = self._matomo.api(method).json()
            if not isinstance(ids, list):
                return Check(
                    "token access", Verdict.WARN, f"could not read the token's access ({method} answered {ids!r})"
                )
            if site in {int(item) for item in ids if str(item).isdigit()}:
                self._state.may_write = True
                return Check("token access", Verdict.OK, f"the token has {role} access to site {site}")
        self._state.may_write = False
        return _fail(
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

    def _bulk_token(self) -> Check:
        name = "token in bulk"
        state = self._state
        if not state.reachable:
            return Check(name, Verdict.SKIP, "not checked: the endpoint check failed")
        if not self._settings.token_auth:
            return Check(name, Verdict.SKIP, "no token_auth")
        if state.site_known is False or state.may_write is False:
            return Check(name, Verdict.SKIP, "not checked: the token cannot write to this site (see above)")
        tracked, detail = self._matomo.bulk(self._probe(cip=True), self._settings.token_auth)
        if tracked is None:
            return _fail(name, detail)
        site = self._settings.site_id
        if tracked:
            return Check(
                name,
                Verdict.OK,
                "Matomo accepts the token inside bulk requests (a probe with the visitor IP but without rec=1: "
                "validated, not recorded)",
            )
        if state.may_write:
            return _fail(
                name,
                f"Matomo refused the probe although the token may write to site {site}: the token was created as "
                "'secure only' (the Matomo 5 default), which Matomo refuses inside bulk requests (Matomo bug "
                "#22910), so every hit would be lost. Create a token without 'Only allow secure requests' "
                "(Administration > Personal > Security > Auth tokens)",
            )
        return _fail(
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
        tracked, detail = self._matomo.bulk(hit, self._settings.token_auth)
        if tracked is None:
            return _fail(name, detail)
        if tracked:
            return Check(
                name,
                Verdict.OK,
                f"Matomo tracked one page view {TEST_HIT_TITLE!r} for visitor {visitor} (Visitors > Visits Log)",
            )
        return _fail(name, f"Matomo refused the test page view (invalid) for site {self._settings.site_id}")
