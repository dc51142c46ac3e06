"""otel-matomo benchmarks: request-path cost against OpenTelemetry alone and the per-framework trackers.

One entry point; prints a Markdown report and writes it to ``benchmarks/RESULTS.md`` (or ``--output``).

    python benchmarks/run.py            # the full run (about 12 minutes on 2 cores)
    python benchmarks/run.py --smoke    # a few seconds of everything, no thresholds, for CI

Everything runs on loopback: a Matomo stand-in (``standin.py``), the app under test (uvicorn or gunicorn, a
separate process) and ``wrk`` (a separate process). With 2+ cores the app is pinned to CPU 0 and wrk + the
stand-in to CPU 1, so that the app's process has one core of its own, as the exporter thread must share it.

Targets are informational: PASS/MISS is printed, the exit status never depends on them. The exit status is
non-zero only when the benchmark itself could not run (a missing tool, an app that did not start).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APPS = HERE / "apps"
PYTHON = sys.executable

PATH = "/items/42?q=shoes&utm_source=news"
HEADERS = {
    "User-Agent": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36"
    ),
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "fr-FR,fr;q=0.9,en;q=0.8",
    "Referer": "https://www.google.com/search?q=shoes",
    "X-Forwarded-For": "203.0.113.7",
}
"""What a browser sends (no DNT / Sec-GPC, which otel-matomo honours by sending no hit)."""

VARIANTS = {
    "plain": "(a) no instrumentation",
    "otel": "(b) OpenTelemetry, no exporter",
    "otel-lean": "(b2) (b) without the instrumentation's send/receive spans",
    "capture": "(b1) (b) + header capture",
    "bsp": "(b+) (b) + header capture + BatchSpanProcessor(no-op exporter)",
    "matomo": "(c) (b) + BatchSpanProcessor(MatomoSpanExporter)",
    "processor": "(c2) (b) + MatomoSpanProcessor",
    "hook": "(c3) (b) + MatomoSpanProcessor + request_hook",
    "lean": "(c4) (c3) without the send/receive spans (in code, Matomo the only backend)",
    "peer": "(d) peer tracker",
    "zc-otel": "(z) zero code: opentelemetry-instrument, OTEL_TRACES_EXPORTER=none",
    "zc-matomo": "(z1) zero code: opentelemetry-instrument, OTEL_TRACES_EXPORTER=matomo",
}
TRACKERS = ("matomo", "processor", "hook", "lean", "zc-matomo")
"""The otel-matomo variants; ``processor`` and ``hook`` only where the package has what they use."""
ZERO_CODE = {"zc-otel": "none", "zc-matomo": "matomo"}
"""Variants run under ``opentelemetry-instrument`` (the app itself sets nothing up): their OTEL_TRACES_EXPORTER."""
ASGI_ONLY = ("otel-lean", "lean")
"""Variants that leave out the ASGI middleware's send/receive spans: WSGI has none."""
BASELINE = {"zc-matomo": "zc-otel"}
"""The variant each tracker is compared with when it is not (b): the same zero-code app with OpenTelemetry alone."""
TARGET_SHARE = {"zc-matomo": 0.90}
"""The share of its baseline's throughput each tracker should keep, when not 95% (issue 18)."""
PEERS = {"asgi": "asgi-matomo", "wsgi": "flask-matomo2"}
PACKAGES = (
    "otel-matomo",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-fastapi",
    "opentelemetry-instrumentation-flask",
    "fastapi",
    "starlette",
    "uvicorn",
    "flask",
    "gunicorn",
    "httpx",
    "asgi-matomo",
    "flask-matomo2",
    "matomo-core",
    "httpx2",
)


# --------------------------------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


PORTS: list[int] = []
"""``--ports FROM-TO``: the ports the stand-in and the apps take, in turn (empty: any free port)."""


