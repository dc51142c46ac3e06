"""Attacks through what a span says (issue 17, rows 4, 6 and 8): huge fields and absurd times, credentials in
query strings and referrers, and client addresses chosen by the client. What counts is what reached Matomo."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.attacks.conftest import AttackRow
from tests.attacks.harness import (
    GatewayProcess,
    assert_targets,
    exchange,
    items_received,
    json_body,
    post_head,
    run_attack,
    running_gateway,
)
from tests.factories import otlp_server_span
from tests.matomo_standin import MatomoStandIn

JSON = {"content-type": "application/json"}
MATOMO_URL_LENGTH = 4096
"""Matomo stores an action's URL and title in ``log_action.name``, a VARCHAR(4096)."""
DAY_S = 86_400
SECRET = "S3CR3T"
CHOSEN = "203.0.113.66"
"""The address an attacker writes into client.address, X-Forwarded-For or Forwarded."""


def _text(value: str) -> dict[str, Any]:
    return {"stringValue": value}


def _header(value: str) -> dict[str, Any]:
    return {"arrayValue": {"values": [{"stringValue": value}]}}


PEER, CLIENT, HOST = "network.peer.address", "client.address", "http.request.header.host"
XFF, FORWARDED, REFERER = (f"http.request.header.{name}" for name in ("x-forwarded-for", "forwarded", "referer"))


def span(
    path: str, span_id: int, attributes: dict[str, str] | None = None, drop: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A server span for ``path`` (its title made from the path) with ``attributes`` set (headers as string
    arrays, as Node sends them) and the ``drop`` keys removed."""
    result = otlp_server_span(path, span_id=span_id, route=None)
    values = {
        key: _header(value) if key.startswith("http.request.header.") else _text(value)
        for key, value in (attributes or {}).items()
    }
    result["attributes"] = [
        attribute for attribute in result["attributes"] if attribute["key"] not in (*drop, *values)
    ] + [{"key": key, "value": value} for key, value in values.items()]
    return result


def _send(gateway: GatewayProcess, spans: list[dict[str, Any]]) -> Any:
    body = json_body(*spans)

    def attack(loaded: threading.Event) -> str:
        return exchange(gateway.port, post_head(JSON, len(body)) + body, loaded)

    return attack


def _received_for(standin: MatomoStandIn, marker: str, expected: int, timeout: float = 5.0) -> list[dict[str, str]]:
    """The hits whose url contains ``marker``, once ``expected`` arrived or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while True:
        hits = [hit for hit in items_received(standin) if marker in hit.get("url", "")]
        if len(hits) >= expected or time.monotonic() > deadline:
            return hits
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("label", "length"),
    [
        ("a 7 MB url.path", 7_000_000),
        ("a 60 kB url.path (under the gateway's string limit: capped in translation)", 60_000),
    ],
)
def test_row4_a_huge_url_path(
    standin: MatomoStandIn, tmp_path: Path, attacks: list[AttackRow], label: str, length: int
) -> None:
    with running_gateway(standin, tmp_path) as gateway:
        row = run_attack(gateway, f"4: {label}", _send(gateway, [span("/huge/" + "a" * length, 1)]))
        hits = _received_for(standin, "/huge/", 1)
    longest = max((len(hit.get(name, "")) for hit in hits for name in ("url", "action_name")), default=0)
    row.answer += f"; longest url or title sent {longest:,} characters"
    attacks.append(row)
    assert_targets(row)
    assert longest <= MATOMO_URL_LENGTH


def test_row4_cdt_extremes(standin: MatomoStandIn, tmp_path: Path, attacks: list[AttackRow]) -> None:
    early = span("/cdt/early", 1)
    late = span("/cdt/late", 2)
    early["startTimeUnixNano"], early["endTimeUnixNano"] = "1", "2"
    late["startTimeUnixNano"] = late["endTimeUnixNano"] = str(2**64 - 1)
    with running_gateway(standin, tmp_path) as gateway:
        row = run_attack(gateway, "4: start times 1 ns and 2^64-1 ns", _send(gateway, [early, late]))
        hits = _received_for(standin, "/cdt/", 2)
    now = time.time()
    cdts = sorted(int(hit["cdt"]) for hit in hits if "cdt" in hit)
    row.answer += f"; cdt sent {', '.join(time.strftime('%Y-%m-%d', time.gmtime(cdt)) for cdt in cdts) or 'none'}"
    attacks.append(row)
    assert_targets(row)
    assert all(now - DAY_S - 300 <= cdt <= now + 300 for cdt in cdts), cdts


CREDENTIAL_QUERIES = [
    f"PHPSESSID={SECRET}01",
    f"jsessionid={SECRET}02",
    f"accesstoken={SECRET}03",
    f"authtoken={SECRET}04",
    f"tokens={SECRET}05",
    f"mytoken={SECRET}06",
    f"pass={SECRET}07",
    f"pin={SECRET}08",
    f"bearer={SECRET}09",
    f"ticket={SECRET}10",
    f"SAMLResponse={SECRET}11",
    f"oauth_verifier={SECRET}12",
    f"hash={SECRET}13",
    f"a=1;token={SECRET}14",
    f"utm_token={SECRET}15",
    f"mtm_key={SECRET}16",
    f"q=shoes&Ticket={SECRET}17",
]
CREDENTIAL_PATHS = [f"/cart;jsessionid={SECRET}20", f"/cart;JSESSIONID={SECRET}21;x=1"]
CREDENTIAL_REFERERS = [
    f"https://ref.example/login#access_token={SECRET}30",
    f"https://ref.example/cb#state=1&id_token={SECRET}31",
    f"https://user:{SECRET}32@ref.example/page",
    f"https://ref.example/p?PHPSESSID={SECRET}33",
]


