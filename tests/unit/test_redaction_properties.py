"""Properties of URL redaction (issue 17, row 6), over generated parameter names, encodings and separators.

- A credential name, however written (any case, inside a compound, after a prefix or before a suffix,
  percent-encoded, with ``+`` for a space), after ``&`` or ``;``, as a path parameter, in a fragment or behind
  userinfo, never leaves its value in the redacted URL, nor in the hit's ``url``, ``urlref`` and ``action_name``.
- Innocent names (``page``, ``passage``, ``spin``, Matomo's campaign keys) survive, written exactly as they were.
- Redaction never raises on any text, and redacting twice changes nothing more.
"""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_matomo._hits import request_hit
from otel_matomo._redact import CAMPAIGN_PARAMS, redact_query, redact_url
from otel_matomo._settings import DEFAULT_REDACTED_PARAMS
from tests import factories

NAMES = DEFAULT_REDACTED_PARAMS
SECRET = "Zq9SeCrEt7"
NOW_NS = 1_714_560_000_000_000_000
SETTINGS = factories.settings(site_id=4)

PROPERTY = settings(
    max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)

WHOLE_WORDS = [name for name in NAMES if "*" not in name]
"""Credential words that must be a whole word of the name (``pin``, ``pass``)."""
STEMS = [name.strip("*") for name in NAMES if name.startswith("*") and name.endswith("*")]
"""Credential stems found inside a word too (``*token*``: ``mytoken``, ``tokens``)."""
INNOCENT_WORDS = [
    "q", "page", "passage", "spin", "pinned", "hashtag", "hashed", "keyboard", "monkey", "author", "authority",
    "sort", "tickets", "lang", "item", "category", "compass", "bypass", "statement", "zipcode", "sessions", "signal",
    "codec", "keynote", "passenger", "size", "id", "ref", "filter", "v",
]  # fmt: skip
"""Words with no credential word in them, nor a stem inside them."""
SEPARATORS = ["_", "-", ".", "[", "]", " "]


# --- strategies ---------------------------------------------------------------------------------------------------


@st.composite
def cased(draw: st.DrawFn, word: str, mixed: bool = True) -> str:
    """``word`` in lower, upper, title or (``mixed``) any mixed case."""
    style = draw(st.sampled_from(["lower", "upper", "title", "mixed"] if mixed else ["lower", "upper", "title"]))
    if style == "mixed":
        flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
        return "".join(char.upper() if flip else char for char, flip in zip(word, flips, strict=True))
    return {"lower": word, "upper": word.upper(), "title": word.title()}[style]


@st.composite
def compound(draw: st.DrawFn, core: st.SearchStrategy[str], mixed: bool = True) -> str:
    """A name of words around ``core``, camelCase (``myAccessToken``, ``UserPin``) or with separators between
    words in any case (``my_token``, ``X-Amz-Signature``, ``PIN[2]``, ``user_pIn``); ``mixed`` case only when
    the words are not camelCase, where a capital starts a new word (``zipCODE`` reads as zip + CODE)."""
    words = [*draw(st.lists(st.sampled_from(INNOCENT_WORDS), max_size=2)), draw(core)]
    words += draw(st.lists(st.sampled_from([*INNOCENT_WORDS, "2", "id"]), max_size=2))
    if draw(st.booleans()):
        first = words[0].title() if draw(st.booleans()) else words[0].lower()
        return first + "".join(word.title() for word in words[1:])
    name = draw(cased(words[0], mixed))
    for word in words[1:]:
        name += draw(st.sampled_from(SEPARATORS)) + draw(cased(word, mixed))
    return name


def stem_word(stem: str) -> st.SearchStrategy[str]:
    """A word with the stem inside it: ``mytoken``, ``tokens``, ``ACCESSTOKEN``, ``jsessionid``."""
    affix = st.sampled_from(["", "my", "access", "auth", "j", "php", "x", "s", "id", "2"])
    return st.tuples(affix, affix).flatmap(lambda pair: cased(pair[0] + stem + pair[1]))


