"""The gateway's own options (``OTEL_MATOMO_GATEWAY_*`` or command-line flags), validated once at start-up.

What a hit looks like and where it goes stays in the exporter's ``OTEL_EXPORTER_MATOMO_*`` variables
(:class:`~otel_matomo.Settings`), so a gateway and an in-process exporter configured alike produce the
same hits. Only what a network receiver adds lives here: where to listen, who may send, how much to accept, and
which Matomo site each ``service.name`` belongs to. The options are rows of :data:`GATEWAY_OPTIONS`, read by the
same reader as Settings', so errors name the flag and the variable the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from otel_matomo._kinds import Flag, Number, Text, Whole
from otel_matomo._names import ENV_PREFIX as MATOMO_ENV_PREFIX
from otel_matomo._names import GATEWAY_ENV_PREFIX as ENV_PREFIX
from otel_matomo._options import ConfigurationError, Invalid, Option, OptionTable
from otel_matomo._settings import Settings, is_loopback

_MIN_TOKEN_LENGTH = 16
_PRIVATE = 0o077
"""Permission bits a token file must not have: like ssh with a private key, anything beyond its owner's."""


@dataclass(frozen=True)
class _BearerToken:
    """A bearer token, or (``from_file``) the path of a file holding one; never echoed, even mistyped."""

    from_file: bool = False
    expected: str = f"a random string of at least {_MIN_TOKEN_LENGTH} visible characters, e.g. `openssl rand -hex 32`"

    def parse(self, raw: Any, _argument: bool) -> str:
        token = str(raw)
        if self.from_file:
            token = _read_private(Path(token))
        if len(token) < _MIN_TOKEN_LENGTH or not token.isascii() or not token.isprintable() or " " in token:
            raise Invalid("is not a usable bearer token")
        return token

    def show(self, _default: Any) -> str:
        return "none"


def _read_private(path: Path) -> str:
    """The token in ``path``, refused when group or others have any access to it, as ssh does with a key: a
    readable copy is a leaked token, a writable one lets another user choose it. The message never shows it."""
    try:
        mode = path.stat().st_mode & 0o777
        if mode & _PRIVATE:
            raise Invalid(
                f"is open to group or others (mode {mode:04o})",
                f"a file only its owner can read (chmod 600 {path}), or the token in {ENV_PREFIX}TOKEN",
            )
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise Invalid(f"cannot be read ({type(error).__name__})", "a readable file") from None


@dataclass(frozen=True)
class _Sites:
    expected: str = "service.name=site id pairs separated by commas, e.g. shop=1,blog=2"

    def parse(self, raw: Any, _argument: bool) -> Mapping[str, int]:
        sites: dict[str, int] = {}
        for entry in str(raw).split(","):
            if not entry.strip():
                continue
            name, equals, site = entry.rpartition("=")
            name, site = name.strip(), site.strip()
            if not equals or not name or not (site.isascii() and site.isdigit()) or int(site) < 1:
                raise Invalid(f"has the entry {entry.strip()!r}")
            if name in sites:
                raise Invalid(f"names {name!r} twice")
            sites[name] = int(site)
        return sites

    def show(self, _default: Any) -> str:
        return "none"


