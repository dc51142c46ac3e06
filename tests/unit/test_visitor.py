"""``visitor_id``: a keyed, stable, 16-hex-character id per client IP and user agent."""

from __future__ import annotations

import hashlib
import re

from hypothesis import given
from hypothesis import strategies as st

from otel_matomo._visitor import visitor_id

SECRET = b"0123456789abcdef-secret"
OTHER_SECRET = b"fedcba9876543210-secret"
IP = "203.0.113.7"
UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
HEX16 = re.compile(r"[0-9a-f]{16}")


def test_sixteen_lower_hex() -> None:
    assert HEX16.fullmatch(visitor_id(SECRET, IP, UA))


def test_stable() -> None:
    assert visitor_id(SECRET, IP, UA) == visitor_id(SECRET, IP, UA)
    assert visitor_id(bytes(SECRET), str(IP), str(UA)) == visitor_id(SECRET, IP, UA)


def test_differs_by_ip() -> None:
    assert visitor_id(SECRET, IP, UA) != visitor_id(SECRET, "203.0.113.8", UA)
    assert visitor_id(SECRET, IP, UA) != visitor_id(SECRET, "2001:db8::7", UA)


def test_differs_by_user_agent() -> None:
    assert visitor_id(SECRET, IP, UA) != visitor_id(SECRET, IP, UA + " ")
    assert visitor_id(SECRET, IP, UA) != visitor_id(SECRET, IP, "curl/8.5.0")


def test_differs_by_secret() -> None:
    assert visitor_id(SECRET, IP, UA) != visitor_id(OTHER_SECRET, IP, UA)


def test_ip_and_user_agent_do_not_run_into_each_other() -> None:
    assert visitor_id(SECRET, "1.2.3.4", "5 agent") != visitor_id(SECRET, "1.2.3.45", " agent")


def test_missing_values_give_a_valid_id() -> None:
    for ip, ua in [(None, None), (IP, None), (None, UA)]:
        assert HEX16.fullmatch(visitor_id(SECRET, ip, ua))
    assert visitor_id(SECRET, None, UA) != visitor_id(SECRET, IP, UA)


def test_not_an_unkeyed_hash_of_ip_and_user_agent() -> None:
    """An unsalted hash of IPv4 x common user agents can be brute-forced back to the visitor's address."""
    produced = visitor_id(SECRET, IP, UA)
    for separator in ("", "\0", " ", "|", ":", "\n"):
        message = f"{IP}{separator}{UA}".encode()
        for algorithm in ("sha256", "sha1", "md5", "sha512", "blake2b"):
            digest = hashlib.new(algorithm, message).hexdigest()
            assert produced != digest[:16]
            assert produced != digest[-16:]
    assert produced != hashlib.sha256(SECRET + IP.encode() + UA.encode()).hexdigest()[:16]


@given(secret=st.binary(min_size=16, max_size=64), ip=st.none() | st.text(), ua=st.none() | st.text())
def test_any_input_gives_sixteen_lower_hex(secret: bytes, ip: str | None, ua: str | None) -> None:
    assert HEX16.fullmatch(visitor_id(secret, ip, ua))


def test_cached_and_long_user_agents_give_the_same_keyed_hash() -> None:
    # Ids are cached for user agents up to 512 characters and computed every time beyond: the same HMAC either way.
    import hmac

    for ua in (UA, "M" * 512, "M" * 513, "é" * 3000):
        expected = hmac.new(SECRET, f"{IP}\0{ua}\0".encode(), hashlib.sha256).hexdigest()[:16]
        assert visitor_id(SECRET, IP, ua) == visitor_id(SECRET, IP, ua) == expected
        assert visitor_id(OTHER_SECRET, IP, ua) != expected
