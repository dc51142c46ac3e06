"""What every benchmark app shares: the variant, the little work per request, the tracing set-up, the stats."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

VARIANT = os.environ.get("BENCH_VARIANT", "plain")
"""plain: no instrumentation; otel: OpenTelemetry, no exporter; capture: otel + otel-matomo's header capture;
bsp: otel + the header capture + a BatchSpanProcessor with an exporter that does nothing; matomo: otel +
BatchSpanProcessor(MatomoSpanExporter); processor: otel + MatomoSpanProcessor (otel-matomo's own processor);
hook: the processor with ``otel_matomo.request_hook`` instead of the request-header capture; lean: hook with the
ASGI middleware's send/receive spans left out (the in-code set-up when Matomo is the only backend); otel-lean:
otel with the same spans left out; peer: the peer
tracker; zc-otel and zc-matomo: nothing here, ``run.py`` starts the app under ``opentelemetry-instrument``."""
MATOMO_URL = os.environ.get("BENCH_MATOMO_URL", "http://127.0.0.1:8765")
TOKEN = "0123456789abcdef0123456789abcdef"
"""The same token_auth for every tracker, so that every tracker sends the visitor IP (cip)."""
SITE_ID = 1
STATS_PATH = "/_stats"
INSTRUMENTED = ("otel", "otel-lean", "capture", "bsp", "matomo", "processor", "hook", "lean")
LEAN = ("otel-lean", "lean")
"""Variants whose ASGI instrumentation leaves out its send/receive spans (``exclude_spans``)."""

_drops = 0
_drops_lock = threading.Lock()
_exporter: Any = None


def work(item_id: int, q: str | None) -> dict[str, object]:
    """A little CPU per request (about 20-30 microseconds), the same in every variant."""
    digest = hashlib.sha256(f"{item_id}:{q}".encode()).hexdigest()
    total = sum(i * i for i in range(200))
    return {"item_id": item_id, "q": q, "digest": digest[:16], "total": total}


def setup_tracing() -> None:
    """A TracerProvider for the otel and matomo variants; the matomo variant adds the exporter."""
    if VARIANT not in INSTRUMENTED:
        return
    global _exporter
    if VARIANT in ("capture", "bsp", "matomo", "processor", "hook", "lean"):
        import otel_matomo

        # What the README asks for before instrumenting; its cost on the request path is otel-matomo's.
        otel_matomo.configure_header_capture(request_headers=VARIANT not in ("hook", "lean"))
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    if VARIANT in ("processor", "hook", "lean"):
        from otel_matomo import MatomoSpanProcessor  # type: ignore[attr-defined]

        _exporter = MatomoSpanProcessor(endpoint=MATOMO_URL, site_id=SITE_ID, token_auth=TOKEN)
        provider.add_span_processor(_exporter)
    elif VARIANT in ("bsp", "matomo"):
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        if VARIANT == "matomo":
            from otel_matomo import MatomoSpanExporter

            _exporter = MatomoSpanExporter(endpoint=MATOMO_URL, site_id=SITE_ID, token_auth=TOKEN)
        else:

            class NoopExporter(SpanExporter):
                def export(self, spans: Any) -> SpanExportResult:  # noqa: ARG002
                    return SpanExportResult.SUCCESS

            _exporter = NoopExporter()
        processor = BatchSpanProcessor(_exporter)
        _count_queue_drops(processor)
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)


def _count_queue_drops(processor: Any) -> None:
    """Count the spans the SDK's bounded queue drops (it only logs them); private SDK API, best effort."""
    metrics = getattr(getattr(processor, "_batch_processor", None), "_metrics", None)
    if metrics is None:
        return
    original = metrics.drop_items

    def drop_items(count: int, *args: Any, **kwargs: Any) -> None:
        global _drops
        with _drops_lock:
            _drops += count
        original(count, *args, **kwargs)

    metrics.drop_items = drop_items


def request_hook() -> Any:
    """The hook the instrumentation is given: otel-matomo's in the hook variant, none otherwise."""
    if VARIANT not in ("hook", "lean"):
        return None
    import otel_matomo

    return otel_matomo.request_hook


def freeze_startup_objects() -> None:
    """With BENCH_GC_FREEZE=1 (an experiment, off by default): gc.freeze() once the app is built, so that the
    collector's full passes no longer walk every object created at import time."""
    if os.environ.get("BENCH_GC_FREEZE") == "1":
        import gc

        gc.collect()
        gc.freeze()


def stats() -> dict[str, object]:
    """Exporter counters and queue drops of this process (the matomo variant), and its RSS."""
    result: dict[str, object] = {"pid": os.getpid(), "variant": VARIANT, "queue_dropped": _drops}
    if _exporter is not None and hasattr(_exporter, "stats"):
        result.update(vars(_exporter.stats))
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                result["rss_kib"] = int(line.split()[1])
    return result
