"""``policy``: the visitor's address behind proxies, the origin they report, IP masking, URL redaction, and which
requests become hits at all (exclusions, privacy signals, synthetic clients) or events instead of page views.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import pytest

from otel_matomo._policy import client_address, forwarded_origin, is_event, mask_ip, skip_reason
from otel_matomo._redact import redact_url
from otel_matomo._request import http_request_from_span_data
from otel_matomo._settings import DEFAULT_REDACTED_PARAMS, DEFAULT_TRUSTED_PROXIES
from otel_matomo._types import DropReason, HttpRequest
from tests import factories

LOOPBACK = DEFAULT_TRUSTED_PROXIES
CLIENT = "203.0.113.9"
OTHER = "198.51.100.4"
SPOOFED = "6.6.6.6"
WORDS = DEFAULT_REDACTED_PARAMS


def request(**overrides: Any) -> HttpRequest:
    """A plain GET from an untrusted visitor, with no route and no user agent."""
    return factories.http_request(**{"route": None, "user_agent": None, "peer_address": CLIENT, **overrides})


def proxied(headers: dict[str, str], peer: str = "127.0.0.1") -> HttpRequest:
    return request(peer_address=peer, headers=headers)


def networks(*items: str) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


settings = factories.dry_run_settings


def client_ip(request: HttpRequest, trusted: tuple[Any, ...], header: str = "x-forwarded-for") -> str | None:
    """The visitor's address alone, as the walk finds it."""
    return client_address(request, trusted, header).address


DEFAULTS = settings()


# --- client_ip: X-Forwarded-For -------------------------------------------------------------------------------


def test_no_forwarding_header_means_the_peer_is_the_client() -> None:
    assert client_ip(request(), LOOPBACK) == CLIENT
    assert client_ip(proxied({}), LOOPBACK) == "127.0.0.1"


def test_a_trusted_proxy_reports_the_client() -> None:
    assert client_ip(proxied({"x-forwarded-for": CLIENT}), LOOPBACK) == CLIENT
    assert client_ip(proxied({"x-forwarded-for": CLIENT}, peer="::1"), LOOPBACK) == CLIENT


def test_an_untrusted_peer_cannot_spoof_its_address() -> None:
    spoofing = request(peer_address=CLIENT, headers={"x-forwarded-for": SPOOFED})
    assert client_ip(spoofing, LOOPBACK) == CLIENT
    forwarded = request(peer_address=CLIENT, headers={"forwarded": f"for={SPOOFED}"})
    assert client_ip(forwarded, LOOPBACK) == CLIENT
    # Even claiming to be a trusted proxy itself changes nothing: the walk starts at the socket peer.
    assert client_ip(request(peer_address=CLIENT, headers={"x-forwarded-for": "127.0.0.1"}), LOOPBACK) == CLIENT


def test_a_client_prepending_a_fake_hop_is_ignored() -> None:
    # The client sent "X-Forwarded-For: 6.6.6.6"; the trusted proxy appended the real address.
    assert client_ip(proxied({"x-forwarded-for": f"{SPOOFED}, {CLIENT}"}), LOOPBACK) == CLIENT


def test_comma_lists_without_spaces_and_with_extra_commas() -> None:
    assert client_ip(proxied({"x-forwarded-for": f"{SPOOFED},{CLIENT}"}), LOOPBACK) == CLIENT
    assert client_ip(proxied({"x-forwarded-for": f" , {SPOOFED} ,, {CLIENT} , "}), LOOPBACK) == CLIENT


def test_multiple_header_lines_are_one_chain() -> None:
    attributes = {
        "http.request.method": "GET",
        "url.path": "/",
        "network.peer.address": "127.0.0.1",
        # The client's own line first, the proxy's appended line last.
        "http.request.header.x_forwarded_for": (SPOOFED, f"{OTHER}, {CLIENT}"),
    }
    parsed = http_request_from_span_data("GET /", attributes, 0, 1, 1)
    assert parsed is not None
    assert parsed.headers["x-forwarded-for"] == f"{SPOOFED}, {OTHER}, {CLIENT}"
    assert client_ip(parsed, LOOPBACK) == CLIENT
    assert client_ip(parsed, networks("127.0.0.1", CLIENT)) == OTHER
    assert client_ip(parsed, networks("127.0.0.1", CLIENT, OTHER)) == SPOOFED


