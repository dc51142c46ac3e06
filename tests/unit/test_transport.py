"""Bulk encoding, Matomo's answers, and ``HttpSender`` against the local ``matomo.php`` stand-in over loopback."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_matomo import _retry as retry_module
from otel_matomo._bulk import (
    BulkAnswer,
    Decision,
    MalformedAnswer,
    Refusal,
    Verdict,
    encode_bulk,
    judge,
    parse_bulk_answer,
    parse_retry_after,
)
from otel_matomo._pipeline import Pipeline
from otel_matomo._sending import Outcome, SendResult
from otel_matomo._settings import Settings
from otel_matomo._transport import HttpSender
from otel_matomo._types import Hit
from tests.matomo_standin import (
    SECURE_ONLY_TOKEN,
    SUPERUSER_TOKEN,
    WRITE_TOKEN,
    Behaviour,
    MatomoStandIn,
)

SECRET = "a-visitor-id-secret-of-some-length"
TOKENS = (SUPERUSER_TOKEN, WRITE_TOKEN, SECURE_ONLY_TOKEN)


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry_module, "backoff", lambda attempt: 0.05)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def transport_settings(standin: MatomoStandIn, token: str | None = WRITE_TOKEN, timeout: float = 2.0) -> Settings:
    return Settings.from_env(
        {},
        endpoint=standin.url,
        site_id=1,
        token_auth=token,
        timeout=timedelta(seconds=timeout),
        visitor_id_secret=SECRET,
    )


def make_transport(standin: MatomoStandIn, token: str | None = WRITE_TOKEN, timeout: float = 2.0) -> HttpSender:
    return HttpSender(transport_settings(standin, token, timeout))


def hit(n: int = 0, site: int = 1) -> Hit:
    return {
        "idsite": str(site),
        "rec": "1",
        "apiv": "1",
        "rand": f"{n:016x}",
        "cid": f"{n:016x}",
        "action_name": f"GET /page/{n}",
        "url": f"https://shop.example/page/{n}?q=a&b=c",
    }


def assert_token_kept_secret(caplog: pytest.LogCaptureFixture, standin: MatomoStandIn | None = None) -> None:
    """No token in any log record (message or traceback), nor in any request URL."""
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "") + str(record.__dict__.get("hit", ""))
        for token in TOKENS:
            assert token not in text, record
    for received in standin.received if standin is not None else ():
        for token in TOKENS:
            assert token not in received.path
            assert token not in received.query
        assert received.query == ""


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "otel_matomo" and r.levelno >= logging.ERROR]


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "otel_matomo" and r.levelno == logging.WARNING]


# --- encode_bulk ---------------------------------------------------------------------------------------------------


def test_encode_bulk_items_start_with_question_mark_and_token_only_in_body() -> None:
    body = json.loads(encode_bulk([hit(1), hit(2)], WRITE_TOKEN))
    assert set(body) == {"requests", "token_auth"}
    assert body["token_auth"] == WRITE_TOKEN
    assert len(body["requests"]) == 2
    for item in body["requests"]:
        assert item.startswith("?")
        assert WRITE_TOKEN not in item
        assert "token_auth" not in item
    assert [dict(parse_qsl(item[1:])) for item in body["requests"]] == [hit(1), hit(2)]


def test_encode_bulk_without_token_has_no_token_key() -> None:
    body = json.loads(encode_bulk([hit()], None))
    assert set(body) == {"requests"}


def test_encode_bulk_empty_hit_still_starts_with_question_mark() -> None:
    assert json.loads(encode_bulk([{}], None)) == {"requests": ["?"]}


def test_encode_bulk_url_encodes_values() -> None:
    tricky = {"idsite": "1", "rec": "1", "action_name": "a&b=c d/é€", "url": "https://x.example/?k=v&w=1#f"}
    [item] = json.loads(encode_bulk([tricky], None))["requests"]
    query = item[1:]
    assert query.count("&") == len(tricky) - 1  # no raw '&' inside a value
    assert query.count("=") == len(tricky)  # no raw '=' inside a value
    assert "a%26b%3Dc+d%2F%C3%A9%E2%82%AC" in query
    assert " " not in query
    assert "#" not in query
    assert dict(parse_qsl(query, keep_blank_values=True)) == tricky


def test_encode_bulk_keeps_order() -> None:
    body = json.loads(encode_bulk([hit(n) for n in range(5)], None))
    assert [dict(parse_qsl(item[1:]))["rand"] for item in body["requests"]] == [f"{n:016x}" for n in range(5)]


def _dumped_body(hits: list[Hit], token_auth: str | None) -> bytes:
    """The bulk body as json.dumps writes it, with the items as urlencode writes them."""
    from otel_matomo._bulk import _query

    body: dict[str, object] = {"requests": ["?" + _query(hit) for hit in hits]}
    if token_auth is not None:
        body["token_auth"] = token_auth
    return json.dumps(body, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "hits",
    [
        [],
        [{}],
        [{}, {}],
        [{"idsite": "1", "url": 'https://x.example/"q"\\\x00\x7f é \ud800'}],  # any value: it is percent-encoded
        [{"idsite": "1"}, {'na"me': "1"}],  # a name json.dumps escapes, in the second hit only
        [{"back\\slash": "1"}],
        [{"control\x01": "1"}],
        [{"delete\x7f": "1"}],
        [{"naïve": "é"}],
    ],
)
@pytest.mark.parametrize("token_auth", [None, WRITE_TOKEN, 'to"ken\\é'])
def test_the_bulk_body_is_json_dumps_byte_for_byte(hits: list[Hit], token_auth: str | None) -> None:
    body = encode_bulk(hits, token_auth)
    assert body == _dumped_body(hits, token_auth)
    assert len(json.loads(body)["requests"]) == len(hits)


@given(
    st.lists(st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=6), max_size=6),
    st.none() | st.text(max_size=40),
)
def test_any_bulk_body_is_json_dumps_byte_for_byte(hits: list[Hit], token_auth: str | None) -> None:
    assert encode_bulk(hits, token_auth) == _dumped_body(hits, token_auth)


# --- parse_bulk_answer ----------------------------------------------------------------------------------------------


def test_parse_success() -> None:
    assert parse_bulk_answer(b'{"status":"success","tracked":3,"invalid":0}') == BulkAnswer(3, 0, ())


def test_parse_success_without_invalid_field() -> None:
    assert parse_bulk_answer(b'{"status":"success","tracked":2}') == BulkAnswer(2, 0, ())


def test_parse_invalid_with_indices() -> None:
    answer = parse_bulk_answer(b'{"status":"success","tracked":1,"invalid":2,"invalid_indices":[0,2]}')
    assert answer == BulkAnswer(tracked=1, invalid=2, invalid_indices=(0, 2), superuser=True)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html>Matomo is down</html>", id="html"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"[1, 2]", id="json-list"),
        pytest.param(b'"success"', id="json-string"),
        pytest.param(b'{"status":"success"}', id="missing-tracked"),
        pytest.param(b'{"status":"success","tracked":"3"}', id="tracked-string"),
        pytest.param(b'{"tracked":1,"invalid":"1"}', id="invalid-string"),
        pytest.param(b'{"tracked":1,"invalid":1,"invalid_indices":3}', id="indices-not-list"),
        pytest.param(b'{"tracked":-5}', id="negative-tracked"),
        pytest.param(b'{"tracked":1,"invalid":-1}', id="negative-invalid"),
    ],
)
def test_parse_malformed(body: bytes) -> None:
    with pytest.raises(MalformedAnswer):
        parse_bulk_answer(body)


# --- judge: Matomo's answer rules, without a network ------------------------------------------------------------

OK = b'{"status":"success","tracked":3,"invalid":0}'


@pytest.mark.parametrize(
    ("status", "body", "token_sent", "expected"),
    [
        pytest.param(200, OK, True, Verdict(Decision.DELIVERED, tracked=3), id="delivered"),
        pytest.param(
            200,
            b'{"tracked":2,"invalid":1,"invalid_indices":[1]}',
            True,
            Verdict(Decision.PARTIAL, tracked=2, invalid=1, refusal=Refusal.INVALID, invalid_indices=(1,)),
            id="partial",
        ),
        pytest.param(
            200,
            b'{"tracked":0,"invalid":3,"invalid_indices":[0,1,2]}',
            True,
            Verdict(Decision.REJECTED, invalid=3, refusal=Refusal.SITE),
            id="superuser-all-refused-is-the-site",
        ),
        pytest.param(
            200,
            b'{"tracked":0,"invalid":3}',
            True,
            Verdict(Decision.REJECTED, invalid=3, refusal=Refusal.SECURE_ONLY),
            id="token-all-refused-is-the-token",
        ),
        pytest.param(
            200,
            b'{"tracked":0,"invalid":3}',
            False,
            Verdict(Decision.REJECTED, invalid=3, refusal=Refusal.INVALID),
            id="no-token-all-refused-is-validation",
        ),
        pytest.param(
            200,
            b'{"tracked":0,"invalid":1}',
            True,
            Verdict(Decision.REJECTED, invalid=1, refusal=Refusal.INVALID, unconfirmed=2),
            id="some-refused-none-tracked",
        ),
        pytest.param(200, b"<html>", True, Verdict(Decision.RETRY, malformed="not JSON"), id="malformed-is-retried"),
        pytest.param(
            200,
            b'{"status":"success","tracked":0,"invalid":0}',
            True,
            Verdict(Decision.DELIVERED, unconfirmed=3),
            id="nothing-confirmed",
        ),
        pytest.param(
            200,
            b'{"tracked":2,"invalid":0}',
            True,
            Verdict(Decision.DELIVERED, tracked=2, unconfirmed=1),
            id="one-unconfirmed",
        ),
        pytest.param(
            200,
            b'{"tracked":1,"invalid":1}',
            True,
            Verdict(Decision.PARTIAL, tracked=1, invalid=1, refusal=Refusal.INVALID, unconfirmed=1),
            id="partial-and-one-unconfirmed",
        ),
        pytest.param(
            200,
            b'{"tracked":-5,"invalid":0}',
            True,
            Verdict(Decision.RETRY, malformed="negative counts"),
            id="negative-tracked",
        ),
        pytest.param(
            200,
            b'{"tracked":3,"invalid":-1}',
            True,
            Verdict(Decision.RETRY, malformed="negative counts"),
            id="negative-invalid",
        ),
        pytest.param(
            200,
            b'{"tracked":3,"invalid":1}',
            True,
            Verdict(Decision.RETRY, malformed="counts for 4 hits, 3 sent"),
            id="more-counted-than-sent",
        ),
        pytest.param(
            200, b'{"tracked":3.0}', True, Verdict(Decision.RETRY, malformed="no 'tracked' count"), id="float-count"
        ),
        pytest.param(
            200, b'{"tracked":true}', True, Verdict(Decision.RETRY, malformed="no 'tracked' count"), id="bool-count"
        ),
        pytest.param(403, OK, True, Verdict(Decision.REJECTED, invalid=3, refusal=Refusal.STATUS), id="403"),
        pytest.param(500, OK, True, Verdict(Decision.RETRY), id="500-rolled-back-whatever-the-body-says"),
        pytest.param(429, b"", True, Verdict(Decision.RETRY), id="429"),
    ],
)
def test_judge(status: int, body: bytes, token_sent: bool, expected: Verdict) -> None:
    assert judge(status, body, count=3, token_sent=token_sent) == expected


def test_judge_reads_retry_after_as_seconds_or_a_date() -> None:
    assert judge(503, b"", count=1, token_sent=False, retry_after="7").retry_after == 7.0
    date = "Wed, 21 Oct 2015 07:28:30 GMT"
    assert judge(429, b"", count=1, token_sent=False, retry_after=date, now=1445412500.0).retry_after == 10.0
    assert parse_retry_after(date, now=1445412600.0) == 0.0, "a date in the past: no wait"
    assert parse_retry_after("soon", now=0.0) is None
    assert parse_retry_after(None, now=0.0) is None


# --- HttpSender against the stand-in -------------------------------------------------------------------------------


def test_delivered(standin: MatomoStandIn, logs: pytest.LogCaptureFixture) -> None:
    hits = [hit(1), hit(2), hit(3)]
    result = make_transport(standin).send(hits)
    assert result.outcome is Outcome.DELIVERED
    assert (result.tracked, result.invalid, result.attempts) == (3, 0, 1)
    assert len(standin.received) == 1
    received = standin.received[0]
    assert received.path == "/matomo.php"
    assert received.body["token_auth"] == WRITE_TOKEN
    assert standin.tracked == hits
    assert errors(logs) == []
    assert warnings(logs) == []
    assert_token_kept_secret(logs, standin)


def test_delivered_without_token(standin: MatomoStandIn, logs: pytest.LogCaptureFixture) -> None:
    result = make_transport(standin, token=None).send([hit()])
    assert result.outcome is Outcome.DELIVERED
    assert "token_auth" not in standin.received[0].body
    assert standin.tracked == [hit()]


def test_partial_invalid_logs_indices_and_is_not_retried(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture
) -> None:
    hits = [hit(0), hit(1, site=99), hit(2)]
    result = make_transport(standin, token=SUPERUSER_TOKEN).send(hits)
    assert result.outcome is Outcome.PARTIAL
    assert (result.tracked, result.invalid, result.attempts) == (2, 1, 1)
    assert len(standin.received) == 1
    assert standin.tracked == [hit(0), hit(2)]
    [warning] = warnings(logs)
    assert "refused 1 of 3 hits at indices [1]" in warning.getMessage()
    assert_token_kept_secret(logs, standin)


def test_partial_invalid_without_indices(standin: MatomoStandIn, logs: pytest.LogCaptureFixture) -> None:
    result = make_transport(standin, token=WRITE_TOKEN).send([hit(0), hit(1, site=99)])
    assert result.outcome is Outcome.PARTIAL
    assert (result.tracked, result.invalid) == (1, 1)
    [warning] = warnings(logs)
    assert "refused 1 of 2 hits" in warning.getMessage()
    assert "indices" not in warning.getMessage()
    assert len(standin.received) == 1


def test_secure_only_token_is_rejected_with_one_clear_error(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture
) -> None:
    # Matomo refuses a secure-only token only where a hit needs a token: cip, as the exporter sends with one.
    hits = [{**hit(1), "cip": "198.51.100.1"}, {**hit(2), "cip": "198.51.100.2"}]
    result = make_transport(standin, token=SECURE_ONLY_TOKEN).send(hits)
    assert result.outcome is Outcome.REJECTED
    assert (result.tracked, result.invalid, result.attempts) == (0, 2, 1)
    assert len(standin.received) == 1
    assert standin.tracked == []
    [error] = errors(logs)
    message = error.getMessage()
    assert "secure only" in message
    assert "#22910" in message
    assert_token_kept_secret(logs, standin)


@pytest.mark.parametrize("status", [400, 403])
def test_client_error_is_rejected_without_retry(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, fast_backoff: None, status: int
) -> None:
    standin.behaviour = Behaviour(status=status)
    result = make_transport(standin).send([hit()])
    assert result.outcome is Outcome.REJECTED
    assert (result.invalid, result.attempts) == (1, 1)
    assert len(standin.received) == 1
    [error] = errors(logs)
    assert f"HTTP {status}" in error.getMessage()
    assert_token_kept_secret(logs, standin)


def test_wrong_path_404_is_rejected_without_retry(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, fast_backoff: None
) -> None:
    settings = Settings.from_env(
        {}, endpoint=standin.url + "/index.php", site_id=1, token_auth=WRITE_TOKEN, visitor_id_secret=SECRET
    )
    result = HttpSender(settings).send([hit()])
    assert result.outcome is Outcome.REJECTED
    assert len(standin.received) == 1
    [error] = errors(logs)
    assert "HTTP 404" in error.getMessage()
    assert_token_kept_secret(logs, standin)


def test_malformed_200_answer_is_retried_until_the_deadline_and_names_the_endpoint(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, fast_backoff: None
) -> None:
    # Something answered, but what it stored cannot be told: the batch is sent again, as after a 5xx.
    standin.behaviour = Behaviour(body=b"<html><body>Welcome to nginx!</body></html>")
    result = make_transport(standin, timeout=0.5).send([hit(1), hit(2)])
    assert result.outcome is Outcome.GAVE_UP
    assert (result.tracked, result.invalid, result.unconfirmed) == (0, 0, 0)
    assert (result.answered, result.status) == (True, 200)
    assert result.attempts == len(standin.received) >= 3
    [error] = errors(logs)  # rate-limited: once, however many attempts
    message = error.getMessage()
    assert f"{standin.url}/matomo.php did not answer as Matomo's bulk tracking API does (not JSON: " in message
    assert "Welcome to nginx" in message
    assert "is the endpoint the Matomo tracker URL?" in message
    [warning] = warnings(logs)
    assert "lost 2 hits" in warning.getMessage()
    assert "still failed after" in warning.getMessage()
    assert_token_kept_secret(logs, standin)


def test_malformed_200_answer_without_retry_is_given_back_as_answered(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture
) -> None:
    standin.behaviour = Behaviour(body=b"<html><body>Welcome to nginx!</body></html>")
    result = make_transport(standin).send([hit(1), hit(2)], retry=False)
    assert (result.outcome, result.attempts, result.answered, result.status) == (Outcome.GAVE_UP, 1, True, 200)
    assert (result.tracked, result.invalid, result.unconfirmed) == (0, 0, 0)
    assert len(standin.received) == 1
    [error] = errors(logs)
    assert "is the endpoint the Matomo tracker URL?" in error.getMessage()
    assert warnings(logs) == []  # the caller keeps the hits: nothing is lost yet


def test_token_echoed_in_a_malformed_answer_is_masked(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, fast_backoff: None
) -> None:
    standin.behaviour = Behaviour(body=f"error for token_auth={WRITE_TOKEN}".encode())
    result = make_transport(standin).send([hit()], retry=False)
    assert result.outcome is Outcome.GAVE_UP
    assert "***" in errors(logs)[0].getMessage()
    assert_token_kept_secret(logs, standin)


def test_token_echoed_across_the_snippet_cut_is_not_logged(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, fast_backoff: None
) -> None:
    standin.behaviour = Behaviour(body=b"x" * 100 + WRITE_TOKEN.encode())
    make_transport(standin).send([hit()], retry=False)
    for record in logs.records:
        assert WRITE_TOKEN[:12] not in record.getMessage()


def test_matomo_down_retries_then_gives_up_within_the_deadline(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    backoff, timeout = 0.1, 0.6
    monkeypatch.setattr(retry_module, "backoff", lambda attempt: backoff)
    transport = make_transport(standin, timeout=timeout)
    standin.stop()
    started = time.monotonic()
    result = transport.send([hit()])
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.GAVE_UP
    assert result.attempts >= 3
    assert timeout - backoff - 0.05 <= elapsed < timeout + 0.3  # used the deadline, then stopped
    [warning] = warnings(logs)
    assert "still failed after" in warning.getMessage()
    assert_token_kept_secret(logs)


def test_matomo_down_with_the_real_backoff_gives_up_within_the_deadline(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture
) -> None:
    timeout = 1.5
    transport = make_transport(standin, timeout=timeout)
    standin.stop()
    started = time.monotonic()
    result = transport.send([hit()])
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.GAVE_UP
    assert result.attempts == 2  # 1 s (x 0.8-1.2) fits, 2 s more does not
    assert elapsed < timeout + 0.3
    assert_token_kept_secret(logs)


def test_500_twice_then_recovery_delivers_once(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, fast_backoff: None
) -> None:
    standin.behaviour = Behaviour(status=500, fail_next=2)
    hits = [hit(1), hit(2)]
    result = make_transport(standin).send(hits)
    assert result.outcome is Outcome.DELIVERED
    assert result.attempts == 3
    assert result.tracked == 2
    assert [r.answer_status for r in standin.received] == [500, 500, 200]
    assert all(r.body == standin.received[0].body for r in standin.received)  # the same batch each time
    assert standin.tracked == hits  # tracked exactly once
    assert errors(logs) == []
    assert_token_kept_secret(logs, standin)


def test_standin_fail_next_goes_back_to_200(standin: MatomoStandIn, fast_backoff: None) -> None:
    standin.behaviour = Behaviour(status=500, fail_next=1)
    result = make_transport(standin, timeout=0.3).send([hit()])
    assert result.outcome is Outcome.DELIVERED


@pytest.mark.parametrize("status", [502, 503, 504, 408])
def test_other_retryable_statuses_are_retried(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, fast_backoff: None, status: int
) -> None:
    standin.behaviour = Behaviour(status=status, fail_next=1)
    result = make_transport(standin).send([hit()])
    assert result.outcome is Outcome.DELIVERED
    assert result.attempts == 2
    assert standin.tracked == [hit()]


def test_429_retry_after_is_honoured(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, fast_backoff: None
) -> None:
    standin.behaviour = Behaviour(status=429, fail_next=1, retry_after="1")
    result = make_transport(standin, timeout=5.0).send([hit()])
    assert result.outcome is Outcome.DELIVERED
    assert result.attempts == 2
    assert [r.answer_status for r in standin.received] == [429, 200]
    gap = standin.received[1].arrived - standin.received[0].arrived
    assert 0.9 <= gap < 2.0  # the header's 1 s, not the 0.05 s backoff
    assert standin.tracked == [hit()]
    assert_token_kept_secret(logs, standin)


def test_retry_after_beyond_the_deadline_gives_up_at_once(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, fast_backoff: None
) -> None:
    standin.behaviour = Behaviour(status=503, retry_after="120")
    started = time.monotonic()
    result = make_transport(standin, timeout=2.0).send([hit()])
    assert result == SendResult(
        Outcome.GAVE_UP, attempts=1, retry_after=120.0, answered=True, status=503, cause="HTTP 503"
    )
    assert time.monotonic() - started < 0.5
    assert len(standin.received) == 1


def test_slow_answer_past_the_deadline_gives_up_bounded_by_the_deadline(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, fast_backoff: None
) -> None:
    timeout = 0.5
    standin.behaviour = Behaviour(delay=1.5)
    started = time.monotonic()
    result = make_transport(standin, timeout=timeout).send([hit()])
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.GAVE_UP
    assert result.attempts == 1
    assert timeout - 0.05 <= elapsed < timeout + 0.3
    assert_token_kept_secret(logs)


def test_close_during_backoff_cancels_promptly(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting = threading.Event()

    def long_backoff(attempt: int) -> float:
        waiting.set()
        return 10.0

    monkeypatch.setattr(retry_module, "backoff", long_backoff)
    transport = make_transport(standin, timeout=60.0)
    standin.stop()
    results = []
    sender = threading.Thread(target=lambda: results.append(transport.send([hit()])))
    sender.start()
    assert waiting.wait(5.0)
    started = time.monotonic()
    transport.close()
    sender.join(timeout=0.5)
    elapsed = time.monotonic() - started
    assert not sender.is_alive()
    assert elapsed < 0.5
    [result] = results
    assert result.outcome is Outcome.CANCELLED
    assert result.attempts == 1
    assert result.answered is False
    assert_token_kept_secret(logs)


def test_send_after_close_is_cancelled_without_network(standin: MatomoStandIn) -> None:
    transport = make_transport(standin)
    transport.close()
    result = transport.send([hit()])
    assert result.outcome is Outcome.CANCELLED
    assert standin.received == []


def test_repeated_failures_are_logged_rate_limited(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, fast_backoff: None
) -> None:
    transport = make_transport(standin, timeout=0.2)
    standin.stop()
    for _ in range(3):
        assert transport.send([hit()]).outcome is Outcome.GAVE_UP
    assert len(warnings(logs)) == 1
    connect = [r for r in logs.records if "could not reach Matomo" in r.getMessage()]
    assert len(connect) == 1


def test_transport_needs_an_endpoint() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        HttpSender(Settings.from_env({}, dry_run=True))


@given(st.dictionaries(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1), st.text()))
def test_the_fast_query_encoding_is_urlencode_byte_for_byte(hit: dict[str, str]) -> None:
    from urllib.parse import urlencode

    from otel_matomo._bulk import _query

    assert _query(hit) == urlencode(hit, errors="replace")


@pytest.mark.parametrize("length", [1, 511, 512, 513, 5000])
def test_the_fast_query_encoding_matches_urlencode_past_the_cached_length(length: int) -> None:
    # Values up to 512 characters are quoted once and cached; longer ones every time: both give urlencode's bytes.
    from urllib.parse import urlencode

    from otel_matomo._bulk import _query

    for value in ("a b&c=d/é" * length)[:length], ("x" * length), ("%" * length):
        hit = {"url": value, "ua": value, "rand": "00ff"}
        assert _query(hit) == urlencode(hit, errors="replace")
        assert _query(hit) == urlencode(hit, errors="replace")  # the second time from the cache


def _ssl_context(transport: HttpSender) -> object:
    return transport._client._transport._pool._ssl_context  # type: ignore[attr-defined]


def test_an_https_endpoint_verifies_certificates() -> None:
    import ssl

    settings = Settings.from_env({}, endpoint="https://matomo.example", site_id=1, token_auth=WRITE_TOKEN)
    context = _ssl_context(HttpSender(settings))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname


def test_a_plain_http_endpoint_loads_no_certificate_store() -> None:
    # It never uses TLS (no redirects are followed); the store would only lengthen the application's GC pauses.
    import ssl

    settings = Settings.from_env({}, endpoint="http://127.0.0.1:8765", site_id=1, token_auth=WRITE_TOKEN)
    context = _ssl_context(HttpSender(settings))
    assert isinstance(context, ssl.SSLContext)
    assert context.cert_store_stats()["x509_ca"] == 0
    assert not HttpSender(settings)._client.follow_redirects


# --- only what Matomo confirmed counts ------------------------------------------------------------------------------


def make_pipeline(standin: MatomoStandIn, timeout: float = 2.0) -> Pipeline:
    settings = transport_settings(standin, timeout=timeout)
    return Pipeline(settings, sender=HttpSender(settings))


def test_an_answer_that_confirms_nothing_leaves_every_hit_unconfirmed(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture
) -> None:
    standin.behaviour = Behaviour(body=b'{"status":"success","tracked":0,"invalid":0}')
    pipeline = make_pipeline(standin)
    result = pipeline.send([hit(1), hit(2), hit(3)])
    assert result == SendResult(Outcome.DELIVERED, attempts=1, unconfirmed=3, answered=True, status=200)
    assert len(standin.received) == 1  # not sent again: Matomo may have stored them
    stats = pipeline.stats
    assert (stats.tracked, stats.invalid, stats.unconfirmed, stats.lost, stats.batches) == (0, 0, 3, 0, 1)
    [warning] = warnings(logs)
    assert "accounted for 0 of 3 hits (tracked 0, invalid 0); the other 3 may or may not be recorded" in (
        warning.getMessage()
    )
    assert errors(logs) == []
    assert_token_kept_secret(logs, standin)


def test_an_answer_that_confirms_part_of_the_batch_counts_only_that_part(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture
) -> None:
    standin.behaviour = Behaviour(body=b'{"status":"success","tracked":2,"invalid":0}')
    pipeline = make_pipeline(standin)
    result = pipeline.send([hit(1), hit(2), hit(3)])
    assert (result.outcome, result.tracked, result.invalid, result.unconfirmed) == (Outcome.DELIVERED, 2, 0, 1)
    assert (pipeline.stats.tracked, pipeline.stats.unconfirmed) == (2, 1)
    [warning] = warnings(logs)
    assert "accounted for 2 of 3 hits (tracked 2, invalid 0); the other 1 may or may not" in warning.getMessage()


def test_negative_counts_are_a_malformed_answer_retried_and_never_counted(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, fast_backoff: None
) -> None:
    standin.behaviour = Behaviour(body=b'{"status":"success","tracked":-5,"invalid":0}')
    pipeline = make_pipeline(standin, timeout=0.4)
    assert pipeline.deliver([hit(1), hit(2)]) is False
    assert len(standin.received) >= 3  # sent again, as after a 5xx
    stats = pipeline.stats
    assert (stats.tracked, stats.invalid, stats.unconfirmed, stats.lost) == (0, 0, 0, 2)
    [error] = errors(logs)
    assert "did not answer as Matomo's bulk tracking API does (negative counts: " in error.getMessage()


def test_counts_for_more_hits_than_were_sent_are_a_malformed_answer(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture
) -> None:
    standin.behaviour = Behaviour(body=b'{"status":"success","tracked":5,"invalid":0}')
    pipeline = make_pipeline(standin)
    result = pipeline.send([hit(1), hit(2)], retry=False)
    assert result == SendResult(
        Outcome.GAVE_UP, attempts=1, answered=True, status=200, cause="an answer that is not Matomo's"
    )
    assert (pipeline.stats.tracked, pipeline.stats.invalid, pipeline.stats.unconfirmed) == (0, 0, 0)
    [error] = errors(logs)
    assert "(counts for 5 hits, 2 sent: " in error.getMessage()


class _Exaggerating:
    """A sender whose counts cannot be true, as a faulty custom sender might report them."""

    reaches_matomo = True

    def send(self, hits: Sequence[Hit], *, retry: bool = True) -> SendResult:
        return SendResult(Outcome.PARTIAL, tracked=-5, invalid=-1, unconfirmed=-2, attempts=1, answered=True)

    def close(self) -> None:
        pass


def test_the_pipeline_counters_never_go_negative() -> None:
    pipeline = Pipeline(Settings.from_env({}, dry_run=True, visitor_id_secret=SECRET), sender=_Exaggerating())
    pipeline.send([hit(1)])
    stats = pipeline.stats
    assert (stats.tracked, stats.invalid, stats.unconfirmed, stats.batches) == (0, 0, 0, 1)


# --- answered or unreachable ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_retryable_status_is_an_answer(standin: MatomoStandIn, logs: pytest.LogCaptureFixture, status: int) -> None:
    standin.behaviour = Behaviour(status=status)
    result = make_transport(standin).send([hit()], retry=False)
    assert result == SendResult(Outcome.GAVE_UP, attempts=1, answered=True, status=status, cause=f"HTTP {status}")


def test_a_500_until_the_deadline_is_an_answer(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, fast_backoff: None
) -> None:
    standin.behaviour = Behaviour(status=500)
    result = make_transport(standin, timeout=0.3).send([hit()])
    assert (result.outcome, result.answered, result.status) == (Outcome.GAVE_UP, True, 500)
    assert result.attempts == len(standin.received) >= 2


def test_connection_refused_is_no_answer(standin: MatomoStandIn, logs: pytest.LogCaptureFixture) -> None:
    standin.stop()
    result = make_transport(standin).send([hit()], retry=False)
    assert result == SendResult(Outcome.GAVE_UP, attempts=1, answered=False, status=0, cause="connection refused")


def test_a_settled_batch_is_an_answer(standin: MatomoStandIn) -> None:
    result = make_transport(standin).send([hit(1), hit(2)])
    assert result == SendResult(Outcome.DELIVERED, tracked=2, attempts=1, answered=True, status=200)


# --- why Matomo could not be reached, in words ------------------------------------------------------------------


def unreachable(endpoint: str, logs: pytest.LogCaptureFixture, timeout: float = 2.0) -> tuple[SendResult, str]:
    """Send one hit to ``endpoint`` without retrying; the result and the one "could not reach" line."""
    settings = Settings.from_env(
        {}, endpoint=endpoint, site_id=1, token_auth=WRITE_TOKEN, timeout=timedelta(seconds=timeout)
    )
    result = HttpSender(settings).send([hit()], retry=False)
    [line] = [r.getMessage() for r in logs.records if "could not reach Matomo" in r.getMessage()]
    return result, line


def test_connection_refused_is_said_in_words(standin: MatomoStandIn, logs: pytest.LogCaptureFixture) -> None:
    # An endpoint never holds a password (test_endpoint.py): the URL is safe to show.
    standin.stop()
    port = standin.url.rpartition(":")[2]
    result, line = unreachable(f"http://127.0.0.1:{port}/matomo.php", logs)
    assert (result.outcome, result.answered) == (Outcome.GAVE_UP, False)
    assert line == (
        f"otel-matomo: could not reach Matomo at http://127.0.0.1:{port}/matomo.php: connection refused (ConnectError);"
        " retrying"
    )


def test_a_name_that_does_not_resolve_is_said_in_words(logs: pytest.LogCaptureFixture) -> None:
    # .invalid never resolves (RFC 6761), with or without a network.
    result, line = unreachable("http://matomo.example.invalid/matomo.php", logs)
    assert result.answered is False
    assert ": name does not resolve (DNS) (ConnectError); retrying" in line


def test_no_answer_within_the_deadline_is_said_in_words(standin: MatomoStandIn, logs: pytest.LogCaptureFixture) -> None:
    standin.behaviour = Behaviour(delay=1.0)
    result, line = unreachable(f"{standin.url}/matomo.php", logs, timeout=0.3)
    assert (result.outcome, result.answered, result.status) == (Outcome.GAVE_UP, False, 0)
    assert ": timed out (ReadTimeout); retrying" in line


def test_a_tls_failure_is_said_in_words(standin: MatomoStandIn, logs: pytest.LogCaptureFixture) -> None:
    # https to a plain-http port: the handshake fails before any HTTP is spoken.
    result, line = unreachable(f"{standin.url.replace('http://', 'https://')}/matomo.php", logs)
    assert result.answered is False
    assert re.search(r": TLS error \([a-z ]+\) \(ConnectError\); retrying$", line), line
