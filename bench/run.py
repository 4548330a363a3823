"""Side-by-side benchmark: our dispatcher against peer job queues on the same Redis.

    python -m bench.run                      # everything (8-20 minutes on 2 cores)
    python -m bench.run --quick              # small N: a smoke test of the harness
    python -m bench.run --only 'rq-*,dispatcher-embedded' --skip rq-fork

Each system is measured in its own process (`bench.measure`) with a time
limit, against its own Redis database number, which is flushed before and
after (and only if it is empty or was written by this harness). A system that
fails or times out is reported as failed; the run goes on. Prints the table
and writes it to OUT/latest.{md,json} and OUT/bench-<time>.{md,json}.
See bench/README.md for what is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis

from bench.infra import ARQ_VENV, ensure_arq_python, pg_database
from bench.measure import MARKER
from bench.peers import SYSTEMS, System, select
from bench.peers.base import ROOT, kill_group
from bench.report import (
    METRIC_KEYS,
    NO_BATCH_API,
    NOT_MEASURED,
    SystemResult,
    build_report,
    combine_rounds,
    render_markdown,
    report_json,
    result_from_dict,
)

# rq-fork drains about 50-90 jobs/s on 2 cores: 10,000 jobs take up to 4 minutes.
FULL = {"jobs": 10_000, "latency_jobs": 200, "drain_timeout": 600.0, "timeout": 1200.0}
QUICK = {"jobs": 500, "latency_jobs": 50, "drain_timeout": 60.0, "timeout": 180.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="N=500, 50 latency jobs, short limits")
    p.add_argument("--only", default="", help="comma list of systems (or prefix*) to run")
    p.add_argument("--skip", default="", help="comma list of systems (or prefix*) to leave out")
    p.add_argument("--list", action="store_true", help="list the systems and exit")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="output dir")
    p.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis, without a db")
    p.add_argument(
        "--pg-admin-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL admin URL; a dispatcher_bench_* database is created and dropped",
    )
    p.add_argument("--jobs", type=int, help="N, jobs per enqueue and drain run (10000)")
    p.add_argument("--workers", type=int, default=2, help="W, worker processes (2)")
    p.add_argument("--latency-jobs", type=int, help="jobs in the latency run (200)")
    p.add_argument("--latency-interval-ms", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=100, help="jobs per batch-API call")
    p.add_argument("--callers", type=int, default=100, help="C, concurrent producer tasks (100)")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each enqueue-only phase (batch API, concurrent callers), N jobs "
        "each; the figure is their median (3)",
    )
    p.add_argument("--timeout", type=float, help="seconds allowed per system (1200)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every system this many times, each round in the opposite order to the "
        "last, and report medians and each round's ratios (1)",
    )
    p.add_argument(
        "--arq-python",
        default=os.environ.get("BENCH_ARQ_PYTHON", str(ARQ_VENV / "bin" / "python")),
        help="interpreter with arq (arq pins redis<6); the default venv is created if "
        "missing [BENCH_ARQ_PYTHON]",
    )
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    base = QUICK if args.quick else FULL
    return {
        "jobs": args.jobs or base["jobs"],
        "workers": args.workers,
        "latency_jobs": args.latency_jobs or base["latency_jobs"],
        "latency_interval": args.latency_interval_ms / 1000,
        "batch_size": args.batch_size,
        "callers": args.callers,
        "repeats": args.repeats,
        "warmup": 20,
        "settle": 1.0,
        "drain_timeout": base["drain_timeout"],
        "latency_timeout": 60.0,
        "timeout": args.timeout or base["timeout"],
    }


# -- one system ---------------------------------------------------------------


def redis_url(base: str, db: int | None) -> str:
    return "" if db is None else f"{base.rstrip('/')}/{db}"


def release_db(url: str) -> None:
    """FLUSHDB a system's database after its run, if the harness wrote it."""
    if not url:
        return
    r = redis.Redis.from_url(url, socket_timeout=10)
    try:
        if r.exists(MARKER):
            r.flushdb()
    except redis.RedisError as exc:
        print(f"  could not clean {url}: {exc}", file=sys.stderr)
    finally:
        r.close()


def _interpreter(system: System, args: argparse.Namespace) -> str:
    if system.python == "main":
        return sys.executable
    return str(ensure_arq_python(Path(args.arq_python)))


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> str | None:
    """Wait for the measurement process; on timeout stop its whole group. Returns an error."""
    try:
        proc.wait(timeout)
        return None
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.wait(5)
        return f"timeout: the measurement ran over {timeout:.0f}s and was stopped"


