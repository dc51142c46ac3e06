"""A linear pass over a protobuf ``ExportTraceServiceRequest`` in its wire format, before anything is parsed.

``ParseFromString`` materialises every message of a body at once: 15 MB of empty spans (2 bytes each) became
1.3 GB of upb messages, and the Python loop over them 45 s of CPU. This pass walks the bytes instead, with the
schema of the few OTLP messages the gateway reads, and for each span finds where it lies and whether it keeps
the per-span limits, while it counts the spans and estimates what the decoded request would take. A request over
a whole-request limit is refused here (:class:`~otel_matomo.gateway._otlp_limits.RequestTooLarge`), before any
message exists; the decoder then parses one span at a time, so protobuf's memory is that of one span, and the
GIL is given up between spans.

Its cost is one step per field (never per byte: strings are skipped by their length), and the estimate charges
every field, so the pass is linear in the body and stops as soon as the estimate is over the budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from otel_matomo.gateway._otlp_limits import DecodeLimits
from otel_matomo.gateway._otlp_records import MalformedPayload

_FIELD_COST = 16
"""Estimated bytes a field takes once decoded, besides its string bytes: a slot, a pointer, a small int."""
_MESSAGE_COST = 64
"""Estimated bytes of a message, besides its fields: a dict, a record, a upb message."""
_MAX_DEPTH = 100
"""Nesting upb accepts (its default recursion limit); deeper is malformed, as it was when upb said so."""
_LENGTH_DELIMITED, _VARINT, _FIXED64, _FIXED32 = 2, 0, 1, 5
_STRING_TAGS = frozenset({0x0A, 0x3A})
"""``AnyValue`` fields 1 (``string_value``) and 7 (``bytes_value``), length-delimited."""


@dataclass(frozen=True)
class _Message:
    """What the pass knows of one message type: which fields are messages or strings, and which are counted."""

    messages: dict[int, _Message] = field(default_factory=dict)
    strings: frozenset[int] = frozenset()
    limited: frozenset[int] = frozenset()
    """Repeated fields limited by ``max_attributes`` (attributes, events, links, map entries)."""
    array: bool = False
    """An ``ArrayValue``: its values (field 1, limited) are limited by ``max_array_length`` instead."""


_ANY = _Message(strings=frozenset({1, 7}))
_KEY_VALUE = _Message({2: _ANY}, frozenset({1}))
_ANY.messages.update(
    {5: _Message({1: _ANY}, limited=frozenset({1}), array=True), 6: _Message({1: _KEY_VALUE}, limited=frozenset({1}))}
)
_ATTRIBUTES = _Message({1: _KEY_VALUE}, limited=frozenset({1}))
"""A ``Resource``: attributes in field 1."""
_SCOPE = _Message({3: _KEY_VALUE}, frozenset({1, 2}), frozenset({3}))
_EVENT = _Message({3: _KEY_VALUE}, frozenset({2}), frozenset({3}))
_LINK = _Message({4: _KEY_VALUE}, frozenset({1, 2, 3}), frozenset({4}))
_STATUS = _Message(strings=frozenset({2}))
_SPAN = _Message(
    {9: _KEY_VALUE, 11: _EVENT, 13: _LINK, 15: _STATUS}, frozenset({1, 2, 3, 4, 5}), frozenset({9, 11, 13})
)


@dataclass
class SpanPlace:
    """Where one span lies in the body, and the first per-span limit it breaks (``None``: it keeps them all)."""

    start: int
    end: int
    problem: str | None
    scope: tuple[int, int] | None = None
    """Where its ``InstrumentationScope`` lies, whose name says where ``client.address`` comes from."""


@dataclass
class ResourcePlan:
    """One ``ResourceSpans``: where its resource lies (a message given twice is merged, so possibly in parts), the
    first limit the resource breaks (then all its spans are rejected), and its spans."""

    resource: list[tuple[int, int]] = field(default_factory=list)
    problem: str | None = None
    spans: list[SpanPlace] = field(default_factory=list)


class Scan:
    """One pass over one body under ``limits``; :meth:`plan` is the result."""

    def __init__(self, body: bytes, limits: DecodeLimits) -> None:
        self.body = body
        self.limits = limits
        self.budget = limits.max_decoded
        self.spans = 0

    def plan(self) -> list[ResourcePlan]:
        """Each ``ResourceSpans`` with its resource and spans; raises ``MalformedPayload`` or ``RequestTooLarge``."""
        try:
            return [
                self._resource_spans(start, end)
                for number, start, end in self._fields(0, len(self.body))
                if number == 1
            ]
        except IndexError:
            raise _malformed("a field runs past the end of the body") from None

    def _resource_spans(self, start: int, end: int) -> ResourcePlan:
        plan = ResourcePlan()
        for number, value_start, value_end in self._fields(start, end):
            if number == 1:
                plan.resource.append((value_start, value_end))
                problem = self.check(value_start, value_end, _ATTRIBUTES, 2)
                plan.problem = plan.problem or problem
            elif number == 2:
                self._scope_spans(value_start, value_end, plan)
        return plan

    def _scope_spans(self, start: int, end: int, plan: ResourcePlan) -> None:
        scope = None
        spans = []
        for number, value_start, value_end in self._fields(start, end):
            if number == 1:  # the scope: its structure checked, and its place kept for its spans (any field order)
                self.check(value_start, value_end, _SCOPE, 3)
                scope = (value_start, value_end)
            elif number == 2:
                self.spans += 1
                if self.spans > self.limits.max_spans:
                    raise self.limits.too_many_spans()
                spans.append(SpanPlace(value_start, value_end, self.check(value_start, value_end, _SPAN, 3)))
        for span in spans:
            span.scope = scope
        plan.spans.extend(spans)

    def _fields(self, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        """The length-delimited fields of the message at ``start:end`` (the others are stepped over), charged to
        the budget as messages: the three outer levels, which only the walk above reads."""
        body = self.body
        position = start
        while position < end:
            tag, position = _tag(body, position)
            value_start, position = _step(body, position, tag & 7, end)
            self._charge(_FIELD_COST + _MESSAGE_COST)
            if tag & 7 == _LENGTH_DELIMITED:
                yield tag >> 3, value_start, position

    def check(self, start: int, end: int, message: _Message, depth: int) -> str | None:
        """The first limit the message at ``start:end`` breaks, or ``None``; charges its estimate to the budget.

        The hot loop of the pass: one-byte tags and lengths (nearly all of them) are read inline.
        """
        if depth > _MAX_DEPTH:
            raise _malformed("it is nested too deeply")
        body, limits = self.body, self.limits
        cap = limits.max_array_length if message.array else limits.max_attributes
        problem = None
        counts: dict[int, int] = {}
        position, cost = start, 0
        while position < end:
            tag = body[position]
            if 7 < tag < 0x80:  # one byte, and not field number 0 (which _tag refuses)
                position += 1
            else:
                tag, position = _tag(body, position)
            cost += _FIELD_COST
            if tag & 7 != _LENGTH_DELIMITED:
                if tag & 7 == _VARINT and position < end and body[position] < 0x80:  # kind, a small count
                    position += 1
                else:
                    position = _step(body, position, tag & 7, end)[1]
                continue
            length = body[position]
            if length < 0x80:
                position += 1
            else:
                length, position = _varint(body, position)
            value_start, position = position, position + length
            if position > end:
                raise _malformed(f"a field runs past its message at byte {value_start}")
            number = tag >> 3
            if number in message.limited:
                counts[number] = counts.get(number, 0) + 1
                if counts[number] > cap and problem is None:
                    problem = limits.too_long_array if message.array else limits.too_many_attributes
            child = message.messages.get(number)
            if (
                child is _ANY
                and length > 1
                and body[value_start] in _STRING_TAGS
                and body[value_start + 1] == length - 2
            ):
                # A string alone in its AnyValue, one-byte length: most attribute values, read without a call.
                cost += _MESSAGE_COST + _FIELD_COST + length
                if length - 2 > limits.max_string_length and problem is None:
                    problem = limits.too_long_string
                continue
            if child is not None:
                self._charge(cost + _MESSAGE_COST)
                cost = 0
                inner = self.check(value_start, position, child, depth + 1)
                problem = problem or inner
                continue
            cost += length
            if length > limits.max_string_length and number in message.strings and problem is None:
                problem = limits.too_long_string
        self._charge(cost)
        return problem

    def _charge(self, cost: int) -> None:
        self.budget -= cost
        if self.budget < 0:
            raise self.limits.too_large_decoded()


def _tag(body: bytes, position: int) -> tuple[int, int]:
    """The tag (field number and wire type) and the position after it."""
    tag, after = _varint(body, position)
    if tag >> 3 == 0:
        raise _malformed(f"field number 0 at byte {position}")
    return tag, after


def _step(body: bytes, position: int, wire: int, end: int) -> tuple[int, int]:
    """Where the field's value starts and where the next field starts (past ``end`` is malformed)."""
    if wire == _LENGTH_DELIMITED:
        length, position = _varint(body, position)
        after = position + length
    elif wire == _VARINT:
        after = _varint(body, position)[1]
    elif wire == _FIXED64:
        after = position + 8
    elif wire == _FIXED32:
        after = position + 4
    else:  # groups: proto2 only, never in OTLP
        raise _malformed(f"wire type {wire} at byte {position}")
    if after > end:
        raise _malformed(f"a field runs past its message at byte {position}")
    return position, after


def _varint(body: bytes, position: int) -> tuple[int, int]:
    """A varint and the position after it: at most 10 bytes, as protobuf reads them."""
    byte = body[position]
    if byte < 0x80:
        return byte, position + 1
    number, shift = byte & 0x7F, 7
    for index in range(position + 1, position + 10):
        byte = body[index]
        number |= (byte & 0x7F) << shift
        if byte < 0x80:
            return number, index + 1
        shift += 7
    raise _malformed(f"a varint longer than 10 bytes at byte {position}")


def _malformed(detail: str) -> MalformedPayload:
    return MalformedPayload(f"the body is not a protobuf ExportTraceServiceRequest ({detail})")