def test_the_right_most_untrusted_hop_wins_through_several_trusted_proxies() -> None:
    trusted = networks("10.0.0.0/8", "2001:db8:ffff::/48")
    chain = f"{SPOOFED}, {CLIENT}, 2001:db8:ffff::2, 10.1.2.3"
    assert client_ip(request(peer_address="10.0.0.5", headers={"x-forwarded-for": chain}), trusted) == CLIENT


def test_custom_trusted_networks_replace_loopback() -> None:
    trusted = networks("10.0.0.0/8")
    # Loopback is no longer trusted: its forwarding header is ignored.
    assert client_ip(proxied({"x-forwarded-for": CLIENT}), trusted) == "127.0.0.1"
    assert client_ip(request(peer_address="10.9.8.7", headers={"x-forwarded-for": CLIENT}), trusted) == CLIENT
    # Nothing trusted at all.
    assert client_ip(proxied({"x-forwarded-for": CLIENT}), ()) == "127.0.0.1"


def test_ipv6_trusted_networks_and_hops() -> None:
    trusted = networks("fd00::/8")
    chain = "2001:db8::77, fd00::1"
    assert client_ip(request(peer_address="fd12::3", headers={"x-forwarded-for": chain}), trusted) == "2001:db8::77"
    # An IPv4 network never contains an IPv6 peer, nor the reverse.
    assert client_ip(request(peer_address="fd12::3", headers={"x-forwarded-for": CLIENT}), networks("0.0.0.0/0")) == (
        "fd12::3"
    )


def test_hops_with_ports_and_brackets() -> None:
    assert client_ip(proxied({"x-forwarded-for": f"{CLIENT}:51234"}), LOOPBACK) == CLIENT
    assert client_ip(proxied({"x-forwarded-for": "[2001:db8::1]:443"}), LOOPBACK) == "2001:db8::1"
    assert client_ip(proxied({"x-forwarded-for": "[2001:db8::1]"}), LOOPBACK) == "2001:db8::1"
    assert client_ip(proxied({"x-forwarded-for": CLIENT}, peer="127.0.0.1:8080"), LOOPBACK) == CLIENT


def test_ipv4_mapped_ipv6_peers_and_hops_are_ipv4() -> None:
    # A dual-stack socket reports an IPv4 proxy as ::ffff:127.0.0.1; it is still loopback, still trusted.
    assert client_ip(proxied({"x-forwarded-for": CLIENT}, peer="::ffff:127.0.0.1"), LOOPBACK) == CLIENT
    assert client_ip(request(peer_address=f"::ffff:{CLIENT}"), LOOPBACK) == CLIENT
    assert client_ip(proxied({"x-forwarded-for": f"::ffff:{CLIENT}"}), LOOPBACK) == CLIENT
    spoofing = request(peer_address=f"::ffff:{CLIENT}", headers={"x-forwarded-for": SPOOFED})
    assert client_ip(spoofing, LOOPBACK) == CLIENT


@pytest.mark.parametrize(
    ("chain", "expected", "malformed"),
    [
        # The hop the proxy wrote is no address: the visitor is unknown, neither the proxy nor a hop further left
        # (which the client may have written).
        (f"{CLIENT}, garbage", None, True),
        (f"garbage, {CLIENT}", CLIENT, False),
        ("999.1.1.1", None, True),
        ("::::", None, True),
        ("[2001:db8::1", "2001:db8::1", False),  # an unclosed bracket is read leniently
        ("unknown", "127.0.0.1", False),  # the proxy says it does not know: the proxy is the best address there is
        ("\x00\x01\u202e\U0001f600", None, True),
        ('"203.0.113.9"', CLIENT, False),
        (",,,", "127.0.0.1", False),
        ("", "127.0.0.1", False),
    ],
)
def test_garbage_hops_end_the_walk_and_are_counted(chain: str, expected: str | None, malformed: bool) -> None:
    assert client_address(proxied({"x-forwarded-for": chain}), LOOPBACK) == (expected, malformed)


