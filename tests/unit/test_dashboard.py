"""The Grafana dashboard only charts metrics the dispatcher exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dispatcher-dashboard.json"

# The Prometheus names of the instruments in dispatcher/telemetry.py.
EXPORTED = {
    "dispatcher_jobs_enqueued_total",
    "dispatcher_jobs_leased_total",
    "dispatcher_jobs_acked_total",
    "dispatcher_jobs_nacked_total",
    "dispatcher_jobs_dead_lettered_total",
    "dispatcher_leases_expired_total",
    "dispatcher_stale_calls_refused_total",
    "dispatcher_reconciler_repairs_total",
    "dispatcher_queue_depth",
    "dispatcher_queue_oldest_age_seconds",
    "dispatcher_job_enqueue_to_start_seconds_bucket",
    "dispatcher_job_run_time_seconds_bucket",
}


def test_every_metric_the_dashboard_queries_is_one_the_dispatcher_exports() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"dispatcher_[a-z_]+", e)}
    assert used == EXPORTED  # charts nothing unknown, leaves nothing out
    assert {p["id"] for p in dash["panels"]} == set(range(1, len(dash["panels"]) + 1))


def test_the_exported_names_match_the_instruments_defined_in_telemetry() -> None:
    source = (DASHBOARD.parents[2] / "dispatcher" / "telemetry.py").read_text()
    defined = set(re.findall(r'"(dispatcher\.[a-z_.]+)"', source))
    prom = {n.replace(".", "_") for n in defined}
    for name in EXPORTED:
        base = re.sub(r"(_total|_seconds_bucket|_seconds)$", "", name)
        assert base in prom, name
