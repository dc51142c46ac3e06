"""Where otel-matomo's CPU per request goes, in process: the benchmark's FastAPI app driven through ASGI without a
server, so that the figures are not buried under the network's and uvicorn's share.

Each measurement is a fresh process (one variant, one stage) that serves warm-up requests and then ``--requests``
more, one after another on one event loop, and prints the CPU time of all its threads and of its main thread per
request. Stages cut otel-matomo's pipeline short, to see what each part costs:

- ``full``: as shipped;
- ``no-translation``: the worker takes the queued spans and drops them (the queue and intake's wake-ups remain);
- ``no-queue``: ``on_end`` queues nothing (``on_start``/``on_end``, the hook and the ``Location`` capture remain).

Variants are ``benchmarks/apps``' ``BENCH_VARIANT`` (``otel``, ``hook``, ``otel-lean``, ``lean``, ...); the stages
apply to otel-matomo's variants. Hits go to ``--matomo`` (run ``benchmarks/standin.py PORT``, or hits wait and are
lost at exit, which costs nothing here). Rounds alternate; medians are printed. Pin it for steadier figures:
``taskset -c 0 python benchmarks/in_process.py --variants otel,hook --stages full,no-translation,no-queue``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
USER_AGENT = (
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", USER_AGENT),
    (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"accept-language", b"fr-FR,fr;q=0.9,en;q=0.8"),
    (b"referer", b"https://www.google.com/search?q=shoes"),
    (b"x-forwarded-for", b"203.0.113.7"),
]
"""What ``run.py``'s wrk sends, as an ASGI server hands it over."""
WARM_UP = 2000


def _scope(number: int) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/42",
        "raw_path": b"/items/42",
        "query_string": b"q=shoes&utm_source=news",
        "root_path": "",
        "headers": list(HEADERS),
        "client": ("127.0.0.1", 40000 + number % 16),  # wrk's 16 connections
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _serve(app: Any, requests: int) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    for number in range(requests):
        await app(_scope(number), receive, send)


def _cut(stage: str) -> None:
    """Cut the pipeline short for ``stage``, before the app (and its processor) is built."""
    if stage == "no-queue":
        from otel_matomo._worker import DeliveryWorker

        DeliveryWorker.offer = lambda *_: True  # type: ignore[method-assign,assignment]
    elif stage == "no-translation":
        from otel_matomo._pipeline import Pipeline, Translation

        Pipeline.translate = lambda *_, **__: Translation([])  # type: ignore[method-assign,assignment]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(requests: int, stage: str) -> None:
    """In the child: serve, then print ``all-threads-µs main-thread-µs`` per request."""
    _cut(stage)
    sys.path.insert(0, str(HERE / "apps"))
    import asgi_app  # reads BENCH_VARIANT and builds the app's tracing
    import common

    asyncio.run(_serve(asgi_app.application, WARM_UP))
    started, started_main = _cpu(), time.thread_time()
    asyncio.run(_serve(asgi_app.application, requests))
    if common._exporter is not None and hasattr(common._exporter, "force_flush"):
        common._exporter.force_flush()  # the worker's share of these requests is in the figure
    main = time.thread_time() - started_main
    print(f"{(_cpu() - started) / requests * 1e6:.1f} {main / requests * 1e6:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="otel,hook")
    parser.add_argument("--stages", default="full", help="full,no-translation,no-queue")
    parser.add_argument("--requests", type=int, default=15_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--matomo", default="http://127.0.0.1:8765", help="the stand-in's URL")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child's stage
    args = parser.parse_args()
    if args.measure is not None:
        measure(args.requests, args.measure)
        return
    variants = [variant.strip() for variant in args.variants.split(",")]
    stages = [stage.strip() for stage in args.stages.split(",")]
    configs = [  # OpenTelemetry alone has no pipeline to cut: measured once per round
        (variant, "full") if variant.startswith("otel") else (variant, stage)
        for variant in variants
        for stage in stages
    ]
    configs = list(dict.fromkeys(configs))
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {config: [] for config in configs}
    for _, (variant, stage) in itertools.product(range(args.rounds), configs):
        env = dict(os.environ, BENCH_VARIANT=variant, BENCH_MATOMO_URL=args.matomo)
        command = [sys.executable, __file__, "--measure", stage, "--requests", str(args.requests)]
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout.split()
        figures[(variant, stage)].append((float(output[0]), float(output[1])))
    print(f"µs of CPU per request, medians of {args.rounds} alternated rounds of {args.requests} requests")
    print(f"{'variant':12} {'stage':15} {'all threads':>12} {'main thread':>12}")
    for (variant, stage), values in figures.items():
        every = statistics.median(value[0] for value in values)
        main_thread = statistics.median(value[1] for value in values)
        print(f"{variant:12} {stage:15} {every:12.1f} {main_thread:12.1f}")


if __name__ == "__main__":
    main()