def test_a_garbage_hop_from_an_untrusted_peer_is_not_read() -> None:
    assert client_address(request(headers={"x-forwarded-for": "garbage"}), LOOPBACK) == (CLIENT, False)


@pytest.mark.parametrize(
    "zoned", ["fe80::1%eth0", "[fe80::1%eth0]:8080", "fe80::1%25eth0", "[fe80::1%25eth0]", "FE80::1%en0"]
)
def test_ipv6_zone_ids_are_stripped_from_hops_and_peers(zoned: str) -> None:
    assert client_ip(proxied({"x-forwarded-for": zoned}), LOOPBACK) == "fe80::1"
    assert client_ip(request(peer_address=zoned), LOOPBACK) == "fe80::1"
    assert client_ip(proxied({"x-forwarded-for": CLIENT}, peer="::1%lo"), LOOPBACK) == CLIENT


@pytest.mark.parametrize("peer", [None, "", "garbage", "999.0.0.1", "[garbage]", "localhost"])
def test_an_unreadable_peer_gives_no_address(peer: str | None) -> None:
    assert client_ip(proxied({"x-forwarded-for": CLIENT}, peer=peer), LOOPBACK) is None  # type: ignore[arg-type]


def test_overlong_chains_are_bounded_and_never_raise() -> None:
    trusted = networks("10.0.0.0/8")
    proxies = [f"10.0.{i // 256}.{i % 256}" for i in range(1, 41)]
    # A client within the first 32 hops from the peer is found.
    near = ", ".join([SPOOFED, CLIENT, *proxies[:31]])
    assert client_ip(request(peer_address="10.255.0.1", headers={"x-forwarded-for": near}), trusted) == CLIENT
    # Beyond the bound the walk stops on a trusted proxy: never an address the client could have chosen.
    far = ", ".join([SPOOFED, CLIENT, *proxies])
    found = client_ip(request(peer_address="10.255.0.1", headers={"x-forwarded-for": far}), trusted)
    assert found is not None
    assert ipaddress.ip_address(found) in trusted[0]
    # Huge headers cost little.
    huge = {"x-forwarded-for": "1.2.3.4, " * 200_000, "forwarded": 'for="' * 100_000}
    started = time.perf_counter()
    assert client_ip(proxied(huge), LOOPBACK) is not None
    assert time.perf_counter() - started < 1.0


def test_an_overlong_client_header_cannot_hide_the_hop_a_proxy_appended() -> None:
    padding = "," * (4096 - len(SPOOFED))
    header = padding + SPOOFED  # exactly 4096 characters from the client
    assert client_ip(proxied({"x-forwarded-for": f"{header}, {CLIENT}"}), LOOPBACK) == CLIENT


def test_an_overlong_client_forwarded_header_cannot_hide_the_proxy_element() -> None:
    header = f"for={SPOOFED}" + " " * 5000
    assert client_ip(proxied({"forwarded": f"{header}, for={CLIENT}"}), LOOPBACK, "forwarded") == CLIENT


# --- client_ip: RFC 7239 Forwarded ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        (f"for={CLIENT}", CLIENT),
        (f'for="{CLIENT}:4711"', CLIENT),
        ('for="[2001:db8:cafe::17]"', "2001:db8:cafe::17"),
        ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        (f"For={CLIENT};Proto=https", CLIENT),
        (f"proto=https; for={CLIENT} ;by=127.0.0.1", CLIENT),
        (f'for={SPOOFED};proto=http, for="[2001:db8::5]:1"', "2001:db8::5"),
        (f"for={SPOOFED}, for={CLIENT}", CLIENT),
    ],
)
def test_forwarded_for(forwarded: str, expected: str) -> None:
    assert client_ip(proxied({"forwarded": forwarded}), LOOPBACK, "forwarded") == expected


