"""Property-based tests: whatever an instrumentation (or a visitor) puts into a span, reading it, deciding whether it
is a hit and building the hit never raise, and every input ends up a hit, a counted skip or a counted malformed
record.

The strategies draw header values (unicode, control characters, huge strings, forwarding-header look-alikes),
attribute values of every type (str, int, float, bool, lists, None, bytes) and arbitrary paths and queries.
Lone surrogates, which no HTTP server decodes into a str, are left to the pipeline property (which must still count
them) and to the targeted tests at the end, as are the few known bugs those tests document.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st

from otel_matomo._bulk import encode_bulk
from otel_matomo._hits import request_hit
from otel_matomo._pipeline import Pipeline
from otel_matomo._policy import client_address, skip_reason
from otel_matomo._redact import redact_url
from otel_matomo._request import http_request_from_span_data
from otel_matomo._settings import DEFAULT_REDACTED_PARAMS, Settings
from otel_matomo._types import DropReason, HttpRequest
from otel_matomo.autoconfig import REQUEST_HEADERS
from tests import factories
from tests.factories import TOKEN

HEX16 = re.compile(r"[0-9a-f]{16}")
NOW_NS = 1_714_560_000_000_000_000  # 2024-05-01T10:40:00Z

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _settings(**kwargs: Any) -> Settings:
    return factories.settings(site_id=4, **kwargs)


SETTINGS = [
    _settings(),
    _settings(anonymize_ip=1),
    _settings(anonymize_ip=3, visitor_id="daily"),
    _settings(trusted_proxies=["0.0.0.0/0", "::/0"], track_bots=True),
    _settings(trusted_proxies=[], honor_gpc=False, honor_dnt=False, exclude_extensions=[], exclude_paths=[]),
    _settings(event_routes=["/api/*", "*"], skip_synthetic=True, exclude_status=["4xx", "5xx"]),
    _settings(redact_query_params=[], exclude_methods=[], error_page_titles=False),
    Settings.from_env({}, dry_run=True),  # no token: no cip, public visitor key
]

# --- strategies ---------------------------------------------------------------------------------------------------

text = st.text(max_size=60)
huge = st.builds(lambda part, times: part * times, st.text(min_size=1, max_size=12), st.integers(200, 3000))
ip_text = st.ip_addresses().map(str)
hop = st.one_of(
    ip_text,
    st.ip_addresses(v=4).map(lambda ip: f"{ip}:{ip.packed[0] * 100}"),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]:443"),
    st.sampled_from(["unknown", "_hidden", "", "garbage", "::ffff:127.0.0.1", "127.0.0.1", "::1", '"', "[", "]"]),
)
forwarding = st.one_of(
    st.lists(hop, max_size=40).map(", ".join),
    st.lists(
        st.tuples(hop, st.sampled_from(["", ";proto=https", ";proto=http;host=shop.example", ';host="a:1"'])),
        max_size=10,
    ).map(lambda items: ", ".join(f'for="{h}"{rest}' if ":" in h else f"for={h}{rest}" for h, rest in items)),
)
header_value = st.one_of(text, huge, forwarding, st.sampled_from(["1", " 1 ", "0", "?1", "?0", '"Windows"']))
header_values = st.one_of(header_value, st.lists(header_value, max_size=3).map(tuple))
with_surrogate = st.builds(lambda a, s, b: a + s + b, text, st.sampled_from(["\ud800", "\udc80", "\udfff"]), text)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-1, max_value=1000),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    st.binary(max_size=20),
)
any_value = st.one_of(scalar, st.lists(scalar, max_size=4), st.lists(scalar, max_size=4).map(tuple))
method = st.one_of(
    st.sampled_from(["GET", "POST", "get", "OPTIONS", "HEAD", "_OTHER", "PROPFIND"]), text.filter(str.strip)
)
path = st.one_of(
    st.sampled_from(["/", "/items/7", "/healthz", "/static/a.css", "/api/cart", "/x.JS", "*"]),
    text.map(lambda value: "/" + value),
    text,
)
query = st.one_of(
    st.just(""),
    text,
    st.lists(st.tuples(st.sampled_from(["token", "utm_source", "q", "apiKey", "x"]), text), max_size=4).map(
        lambda pairs: "&".join(f"{name}={value}" for name, value in pairs)
    ),
)
scheme = st.one_of(st.sampled_from(["http", "https", "HTTPS", " http ", "ws", "wss"]), st.none(), st.binary())
"""Known-bad schemes are left to ``test_any_scheme_gives_an_http_url`` (xfail)."""

ATTRIBUTE_KEYS = [
    "http.route",
    "url.path",
    "url.query",
    "http.target",
    "http.url",
    "url.full",
    "server.address",
    "server.port",
    "http.host",
    "net.host.name",
    "net.host.port",
    "network.peer.address",
    "net.peer.ip",
    "client.address",
    "user_agent.original",
    "http.user_agent",
    "http.response.status_code",
    "http.status_code",
    "enduser.id",
    "user.id",
    "user_agent.synthetic.type",
    "http.response.body.size",
    "http.response_content_length",
    "http.request.method_original",
]
HEADER_KEYS = [f"http.request.header.{name}" for name in REQUEST_HEADERS] + [
    f"http.request.header.{name.replace('-', '_')}" for name in REQUEST_HEADERS
]
INTEGER_KEYS = (
    "http.response.status_code",
    "http.status_code",
    "http.response.body.size",
    "http.response_content_length",
)


@st.composite
def span_attributes(draw: st.DrawFn, *, schemes: st.SearchStrategy[Any] = scheme) -> dict[str, Any]:
    attributes: dict[str, Any] = {draw(st.sampled_from(["http.request.method", "http.method"])): draw(method)}
    attributes["url.scheme"] = draw(schemes)
    attributes["url.path"] = draw(st.one_of(path, any_value))
    attributes["url.query"] = draw(st.one_of(query, any_value))
    attributes["network.peer.address"] = draw(st.one_of(hop, ip_text, any_value))
    attributes["user_agent.synthetic.type"] = draw(st.one_of(st.sampled_from(["bot", "test"]), any_value))
    attributes["http.response.status_code"] = draw(st.one_of(st.integers(100, 599), any_value))
    attributes.update(draw(st.dictionaries(st.sampled_from(ATTRIBUTE_KEYS), any_value, max_size=8)))
    attributes.update(draw(st.dictionaries(st.sampled_from(HEADER_KEYS), header_values, max_size=8)))
    attributes.update(draw(st.dictionaries(text, any_value, max_size=3)))
    return attributes


def _known_bug(attributes: dict[str, Any]) -> bool:
    """Inputs that hit a bug documented by an xfail test below, kept out of the passing properties."""
    for key in INTEGER_KEYS:  # test_a_non_ascii_digit_never_raises
        value = attributes.get(key)
        if isinstance(value, str) and value.strip().isdigit() and not value.strip().isdecimal():
            return True
    return False


def _assert_valid_hit(hit: dict[str, str], chosen: Settings) -> None:
    assert all(isinstance(name, str) and isinstance(value, str) for name, value in hit.items()), hit
    assert hit["idsite"] == str(chosen.site_id)
    assert hit["rec"] == "1"
    assert HEX16.fullmatch(hit["cid"])
    assert hit["url"].startswith(("http://", "https://"))
    assert ("action_name" in hit) != ("e_a" in hit)
    assert all(value for value in hit.values())  # no empty parameters sent
    encode_bulk([hit], chosen.token_auth)  # deliverable: every value encodes


# --- request view -> skip or hit ------------------------------------------------------------------------------------


@PROPERTY
@given(span_attributes(), st.sampled_from(SETTINGS), st.integers(0, 2**64 - 1), st.integers(-(10**12), 10**12))
def test_any_span_becomes_a_valid_hit_or_a_skip(
    attributes: dict[str, Any], chosen: Settings, span_id: int, duration: int
) -> None:
    assume(not _known_bug(attributes))
    request = http_request_from_span_data("GET /", attributes, NOW_NS, NOW_NS + duration, span_id)
    if request is None:
        return
    reason = skip_reason(request, chosen)
    event("outcome", str(reason))
    if reason is not None:
        assert isinstance(reason, DropReason)
        return
    _assert_valid_hit(request_hit(request, chosen), chosen)


@PROPERTY
@given(
    st.dictionaries(st.sampled_from(REQUEST_HEADERS), header_value, max_size=len(REQUEST_HEADERS)),
    st.one_of(hop, st.none()),
    st.sampled_from(SETTINGS),
)
def test_any_header_values_give_a_valid_hit_or_a_skip(
    headers: dict[str, str], peer: str | None, chosen: Settings
) -> None:
    request = HttpRequest(
        method="GET",
        path="/items/7",
        start_ns=NOW_NS,
        end_ns=NOW_NS + 1,
        span_id=7,
        peer_address=peer,
        host=headers.get("host"),
        headers=headers,
    )
    address = client_address(request, chosen.trusted_proxies).address
    assert address is None or isinstance(address, str)
    reason = skip_reason(request, chosen)
    if reason is None:
        hit = request_hit(request, chosen)
        _assert_valid_hit(hit, chosen)
        if address is not None and chosen.token_auth is not None and chosen.anonymize_ip == 0:
            assert hit["cip"] == address
    else:
        signalled = {headers.get("sec-gpc", "").strip(), headers.get("dnt", "").strip()}
        assert reason is DropReason.OPTED_OUT
        assert "1" in signalled


@PROPERTY
@given(
    st.text(alphabet=st.characters(exclude_characters="#"), max_size=40).map(lambda value: "/" + value),
    st.lists(st.tuples(st.sampled_from(["q", "page", "utm_source", "x"]), text), max_size=4),
    st.sampled_from(
        ["token", "access_token", "apiKey", "X-Amz-Signature", "password", "session_id", "PHPSESSID", "mytoken", "pin"]
    ),
)
def test_a_credential_never_reaches_the_url(path_text: str, pairs: list[tuple[str, str]], name: str) -> None:
    from urllib.parse import quote

    marker = "Zq9SeCrEt7"
    params = [*pairs, (name, marker)]
    request = HttpRequest(
        method="GET",
        path=path_text,
        query="&".join(f"{quote(key)}={quote(value)}" for key, value in params),
        start_ns=NOW_NS,
        end_ns=NOW_NS + 1,
        span_id=1,
        host="shop.example",
        headers={"referer": f"https://ref.example/p?{name}={marker}&a=1"},
    )
    hit = request_hit(request, SETTINGS[0])
    assert marker not in hit["url"]
    assert marker not in hit["urlref"]


@PROPERTY
@given(st.text(max_size=200), st.sampled_from([DEFAULT_REDACTED_PARAMS, (), ("x",)]))
def test_redact_url_never_raises(url: str, words: tuple[str, ...]) -> None:
    assert isinstance(redact_url(url, words), str)
    assert isinstance(redact_url("https://shop.example/p?" + url, words), str)


# --- the whole pipeline -----------------------------------------------------------------------------------------------


def _read(record: tuple[str, dict[str, Any], int, int, int]) -> HttpRequest | None:
    return http_request_from_span_data(*record)


@st.composite
def records(draw: st.DrawFn, *, http: bool) -> tuple[str, dict[str, Any], int, int, int]:
    if http:
        attributes = draw(span_attributes(schemes=st.one_of(scheme, any_value)))
        # Lone surrogates too: the pipeline must count what it cannot translate.
        attributes.update(draw(st.dictionaries(st.sampled_from(HEADER_KEYS), with_surrogate, max_size=2)))
        if draw(st.booleans()):
            attributes["user_agent.original"] = draw(with_surrogate)
    else:
        attributes = draw(
            st.dictionaries(st.sampled_from(ATTRIBUTE_KEYS + HEADER_KEYS), any_value, max_size=5)
        )  # no method: not an HTTP request
    start = draw(st.one_of(st.integers(0, 2 * NOW_NS), st.integers(-(2**70), 2**70)))
    end = draw(st.one_of(st.just(start + 5_000_000), st.integers(-(2**70), 2**70)))
    return draw(text), attributes, start, end, draw(st.integers(0, 2**64 - 1))


@settings(PROPERTY, max_examples=50)
@given(
    st.lists(records(http=True), max_size=8),
    st.lists(records(http=False), max_size=3),
    st.sampled_from(SETTINGS),
    st.randoms(use_true_random=False),
)
def test_the_pipeline_accounts_for_every_request(
    http_records: list[Any], other_records: list[Any], chosen: Settings, rng: Any
) -> None:
    batch = http_records + other_records
    rng.shuffle(batch)
    pipeline = Pipeline(chosen) if chosen.dry_run else Pipeline(chosen, sender=_NoSender())
    translation = pipeline.translate(batch, _read)
    hits = translation.hits
    stats = pipeline.stats
    assert translation.requests == stats.requests
    assert {reason: getattr(stats, reason.value) for reason in translation.dropped} == translation.dropped
    assert sum(translation.dropped.values()) == sum(getattr(stats, reason.value) for reason in DropReason)
    # Spans without tracking events: one hit per tracked request.
    skipped = stats.excluded + stats.opted_out + stats.synthetic + getattr(stats, "skipped", 0)
    assert len(hits) + skipped + stats.malformed == len(http_records)
    assert stats.tracked == stats.lost == stats.invalid == 0  # translation alone sends nothing
    event("has hits", bool(hits))
    event("has skips", bool(skipped))
    event("has malformed", bool(stats.malformed))
    for hit in hits:
        assert all(isinstance(value, str) for value in hit.values())
        assert HEX16.fullmatch(hit["cid"])
    starts = [int(hit["cdt"]) for hit in hits]
    assert starts == sorted(starts)


class _NoSender:
    """Never used: translate does not send."""

    reaches_matomo = True

    def send(self, hits: Any, *, retry: bool = True) -> Any:
        raise AssertionError("translate must not send")

    def close(self) -> None:
        pass


# --- known bugs the exploration found -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", INTEGER_KEYS)
def test_a_non_ascii_digit_never_raises(key: str) -> None:
    attributes = {"http.request.method": "GET", "url.path": "/", key: "²"}
    request = http_request_from_span_data("GET /", attributes, NOW_NS, NOW_NS + 1, 1)
    assert request is not None


@settings(PROPERTY, max_examples=50, phases=[Phase.generate])  # no shrinking for a known failure
@given(span_attributes(schemes=st.one_of(text, st.integers())))
def test_any_scheme_gives_an_http_url(attributes: dict[str, Any]) -> None:
    assume(not _known_bug(attributes))
    request = http_request_from_span_data("GET /", attributes, NOW_NS, NOW_NS + 1, 1)
    assert request is not None
    if skip_reason(request, SETTINGS[0]) is None:
        assert request_hit(request, SETTINGS[0])["url"].startswith(("http://", "https://"))


@pytest.mark.parametrize(("path_text", "host"), [("/a#b", "shop.example"), ("/a", "shop.example#x")])
def test_a_hash_in_the_path_or_host_cannot_smuggle_a_credential(path_text: str, host: str) -> None:
    request = HttpRequest(
        method="GET", path=path_text, query="token=s3cr3t", start_ns=NOW_NS, end_ns=NOW_NS + 1, span_id=1, host=host
    )
    assert "s3cr3t" not in request_hit(request, SETTINGS[0])["url"]


def test_a_lone_surrogate_cannot_make_a_batch_undeliverable() -> None:
    good = ("GET /", {"http.request.method": "GET", "url.path": "/a", "user_agent.original": "curl/8"}, NOW_NS, 0, 1)
    bad = ("GET /", {"http.request.method": "GET", "url.path": "/b", "user_agent.original": "x\ud800"}, NOW_NS, 0, 2)
    pipeline = Pipeline(SETTINGS[0], sender=_NoSender())
    hits = pipeline.translate([good, bad], _read).hits
    assert pipeline.stats.malformed + len(hits) == 2
    encode_bulk(hits, TOKEN)
