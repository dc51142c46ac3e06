"""The shop of ``test_outages.py`` in a process of its own: ``python tests/e2e/outage_app.py PORT``.

FastAPI under uvicorn, instrumented in code with ``MatomoSpanProcessor`` configured from the
``OTEL_EXPORTER_MATOMO_*`` variables (``SPOOL_DIR``, ``BUFFER_MAX_HITS`` ...). ``GET /_outage/stats`` (not traced)
answers the processor's figures and the process's resident memory, for the memory test; ``POST /_outage/flush``
(not traced) calls ``force_flush``, so that a test need not wait out the processor's backoff.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from otel_matomo import REQUEST_HEADERS, MatomoSpanProcessor


def rss_kib(pid: int | str = "self") -> int:
    """``VmRSS`` of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def create_app(processor: MatomoSpanProcessor) -> FastAPI:
    shop = FastAPI()

    @shop.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    @shop.get("/healthz")
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    @shop.get("/_outage/stats")
    def stats() -> dict[str, object]:
        buffer = processor._worker._buffer
        return {
            "pid": os.getpid(),
            "rss_kib": rss_kib(),
            "buffer": len(buffer),
            "buffer_bytes": getattr(buffer, "size_bytes", None),
            "queue": len(processor._worker._queue),
            "stats": dataclasses.asdict(processor.stats),
        }

    @shop.post("/_outage/flush")
    def flush() -> dict[str, bool]:
        return {"flushed": processor.force_flush(10_000)}

    return shop


def main() -> None:
    port = int(sys.argv[1])
    processor = MatomoSpanProcessor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    app = create_app(processor)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls="_outage/",
        http_capture_headers_server_request=list(REQUEST_HEADERS),
        exclude_spans=["receive", "send"],
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