def test_forwarded_multiple_elements_walk_through_trusted_proxies() -> None:
    header = f"for={SPOOFED}, for={CLIENT}, for=10.0.0.2"
    assert client_ip(proxied({"forwarded": header}), networks("127.0.0.1", "10.0.0.0/8"), "forwarded") == CLIENT
    assert (
        client_ip(proxied({"forwarded": header}), networks("127.0.0.1", "10.0.0.0/8", CLIENT), "forwarded") == SPOOFED
    )


@pytest.mark.parametrize("hidden", ["unknown", "_hidden", "_SEVKISEK", '"_gazonk"'])
def test_unknown_and_obfuscated_identifiers_end_the_walk(hidden: str) -> None:
    # The nearest proxy does not know (or hides) the client: the proxy is the best address there is.
    assert client_ip(proxied({"forwarded": f"for={hidden}"}), LOOPBACK, "forwarded") == "127.0.0.1"
    assert client_ip(proxied({"forwarded": f"for={CLIENT}, for={hidden}"}), LOOPBACK, "forwarded") == "127.0.0.1"
    # A hidden hop further out than the first untrusted one does not matter.
    assert client_ip(proxied({"forwarded": f"for={hidden}, for={CLIENT}"}), LOOPBACK, "forwarded") == CLIENT


def test_only_the_configured_forwarding_header_is_read() -> None:
    # A proxy that appends to one header passes the other through from the client untouched.
    both = {"forwarded": f"for={CLIENT}", "x-forwarded-for": OTHER}
    assert client_ip(proxied(both), LOOPBACK, "forwarded") == CLIENT
    assert client_ip(proxied(both), LOOPBACK) == OTHER


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('for="', (None, True)),
        ('"""', (None, True)),
        ("for=;for=", (None, True)),
        ("for=[x", (None, True)),
        ("for==1.2.3.4", (None, True)),
        # No "for" at all is a proxy that does not say who its client was, as for=unknown.
        ("for", ("127.0.0.1", False)),
        (";;;", ("127.0.0.1", False)),
        ("=", ("127.0.0.1", False)),
        ("\x00" * 50, ("127.0.0.1", False)),
        (",,,", ("127.0.0.1", False)),
    ],
)
def test_garbage_forwarded_never_raises_and_never_gives_the_proxy(value: str, expected: tuple[str, bool]) -> None:
    assert client_address(proxied({"forwarded": value}), LOOPBACK, "forwarded") == expected


def test_an_unbalanced_quote_from_the_client_cannot_hide_the_proxy_element() -> None:
    # The client sent 'Forwarded: for=6.6.6.6;x="' and the trusted proxy appended ', for=203.0.113.9': the proxy's
    # element is read from the right, and the malformed header is counted.
    header = f'for={SPOOFED};x=", for={CLIENT}'
    assert client_address(proxied({"forwarded": header}), LOOPBACK, "forwarded") == (CLIENT, True)
    # Through two trusted proxies, the first one's element is the visitor's.
    chain = f'for={SPOOFED};x=", for={CLIENT}, for=10.0.0.2'
    assert client_address(proxied({"forwarded": chain}), networks("127.0.0.1", "10.0.0.0/8"), "forwarded") == (
        CLIENT,
        True,
    )


def test_the_element_holding_an_open_quote_is_never_read() -> None:
    # Were the element with the open quote read, the client would choose its address.
    trusted = networks("127.0.0.1", CLIENT)
    assert client_address(proxied({"forwarded": f'for={SPOOFED};x=", for={CLIENT}'}), trusted, "forwarded") == (
        None,
        True,
    )
    assert client_address(proxied({"forwarded": f'for={CLIENT}, for="{OTHER}'}), LOOPBACK, "forwarded") == (
        None,
        True,
    )


# --- forwarded_origin -------------------------------------------------------------------------------------------


def test_origin_without_proxy_headers_is_the_request_own() -> None:
    assert forwarded_origin(request(scheme="https", host="shop.example:8443"), LOOPBACK) == (
        "https",
        "shop.example:8443",
    )


