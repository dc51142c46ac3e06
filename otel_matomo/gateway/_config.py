"""The gateway's own options (``OTEL_MATOMO_GATEWAY_*`` or command-line flags), validated once at start-up.

What a hit looks like and where it goes stays in the exporter's ``OTEL_EXPORTER_MATOMO_*`` variables
(:class:`~otel_matomo.settings.Settings`), so a gateway and an in-process exporter configured alike produce the
same hits. Only what a network receiver adds lives here: where to listen, who may send, how much to accept, and
which Matomo site each ``service.name`` belongs to. Errors name the flag and the variable, as Settings' do.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from otel_matomo._names import ENV_PREFIX as MATOMO_ENV_PREFIX
from otel_matomo._names import GATEWAY_ENV_PREFIX as ENV_PREFIX
from otel_matomo._settings import ConfigurationError, Settings

DEFAULT_PORT = 4318
"""The OTLP/HTTP port, so that clients' default endpoint reaches the gateway."""
DEFAULT_MAX_BODY_SIZE = 16 * 1024 * 1024
DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_DRAIN_TIMEOUT_S = 10.0
_MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens and what it accepts; the token stays out of ``repr``."""

    host: str = "127.0.0.1"
    """Loopback unless told otherwise: a receiver reachable from the network lets anyone inject visits."""
    port: int = DEFAULT_PORT
    token: str | None = field(default=None, repr=False)
    """The bearer token every request must carry; ``None`` accepts any sender."""
    sites: Mapping[str, int] = field(default_factory=dict)
    """``service.name`` -> Matomo site id."""
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    """Bytes a request body may have, before and after decompression."""
    queue_size: int = DEFAULT_QUEUE_SIZE
    """Hits waiting for Matomo; beyond it requests get 429 so that senders back off and retry."""
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_S
    """Seconds the queue may take to reach Matomo at shutdown."""

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
    ) -> GatewayConfig:
        """Arguments (the command-line flags) win over ``OTEL_MATOMO_GATEWAY_*`` in ``environ``.

        ``drain_timeout`` is in seconds as an argument and in milliseconds as a variable, like
        ``OTEL_EXPORTER_MATOMO_TIMEOUT``. The token comes from ``OTEL_MATOMO_GATEWAY_TOKEN`` or from a file
        (``--token-file``, ``OTEL_MATOMO_GATEWAY_TOKEN_FILE``), never from a flag that ``ps`` would show.
        """
        read = _Reader(os.environ if environ is None else environ)
        host_text = read.raw("HOST", host) or "127.0.0.1"
        return cls(
            host=host_text,
            port=read.whole("PORT", "--port", port, DEFAULT_PORT, "a TCP port number, e.g. 4318", maximum=65535),
            token=read.token(token_file),
            sites=read.sites(sites),
            max_body_size=read.whole(
                "MAX_BODY_SIZE", "--max-body-size", max_body_size, DEFAULT_MAX_BODY_SIZE, "a number of bytes"
            ),
            queue_size=read.whole("QUEUE_SIZE", "--queue-size", queue_size, DEFAULT_QUEUE_SIZE, "a number of hits"),
            drain_timeout=read.drain_timeout(drain_timeout),
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


class _Reader:
    """Reads one option at a time, naming ``--flag (VARIABLE)`` in every error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, suffix: str, value: object) -> str | None:
        if value is not None:
            return str(value).strip()
        text = self._environ.get(ENV_PREFIX + suffix, "").strip()
        return text or None

    @staticmethod
    def error(suffix: str, flag: str, problem: str, expected: str) -> ConfigurationError:
        return ConfigurationError(f"{flag} ({ENV_PREFIX}{suffix}) {problem}: expected {expected}")

    def whole(
        self, suffix: str, flag: str, value: int | str | None, default: int, expected: str, maximum: int | None = None
    ) -> int:
        text = self.raw(suffix, value)
        if text is None:
            return default
        if not (text.isascii() and text.isdigit()) or int(text) < 1 or (maximum is not None and int(text) > maximum):
            raise self.error(suffix, flag, f"is {text!r}", expected)
        return int(text)

    def drain_timeout(self, seconds: float | None) -> float:
        if seconds is not None:
            if isinstance(seconds, bool) or not 0 < seconds < math.inf:
                raise ConfigurationError(f"--drain-timeout is {seconds!r}: expected a positive number of seconds")
            return float(seconds)
        text = self.raw("DRAIN_TIMEOUT", None)
        if text is None:
            return DEFAULT_DRAIN_TIMEOUT_S
        try:
            millis = float(text)
        except ValueError:
            millis = math.nan
        if not 0 < millis < math.inf:
            raise self.error("DRAIN_TIMEOUT", "--drain-timeout", f"is {text!r}", "a positive number of milliseconds")
        return millis / 1000.0

    def token(self, token_file: str | None) -> str | None:
        expected = f"a random string of at least {_MIN_TOKEN_LENGTH} visible characters, e.g. `openssl rand -hex 32`"
        direct = self.raw("TOKEN", None)
        path = self.raw("TOKEN_FILE", token_file)
        if direct is not None and path is not None:
            raise ConfigurationError(
                f"both {ENV_PREFIX}TOKEN and a token file (--token-file, {ENV_PREFIX}TOKEN_FILE) are set: "
                "expected one of them"
            )
        if path is not None:
            try:
                direct = Path(path).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as error:
                raise self.error(
                    "TOKEN_FILE", "--token-file", f"cannot be read ({type(error).__name__})", "a readable file"
                ) from None
            suffix, flag = "TOKEN_FILE", "--token-file"
        else:
            suffix, flag = "TOKEN", "the token"
        if direct is None:
            return None
        # Never echo the value: it is a secret, even when mistyped.
        if len(direct) < _MIN_TOKEN_LENGTH or not direct.isascii() or not direct.isprintable() or " " in direct:
            raise self.error(suffix, flag, "is not a usable bearer token", expected)
        return direct

    def sites(self, value: str | None) -> dict[str, int]:
        expected = "service.name=site id pairs separated by commas, e.g. shop=1,blog=2"
        text = self.raw("SITES", value)
        sites: dict[str, int] = {}
        for entry in (text or "").split(","):
            if not entry.strip():
                continue
            name, equals, site = entry.rpartition("=")
            name, site = name.strip(), site.strip()
            if not equals or not name or not (site.isascii() and site.isdigit()) or int(site) < 1:
                raise self.error("SITES", "--sites", f"has the entry {entry.strip()!r}", expected)
            if name in sites:
                raise self.error("SITES", "--sites", f"names {name!r} twice", expected)
            sites[name] = int(site)
        return sites
