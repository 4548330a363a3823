"""Traces, metrics and structured logs, defined once.

Exporters are chosen by configuration: "none" (the default: nothing leaves
the process), "otlp" (traces and metrics to an OTLP/gRPC collector, configured
by the standard OTEL_EXPORTER_OTLP_* variables), or "prometheus" (metrics on a
scrape endpoint; traces nowhere). Tests install in-memory exporters through
`configure(tracer_provider=..., meter_provider=...)`.

Instruments are module-level and use the global providers through proxies, so
code can record before `configure` runs and nothing is recorded twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation

logger = logging.getLogger(__name__)

tracer = trace.get_tracer("dispatcher")
meter = metrics.get_meter("dispatcher")


def _counter(name: str, description: str) -> Any:
    return meter.create_counter(name, unit="{job}", description=description)


jobs_enqueued = _counter("dispatcher.jobs.enqueued", "Jobs accepted by Enqueue(Batch)")
jobs_leased = _counter("dispatcher.jobs.leased", "Leases granted")
jobs_acked = _counter("dispatcher.jobs.acked", "Jobs completed successfully")
jobs_nacked = _counter("dispatcher.jobs.nacked", "Attempts failed by a worker")
jobs_dead_lettered = _counter("dispatcher.jobs.dead_lettered", "Jobs that failed for good")
leases_expired = _counter("dispatcher.leases.expired", "Leases lost for lack of heartbeats")
stale_calls = meter.create_counter(
    "dispatcher.stale_calls.refused",
    unit="{call}",
    description="Heartbeat/Ack/Nack refused because the lease was no longer held",
)
reconciler_repairs = meter.create_counter(
    "dispatcher.reconciler.repairs", unit="{entry}", description="Index entries repaired from SQL"
)
enqueue_to_start = meter.create_histogram(
    "dispatcher.job.enqueue_to_start", unit="s", description="From enqueue (or run_at) to lease"
)
run_time = meter.create_histogram(
    "dispatcher.job.run_time", unit="s", description="From lease to ack or nack"
)

# Sampled by a background task (the gauge callback cannot await Redis).
_depth_samples: dict[tuple[str, str, str], tuple[int, float]] = {}


def record_depth(samples: dict[tuple[str, str, str], tuple[int, float]]) -> None:
    """Replace the sampled queue depths: (namespace, queue, priority) -> (ready, oldest age s)."""
    _depth_samples.clear()
    _depth_samples.update(samples)


def _observe_depth(_: CallbackOptions) -> Iterable[Observation]:
    for (ns, queue, priority), (ready, _age) in list(_depth_samples.items()):
        yield Observation(ready, {"namespace": ns, "queue": queue, "priority": priority})


def _observe_age(_: CallbackOptions) -> Iterable[Observation]:
    for (ns, queue, priority), (_ready, age) in list(_depth_samples.items()):
        yield Observation(age, {"namespace": ns, "queue": queue, "priority": priority})


meter.create_observable_gauge(
    "dispatcher.queue.depth", [_observe_depth], unit="{job}", description="Ready jobs"
)
meter.create_observable_gauge(
    "dispatcher.queue.oldest_age",
    [_observe_age],
    unit="s",
    description="Age of the oldest ready job",
)


def attrs(namespace: str, queue: str) -> dict[str, str]:
    return {"namespace": namespace, "queue": queue}


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A child span for one storage step (a SQL transaction, a Redis round trip);
    nothing when no tracer provider is installed (it would record nothing)."""
    if not tracing_installed():
        yield
        return
    with tracer.start_as_current_span(name, attributes=attributes):
        yield


def tracing_installed() -> bool:
    """Whether a tracer provider that records spans is installed."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def current_trace_context() -> dict[str, str]:
    """The W3C trace context of the current span, to store with a job."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def configure(
    exporter: str = "none",
    prometheus_port: int = 9464,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> None:
    """Install providers once per process. Explicit providers win (tests)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create({"service.name": "dispatcher"})
    if tracer_provider is None and exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if meter_provider is None and exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(OTLPMetricExporter())
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    if meter_provider is None and exporter == "prometheus":
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        start_http_server(prometheus_port, addr="0.0.0.0")
        meter_provider = MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()])
        logger.info("Prometheus metrics on :%d/metrics", prometheus_port)
    if tracer_provider is not None:
        trace.set_tracer_provider(tracer_provider)
    if meter_provider is not None:
        metrics.set_meter_provider(meter_provider)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the trace id and any job id / queue passed as `extra`."""

    FIELDS = ("job_id", "queue", "namespace", "worker_id", "reason")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in self.FIELDS:
            if hasattr(record, name):
                out[name] = getattr(record, name)
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = format(ctx.trace_id, "032x")
            out["span_id"] = format(ctx.span_id, "016x")
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