def test_x_forwarded_proto_and_host_from_a_trusted_proxy() -> None:
    headers = {"x-forwarded-proto": "https", "x-forwarded-host": "www.shop.example"}
    assert forwarded_origin(proxied(headers), LOOPBACK) == ("https", "www.shop.example")
    # Lists: the right-most value is the nearest proxy's.
    headers = {"x-forwarded-proto": "http, HTTPS", "x-forwarded-host": "evil.example, www.shop.example"}
    assert forwarded_origin(proxied(headers), LOOPBACK) == ("https", "www.shop.example")


def test_forwarded_proto_and_host_from_a_trusted_proxy() -> None:
    headers = {"forwarded": f'for={CLIENT};proto=https;host="www.shop.example"'}
    assert forwarded_origin(proxied(headers), LOOPBACK, "forwarded") == ("https", "www.shop.example")
    # The last element is the nearest proxy's; X-Forwarded-* are not read in Forwarded mode, nor the reverse.
    headers = {
        "forwarded": "proto=http;host=evil.example, proto=https;host=shop.example",
        "x-forwarded-proto": "http",
        "x-forwarded-host": "other.example",
    }
    assert forwarded_origin(proxied(headers), LOOPBACK, "forwarded") == ("https", "shop.example")
    assert forwarded_origin(proxied(headers), LOOPBACK) == ("http", "other.example")


def test_origin_headers_from_an_untrusted_peer_are_ignored() -> None:
    headers = {"x-forwarded-proto": "https", "x-forwarded-host": "evil.example", "forwarded": "proto=https;host=e"}
    spoofing = request(scheme="http", host="shop.example", headers=headers)
    assert forwarded_origin(spoofing, LOOPBACK) == ("http", "shop.example")
    assert forwarded_origin(proxied(headers), networks("10.0.0.0/8")) == ("http", "shop.example")
    assert forwarded_origin(request(peer_address=None, headers=headers), LOOPBACK) == ("http", "shop.example")


def test_only_http_and_https_are_believed_as_proto() -> None:
    assert forwarded_origin(proxied({"x-forwarded-proto": "gopher"}), LOOPBACK) == ("http", "shop.example")
    assert forwarded_origin(proxied({"forwarded": "proto=javascript"}), LOOPBACK) == ("http", "shop.example")


# --- mask_ip --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "expected"),
    [(0, "203.0.113.195"), (1, "203.0.113.0"), (2, "203.0.0.0"), (3, "203.0.0.0")],
)
def test_mask_ipv4_bytes(mask: int, expected: str) -> None:
    assert mask_ip("203.0.113.195", mask) == expected


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (0, "2001:db8:1234:5678:9abc:def0:1234:5678"),
        (1, "2001:db8:1234:5678::"),  # Matomo's 'ffff:ffff:ffff:ffff::' (/64)
        (2, "2001:db8:1234::"),  # 'ffff:ffff:ffff:0000::' (/48)
        (3, "2001:d00::"),  # 'ffff:ff00:0000:0000::' (/24)
    ],
)
def test_mask_ipv6_with_matomo_prefixes(mask: int, expected: str) -> None:
    assert mask_ip("2001:db8:1234:5678:9abc:def0:1234:5678", mask) == expected


# --- redact_url -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "token",
        "access_token",
        "id_token",
        "refresh-token",
        "ACCESS_TOKEN",
        "myToken",
        "password",
        "api_key",
        "apiKey",
        "APIKey",
        "x-api-key",
        "apikey",
        "X-Amz-Signature",
        "session_id",
        "sessionId",
        "sid",
        "code",
        "postal_code",  # word-wise: "code" is a word of it
        "client_secret",
        "auth",
        "user[password]",
        "jwt",
        "state",
        "to%6Ben",  # the decoded name counts
        "token2",  # digits end a word
        "PHPSESSID",
        "tokens",  # *token* matches inside a word
        "passwords",
    ],
)
def test_credential_looking_names_are_removed(name: str) -> None:
    url = f"https://shop.example/cb?{name}=s3cr3t&page=2"
    assert redact_url(url, WORDS) == "https://shop.example/cb?page=2"