credential_core = st.one_of(
    st.sampled_from(WHOLE_WORDS).flatmap(cased),
    st.sampled_from(STEMS).flatmap(stem_word),
    st.sampled_from(["SAMLResponse", "samlrequest", "serviceTicket", "credentials", "X-Amz-Credential", "PHPSESSID"]),
)
credential_name = st.one_of(compound(credential_core), st.sampled_from(["utm_token", "mtm_key", "pk_secret"]))
innocent_name = st.one_of(
    compound(st.sampled_from(INNOCENT_WORDS), mixed=False), st.sampled_from(sorted(CAMPAIGN_PARAMS))
)
value = st.text(alphabet=st.characters(exclude_characters="&;#=", exclude_categories=["Cs"]), max_size=12)


@st.composite
def encoded(draw: st.DrawFn, name: str) -> str:
    """``name`` as a client may write it in a URL: some characters percent-encoded, spaces as ``+`` or ``%20``."""
    out = ""
    for char in name:
        if char == " ":
            out += draw(st.sampled_from(["+", "%20"]))
        elif draw(st.booleans()) or not char.isascii() or char in "%+":
            out += quote(char, safe="")
        else:
            out += char
    return out


@st.composite
def query_with_credentials(draw: st.DrawFn) -> tuple[str, str]:
    """A query mixing innocent parameters and credentials (whose value is ``SECRET``), joined by ``&`` or ``;``,
    with the query expected after redaction."""
    params = draw(
        st.lists(
            st.one_of(
                st.tuples(innocent_name, value, st.just(False)),
                st.tuples(credential_name, st.just(SECRET), st.just(True)),
            ),
            min_size=1,
            max_size=6,
        )
    )
    pieces = [
        (draw(st.sampled_from("&;")), draw(encoded(name)) + "=" + quote(text), secret) for name, text, secret in params
    ]
    query = "".join(separator + piece for separator, piece, _ in pieces)[1:]
    kept = [(separator, piece) for separator, piece, secret in pieces if not secret]
    return query, "".join(separator + piece for separator, piece in kept)[1:]


# --- credentials go, innocent parameters stay ------------------------------------------------------------------------


@PROPERTY
@given(query_with_credentials())
def test_credentials_go_and_the_rest_stays_as_written(case: tuple[str, str]) -> None:
    query, expected = case
    assert redact_query(query, NAMES) == expected
    assert SECRET not in redact_url(f"https://r.example/p?{query}#{query}", NAMES)


@PROPERTY
@given(credential_name.flatmap(encoded), st.sampled_from(["&", ";"]))
def test_a_credential_never_reaches_url_urlref_nor_the_title(name: str, separator: str) -> None:
    query = f"q=1{separator}{name}={SECRET}"
    request = factories.http_request(
        path=f"/a;{name}={SECRET}/b",
        query=query,
        route=None,
        status=404,
        headers={"referer": f"https://u:{SECRET}@r.example/x;{name}={SECRET}?{query}#{name}={SECRET}"},
    )
    hit = request_hit(request, SETTINGS)
    for key in ("url", "urlref", "action_name"):
        assert SECRET not in hit[key], (key, hit[key])
    ok = request_hit(factories.http_request(path=f"/a;{name}={SECRET}", route=None, status=200), SETTINGS)
    assert SECRET not in ok["url"] + ok["action_name"]


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from("&;"), innocent_name.flatmap(encoded), value), min_size=1, max_size=6))
def test_innocent_names_survive_untouched(params: list[tuple[str, str, str]]) -> None:
    query = "".join(f"{separator}{name}={quote(text)}" for separator, name, text in params)[1:]
    assert redact_query(query, NAMES) == query
    url = f"https://r.example/a;{query}?{query}#{query}"
    assert redact_url(url, NAMES) == url


# --- any text -----------------------------------------------------------------------------------------------------

url_like = st.lists(st.sampled_from([*"?#;&=@/:%+[]. aTk0", "token", "pin", "%6F", "//u:p@", "\ud800"])).map("".join)
any_text = st.one_of(st.text(max_size=80), url_like, st.text(alphabet=st.characters(), max_size=40))


@PROPERTY
@given(any_text, st.sampled_from([NAMES, (), ("x",), ("*",), ("a*", "*k")]))
def test_redaction_never_raises_and_is_idempotent(text: str, names: tuple[str, ...]) -> None:
    for redact in (redact_url, redact_query):
        once = redact(text, names)
        assert isinstance(once, str)
        assert redact(once, names) == once
    url = redact_url(f"https://s.example/p?{text}", names)
    assert redact_url(url, names) == url
