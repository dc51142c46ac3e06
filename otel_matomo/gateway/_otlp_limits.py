"""The decoding budget of one export request: how much a sender may put in it, and what the gateway says when it
puts more.

Two kinds of limit, because OTLP answers them differently:

- Limits on the request as a whole (spans in it, the memory its decoded form would take) refuse it before it is
  materialised: :class:`RequestTooLarge`, HTTP 413 with ``RESOURCE_EXHAUSTED``, which OTLP clients do not
  retry, since the same body would never fit. Accepting the first spans and rejecting the rest instead would
  make every batch of a sender configured too large lose its tail quietly (partial success is only logged by
  SDKs); a 413 names the option at once.
- Limits on one span (attributes, events and links, string and array lengths) reject that span alone: it is
  counted in ``partial_success`` with the limit and its variable, and the request's other spans are kept, so
  one odd span (a huge ``db.statement`` on a client span) never costs a batch of page views.

The memory bound is :data:`DECODED_FACTOR` times the body limit: each decoder estimates, before it builds
anything, what the request would take once decoded (a cost per field and per message, plus string bytes) and
refuses beyond it, so one request holds at most a small multiple of ``MAX_BODY_SIZE`` however its bytes are spent.
"""

from __future__ import annotations

from dataclasses import dataclass

from otel_matomo._names import GATEWAY_ENV_PREFIX as ENV_PREFIX
from otel_matomo.gateway._config import GatewayConfig

DECODED_FACTOR = 8
"""A request may take this many times ``MAX_BODY_SIZE`` once decoded (128 MiB at the default), as the decoders
estimate it. Real requests are estimated at about 6 times their size in protobuf (every body under the body limit
fits) and 10 times in OTLP/JSON (a JSON body of spans with many short attributes fits up to about 13 MiB; above,
the answer says to send smaller batches)."""


class RequestTooLarge(ValueError):
    """The request as a whole is over a decoding limit (413, not retried); the message names the limit's option."""


@dataclass(frozen=True)
class DecodeLimits:
    """The decoding limits of one request, from the gateway's options (``GatewayConfig()`` has the defaults)."""

    max_body_size: int
    max_spans: int
    max_attributes: int
    max_string_length: int
    max_array_length: int

    @classmethod
    def of(cls, config: GatewayConfig) -> DecodeLimits:
        """The limits ``config`` sets."""
        return cls(
            max_body_size=config.max_body_size,
            max_spans=config.max_spans,
            max_attributes=config.max_attributes,
            max_string_length=config.max_string_length,
            max_array_length=config.max_array_length,
        )

    @property
    def max_decoded(self) -> int:
        """Estimated bytes the decoded request may take."""
        return DECODED_FACTOR * self.max_body_size

    def too_many_spans(self) -> RequestTooLarge:
        return RequestTooLarge(
            f"the request holds more than {self.max_spans} spans ({ENV_PREFIX}MAX_SPANS); send smaller batches"
        )

    def too_large_decoded(self) -> RequestTooLarge:
        return RequestTooLarge(
            f"the request would take more than {self.max_decoded} bytes once decoded ({DECODED_FACTOR} times "
            f"{ENV_PREFIX}MAX_BODY_SIZE); send smaller batches"
        )

    @property
    def too_many_attributes(self) -> str:
        """Why a span is rejected, for ``partial_success`` (as are the two below)."""
        return f"with more than {self.max_attributes} attributes, events or links ({ENV_PREFIX}MAX_ATTRIBUTES)"

    @property
    def too_long_string(self) -> str:
        return f"with a string longer than {self.max_string_length} bytes ({ENV_PREFIX}MAX_STRING_LENGTH)"

    @property
    def too_long_array(self) -> str:
        return f"with an array of more than {self.max_array_length} values ({ENV_PREFIX}MAX_ARRAY_LENGTH)"


DEFAULT_LIMITS = DecodeLimits.of(GatewayConfig())
"""The limits of a gateway with default options."""