@pytest.mark.parametrize(
    "name",
    # Word matching: a credential word must be a whole word of the name, not a substring of a longer word
    # (only the *stem* patterns, such as *token*, match inside words).
    ["keyboard", "monkey", "zipcode", "authority", "passage", "spin", "hashtag", "tickets", "q", "page"],
)
def test_names_that_merely_contain_a_word_are_kept(name: str) -> None:
    url = f"https://shop.example/cb?{name}=v&token=s3cr3t"
    assert redact_url(url, WORDS) == f"https://shop.example/cb?{name}=v"


@pytest.mark.parametrize(
    "name", ["utm_source", "utm_term", "mtm_campaign", "mtm_kwd", "pk_campaign", "pk_cid", "utm_id"]
)
def test_campaign_parameters_are_always_kept(name: str) -> None:
    url = f"https://shop.example/?{name}=autumn&password=x"
    assert redact_url(url, WORDS) == f"https://shop.example/?{name}=autumn"


def test_redaction_keeps_everything_else_in_place() -> None:
    url = "https://shop.example:8443/a/b?x=1&token=t&x=2&utm_source=n#frag"
    assert redact_url(url, WORDS) == "https://shop.example:8443/a/b?x=1&x=2&utm_source=n#frag"
    # Nothing to remove: the URL is returned exactly as it was, encoding included.
    untouched = "https://shop.example/s?q=a%20b&flag&c=%E2%9C%93"
    assert redact_url(untouched, WORDS) == untouched
    assert redact_url("https://shop.example/s?token=1&token=2", WORDS) == "https://shop.example/s"


def test_no_query_and_no_words() -> None:
    assert redact_url("https://shop.example/a", WORDS) == "https://shop.example/a"
    assert redact_url("", WORDS) == ""
    assert redact_url("https://shop.example/a?token=1", ()) == "https://shop.example/a?token=1"


def test_a_custom_word_list() -> None:
    words = ("ticket",)
    assert redact_url("https://s.example/?ticket=1&token=2", words) == "https://s.example/?token=2"
    assert redact_url("https://s.example/?serviceTicket=1&a=b", words) == "https://s.example/?a=b"


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/p?token=x",
        "http://[not-an-ip]/p?token=x",
        "://?token=x",
        "?token=x",
        "https://shop.example/p?token",
        "https://shop.example/p?=&&=&token=x",
        "https://shop.example/p?%zz=1&token=%zz",
        "https://shop.example:99999/p?token=x",
        "https://shop.example/p?\x00token=x\x01",
        "https://shop.example/p?t\u00f6ken=1&token=\U0001f600",
    ],
)
def test_malformed_urls_never_raise_and_never_keep_the_credential(url: str) -> None:
    redacted = redact_url(url, WORDS)
    assert isinstance(redacted, str)
    assert "token=x" not in redacted
    assert "=\U0001f600" not in redacted


def test_a_lone_surrogate_in_a_kept_value_never_raises() -> None:
    redact_url("https://shop.example/p?q=\ud800&token=1", WORDS)


# --- skip_reason ------------------------------------------------------------------------------------------------


def test_an_ordinary_page_view_is_not_skipped() -> None:
    assert skip_reason(request(), DEFAULTS) is None


def test_options_is_excluded_by_default_and_configurable() -> None:
    assert skip_reason(request(method="OPTIONS"), DEFAULTS) is DropReason.EXCLUDED
    assert skip_reason(request(method="OPTIONS"), settings(exclude_methods=[])) is None
    custom = settings(exclude_methods=["head", "TRACE"])
    assert skip_reason(request(method="HEAD"), custom) is DropReason.EXCLUDED
    assert skip_reason(request(method="TRACE"), custom) is DropReason.EXCLUDED
    assert skip_reason(request(method="OPTIONS"), custom) is None


@pytest.mark.parametrize("path", ["/health", "/healthz", "/livez", "/readyz", "/metrics", "/robots.txt"])
def test_health_and_metrics_endpoints_are_excluded(path: str) -> None:
    assert skip_reason(request(path=path), DEFAULTS) is DropReason.EXCLUDED
    assert skip_reason(request(path=path), settings(exclude_paths=[])) is None


