"""Temporal SDK metrics (task schedule-to-start latency, task slots, poll outcomes, request
latencies, sticky cache...) in this process's prometheus-client registry, so they leave by the
same /metrics as the service's own: the API's and `wfs worker --metrics-port`'s.

Every Temporal client of the process (app.temporal.connect) runs on one `runtime()`, whose Core
records its metrics into a MetricBuffer. A daemon thread drains the buffer every
DRAIN_SECONDS (a scrape drains it first, so figures are current) into `TemporalCollector`,
which keeps each series' state: counters' sums, gauges' last values, histograms' buckets.

Why not the SDK's alternatives (docs/observability.md says the same for operators):
- `PrometheusConfig(bind_address=...)` serves a second port from Core: a pod's
  `prometheus.io/port` annotation names one port, so the worker's wfs_* and temporal_* series
  would need two scrape configurations, and `wfs dev --processes 1` two ports per process.
- `temporalio.contrib.opentelemetry.MetricsExporter` drains the same buffer into an
  OpenTelemetry MeterProvider: every process would then need the OpenTelemetry metrics SDK and
  its Prometheus exporter (renamed series, millisecond buckets) whether tracing is on or not.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, Collector
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    BUFFERED_METRIC_KIND_HISTOGRAM,
    BufferedMetricUpdate,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)

DRAIN_SECONDS = 1.0
# Core drops updates past this many between two drains (and logs an error); a second of a busy
# worker records a few thousand.
BUFFER_SIZE = 100_000
# Every Temporal histogram is a duration, in seconds here (MetricBufferDurationFormat.SECONDS):
# schedule-to-start and request latencies from milliseconds, end-to-end latencies up to hours.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
_NOT_LABEL = re.compile(r"[^a-zA-Z0-9_]")

Labels = tuple[tuple[str, str], ...]


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0


@dataclass
class _Family:
    name: str
    documentation: str
    kind: int
    values: dict[Labels, float] = field(default_factory=dict)  # counters and gauges
    histograms: dict[Labels, _Histogram] = field(default_factory=dict)


class TemporalCollector(Collector):
    """The state of Temporal's series, fed by `drain` and read by prometheus-client."""

    def __init__(self, buffer: MetricBuffer) -> None:
        self._buffer = buffer
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        # Core hands the same attributes object for the same label set: converted once. The
        # object is kept with its labels, so its id cannot be reused by another while cached.
        self._labels: dict[int, tuple[Mapping[str, Any], Labels]] = {}

    def drain(self) -> None:
        with self._lock:
            for update in self._buffer.retrieve_updates():
                self._apply(update)

    def _apply(self, update: BufferedMetricUpdate) -> None:
        metric = update.metric
        family = self._families.get(metric.name)
        if family is None:
            family = _Family(metric.name, metric.description or metric.name, metric.kind)
            self._families[metric.name] = family
        labels = self._label_set(update.attributes)
        if metric.kind == BUFFERED_METRIC_KIND_COUNTER:
            family.values[labels] = family.values.get(labels, 0) + update.value
        elif metric.kind == BUFFERED_METRIC_KIND_GAUGE:
            family.values[labels] = update.value
        elif metric.kind == BUFFERED_METRIC_KIND_HISTOGRAM:
            histogram = family.histograms.get(labels)
            if histogram is None:
                histogram = family.histograms[labels] = _Histogram()
            histogram.counts[bisect.bisect_left(BUCKETS, update.value)] += 1
            histogram.total += update.value

    def _label_set(self, attributes: Mapping[str, Any]) -> Labels:
        cached = self._labels.get(id(attributes))
        if cached is not None and cached[0] is attributes:
            return cached[1]
        labels = tuple(sorted((_NOT_LABEL.sub("_", k), str(v)) for k, v in attributes.items()))
        self._labels[id(attributes)] = (attributes, labels)
        return labels

    def collect(self) -> Iterator[Metric]:
        self.drain()
        with self._lock:
            families = list(self._families.values())
            for family in families:
                yield _exposed(family)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unknown until Core records: never checked for name clashes


def _exposed(family: _Family) -> Metric:
    if family.kind == BUFFERED_METRIC_KIND_HISTOGRAM:
        metric = Metric(family.name, family.documentation, "histogram")
        for labels, histogram in family.histograms.items():
            base = dict(labels)
            running = 0
            for bound, count in zip((*BUCKETS, float("inf")), histogram.counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                metric.add_sample(f"{family.name}_bucket", {**base, "le": le}, running)
            metric.add_sample(f"{family.name}_count", base, running)
            metric.add_sample(f"{family.name}_sum", base, histogram.total)
        return metric
    if family.kind == BUFFERED_METRIC_KIND_COUNTER:
        # Prometheus counters end in _total, once (Core names one `local_activity_total`).
        name = family.name.removesuffix("_total")
        metric = Metric(name, family.documentation, "counter")
        for labels, value in family.values.items():
            metric.add_sample(f"{name}_total", dict(labels), value)
        return metric
    metric = Metric(family.name, family.documentation, "gauge")
    for labels, value in family.values.items():
        metric.add_sample(family.name, dict(labels), value)
    return metric


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    """The process's Temporal runtime, recording into the registry (built on first use)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            buffer = MetricBuffer(BUFFER_SIZE, MetricBufferDurationFormat.SECONDS)
            # attach_service_name off: every series would carry service_name="temporal-core-sdk".
            built = Runtime(telemetry=TelemetryConfig(metrics=buffer, attach_service_name=False))
            collector = TemporalCollector(buffer)
            REGISTRY.register(collector)
            threading.Thread(
                target=_drain_forever, args=(collector,), name="temporal-metrics", daemon=True
            ).start()
            _runtime = built
        return _runtime


def _drain_forever(collector: TemporalCollector) -> None:
    stop = threading.Event()  # never set: a daemon thread ends with the process
    while not stop.wait(DRAIN_SECONDS):
        collector.drain()


# The series deploy/prometheus/rules.yaml and the dashboard read (tests/observability checks that
# a worker exports each; tests/deploy that the rules name no other temporal_* series).
ALERTED_SERIES = (
    "temporal_workflow_task_schedule_to_start_latency_bucket",
    "temporal_activity_schedule_to_start_latency_bucket",
    "temporal_worker_task_slots_available",
    "temporal_worker_task_slots_used",
    "temporal_workflow_task_queue_poll_succeed_total",
    "temporal_request_latency_bucket",
)
