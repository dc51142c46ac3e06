"""Processor cost on the request thread: µs per request that ``MatomoSpanProcessor``'s ``on_start`` and ``on_end``
add, in process, with nothing else in the way (no server, no instrumentation, no worker).

Each request is what FastAPI's instrumentation records: a server span and two nested ``http send`` spans. The
same loop runs on a provider with no processor and on one with ``MatomoSpanProcessor`` whose queue hand-off is
replaced by a no-op (the worker translating would add its own CPU, which ``run.py`` measures), alternated.

Run alone: ``python benchmarks/processor_cost.py [--requests N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from otel_matomo import MatomoSpanProcessor
from otel_matomo._worker import DeliveryWorker

ATTRIBUTES = {"http.method": "GET", "http.scheme": "http", "http.target": "/items/42", "http.route": "/items/{id}"}


def per_request(provider: TracerProvider, requests: int) -> float:
    """µs per request of one server span with two nested spans, started and ended as current spans."""
    tracer = provider.get_tracer("opentelemetry.instrumentation.asgi")
    started = time.perf_counter()
    for _ in range(requests):
        with tracer.start_as_current_span("GET /items/{id}", kind=SpanKind.SERVER, attributes=ATTRIBUTES):
            with tracer.start_as_current_span("GET /items/{id} http send"):
                pass
            with tracer.start_as_current_span("GET /items/{id} http send"):
                pass
    return (time.perf_counter() - started) / requests * 1e6


def _queued(*_: object) -> bool:
    """The queue hand-off, replaced: the record is dropped, and nothing wakes the worker."""
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    DeliveryWorker.offer = _queued  # type: ignore[method-assign,assignment]  # no worker load
    bare = TracerProvider()
    with_processor = TracerProvider()
    with_processor.add_span_processor(
        MatomoSpanProcessor(endpoint="http://127.0.0.1:9", site_id=1, token_auth="0" * 32, dry_run=True)
    )
    pairs = [(per_request(bare, args.requests), per_request(with_processor, args.requests)) for _ in range(args.rounds)]
    for bare_us, processor_us in pairs:
        print(
            f"no processor {bare_us:6.1f} µs/request   MatomoSpanProcessor {processor_us:6.1f}   "
            f"added {processor_us - bare_us:5.1f}"
        )
    added = statistics.median(processor - base for base, processor in pairs)
    print(f"median added by on_start + on_end (3 spans per request): {added:.1f} µs/request")
    with_processor.shutdown()


if __name__ == "__main__":
    main()