def free_port() -> int:
    for _ in range(len(PORTS) or 1):
        port = 0
        if PORTS:
            port = PORTS.pop(0)
            PORTS.append(port)  # in turn, so that a port just closed rests before it is used again
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise SystemExit(f"no free port in --ports {PORTS[0]}-{PORTS[-1]}")


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def thread_cpu(pids: Sequence[int]) -> dict[str, float]:
    """CPU seconds (user + system) of the processes' threads, split into the request threads (each process's
    main thread, which serves the requests under uvicorn and gunicorn's sync workers) and all the others (the
    Matomo worker, the SDK's batch thread)."""
    totals = {"request": 0.0, "background": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            totals["request" if tid == pid else "background"] += (int(fields[11]) + int(fields[12])) / tick
    return totals


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Pinning:
    """``taskset`` prefixes: the app on CPU 0, the load generator and the stand-in on CPU 1."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None

    def app(self) -> list[str]:
        return ["taskset", "-c", "0"] if self.enabled else []

    def load(self) -> list[str]:
        return ["taskset", "-c", "1"] if self.enabled else []


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def pct(ratio: float | None) -> str:
    return "n/a" if ratio is None or math.isnan(ratio) else f"{ratio * 100:.1f}%"


# ------------------------------------------------------------------------------------------ Matomo stand-in


class StandIn:
    """``standin.py`` in its own process; ``stop`` + ``start`` on the same port is a Matomo outage."""

    def __init__(self, pinning: Pinning) -> None:
        self.port = free_port()
        self.pinning = pinning
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [*self.pinning.load(), PYTHON, str(HERE / "standin.py"), str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("ready"):
            raise SystemExit(f"the Matomo stand-in did not start: {line!r}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def stats(self) -> dict[str, Any]:
        return dict(get_json(self.url + "/stats"))

    def reset(self) -> None:
        get_json(self.url + "/reset")


# ------------------------------------------------------------------------------------------------- the apps


@dataclass
class App:
    """One app server process (uvicorn or gunicorn) running one variant."""

    stack: str
    variant: str
    matomo_url: str
    pinning: Pinning
    wsgi_workers: int = 2
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.stack == "asgi":
            server = ["-m", "uvicorn", "--app-dir", str(APPS), "asgi_app:application"]
            server += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
            # The pure-Python loop and parser (not uvloop/httptools), whatever else is installed.
            server += ["--loop", "asyncio", "--http", "h11", "--no-access-log", "--log-level", "warning"]
        else:
            server = ["-m", "gunicorn", "--chdir", str(APPS), "--workers", str(self.wsgi_workers)]
            server += ["--worker-class", "sync", "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning"]
            server += ["wsgi_app:app"]
        instrument = [str(Path(PYTHON).parent / "opentelemetry-instrument")] if self.variant in ZERO_CODE else []
        return [*self.pinning.app(), *instrument, PYTHON, *server]

    def start(self, timeout: float = 30.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        env = dict(os.environ, BENCH_VARIANT=self.variant, BENCH_MATOMO_URL=self.matomo_url)
        if self.variant in ZERO_CODE:
            env.update(zero_code_env(ZERO_CODE[self.variant], self.matomo_url))
        self.process = subprocess.Popen(self.command(), env=env, cwd=ROOT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.stack}/{self.variant} exited with {self.process.returncode} at start")
            try:
                self.stats()
                if self.stack == "wsgi":  # both workers up
                    self.wait_workers(deadline)
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SystemExit(f"{self.stack}/{self.variant} did not answer within {timeout:.0f}s")

    def wait_workers(self, deadline: float) -> None:
        while len(self.server_pids()) < self.wsgi_workers and time.monotonic() < deadline:
            time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        return dict(get_json(self.url + "/_stats"))

    def server_pids(self) -> list[int]:
        """The processes that serve requests: uvicorn's own, gunicorn's workers."""
        if self.process is None:
            return []
        return [self.process.pid] if self.stack == "asgi" else children(self.process.pid)

    def rss_kib(self) -> int:
        return sum(rss_kib(pid) or 0 for pid in self.server_pids())

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM (the SDK flushes its queue at exit); ``True`` when it exited in time."""
        if self.process is None:
            return True
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
            clean = True
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            clean = False
        self.process = None
        return clean


def zero_code_env(traces_exporter: str, matomo_url: str) -> dict[str, str]:
    """What a zero-code user sets: the exporter, the Matomo variables, and the stats route left untraced."""
    return {
        "OTEL_TRACES_EXPORTER": traces_exporter,
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_MATOMO_ENDPOINT": matomo_url,
        "OTEL_EXPORTER_MATOMO_SITE_ID": "1",
        "OTEL_EXPORTER_MATOMO_TOKEN_AUTH": "0123456789abcdef0123456789abcdef",  # the apps' TOKEN
        "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "/_stats",
        "OTEL_PYTHON_FLASK_EXCLUDED_URLS": "/_stats",
    }


# ------------------------------------------------------------------------------------------------------ wrk


@dataclass
class Load:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    """Socket errors plus non-2xx answers."""


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> Load:
    requests = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if not (requests and rps and p50 and p99):
        raise ValueError(f"cannot parse wrk output:\n{output}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non2xx.group(1)) if non2xx else 0
    seconds = _ms(requests.group(2) + requests.group(3)) / 1000
    return Load(int(requests.group(1)), seconds, float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), errors)


def wrk(url: str, seconds: float, connections: int, pinning: Pinning) -> Load:
    # wrk takes whole seconds only.
    command = [*pinning.load(), "wrk", "-t1", f"-c{connections}", f"-d{max(round(seconds), 1)}s", "--latency"]
    command += ["--timeout", "10s"]
    for name, value in HEADERS.items():
        command += ["-H", f"{name}: {value}"]
    command.append(url + PATH)
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if result.returncode != 0:
        raise SystemExit(f"wrk failed ({result.returncode}): {result.stderr or result.stdout}")
    return parse_wrk(result.stdout)


# ------------------------------------------------------------------------------------------ the throughput


@dataclass
class Run:
    stack: str
    variant: str
    load: Load
    rss_kib: int
    sent: int
    """Requests completed, warm-up included (wrk's count)."""
    delivered: int | None = None
    """Hits the stand-in received from this app by the time it exited."""
    batches: list[int] = field(default_factory=list)
    """Hits per bulk request during the measured load."""
    matomo_requests: int = 0
    clean_exit: bool = True
    cpu_us: dict[str, float] = field(default_factory=dict)
    """CPU µs per measured request of the request threads and of the background threads (``thread_cpu``)."""


def measure_once(app: App, standin: StandIn, args: argparse.Namespace, pinning: Pinning) -> Run:
    stack, variant = app.stack, app.variant
    try:
        app.wait_ready()
        standin.reset()
        warm = wrk(app.url, args.warmup, args.connections, pinning) if args.warmup > 0 else None
        before = standin.stats()
        pids = app.server_pids()
        cpu_before = thread_cpu(pids)
        load = wrk(app.url, args.duration, args.connections, pinning)
        cpu_after = thread_cpu(pids)
        after = standin.stats()
        memory = app.rss_kib()
    finally:
        clean = app.stop()
    final = standin.stats()
    batches = after["batch_sizes"][len(before["batch_sizes"]) :]
    return Run(
        stack,
        variant,
        load,
        memory,
        sent=(warm.requests if warm else 0) + load.requests,
        delivered=final["hits"] if variant in (*TRACKERS, "peer") else None,
        batches=batches,
        matomo_requests=after["requests"] - before["requests"],
        clean_exit=clean,
        cpu_us={part: (cpu_after[part] - cpu_before[part]) * 1e6 / max(load.requests, 1) for part in cpu_before},
    )


def throughput(args: argparse.Namespace, standin: StandIn, pinning: Pinning) -> dict[tuple[str, str], list[Run]]:
    results: dict[tuple[str, str], list[Run]] = {}
    stacks = [stack for stack in ("asgi", "wsgi") if stack in args.stacks]
    configs = [
        (stack, variant) for stack in stacks for variant in args.variants if variant not in ASGI_ONLY or stack == "asgi"
    ]
    if args.smoke:
        # The smoke run checks that everything runs, not how fast: the ASGI and WSGI apps of one variant are
        # measured at the same time, which halves its duration (wrk cannot run for less than a second).
        slots = [[config for config in configs if config[1] == variant] for variant in args.variants]
    else:
        slots = [[config] for config in configs]
    for round_index in range(args.rounds):
        # Interleaved rounds, the order rotated each round so that no variant always runs first or last.
        shift = round_index % len(slots)
        for slot in slots[shift:] + slots[:shift]:
            apps = [App(stack, variant, standin.url, pinning, args.wsgi_workers) for stack, variant in slot]
            for app in apps:
                app.launch()
            if len(apps) == 1:
                runs = [measure_once(apps[0], standin, args, pinning)]
            else:
                with concurrent.futures.ThreadPoolExecutor(len(apps)) as pool:
                    runs = list(pool.map(lambda app: measure_once(app, standin, args, pinning), apps))
            for run in runs:
                results.setdefault((run.stack, run.variant), []).append(run)
                log(
                    f"round {round_index + 1}/{args.rounds} {run.stack:4} {run.variant:9} {run.load.rps:8.1f} req/s "
                    f"p50 {run.load.p50_ms:6.2f} ms p99 {run.load.p99_ms:7.2f} ms errors {run.load.errors}"
                )
    return results


# -------------------------------------------------------------------------------------------------- memory


def memory_and_outage(variant: str, args: argparse.Namespace, standin: StandIn, pinning: Pinning) -> dict[str, Any]:
    """RSS of one ASGI app over ``--memory-requests`` requests, then through a Matomo outage under load.

    Accounting covers the app's whole life: every request wrk completed against every hit the stand-in
    counted (before it stopped, and after it came back).
    """
    app = App("asgi", variant, standin.url, pinning)
    result: dict[str, Any] = {"variant": variant}
    try:
        app.start()
        standin.reset()
        served = wrk(app.url, args.warmup, args.connections, pinning).requests if args.warmup > 0 else 0
        samples: list[tuple[int, int]] = [(0, app.rss_kib())]
        memory_served = 0
        while True:
            last_chunk = wrk(app.url, args.memory_chunk, args.connections, pinning)
            memory_served += last_chunk.requests
            samples.append((memory_served, app.rss_kib()))
            if memory_served >= args.memory_requests:
                break
        served += memory_served
        result["samples"] = samples
        log(
            f"memory {variant}: {memory_served} requests, RSS {samples[0][1] / 1024:.1f} -> "
            f"{samples[-1][1] / 1024:.1f} MiB"
        )

        # Outage: the stand-in stopped (connection refused) for --outage seconds under the same load, then back.
        # The last memory chunk is the steady load before it.
        app_before = app.stats()
        hits_before_outage = standin.stats()["hits"]
        standin.stop()  # its counters go with it
        outage_started = time.monotonic()
        during: list[tuple[float, int, float, float]] = []
        outage_served = 0
        while time.monotonic() - outage_started < args.outage:
            chunk = min(args.memory_chunk, max(args.outage - (time.monotonic() - outage_started), 1.0))
            load = wrk(app.url, chunk, args.connections, pinning)
            outage_served += load.requests
            during.append((time.monotonic() - outage_started, app.rss_kib(), load.rps, load.p99_ms))
        outage_seconds = time.monotonic() - outage_started
        standin.start()
        restarted = time.monotonic()
        recovery = wrk(app.url, args.recovery, args.connections, pinning)
        served += outage_served + recovery.requests
        # Wait for delivery to settle: the stand-in's count unchanged for 6 s (more than any schedule delay), or
        # --settle seconds. A sender in a backoff wait resumes only when that wait ends.
        last_count, last_change = standin.stats()["hits"], time.monotonic()
        settle_until = time.monotonic() + args.settle
        while time.monotonic() < settle_until and time.monotonic() - last_change < 6.0:
            time.sleep(0.5)
            count = standin.stats()["hits"]
            if count != last_count:
                last_count, last_change = count, time.monotonic()
        app_after = app.stats()
        delta = {
            key: app_after.get(key, 0) - app_before.get(key, 0)
            for key in set(app_after) | set(app_before)
            if isinstance(app_after.get(key, 0), int) and key not in ("pid", "rss_kib")
        }
        result.update(
            steady=last_chunk,
            during=during,
            outage_seconds=outage_seconds,
            recovery=recovery,
            outage_requests=outage_served,
            served=served,
            delivered=hits_before_outage + last_count,
            drained_after=last_change - restarted,
            app=delta,
            rss_end_kib=app.rss_kib(),
        )
        log(f"outage {variant}: {outage_served} requests during {outage_seconds:.0f}s, counters {delta}")
    finally:
        app.stop()
    return result


# --------------------------------------------------------------------------------------------------- report


def machine() -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        total = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        memory = f"{int(total) / 1024 / 1024:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    git = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    import otel_matomo

    return [
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {memory}; {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- otel-matomo at git {git or 'unknown'}, imported from `{Path(otel_matomo.__file__).parent}`",
        f"- {((wrk_version.stdout or wrk_version.stderr).splitlines() or ['wrk'])[0]}",
        "- " + ", ".join(versions),
        f"- Load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine: compare "
        "ratios within this run, not absolute figures across runs)",
    ]


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def summarise(runs: dict[tuple[str, str], list[Run]]) -> dict[tuple[str, str], dict[str, float]]:
    out = {}
    for key, values in runs.items():
        out[key] = {
            "rps": median([run.load.rps for run in values]),
            "p50": median([run.load.p50_ms for run in values]),
            "p99": median([run.load.p99_ms for run in values]),
            "errors": sum(run.load.errors for run in values),
            "rss": median([run.rss_kib / 1024 for run in values]),
            "cpu_request": median([run.cpu_us.get("request", float("nan")) for run in values]),
            "cpu_background": median([run.cpu_us.get("background", float("nan")) for run in values]),
            "rps_spread": (max(r.load.rps for r in values) - min(r.load.rps for r in values))
            / median([r.load.rps for r in values])
            if values
            else float("nan"),
        }
    return out


def cpu_per_request(row: dict[str, float]) -> float:
    """CPU µs per request of every thread of the app (request and background)."""
    return row["cpu_request"] + (0.0 if math.isnan(row["cpu_background"]) else row["cpu_background"])


def report(
    *,
    args: argparse.Namespace,
    runs: dict[tuple[str, str], list[Run]],
    cost: dict[str, Any] | None,
    profile: list[tuple[str, float, float, int]] | None,
    memory: list[dict[str, Any]],
    machine_lines: list[str],
    elapsed: float,
) -> str:
    lines = ["# otel-matomo benchmarks", ""]
    if args.smoke:
        lines += ["**Smoke run**: seconds of load, figures are not meaningful; targets are not judged.", ""]
    lines += ["## Machine", "", *machine_lines, ""]
    lines += [
        "## Method",
        "",
        f"- {args.rounds} interleaved rounds (order rotated each round) of {args.duration:g} s of load after "
        f"{args.warmup:g} s of warm-up, a fresh app process for every measurement; medians over rounds.",
        f"- Load: `wrk -t1 -c{args.connections} --latency`, `GET {PATH}` with a browser's headers (User-Agent, "
        "Accept-Language, Referer, X-Forwarded-For; no DNT/Sec-GPC).",
        "- ASGI: FastAPI under uvicorn (1 process, asyncio loop, h11). WSGI: Flask under gunicorn "
        f"({args.wsgi_workers} sync workers). Same app code in every variant: one route template, a SHA-256 and "
        "a small loop per request.",
        "- (b) is `FastAPIInstrumentor` / `FlaskInstrumentor` with an SDK `TracerProvider` and no span processor. "
        "(c) adds `otel_matomo.configure_header_capture()` (its cost on the request path is counted as "
        "otel-matomo's) and `BatchSpanProcessor(MatomoSpanExporter(...))` with the SDK defaults (batch 512 "
        "spans, queue 2048, 5 s), as the README's simple set-up. (c2) is the same with otel-matomo's own "
        "`MatomoSpanProcessor` instead (its defaults: batches of 500 hits, 1 s, queue 2048 server spans, retry "
        "buffer). (c3) is (c2) with `otel_matomo.request_hook` passed to the instrumentation instead of the "
        "request-header capture (`configure_header_capture(request_headers=False)`: the response's Location "
        "header only). (c4) is (c3) with the ASGI instrumentation's `http send`/`http receive` spans left out "
        "(`exclude_spans`), the README's recipe when Matomo is the provider's one backend; (b2) is (b) with the "
        "same spans left out, (c4)'s like-for-like baseline (ASGI only: WSGI has no such spans). "
        "(b1) is (b) + the header capture alone: the share of the instrumentation's own work that "
        "otel-matomo asks for. (b+) is (b) + the header capture + a `BatchSpanProcessor` whose exporter does "
        "nothing: the share of the SDK's batching, which any exporter pays. "
        "(d) is asgi-matomo (ASGI) / flask-matomo2 (WSGI): one HTTP call to Matomo "
        "inside each request. Every tracker gets the same `token_auth`, so every tracker sends the visitor IP. "
        "(z) and (z1) run the app with no set-up of its own under `opentelemetry-instrument` (every installed "
        "instrumentation, as a zero-code user gets), `OTEL_TRACES_EXPORTER=none` and `=matomo`; (z1) is judged "
        "against (z). With `matomo` alone, (z1) leaves out the send/receive spans by itself, as (c4) does.",
        "- Matomo: `benchmarks/standin.py`, an asyncio server that only counts hits and answers "
        '`{"status":"success","tracked":N,"invalid":0}` (a real Matomo is far slower, which would hurt (d) '
        "more than (c)).",
        "- CPU pinning: "
        + (
            "the app on CPU 0, wrk and the stand-in on CPU 1."
            if Pinning(not args.no_pin).enabled
            else "none (fewer than 2 cores, `--no-pin`, or no `taskset`)."
        )
        + (f" Niceness {args.nice} for every process of the benchmark (`--nice`)." if args.nice else ""),
        "",
    ]

    summary = summarise(runs)
    targets: list[tuple[str, str, bool | None]] = []
    for stack, title in (("asgi", "ASGI: FastAPI + uvicorn"), ("wsgi", "WSGI: Flask + gunicorn")):
        if not any(key[0] == stack for key in summary):
            continue
        base_a = summary.get((stack, "plain"), {}).get("rps")
        base_b = summary.get((stack, "otel"), {})
        lines += [f"## {title}", ""]
        lines += [
            "| variant | req/s | vs (a) | vs (b) | p50 ms | p99 ms | p99 vs (b) | CPU µs/req: request thread "
            "| background | RSS MiB | errors | spread |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for variant, label in VARIANTS.items():
            row = summary.get((stack, variant))
            if row is None:
                continue
            name = label if variant != "peer" else f"(d) {PEERS[stack]}"
            vs_a = row["rps"] / base_a if base_a else None
            vs_b = row["rps"] / base_b["rps"] if base_b else None
            p99_b = row["p99"] / base_b["p99"] - 1 if base_b else None
            lines.append(
                f"| {name} | {fmt(row['rps'], 0)} | {pct(vs_a)} | {pct(vs_b)} | {fmt(row['p50'], 2)} | "
                f"{fmt(row['p99'], 2)} | {'+' if (p99_b or 0) >= 0 else ''}{pct(p99_b)} | "
                f"{fmt(row['cpu_request'], 0)} | {fmt(row['cpu_background'], 0)} | {fmt(row['rss'])} | "
                f"{int(row['errors'])} | {pct(row['rps_spread'])} |"
            )
        lines += [
            "",
            "spread: (max - min) / median of req/s over the rounds, the noise of this machine. CPU µs/req: CPU "
            "time of the serving processes' threads over the measured load, divided by the requests wrk "
            "completed: the request threads (uvicorn's event loop, gunicorn's sync workers), and the others "
            "(otel-matomo's worker, the SDK's batch thread).",
            "",
        ]
        d = summary.get((stack, "peer"))
        for tracker in TRACKERS:
            c = summary.get((stack, tracker))
            tag = f"{stack.upper()} {VARIANTS[tracker].split(' ', 1)[0]}"
            b = summary.get((stack, BASELINE.get(tracker, "otel")))
            base = VARIANTS[BASELINE.get(tracker, "otel")].split(" ", 1)[0]
            share = TARGET_SHARE.get(tracker, 0.95)
            if c and b:
                targets.append(
                    (
                        f"{tag} >= {share:.0%} of {base} throughput",
                        pct(c["rps"] / b["rps"]),
                        c["rps"] >= share * b["rps"],
                    )
                )
                # One core does both: the CPU a request costs bounds throughput, and other load on a shared
                # machine moves it far less than req/s.
                cpu_ratio = cpu_per_request(b) / cpu_per_request(c)
                targets.append(
                    (
                        f"{tag} CPU per request: {base}'s / {tag.split(' ')[1]}'s >= {share:.0%}",
                        pct(cpu_ratio),
                        cpu_ratio >= share,
                    )
                )
                targets.append(
                    (
                        f"{tag} adds < 5% to {base} p99",
                        f"{(c['p99'] / b['p99'] - 1) * 100:+.1f}%",
                        c["p99"] < 1.05 * b["p99"],
                    )
                )
            if c and d:
                targets.append(
                    (
                        f"{tag} beats {PEERS[stack]} on throughput and p99",
                        f"{fmt(c['rps'], 0)} vs {fmt(d['rps'], 0)} req/s, {fmt(c['p99'], 2)} vs {fmt(d['p99'], 2)} ms",
                        c["rps"] > d["rps"] and c["p99"] < d["p99"],
                    )
                )

    # Delivery accounting and hits per Matomo request.
    delivery = []
    for (stack, variant), values in sorted(runs.items()):
        if variant not in (*TRACKERS, "peer"):
            continue
        sent = sum(run.sent for run in values)
        delivered = sum(run.delivered or 0 for run in values)
        batches = [size for run in values for size in run.batches]
        per_request = (
            median(batches)
            if variant in TRACKERS
            else median([r.load.requests / max(r.matomo_requests, 1) for r in values])
        )
        matomo_rps = median([run.matomo_requests / run.load.seconds for run in values])
        delivery.append((stack, variant, sent, delivered, per_request, len(batches), matomo_rps, values))
    if delivery:
        lines += [
            "## Delivery at steady load",
            "",
            "| stack | tracker | requests served | hits at Matomo | delivered | hits per Matomo request (median) "
            "| Matomo requests/s | clean exit |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for stack, variant, sent, delivered, per_request, _nbatches, matomo_rps, values in delivery:
            tracker = {
                "matomo": "(c) BatchSpanProcessor",
                "processor": "(c2) MatomoSpanProcessor",
                "hook": "(c3) MatomoSpanProcessor + request_hook",
                "lean": "(c4) (c3) without send/receive spans",
                "zc-matomo": "(z1) zero code",
            }.get(variant, f"(d) {PEERS[stack]}")
            lines.append(
                f"| {stack.upper()} | {tracker} | {sent:,} | {delivered:,} | {pct(delivered / sent if sent else None)} "
                f"| {fmt(per_request, 0)} | {fmt(matomo_rps, 1)} | {all(r.clean_exit for r in values)} |"
            )
            if variant in TRACKERS:
                targets.append(
                    (
                        f"{stack.upper()} {tracker.split(' ')[0]} >= 200 hits per Matomo request at steady load",
                        fmt(per_request, 0),
                        per_request >= 200,
                    )
                )
        lines += [
            "",
            "requests served: wrk's completed requests (warm-up included); hits at Matomo: what the stand-in "
            "counted by the time the app had exited (the SDK flushes its queue at exit). Requests still in flight "
            "when wrk stops are served but not counted by wrk, so a few more hits than requests is normal.",
            "",
        ]

    if cost:
        lines += [
            "## Exporter cost (translate + encode, in process)",
            "",
            "| measure | figure |",
            "|---|---:|",
            f"| translate + encode, per server span (batch of {cost['batch']}, {cost['hits']} hits) | "
            f"{fmt(cost['us_per_span'], 2)} µs |",
            "| of which translate (filter, read attributes, policy, hit) | "
            f"{fmt(cost['us_per_span_translate'], 2)} µs |",
            f"| of which encode (urlencode + JSON body) | {fmt(cost['us_per_span_encode'], 2)} µs |",
            f"| one batch of {cost['batch']} server spans | {fmt(cost['ms_per_batch'], 2)} ms, "
            f"body {cost['body_bytes']:,} bytes |",
            "| a FastAPI-shaped batch (server + INTERNAL send/receive spans), per span | "
            f"{fmt(cost['mixed_us_per_span'], 2)} µs ({cost['mixed_hits']} hits of {cost['batch']} spans) |",
            "| translate + encode, every span from a distinct visitor at a distinct page (no cache helps) | "
            f"{fmt(cost['distinct_us_per_span'], 2)} µs |",
            "",
            "Spans: every span recorded in `tests/fixtures/spans` (FastAPI, raw ASGI, Flask, raw WSGI; old, new "
            "and dup conventions; page views, API posts, 404, 500, no optional headers, repeated headers) as SDK "
            "`ReadableSpan`s, repeated to the batch size, DNT/Sec-GPC removed so that each span becomes a hit; "
            f"`token_auth` set. Median of {cost['rounds']} interleaved rounds.",
            "",
        ]
        targets.append(
            ("<= 15 µs per span translate+encode", f"{fmt(cost['us_per_span'], 2)} µs", cost["us_per_span"] <= 15)
        )
    if profile:
        lines += [
            "### Profile of translate + encode (cProfile, top functions by own time)",
            "",
            "| own % | cumulative % | calls per batch | function |",
            "|---:|---:|---:|---|",
        ]
        lines += [
            f"| {own:.1f} | {cumulative:.1f} | {calls:,} | `{name}` |" for name, own, cumulative, calls in profile
        ]
        lines += [""]

    for result in memory:
        samples = result["samples"]
        variant = result["variant"]
        tag = VARIANTS[variant].split(" ", 1)[0]
        start_index = next((i for i, (n, _) in enumerate(samples) if n >= args.memory_requests * 0.1), 1)
        first = samples[min(start_index, len(samples) - 1)]
        last = samples[-1]
        growth = (last[1] - first[1]) / 1024
        flat = growth <= max(2.0, first[1] / 1024 * 0.05)
        lines += [
            f"## Memory and outage: ASGI {VARIANTS[variant]}",
            "",
            "| point | requests | RSS MiB |",
            "|---|---:|---:|",
            f"| after warm-up | 0 | {samples[0][1] / 1024:.1f} |",
            f"| first sample past 10% | {first[0]:,} | {first[1] / 1024:.1f} |",
            f"| end | {last[0]:,} | {last[1] / 1024:.1f} |",
            f"| peak | | {max(s[1] for s in samples) / 1024:.1f} |",
            "",
            f"Growth from the 10% sample to the end: {growth:+.1f} MiB (flat: at most max(2 MiB, 5%)). "
            f"Samples (requests: MiB): "
            + ", ".join(f"{n // 1000}k: {rss / 1024:.1f}" for n, rss in samples[1 :: max(len(samples) // 10, 1)]),
            "",
        ]
        targets.append((f"{tag} flat memory across {last[0]:,} requests", f"{growth:+.1f} MiB", flat))
        during = result["during"]
        counters = result["app"]
        steady = result["steady"]
        peak_outage = max((rss for _, rss, _, _ in during), default=0)
        outage_rps = median([rps for _, _, rps, _ in during])
        outage_p99 = median([p99 for _, _, _, p99 in during])
        served, delivered = result["served"], result["delivered"]
        dropped = counters.get("queue_dropped", 0) + counters.get("queue_full", 0)
        lines += [
            f"### Matomo down for {result['outage_seconds']:.0f} s (connection refused) under the same load",
            "",
            "| measure | figure |",
            "|---|---:|",
            f"| RSS before / peak during / after recovery | {last[1] / 1024:.1f} / {peak_outage / 1024:.1f} / "
            f"{result['rss_end_kib'] / 1024:.1f} MiB |",
            f"| throughput before / during (median) / after | {fmt(steady.rps, 0)} / {fmt(outage_rps, 0)} / "
            f"{fmt(result['recovery'].rps, 0)} req/s |",
            f"| p99 before / during (median) / after | {fmt(steady.p99_ms, 2)} / {fmt(outage_p99, 2)} / "
            f"{fmt(result['recovery'].p99_ms, 2)} ms |",
            f"| requests served in the app's life / during the outage | {served:,} / {result['outage_requests']:,} |",
            f"| hits Matomo received in the app's life | {delivered:,} "
            f"({pct(delivered / served if served else None)}) |",
            f"| hits lost (served - received) | {max(served - delivered, 0):,} |",
            f"| last hit arrived after Matomo came back | {result['drained_after']:.1f} s |",
            f"| counters over the outage and recovery: exporter lost / queue drops (spans) / buffer bound / expired "
            f"| {counters.get('lost', 0):,} / {dropped:,} / {counters.get('outage_bound', 0):,} / "
            f"{counters.get('expired', 0):,} |",
            "",
            "RSS during the outage (s: MiB): " + ", ".join(f"{t:.0f}: {rss / 1024:.1f}" for t, rss, _, _ in during),
            "",
        ]
        # Bounded: the RSS reached a plateau, i.e. it grew by at most 2 MiB over the last third of the outage.
        tail = [rss for t, rss, _, _ in during if t >= result["outage_seconds"] * 2 / 3] or [peak_outage]
        plateau = max(tail) - min(tail) <= 2048
        targets.append(
            (
                f"{tag} memory bounded during the outage (plateau over its last third)",
                f"{(peak_outage - last[1]) / 1024:+.1f} MiB at peak, {(max(tail) - min(tail)) / 1024:+.1f} MiB "
                "over the last third",
                plateau,
            )
        )

    lines += ["## Targets", "", "| target | figure | verdict |", "|---|---|---|"]
    for name, figure, ok in targets:
        lines.append(f"| {name} | {figure} | {verdict(None if args.smoke else ok)} |")
    lines += [
        "",
        f"Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}. "
        f"Total run time {elapsed / 60:.1f} min. Command: `python benchmarks/run.py {' '.join(sys.argv[1:])}`.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="otel-matomo benchmarks (see benchmarks/README.md)")
    parser.add_argument("--smoke", action="store_true", help="a few seconds of everything, no targets judged")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per variant (default 4; smoke 1)")
    parser.add_argument(
        "--duration", type=float, help="seconds of measured load per round, whole seconds (default 6; smoke 1)"
    )
    parser.add_argument(
        "--warmup", type=float, help="seconds of warm-up load per round, whole seconds (default 2; smoke 0)"
    )
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--wsgi-workers", type=int, default=2, help="gunicorn sync workers (default 2)")
    parser.add_argument("--memory-requests", type=int, help="requests for the memory run (default 100000)")
    parser.add_argument("--outage", type=float, help="seconds of Matomo outage under load (default 60; smoke 1)")
    parser.add_argument(
        "--only",
        default="asgi,wsgi,cost,memory",
        help="comma-separated parts to run: asgi, wsgi, cost, memory (default all)",
    )
    parser.add_argument(
        "--variants",
        help=f"comma-separated variants to run (default all available): {', '.join(VARIANTS)}",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="add this to the niceness of every benchmark process (e.g. -10, as root, on a busy shared machine)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="S",
        help="wait up to S seconds for the 1-minute load average to drop below --quiet-load before starting",
    )
    parser.add_argument("--quiet-load", type=float, default=1.0, help="see --wait-quiet (default 1.0)")
    parser.add_argument("--ports", help="FROM-TO: the loopback ports the stand-in and the apps may use (default any)")
    parser.add_argument("--output", type=Path, help="where to write the Markdown (default benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    if args.ports:
        first, _, last = args.ports.partition("-")
        PORTS[:] = range(int(first), int(last or first) + 1)
    smoke = args.smoke
    defaults: dict[str, Any] = {
        "rounds": 1 if smoke else 4,
        "duration": 1.0 if smoke else 6.0,
        "warmup": 0.0 if smoke else 2.0,
        "memory_requests": 1_000 if smoke else 100_000,
        "outage": 1.0 if smoke else 60.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.memory_chunk = 1.0 if smoke else 5.0
    args.recovery = 1.0 if smoke else 10.0
    args.settle = 0.0 if smoke else 45.0
    parts = {part.strip() for part in args.only.split(",") if part.strip()}
    args.stacks = parts & {"asgi", "wsgi"}
    import otel_matomo

    # To measure older versions too.
    needs = {"processor": "MatomoSpanProcessor", "hook": "request_hook", "lean": "request_hook"}
    available = [v for v in VARIANTS if v not in needs or hasattr(otel_matomo, needs[v])]
    wanted = [v.strip() for v in args.variants.split(",")] if args.variants else available
    unknown = set(wanted) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    args.variants = [v for v in available if v in wanted]
    args.trackers = [v for v in TRACKERS if v in args.variants]
    args.parts = parts
    if args.output is None:
        args.output = HERE / ("RESULTS-smoke.md" if smoke else "RESULTS.md")
    return args


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    # Stop the app, wrk and the stand-in on SIGTERM, and on SIGINT even when started in the background (where
    # the shell ignores SIGINT): the `finally` clauses stop them.
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    args = parse_args(argv)
    began = time.monotonic()
    if (args.stacks or "memory" in args.parts) and shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    if args.wait_quiet:
        deadline = time.monotonic() + args.wait_quiet
        while os.getloadavg()[0] > args.quiet_load and time.monotonic() < deadline:
            log(f"load average {os.getloadavg()[0]:.2f} > {args.quiet_load}: waiting (--wait-quiet)")
            time.sleep(15)
        began = time.monotonic()
    if args.nice:
        os.nice(args.nice)  # inherited by the app, wrk and the stand-in; the cost measurement runs here
    pinning = Pinning(not args.no_pin)
    machine_lines = machine()
    standin = StandIn(pinning)
    runs: dict[tuple[str, str], list[Run]] = {}
    cost = profile = None
    memory: list[dict[str, Any]] = []
    standin.start()
    try:
        if args.stacks:
            runs = throughput(args, standin, pinning)
        if "cost" in args.parts:
            from exporter_cost import measure
            from exporter_cost import profile as run_profile

            cost = measure(rounds=1 if args.smoke else 5, min_time=0.05 if args.smoke else 1.0)
            log(f"exporter cost: {cost['us_per_span']:.2f} µs per span")
            profile = run_profile(0.2 if args.smoke else 3.0)
        if "memory" in args.parts:
            # The smoke run goes through one tracker's memory and outage code path, the last (newest) one.
            for variant in args.trackers[-1:] if args.smoke else args.trackers:
                memory.append(memory_and_outage(variant, args, standin, pinning))
    finally:
        standin.stop()
    text = report(
        args=args,
        runs=runs,
        cost=cost,
        profile=profile,
        memory=memory,
        machine_lines=machine_lines,
        elapsed=time.monotonic() - began,
    )
    print(text)
    args.output.write_text(text)
    raw = {
        "command": sys.argv[1:],
        "machine": machine_lines,
        "runs": [dataclasses.asdict(run) for values in runs.values() for run in values],
        "cost": cost,
        "profile": profile,
        "memory": [
            {key: dataclasses.asdict(value) if isinstance(value, Load) else value for key, value in result.items()}
            for result in memory
        ],
    }
    args.output.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    log(f"wrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