# fmt: off
GATEWAY_OPTIONS = OptionTable(
    "GatewayConfig.from_env",
    ENV_PREFIX,
    (
        # Loopback unless told otherwise: a receiver reachable from the network lets anyone inject visits.
        Option("host", "HOST", Text("an address to listen on"), "127.0.0.1",
               "address to listen on (`0.0.0.0` for every interface: then a token is required)"),
        Option("port", "PORT", Whole("a TCP port number, e.g. 4318", maximum=65535), 4318,
               "TCP port (the OTLP/HTTP default)"),
        # Never a flag: `ps` would show it.
        Option("token", "TOKEN", _BearerToken(), None,
               "bearer token every request must carry, at least 16 characters (`openssl rand -hex 32`)",
               keyword=False, label="the token"),
        Option("token_file", "TOKEN_FILE", _BearerToken(from_file=True), None,
               "the same, read from a file (one of the two)", field="token"),
        Option("sites", "SITES", _Sites(), MappingProxyType({}),
               "Matomo site id per `service.name`: `shop=1,blog=2`"),
        Option("max_body_size", "MAX_BODY_SIZE", Whole("a positive whole number of bytes, e.g. 16777216"),
               16 * 1024 * 1024, "largest request body in bytes, before and after gzip (a gzip bomb is cut off there)",
               shown="16 MiB"),
        # Decoding limits (issue 17): variables only, like the token; a sender that exceeds one learns which
        # variable from the answer. Spans over a per-span limit are rejected alone, in partial_success.
        Option("max_spans", "MAX_SPANS", Whole("a positive whole number of spans, e.g. 10000"), 10_000,
               "spans in one request; more is answered 413 (the Collector's batch processor sends 8192)",
               keyword=False),
        Option("max_attributes", "MAX_ATTRIBUTES", Whole("a positive whole number, e.g. 128"), 128,
               "attributes of a span, resource, event or link, entries of a map value, and events and links of a "
               "span (the SDKs' own default limit); a span with more is rejected alone", keyword=False),
        Option("max_string_length", "MAX_STRING_LENGTH", Whole("a positive whole number of bytes, e.g. 65536"),
               65_536, "bytes of any string or bytes value, key or name; a span with a longer one is rejected alone",
               keyword=False),
        Option("max_array_length", "MAX_ARRAY_LENGTH", Whole("a positive whole number of values, e.g. 1024"),
               1_024, "values in an array attribute; a span with a longer one is rejected alone", keyword=False),
        Option("queue_size", "QUEUE_SIZE", Whole("a positive whole number of hits, e.g. 10000"), 10_000,
               "hits waiting for Matomo before senders get 429"),
        Option("drain_timeout", "DRAIN_TIMEOUT", Number("milliseconds", "10000", per_second=1000), 10.0,
               "time to deliver the queue at shutdown (milliseconds in the variable, seconds as flag)"),
        # Connection hygiene: what a client that connects and then stalls, or floods, may hold.
        Option("header_timeout", "HEADER_TIMEOUT", Number("milliseconds", "10000", per_second=1000), 10.0,
               "time a client has to send a request's headers, from connecting or its previous answer; "
               "then the connection is closed"),
        Option("body_timeout", "BODY_TIMEOUT", Number("milliseconds", "30000", per_second=1000), 30.0,
               "time a client has to send a request's body, after its headers; then the connection is closed"),
        Option("max_connections", "MAX_CONNECTIONS", Whole("a positive whole number of connections, e.g. 1000"),
               1000, "open connections served at once; requests on more get 503"),
        Option("max_body_memory", "MAX_BODY_MEMORY", Whole("a positive whole number of bytes, e.g. 134217728"),
               128 * 1024 * 1024, "bytes of request bodies held at once, while read and decoded (at least "
               "--max-body-size); beyond it 503 with Retry-After", shown="128 MiB"),
        Option("max_decoding", "MAX_DECODING", Whole("a positive whole number of requests, e.g. 4"), 4,
               "request bodies decoded at once (the CPU- and memory-heavy part); more get 503 with Retry-After"),
        Option("allow_unauthenticated", "ALLOW_UNAUTHENTICATED", Flag(), False,
               "serve a non-loopback address without a token (refused by default: anyone could send visits)"),
    ),
    labels=lambda name: "--" + name.replace("_", "-"),
    argument_heading="flag",
)
# fmt: on
"""Every gateway option; ``test_options.py`` checks it against :class:`GatewayConfig` and the README."""


