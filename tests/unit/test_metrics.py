"""``PipelineMetrics`` through an SDK ``MeterProvider`` and an in-memory reader: names, units, values, attributes."""

from __future__ import annotations

import dataclasses
import re
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    InMemoryMetricReader,
    Metric,
    Sum,
)

from otel_matomo import _metrics as metrics_module
from otel_matomo._metrics import ADJUSTMENTS, DROP_REASONS, METER_NAME, PipelineMetrics
from otel_matomo._sending import Outcome
from otel_matomo._types import Adjustment, DropReason, ExportStats


@pytest.fixture(autouse=True)
def only_this_tests_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    """The queue gauge sums every live pipeline of the process; other tests' processors may still be alive."""
    monkeypatch.setattr(metrics_module, "_queues", weakref.WeakKeyDictionary())


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    meter_provider = MeterProvider(metric_readers=[reader])
    yield meter_provider
    meter_provider.shutdown()


@pytest.fixture
def instruments(provider: MeterProvider) -> PipelineMetrics:
    return PipelineMetrics(meter_provider=provider)


def collect(reader: InMemoryMetricReader) -> dict[str, Metric]:
    data = reader.get_metrics_data()
    if data is None:
        return {}
    found = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == METER_NAME
            assert scope.scope.version  # the package version, or 0+unknown from a bare source tree
            for metric in scope.metrics:
                found[metric.name] = metric
    return found


def points(metric: Metric) -> dict[tuple[tuple[str, Any], ...], Any]:
    """Each data point by its sorted attributes."""
    return {tuple(sorted((point.attributes or {}).items())): point for point in metric.data.data_points}


def counter_values(metric: Metric) -> dict[tuple[tuple[str, Any], ...], int]:
    assert isinstance(metric.data, Sum)
    assert metric.data.is_monotonic
    return {key: point.value for key, point in points(metric).items()}


def test_counters_have_names_units_descriptions_and_values(
    instruments: PipelineMetrics, reader: InMemoryMetricReader
) -> None:
    instruments.hits_sent(5)
    instruments.hits_sent(3)
    instruments.hits_tracked(7)
    instruments.hits_invalid(1)
    instruments.retry()
    instruments.retry(2)

    metrics = collect(reader)

    expected = {
        "otel_matomo.hits.sent": ("{hit}", 8),
        "otel_matomo.hits.tracked": ("{hit}", 7),
        "otel_matomo.hits.invalid": ("{hit}", 1),
        "otel_matomo.export.retries": ("{retry}", 3),
    }
    for name, (unit, value) in expected.items():
        metric = metrics[name]
        assert metric.unit == unit
        assert metric.description
        assert counter_values(metric) == {(): value}


def test_dropped_by_reason(instruments: PipelineMetrics, reader: InMemoryMetricReader) -> None:
    instruments.hits_dropped(DropReason.QUEUE_FULL, 4)
    instruments.hits_dropped(DropReason.OPTED_OUT)
    instruments.hits_dropped(DropReason.OPTED_OUT, 2)
    instruments.hits_dropped(DropReason.OUTAGE_BOUND, 10)

    metric = collect(reader)["otel_matomo.hits.dropped"]

    assert metric.unit == "{hit}"
    assert counter_values(metric) == {
        (("reason", "queue_full"),): 4,
        (("reason", "opted_out"),): 3,
        (("reason", "outage_bound"),): 10,
    }


def test_adjusted_by_reason(instruments: PipelineMetrics, reader: InMemoryMetricReader) -> None:
    instruments.hits_adjusted(Adjustment.TRUNCATED, 2)
    instruments.hits_adjusted(Adjustment.TIME_CLAMPED)
    instruments.hits_adjusted(Adjustment.FORWARDED_MALFORMED, 0)

    metric = collect(reader)["otel_matomo.hits.adjusted"]

    assert metric.unit == "{hit}"
    assert counter_values(metric) == {(("reason", "truncated"),): 2, (("reason", "time_clamped"),): 1}


_COUNTERS_THAT_ARE_NO_DROP = {"requests", "tracked", "invalid", "batches", *ADJUSTMENTS}


def test_one_vocabulary_for_drops_the_enum_the_stats_the_metric_and_the_readme() -> None:
    values = [reason.value for reason in DropReason]
    fields = [field.name for field in dataclasses.fields(ExportStats)]
    drop_fields = [name for name in fields if name not in _COUNTERS_THAT_ARE_NO_DROP]
    assert sorted(values) == sorted(drop_fields), "each DropReason value is the ExportStats field that counts it"
    assert set(ADJUSTMENTS) <= set(fields), "each Adjustment value is the ExportStats field that counts it"
    assert tuple(adjustment.value for adjustment in Adjustment) == ADJUSTMENTS
    assert len(set(values)) == len(values)
    assert tuple(values) == DROP_REASONS, "the metric's reasons are the enum's, in its order"
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith("| `otel_matomo.hits.dropped`")]
    assert re.findall(r"`(\w+)`", row.rpartition("`reason`:")[2]) == values, "the README lists the same reasons"


