"""The endpoint option's kind: a Matomo URL checked in full at start-up, never echoed with what may be a secret.

An endpoint that passes here is one every export can send to: ``http://host:notaport`` used to pass, and every
export then logged a traceback. Credentials are refused rather than stripped: a ``user:password@`` would reach
httpx (whose own log prints the URL) and a ``token_auth`` in the query would travel in every request line, where
the token belongs in POST bodies only. No message repeats what stands before an ``@`` nor any query.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from otel_matomo._names import ENV_PREFIX
from otel_matomo._options import Invalid

_HOST = re.compile(r"[\w-]+(\.[\w-]+)*\.?")
"""Dot-separated labels of letters (any script: httpx encodes IDNA), digits, ``-`` and ``_``."""
_AUTHORITY = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]*)(:(?P<port>.*))?", re.DOTALL)
_FORM = "the Matomo base URL or its matomo.php URL, http(s)://host[:port][/path]"
_TOKEN = f"a token goes in {ENV_PREFIX}TOKEN_AUTH, sent in POST bodies only"


@dataclass(frozen=True)
class Endpoint:
    expected: str = f"{_FORM}, e.g. https://matomo.example.com or http://10.0.0.5:8080/matomo.php"

    def parse(self, raw: Any, _argument: bool) -> str:
        text = str(raw)
        _refuse_secrets(text)
        try:
            parts = urlsplit(text)
        except ValueError as error:  # brackets that hold no IPv6 address
            raise Invalid(f"is {text!r}, which is no URL ({error})") from None
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise Invalid(f"is {text!r}, which has no http:// or https:// and host")
        _check_authority(parts.netloc)
        path = parts.path if parts.path.endswith(".php") else parts.path.rstrip("/") + "/matomo.php"
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    def show(self, _default: Any) -> str:
        return "none"


def _refuse_secrets(text: str) -> None:
    """Refuse credentials, a query and a fragment, showing only what cannot be a secret."""
    if "@" in text:  # anywhere: a password holding '/', '?' or '#' ends the netloc early for urlsplit
        after = re.split(r"[/?#]", text.rpartition("@")[2], maxsplit=1)[0]
        raise Invalid(
            f"holds credentials before the host ('…@{after}'), which are never sent nor logged",
            f"{_FORM} without them; {_TOKEN}",
        )
    pieces = re.split(r"([?#])", text, maxsplit=1)
    if len(pieces) == 1:
        return
    base, _, rest = pieces
    if "token_auth" in rest.lower():
        raise Invalid(f"is {base!r} with a token_auth in its query", f"{_FORM} without a query; {_TOKEN}")
    raise Invalid(f"is {base!r} with a query or fragment", f"{_FORM} without them")


def _check_authority(netloc: str) -> None:
    """A host (a name, an IPv4 address or a bracketed IPv6 one) and an optional port from 1 to 65535."""
    found = _AUTHORITY.fullmatch(netloc)
    host = found["host"] if found else ""
    if not found or not host:
        raise Invalid(f"has the host {netloc!r}", f"{_FORM}, an IPv6 address in brackets (http://[::1]:8080)")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise Invalid(f"has the host {host!r}, which is no IPv6 address") from None
    elif not _HOST.fullmatch(host):
        raise Invalid(f"has the host {host!r}", f"{_FORM}, the host a name or an IP address")
    port = found["port"]
    if port is not None and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise Invalid(f"has the port {port!r}", f"{_FORM}, the port a number from 1 to 65535")
