"""What may leave the process of a URL: credentials in query strings, path parameters, fragments and userinfo.

A URL a visitor requested or came from often carries a secret: a reset token, an OAuth code, a session id in a
``;jsessionid=`` path parameter, an implicit-flow ``#access_token=``, a ``user:password@``. Matomo stores URLs
verbatim and shows them in its reports, to everyone who may see the site's analytics, for years. So before a URL
leaves the process:

- userinfo (``user:password@``) is removed;
- every ``name=value`` parameter whose name is a credential is removed, name and value, from the query, from
  path parameters (``/a;jsessionid=1/b``) and from the fragment; ``&`` and ``;`` both separate parameters, as
  servlet containers and old CGI libraries read them;
- everything else is kept exactly as it was written (the order, the encoding, the separators).

A name is a credential when one of its words is listed (see :data:`~otel_matomo._settings.DEFAULT_REDACTED_PARAMS`).
The words are split at punctuation, digits and camelCase (``X-Amz-Signature``, ``myToken``, ``pin2``) after
percent-decoding (``to%6Ben``, ``access+token``). A listed ``word`` matches a whole word only, so that ``pass``
and ``pin`` never remove ``passage`` or ``spin``; a listed ``*word*``, ``word*`` or ``*word`` also matches inside
one (``*token*``: ``accesstoken``, ``mytoken``, ``tokens``), for the few stems that no innocent word contains.
Matomo's own campaign parameters (``utm_source``, ``mtm_campaign``, ...) are never removed, so that campaign
tracking keeps working; any other name with a campaign prefix is judged like the rest (``utm_token`` goes).
"""

from __future__ import annotations

import functools
import re
from urllib.parse import unquote_plus

from otel_matomo._cache import text_cache

CAMPAIGN_PARAMS = frozenset(
    {
        # Matomo core (config/global.ini.php: campaign_var_name, campaign_keyword_var_name).
        "pk_cpn", "pk_campaign", "piwik_campaign", "mtm_campaign", "matomo_campaign", "utm_campaign", "utm_source",
        "utm_medium", "pk_kwd", "pk_keyword", "piwik_kwd", "piwik_keyword", "mtm_kwd", "mtm_keyword", "matomo_kwd",
        "utm_term",
        # MarketingCampaignsReporting: name, keyword, source, medium, content, id, group, placement.
        "mtm_cpn", "mtm_source", "pk_source", "mtm_medium", "pk_medium", "mtm_content", "pk_content", "utm_content",
        "mtm_cid", "pk_cid", "utm_id", "mtm_clid", "mtm_group", "pk_group", "mtm_placement", "pk_placement",
    }
)  # fmt: skip
"""The campaign parameters Matomo reads (lower-case): kept whatever their words, so campaigns are attributed."""

_SEPARATOR = re.compile(r"([&;])")
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
"""Words by camelCase (``myToken``, ``SAMLResponse``); :data:`_LOWER_WORD` splits the lower-cased name too, so
that a word's own odd case (``user_pIn``) does not hide it."""
_LOWER_WORD = re.compile(r"[a-z]+|[0-9]+")
_USERINFO = re.compile(r"^((?:[a-zA-Z][a-zA-Z0-9+.-]*:)?//)[^/]*@")
"""``scheme://user:password@`` (or a scheme-relative ``//user@``), up to the last ``@`` before the path."""
_MAY_HOLD = re.compile(r"[?#;@]")
"""What a path or URL without any query, fragment, parameter or userinfo never contains: the fast way out."""


def redact_url(url: str, names: tuple[str, ...]) -> str:
    """``url`` (a referrer, or a request path) without userinfo and without credential parameters in its path,
    query or fragment."""
    if not names or not _MAY_HOLD.search(url):
        return url
    return _redact_url(url, names)


@text_cache(maxsize=2048)  # one visitor's referrer repeats, and so does one page's path
def _redact_url(url: str, names: tuple[str, ...]) -> str:
    """String surgery rather than ``urlsplit``/``urlunsplit``: no URL is refused, nothing else is normalised,
    and redacting twice changes nothing more. The parts are cut where Matomo's ``parse_url`` cuts them."""
    rest, hash_mark, fragment = url.partition("#")
    rest, question_mark, query = rest.partition("?")
    rest = _redact_parameters(rest, names) if ";" in rest else rest
    rest = _USERINFO.sub(r"\1", rest, count=1)  # after: a removed parameter may have hidden the "//"
    return rest + _part(question_mark, query, names) + _part(hash_mark, fragment, names)