def run_system(
    system: System, params: dict[str, Any], args: argparse.Namespace, logs: Path
) -> SystemResult:
    workdir = logs / system.name
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.iterdir():
        if old.is_file():
            old.unlink()
    url = redis_url(args.redis, system.redis_db)
    load_before = os.getloadavg()
    started = time.monotonic()
    error: str | None = None
    try:
        with contextlib.ExitStack() as stack:
            options = dict(system.options)
            if system.module == "bench.peers.dispatcher":
                options["redis_prefix"] = f"bench-{uuid.uuid4().hex[:10]}"
                if options["backend"] == "postgres":
                    options["database_url"] = stack.enter_context(pg_database(args.pg_admin_url))
            cfg: dict[str, Any] = {
                **params,
                "name": system.name,
                "kind": system.kind,
                "workers_label": system.workers,
                "module": system.module,
                "cls": system.cls,
                "redis_url": url,
                "workdir": str(workdir),
                "result": str(workdir / "result.json"),
                "options": options,
            }
            stack.callback(_remove_databases, workdir)
            stack.callback(release_db, url)
            stack.callback(_kill_recorded, workdir)
            error = _measure(_interpreter(system, args), cfg, workdir)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    result = _read_result(system, workdir, error)
    result.details["seconds"] = round(time.monotonic() - started, 1)
    result.details["load_before"] = [round(x, 2) for x in load_before]
    result.details["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _measure(python: str, cfg: dict[str, Any], workdir: Path) -> str | None:
    """Run `bench.measure` for one system in its own process group; returns an error."""
    (workdir / "config.json").write_text(json.dumps(cfg, indent=2))
    env = dict(os.environ, BENCH_REDIS_URL=cfg["redis_url"], PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with open(workdir / "measure.log", "wb") as log:
        proc = subprocess.Popen(
            [python, "-m", "bench.measure", str(workdir / "config.json")],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        return _wait(proc, cfg["timeout"])
    finally:
        kill_group(proc.pid)


def _remove_databases(workdir: Path) -> None:
    """Delete the SQLite files a dispatcher system wrote (the logs stay)."""
    for path in workdir.glob("dispatcher.db*"):
        path.unlink()


def _kill_recorded(workdir: Path) -> None:
    pgids = workdir / "pgids"
    if pgids.exists():
        for line in pgids.read_text().split():
            kill_group(int(line))


def _read_result(system: System, workdir: Path, error: str | None) -> SystemResult:
    path = workdir / "result.json"
    if path.exists():
        result = result_from_dict(json.loads(path.read_text()))
    else:
        result = SystemResult(system.name, system.kind, system.workers)
        error = error or f"no result; see {workdir / 'measure.log'}"
    if error:
        for key in METRIC_KEYS:
            if key not in result.metrics:
                result.missing.setdefault(key, error)
        if not result.metrics:
            result.error = error
    return result


# -- the run --------------------------------------------------------------------


def machine() -> dict[str, str]:
    try:
        uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    except OSError:
        uname = platform.platform()
    return {
        "machine": f"{os.cpu_count()} cores; {uname}",
        "python": f"{platform.python_version()} ({sys.executable})",
    }


def meta_for(args: argparse.Namespace, params: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    p = params
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.run", *argv]),
        **machine(),
        "parameters": (
            f"N={p['jobs']} jobs, W={p['workers']} worker processes, latency "
            f"{p['latency_jobs']} jobs {p['latency_interval'] * 1000:g} ms apart, batch "
            f"{p['batch_size']} per call, {p['callers']} concurrent callers, enqueue-only "
            f"phases the median of {p['repeats']} runs, "
            f"Redis {args.redis} (one db per system)"
        ),
        "params": p,
    }


def write_outputs(out: Path, markdown: str, data: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    written = []
    for stem in (f"bench-{stamp}", "latest"):
        md, js = out / f"{stem}.md", out / f"{stem}.json"
        md.write_text(markdown)
        js.write_text(json.dumps(data, indent=2) + "\n")
        written += [md, js]
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.list:
        for s in SYSTEMS:
            print(f"{s.name:26} redis db {s.redis_db!s:4} {s.workers}")
        return 0
    systems = select(args.only, args.skip)
    params = parameters(args)
    meta = meta_for(args, params, argv)
    load_start = os.getloadavg()
    rounds: list[list[SystemResult]] = []
    for r in range(args.rounds):
        # Alternate the order, so that a machine that speeds up or slows down during
        # the run does not favour the systems measured first.
        order = systems if r % 2 == 0 else systems[::-1]
        logs = args.out / "logs" / (f"round-{r + 1}" if args.rounds > 1 else "")
        label = f"round {r + 1}/{args.rounds}, " if args.rounds > 1 else ""
        rounds.append(run_round(order, params, args, logs, label))
    results = rounds[0] if len(rounds) == 1 else combine_rounds(rounds)
    load_end = os.getloadavg()
    meta["load"] = (
        f"{', '.join(f'{x:.2f}' for x in load_start)} at start, "
        f"{', '.join(f'{x:.2f}' for x in load_end)} at end"
    )
    meta["versions"] = collect_versions(results)
    if args.rounds > 1:
        meta["rounds"] = args.rounds
    report = build_report(results, meta, rounds)
    markdown = render_markdown(report)
    print(markdown)
    for path in write_outputs(args.out, markdown, report_json(report)):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def run_round(
    systems: list[System], params: dict[str, Any], args: argparse.Namespace, logs: Path, label: str
) -> list[SystemResult]:
    """Measure each system once, in the order given."""
    results: list[SystemResult] = []
    for k, system in enumerate(systems, 1):
        print(f"[{label}{k}/{len(systems)}] {system.name} ...", file=sys.stderr, flush=True)
        result = run_system(system, params, args, logs)
        status = "failed: " + result.error if result.error else "ok"
        failed = {
            m: why for m, why in result.missing.items() if why not in (NO_BATCH_API, NOT_MEASURED)
        }
        if failed and not result.error:
            status = "partial: " + "; ".join(f"{m} {why}" for m, why in failed.items())
        print(f"    {status} ({result.details['seconds']}s)", file=sys.stderr, flush=True)
        results.append(result)
    return results


def collect_versions(results: list[SystemResult]) -> dict[str, str]:
    versions = {"dispatcher": version("dispatcher")}
    for r in results:
        versions.update(r.details.get("versions", {}))
    return versions


if __name__ == "__main__":
    sys.exit(main())