def test_export_duration_histogram(instruments: PipelineMetrics, reader: InMemoryMetricReader) -> None:
    instruments.export_duration(0.02, Outcome.DELIVERED)
    instruments.export_duration(0.3, Outcome.DELIVERED)
    instruments.export_duration(12.5, "gave_up")
    instruments.export_duration(0.1)

    metric = collect(reader)["otel_matomo.export.duration"]

    assert metric.unit == "s"
    assert isinstance(metric.data, Histogram)
    by_outcome = points(metric)
    delivered = by_outcome[(("outcome", "delivered"),)]
    assert delivered.count == 2
    assert delivered.sum == pytest.approx(0.32)
    assert by_outcome[(("outcome", "gave_up"),)].count == 1
    assert by_outcome[()].count == 1
    # Second-scale buckets, not the SDK's millisecond-scale defaults.
    assert delivered.explicit_bounds[0] == 0.005
    assert 10.0 in delivered.explicit_bounds


def test_queue_length_gauge_reads_the_registered_callback(
    instruments: PipelineMetrics, reader: InMemoryMetricReader
) -> None:
    assert "otel_matomo.queue.length" not in collect(reader)  # nothing registered yet: no data point

    queue = [1, 2, 3]
    instruments.observe_queue_length(lambda: len(queue))
    metric = collect(reader)["otel_matomo.queue.length"]
    assert metric.unit == "{hit}"
    assert isinstance(metric.data, Gauge)
    assert [point.value for point in metric.data.data_points] == [3]

    queue.append(4)
    assert [point.value for point in collect(reader)["otel_matomo.queue.length"].data.data_points] == [4]
    instruments.observe_queue_length(None)


def test_every_instance_counts_in_the_queue_gauge(provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    # The SDK keeps only the first registration's callbacks for an instrument name; both queues must count.
    exporter_side, processor_side = PipelineMetrics(meter_provider=provider), PipelineMetrics(meter_provider=provider)
    exporter_side.observe_queue_length(lambda: 2)
    processor_side.observe_queue_length(lambda: 5)
    exporter_side.hits_sent(1)
    processor_side.hits_sent(3)

    metrics = collect(reader)

    assert [point.value for point in metrics["otel_matomo.queue.length"].data.data_points] == [7]
    assert counter_values(metrics["otel_matomo.hits.sent"]) == {(): 4}

    exporter_side.observe_queue_length(None)
    assert [point.value for point in collect(reader)["otel_matomo.queue.length"].data.data_points] == [5]
    processor_side.observe_queue_length(None)


def test_a_failing_queue_callback_is_ignored(
    instruments: PipelineMetrics, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    def broken() -> int:
        raise RuntimeError("boom")

    instruments.observe_queue_length(broken)
    instruments.hits_sent(1)

    metrics = collect(reader)

    assert "otel_matomo.queue.length" not in metrics
    assert counter_values(metrics["otel_matomo.hits.sent"]) == {(): 1}

    healthy = PipelineMetrics(meter_provider=provider)
    healthy.observe_queue_length(lambda: 3)
    assert [point.value for point in collect(reader)["otel_matomo.queue.length"].data.data_points] == [3]
    healthy.observe_queue_length(None)
    instruments.observe_queue_length(None)


def test_nonsense_is_ignored_not_raised(instruments: PipelineMetrics, reader: InMemoryMetricReader) -> None:
    instruments.hits_sent(0)
    instruments.hits_sent(-3)
    instruments.hits_dropped("excluded", 0)
    instruments.export_duration(-1.0)
    instruments.export_duration(float("nan"))
    instruments.retry(0)

    metrics = collect(reader)

    assert "otel_matomo.hits.sent" not in metrics
    assert "otel_matomo.hits.dropped" not in metrics
    assert "otel_matomo.export.retries" not in metrics


def test_instrument_errors_never_escape(instruments: PipelineMetrics, monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def add(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("broken SDK")

        def record(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("broken SDK")

    for name in ("_sent", "_tracked", "_invalid", "_dropped", "_retries", "_duration"):
        monkeypatch.setattr(instruments, name, Broken())

    instruments.hits_sent(1)
    instruments.hits_tracked(1)
    instruments.hits_invalid(1)
    instruments.hits_dropped("lost", 1)
    instruments.retry()
    instruments.export_duration(1.0, "delivered")


def test_without_a_meter_provider_everything_is_a_no_op() -> None:
    instruments = PipelineMetrics()  # the global provider: a no-op proxy unless the application set one

    instruments.hits_sent(1)
    instruments.hits_dropped("excluded")
    instruments.export_duration(0.5)
    instruments.observe_queue_length(lambda: 1)