def _part(mark: str, text: str, names: tuple[str, ...]) -> str:
    """``?query`` or ``#fragment`` redacted, without its mark when redaction emptied it (as ``urlunsplit``)."""
    redacted = redact_query(text, names)
    return mark + redacted if redacted or not text else ""


def redact_query(query: str, names: tuple[str, ...]) -> str:
    """A query string (or a fragment) without the parameters whose name is a credential (see the module)."""
    if not query or not names:
        return query
    return _redact_query(query, names)


@text_cache(maxsize=2048)  # one page's query and one visitor's referrer query repeat
def _redact_query(query: str, names: tuple[str, ...]) -> str:
    """``&`` and ``;`` both separate: a ``;token=`` hidden behind ``a=1`` is a parameter to servlet containers."""
    return _kept(_SEPARATOR.split(query), names)


def _redact_parameters(path: str, names: tuple[str, ...]) -> str:
    """A path without credential path parameters (``/shop;jsessionid=1/cart``), segment by segment: a segment's
    first piece is its name, never a parameter."""
    return "/".join(_redact_segment(segment, names) if ";" in segment else segment for segment in path.split("/"))


def _redact_segment(segment: str, names: tuple[str, ...]) -> str:
    """One path segment, returned as it was when no parameter goes (a bare ``;`` stays)."""
    first, _, parameters = segment.partition(";")
    kept = _kept(_SEPARATOR.split(parameters), names)
    if kept == parameters:
        return segment
    return f"{first};{kept}" if kept else first


def _kept(pieces: list[str], names: tuple[str, ...]) -> str:
    """``pieces`` (``[param, separator, param, ...]``, as split by ``_SEPARATOR``) put together again without the
    credentials; each kept parameter keeps the separator written before it, the first one none."""
    kept = [index for index in range(0, len(pieces), 2) if not is_credential(pieces[index].partition("=")[0], names)]
    if len(kept) * 2 - 1 == len(pieces):
        return "".join(pieces)
    return "".join((pieces[index - 1] if position else "") + pieces[index] for position, index in enumerate(kept))


@functools.lru_cache(maxsize=4096)  # one application has few distinct parameter names
def is_credential(name: str, names: tuple[str, ...]) -> bool:
    """Whether a parameter, by its name as written (percent-encoded, ``+`` for spaces), is a credential: its
    whole name or one of its words is listed, or matches a listed pattern; never one of Matomo's campaign
    parameters."""
    decoded = unquote_plus(name) if "%" in name or "+" in name else name
    lowered = decoded.lower()
    if lowered in CAMPAIGN_PARAMS:
        return False
    words, pattern = _matcher(names)
    candidates = {lowered, *_LOWER_WORD.findall(lowered), *(word.lower() for word in _WORD.findall(decoded))}
    return not words.isdisjoint(candidates) or (pattern is not None and any(map(pattern.search, candidates)))


@functools.lru_cache(maxsize=16)  # one list per Settings
def _matcher(names: tuple[str, ...]) -> tuple[frozenset[str], re.Pattern[str] | None]:
    """The listed whole words, and one regular expression searched for the listed ``*`` patterns (``*token*``
    is ``token`` anywhere, ``saml*`` is ``^saml``: a search, not a backtracking ``.*`` match)."""
    lowered = [name.lower() for name in names]
    patterns = [_searched(name) for name in lowered if "*" in name]
    return frozenset(name for name in lowered if "*" not in name), re.compile("|".join(patterns)) if patterns else None


def _searched(pattern: str) -> str:
    """A listed ``*`` pattern as a regular expression to search for, anchored where it has no ``*``."""
    core = re.escape(pattern.strip("*")).replace(r"\*", ".*")
    return ("" if pattern.startswith("*") else "^") + f"(?:{core})" + ("" if pattern.endswith("*") else r"\Z")
