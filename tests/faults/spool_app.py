"""An application process for the ``kill -9`` fault: ``MatomoSpanProcessor`` with a spool, serving page views.

``python spool_app.py ENDPOINT SPOOL_DIR FIRST COUNT RATE`` ends ``COUNT`` server spans for ``/page/FIRST`` onwards
at ``RATE`` per second, prints ``ended N`` after each, then waits to be killed (or flushes and exits when stdin
closes).
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from otel_matomo import MatomoSpanProcessor

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
TOKEN = "b" * 32


def main() -> None:
    endpoint, spool_dir, first, count, rate = sys.argv[1:6]
    processor = MatomoSpanProcessor(
        endpoint=endpoint,
        site_id=1,
        token_auth=TOKEN,
        visitor_id_secret="kill-nine-secret-0123456789",
        spool_dir=spool_dir,
        timeout=timedelta(seconds=5),
    )
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("kill-nine")
    print("ready", flush=True)
    interval = 1 / float(rate)
    for number in range(int(first), int(first) + int(count)):
        attributes = {
            "http.request.method": "GET",
            "url.scheme": "https",
            "url.path": f"/page/{number}",
            "http.response.status_code": 200,
            "network.peer.address": f"203.0.113.{number % 250 + 1}",
            "user_agent.original": UA,
        }
        tracer.start_span("GET", kind=SpanKind.SERVER, attributes=attributes).end()
        print(f"ended {number}", flush=True)
        time.sleep(interval)
    sys.stdin.read()  # the test kills this process, or closes stdin for a clean exit
    provider.shutdown()


if __name__ == "__main__":
    main()