def _credential_spans() -> list[dict[str, Any]]:
    spans = [span(f"/c/{number}", number, {"url.query": query}) for number, query in enumerate(CREDENTIAL_QUERIES, 1)]
    spans += [span(f"/c/p{number}{path}", 100 + number) for number, path in enumerate(CREDENTIAL_PATHS, 1)]
    spans += [span(f"/c/r{number}", 200 + number, {REFERER: ref}) for number, ref in enumerate(CREDENTIAL_REFERERS, 1)]
    return spans


def test_row6_credentials_in_query_strings_and_referrers(
    standin: MatomoStandIn, tmp_path: Path, attacks: list[AttackRow]
) -> None:
    spans = _credential_spans()
    with running_gateway(standin, tmp_path) as gateway:
        row = run_attack(gateway, "6: credentials in queries, path parameters, referrers", _send(gateway, spans))
        hits = _received_for(standin, "/c/", len(spans))
    leaks = sorted(
        f"{name}={hit[name]}"
        for hit in hits
        for name in ("url", "urlref", "action_name")
        if SECRET in hit.get(name, "")
    )
    row.answer += f"; {len(hits)}/{len(spans)} hits, {len(leaks)} credentials kept"
    attacks.append(row)
    assert_targets(row)
    assert len(hits) == len(spans)
    assert leaks == []


def _spoofing_spans() -> list[dict[str, Any]]:
    """Each chooses ``CHOSEN`` (or an address with a zone id) for the visitor, in its own way."""
    untrusted = "198.51.100.7"
    return [
        span("/s/no-peer", 1, {CLIENT: CHOSEN}, drop=(PEER, XFF)),
        span("/s/no-peer-xff", 2, {CLIENT: CHOSEN, XFF: CHOSEN}, drop=(PEER,)),
        span("/s/untrusted-peer", 3, {PEER: untrusted, XFF: CHOSEN}),
        span("/s/untrusted-peer-client", 4, {PEER: untrusted, CLIENT: CHOSEN}),
        span("/s/xff-garbage-hop", 5, {XFF: f"{CHOSEN}, not-an-address"}),
        # Empty list elements are no hops (RFC 9110 5.6.1): the client's padding around its own claim cannot
        # stop the walk before the address its proxy appended.
        span("/s/xff-empty-hop", 6, {XFF: f"{CHOSEN}, , ,{untrusted}"}),
        span("/s/fwd-unbalanced", 7, {FORWARDED: f'for={CHOSEN}, for="198.51.100.9'}, drop=(XFF,)),
        span("/s/fwd-garbage", 8, {FORWARDED: f"for={CHOSEN};;,for=unknown;x"}, drop=(XFF,)),
        span("/s/zone-peer", 9, {PEER: "fe80::1%eth0"}),
        span("/s/zone-xff", 10, {XFF: "fe80::1%25eth0"}),
        span("/s/zone-xff-raw", 11, {XFF: "fe80::2%eth0"}),
        span("/s/foreign-host", 12, {PEER: untrusted, HOST: "evil.example", "server.address": "evil.example"}),
    ]


def test_row8_spoofed_client_addresses(standin: MatomoStandIn, tmp_path: Path, attacks: list[AttackRow]) -> None:
    spans = _spoofing_spans()
    with running_gateway(standin, tmp_path) as gateway:
        row = run_attack(
            gateway,
            "8: client-chosen addresses (client.address, XFF, Forwarded, zone ids, Host)",
            _send(gateway, spans),
        )
        hits = _received_for(standin, "/s/", len(spans))
    chosen = sorted(hit["url"] for hit in hits if hit.get("cip") == CHOSEN or "%" in hit.get("cip", ""))
    by_path = {hit["url"].rpartition("/s/")[2]: hit.get("cip") for hit in hits}
    hosts = sorted({hit["url"].split("/")[2] for hit in hits})
    row.answer += f"; {len(hits)}/{len(spans)} hits, client-chosen cip in {len(chosen)}, url hosts {', '.join(hosts)}"
    attacks.append(row)
    assert_targets(row)
    assert chosen == []
    assert by_path.get("untrusted-peer") == by_path.get("untrusted-peer-client") == "198.51.100.7"
    assert by_path.get("xff-empty-hop") == "198.51.100.7"


def test_row8_a_foreign_host_with_the_site_host_allow_list(
    standin: MatomoStandIn, tmp_path: Path, attacks: list[AttackRow]
) -> None:
    """The allow-list is off by default (row 8 above shows a foreign host passing); set, it drops other hosts."""
    spans = [
        span("/h/foreign", 1, {HOST: "evil.example", "server.address": "evil.example"}),
        span("/h/own", 2),
    ]
    with running_gateway(standin, tmp_path, OTEL_EXPORTER_MATOMO_SITE_HOSTS="shop.example") as gateway:
        row = run_attack(gateway, "8: a foreign Host, SITE_HOSTS=shop.example", _send(gateway, spans))
        hits = _received_for(standin, "/h/", 2, timeout=3)
    hosts = sorted({hit["url"].split("/")[2] for hit in hits})
    row.answer += f"; url hosts sent: {', '.join(hosts) or 'none'}"
    attacks.append(row)
    assert_targets(row)
    assert hosts == ["shop.example"]