def test_path_patterns_are_exact_globs() -> None:
    # The defaults are exact paths, not prefixes.
    assert skip_reason(request(path="/healthcare"), DEFAULTS) is None
    assert skip_reason(request(path="/health/live"), DEFAULTS) is None
    custom = settings(exclude_paths=["/internal/*", "*/ping"])
    assert skip_reason(request(path="/internal/a/b"), custom) is DropReason.EXCLUDED
    assert skip_reason(request(path="/x/ping"), custom) is DropReason.EXCLUDED
    assert skip_reason(request(path="/internally"), custom) is None
    assert skip_reason(request(path="/healthz"), custom) is None  # the list replaces the defaults


@pytest.mark.parametrize(
    "path", ["/static/site.css", "/app.js", "/img/logo.PNG", "/fonts/a.woff2", "/favicon.ico", "/app.js.map"]
)
def test_static_assets_are_excluded_by_extension(path: str) -> None:
    assert skip_reason(request(path=path), DEFAULTS) is DropReason.EXCLUDED


@pytest.mark.parametrize("path", ["/report.pdf", "/items/7", "/v1.2/users", "/css/", "/page.html", "/js"])
def test_other_paths_are_pages(path: str) -> None:
    assert skip_reason(request(path=path), DEFAULTS) is None


def test_extensions_are_configurable() -> None:
    custom = settings(exclude_extensions=[".PDF", "txt"])
    assert skip_reason(request(path="/report.pdf"), custom) is DropReason.EXCLUDED
    assert skip_reason(request(path="/notes.TXT"), custom) is DropReason.EXCLUDED
    assert skip_reason(request(path="/site.css"), custom) is None
    assert skip_reason(request(path="/site.css"), settings(exclude_extensions=[])) is None


def test_status_codes_and_classes() -> None:
    custom = settings(exclude_status=["404", "5xx"])
    assert skip_reason(request(status=404), custom) is DropReason.EXCLUDED
    assert skip_reason(request(status=500), custom) is DropReason.EXCLUDED
    assert skip_reason(request(status=599), custom) is DropReason.EXCLUDED
    assert skip_reason(request(status=403), custom) is None
    assert skip_reason(request(status=200), custom) is None
    assert skip_reason(request(status=None), custom) is None
    assert skip_reason(request(status=404), DEFAULTS) is None  # nothing excluded by status by default


@pytest.mark.parametrize(("header", "option"), [("sec-gpc", "honor_gpc"), ("dnt", "honor_dnt")])
def test_privacy_signals_are_honoured_by_default(header: str, option: str) -> None:
    assert skip_reason(request(headers={header: "1"}), DEFAULTS) is DropReason.OPTED_OUT
    assert skip_reason(request(headers={header: " 1 "}), DEFAULTS) is DropReason.OPTED_OUT
    assert skip_reason(request(headers={header: "0"}), DEFAULTS) is None
    assert skip_reason(request(headers={header: "yes"}), DEFAULTS) is None
    assert skip_reason(request(headers={header: "1"}), settings(**{option: False})) is None


def test_gpc_and_dnt_are_independent_switches() -> None:
    only_gpc = settings(honor_dnt=False)
    assert skip_reason(request(headers={"sec-gpc": "1"}), only_gpc) is DropReason.OPTED_OUT
    assert skip_reason(request(headers={"dnt": "1"}), only_gpc) is None
    only_dnt = settings(honor_gpc=False)
    assert skip_reason(request(headers={"dnt": "1"}), only_dnt) is DropReason.OPTED_OUT
    assert skip_reason(request(headers={"sec-gpc": "1"}), only_dnt) is None


def test_an_excluded_request_is_counted_as_excluded_even_when_opted_out() -> None:
    assert skip_reason(request(path="/healthz", headers={"sec-gpc": "1"}), DEFAULTS) is DropReason.EXCLUDED


@pytest.mark.parametrize("kind", ["bot", "test"])
def test_synthetic_clients_are_skipped_only_when_asked(kind: str) -> None:
    assert skip_reason(request(synthetic_type=kind), DEFAULTS) is None
    assert skip_reason(request(synthetic_type=kind), settings(skip_synthetic=True)) is DropReason.SYNTHETIC
    assert skip_reason(request(synthetic_type="other"), settings(skip_synthetic=True)) is None
    assert skip_reason(request(), settings(skip_synthetic=True)) is None