def _default(name: str) -> Any:
    return GATEWAY_OPTIONS[name].default


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens and what it accepts; the token stays out of ``repr``."""

    host: str = _default("host")
    port: int = _default("port")
    token: str | None = field(default=_default("token"), repr=False)
    """The bearer token every request must carry; ``None`` accepts any sender."""
    sites: Mapping[str, int] = field(default_factory=lambda: _default("sites"))
    """``service.name`` -> Matomo site id."""
    max_body_size: int = _default("max_body_size")
    """Bytes a request body may have, before and after decompression."""
    max_spans: int = _default("max_spans")
    """Spans one request may carry (decoding limits: ``gateway._otlp_limits``)."""
    max_attributes: int = _default("max_attributes")
    """Attributes per span, resource, event or link, entries per map value, events and links per span."""
    max_string_length: int = _default("max_string_length")
    """Bytes per string or bytes value, key or name."""
    max_array_length: int = _default("max_array_length")
    """Values per array value."""
    queue_size: int = _default("queue_size")
    """Hits waiting for Matomo; beyond it requests get 429 so that senders back off and retry."""
    drain_timeout: float = _default("drain_timeout")
    """Seconds the queue may take to reach Matomo at shutdown."""
    header_timeout: float = _default("header_timeout")
    """Seconds from a connection (or the previous answer) to the end of a request's header block."""
    body_timeout: float = _default("body_timeout")
    """Seconds from the end of a request's headers to the end of its body."""
    max_connections: int = _default("max_connections")
    """Connections served at once; requests on more are answered 503."""
    max_body_memory: int = _default("max_body_memory")
    """Bytes of request bodies in memory at once; past it requests are answered 503 with ``Retry-After``."""
    max_decoding: int = _default("max_decoding")
    """Request bodies decoded at once; more are answered 503 with ``Retry-After``."""
    allow_unauthenticated: bool = _default("allow_unauthenticated")
    """Whether a non-loopback address may be served without a token."""

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        host: str | None = None,
        port: int | str | None = None,
        token_file: str | None = None,
        sites: str | None = None,
        max_body_size: int | str | None = None,
        queue_size: int | str | None = None,
        drain_timeout: float | None = None,
        header_timeout: float | None = None,
        body_timeout: float | None = None,
        max_connections: int | str | None = None,
        max_body_memory: int | str | None = None,
        max_decoding: int | str | None = None,
        allow_unauthenticated: bool | None = None,
    ) -> GatewayConfig:
        """Arguments (the command-line flags) win over ``OTEL_MATOMO_GATEWAY_*`` in ``environ``.

        ``drain_timeout`` is in seconds as an argument and in milliseconds as a variable, like
        ``OTEL_EXPORTER_MATOMO_TIMEOUT``, and so are the header and body timeouts. The token comes from
        ``OTEL_MATOMO_GATEWAY_TOKEN`` or from a file (``--token-file``, ``OTEL_MATOMO_GATEWAY_TOKEN_FILE``, which
        only its owner may read), never from a flag that ``ps`` would show. A non-loopback ``host`` without a
        token is refused unless ``allow_unauthenticated`` says so.
        """
        env = os.environ if environ is None else environ
        arguments = {
            "host": host,
            "port": port,
            "token_file": token_file,
            "sites": sites,
            "max_body_size": max_body_size,
            "queue_size": queue_size,
            "drain_timeout": drain_timeout,
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "max_connections": max_connections,
            "max_body_memory": max_body_memory,
            "max_decoding": max_decoding,
            "allow_unauthenticated": allow_unauthenticated,
        }
        if GATEWAY_OPTIONS.given("token", arguments, env) and GATEWAY_OPTIONS.given("token_file", arguments, env):
            raise ConfigurationError(
                f"both {ENV_PREFIX}TOKEN and a token file (--token-file, {ENV_PREFIX}TOKEN_FILE) are set: "
                "expected one of them"
            )
        values = GATEWAY_OPTIONS.read(arguments, env)
        token = values.pop("token_file") or values["token"]
        _refuse_open_bind(values["host"], token, values["allow_unauthenticated"])
        if values["max_body_memory"] < values["max_body_size"]:
            raise ConfigurationError(
                f"--max-body-memory ({ENV_PREFIX}MAX_BODY_MEMORY) is below --max-body-size: no request of the "
                "largest size could ever be read; expected at least as many bytes"
            )
        return cls(**{**values, "token": token})


def _refuse_open_bind(host: str, token: str | None, allowed: bool) -> None:
    """Secure by default: a gateway reachable from the network without a token lets anyone send fake visits to
    Matomo, so it starts only when the operator says, in so many words, that something else guards it."""
    if token is None and not allowed and not is_loopback(host):
        raise ConfigurationError(
            f"--host {host} listens beyond this machine without a bearer token: set {ENV_PREFIX}TOKEN or "
            f"--token-file, or pass --allow-unauthenticated ({ENV_PREFIX}ALLOW_UNAUTHENTICATED=true) if a "
            "network policy or a proxy already keeps strangers out"
        )


def matomo_settings(sites: Mapping[str, int], environ: Mapping[str, str] | None = None) -> tuple[Settings, bool]:
    """The ``OTEL_EXPORTER_MATOMO_*`` settings, and whether their site id is a default for unmapped services.

    With a site mapping, ``OTEL_EXPORTER_MATOMO_SITE_ID`` becomes optional: when it is unset, spans of services
    the mapping does not name are rejected instead of landing in some site by accident. Settings still need a
    site id to validate, so the mapping's first one stands in; each site gets its own copy anyway.
    """
    env = os.environ if environ is None else environ
    default_site = bool(env.get(MATOMO_ENV_PREFIX + "SITE_ID", "").strip()) or not sites
    settings = Settings.from_env(env, site_id=None if default_site else next(iter(sites.values())))
    return settings, default_site