# --- is_event -----------------------------------------------------------------------------------------------------


def test_no_event_routes_by_default() -> None:
    assert not is_event(request(path="/api/cart", route="/api/cart"), DEFAULTS)


def test_event_routes_match_the_route_template_or_the_path() -> None:
    events = settings(event_routes=["/api/*", "/items/{item_id}/like"])
    assert is_event(request(path="/api/cart", route="/api/cart"), events)
    assert is_event(request(path="/api/v2/orders/9"), events)  # no route: the path
    assert is_event(request(path="/items/7/like", route="/items/{item_id}/like"), events)
    assert is_event(request(path="/p", route="/api/{rest}"), events)  # the route matches, the path does not
    assert not is_event(request(path="/items/7", route="/items/{item_id}"), events)
    assert not is_event(request(path="/apiary"), events)
    assert not is_event(request(path="/API/cart"), events)  # case-sensitive, like paths


# --- Cached paths: values past the cached length (512 characters) take the same road -----------------------


@pytest.mark.parametrize("padding", [0, 600])
def test_the_forwarding_walk_is_the_same_for_long_chains(padding: int) -> None:
    chain = ", ".join([SPOOFED] * (padding // 9 + 1)) + f", {CLIENT}, 10.0.0.2"
    assert len(chain) > padding
    trusted = networks("127.0.0.0/8", "10.0.0.0/8")
    for _ in range(2):  # the second time from the cache, when short enough to be cached
        assert client_ip(proxied({"x-forwarded-for": chain}), trusted) == CLIENT
        assert client_ip(proxied({"x-forwarded-for": chain}), LOOPBACK) == "10.0.0.2"


@pytest.mark.parametrize("padding", [0, 600])
def test_credentials_are_redacted_from_long_queries(padding: int) -> None:
    url = f"https://shop.example/?q={'x' * padding}&token=s3cret&utm_source=news"
    for _ in range(2):
        assert redact_url(url, WORDS) == f"https://shop.example/?q={'x' * padding}&utm_source=news"


@pytest.mark.parametrize("padding", [0, 600])
def test_excluded_paths_are_found_in_long_paths(padding: int) -> None:
    for _ in range(2):
        assert skip_reason(request(path=f"/static/{'a' * padding}.css"), DEFAULTS) is DropReason.EXCLUDED
        assert skip_reason(request(path=f"/items/{'a' * padding}"), DEFAULTS) is None


@pytest.mark.parametrize(
    "peer",
    [None, "", "127.0.0.1", "127.0.0.1:8000", "[::1]:80", "::ffff:127.0.0.1", CLIENT, "garbage", "é", "1" * 600],
)
def test_the_trusted_peer_check_by_text_is_the_address_check(peer: str | None) -> None:
    # forwarded_origin asks, by the peer's text, a cache of what parsing the address and testing it says.
    from otel_matomo._policy import _is_trusted, _parse_ip

    parsed = _parse_ip(peer)
    trusted = parsed is not None and _is_trusted(parsed, LOOPBACK)
    behind = request(peer_address=peer, headers={"x-forwarded-proto": "https", "x-forwarded-host": "shop.example"})
    expected = ("https", "shop.example") if trusted else ("http", "shop.example")
    for _ in range(2):
        assert forwarded_origin(behind, LOOPBACK) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example/?token=1&q=2",
        "https://user:pw@shop.example/p?api_key=1#frag",
        "https://shop.example/é?sid=ü&utm_source=x",
        "http://[bad/?token=1",  # not a URL: cut at its query
        "https://shop.example/?" + "q=1&" * 200 + "password=2",  # past the cached length
    ],
)
def test_referrers_are_redacted_the_same_from_the_cache(url: str) -> None:
    from otel_matomo._redact import _redact_url

    expected = _redact_url.__wrapped__(url, WORDS)  # type: ignore[attr-defined]
    assert "token=1" not in expected
    assert "password" not in expected
    for _ in range(2):
        assert redact_url(url, WORDS) == expected
