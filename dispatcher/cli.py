"""The `dispatcher` command: `serve` and `db upgrade`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy.engine import make_url

from dispatcher import cli_admin, cli_tokens, telemetry
from dispatcher.app import DispatcherApp
from dispatcher.config import Settings, ports
from dispatcher.store.sql.migrate import upgrade
from worker_sdk import event_loop, gc_tuning

logger = logging.getLogger("dispatcher")


def _parser(env: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dispatcher",
        description="A gRPC job dispatcher: a durable SQL record and a Redis index.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the gRPC server",
        description="Run the dispatcher. With no options: SQLite file ./dispatcher.db and an "
        "in-process Redis emulation, on 127.0.0.1:50051.",
    )
    serve.add_argument("--host", default=env.host, help="address to bind [DISPATCHER_HOST]")
    serve.add_argument(
        "--port", type=int, default=env.port, help="port, 0 for any [DISPATCHER_PORT]"
    )
    _store_flags(serve, env)
    serve.add_argument(
        "--redis-url",
        default=env.redis_url,
        help="redis:// or rediss:// URL; empty runs an in-process emulation [DISPATCHER_REDIS_URL]",
    )
    serve.add_argument(
        "--redis-prefix",
        default=env.redis_prefix,
        help="prefix of every Redis key [DISPATCHER_REDIS_PREFIX]",
    )
    serve.add_argument(
        "--reaper-interval",
        type=float,
        default=env.reaper_interval_s,
        help="seconds between reaper passes [DISPATCHER_REAPER_INTERVAL]",
    )
    serve.add_argument(
        "--reconcile-interval",
        type=float,
        default=env.reconcile_interval_s,
        help="seconds between reconciler passes [DISPATCHER_RECONCILE_INTERVAL]",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        default=env.shutdown_grace_s,
        help="seconds in-flight calls get on SIGTERM [DISPATCHER_SHUTDOWN_GRACE]",
    )
    serve.add_argument(
        "--reflection",
        action=argparse.BooleanOptionalAction,
        default=env.reflection,
        help="serve gRPC reflection (default: only when listening on loopback) "
        "[DISPATCHER_REFLECTION]",
    )
    _security_flags(serve, env)
    serve.add_argument(
        "--otel-exporter",
        choices=["none", "otlp", "prometheus"],
        default=env.otel_exporter,
        help="where traces and metrics go; otlp reads OTEL_EXPORTER_OTLP_* "
        "[DISPATCHER_OTEL_EXPORTER]",
    )
    serve.add_argument(
        "--prometheus-port",
        type=int,
        default=env.prometheus_port,
        help="scrape port with --otel-exporter prometheus [DISPATCHER_PROMETHEUS_PORT]",
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=env.log_format,
        help="json logs carry job id, queue and trace id [DISPATCHER_LOG_FORMAT]",
    )
    serve.add_argument(
        "--event-loop",
        choices=event_loop.CHOICES,
        default=env.event_loop,
        help="auto: uvloop where installed, else asyncio's own [DISPATCHER_EVENT_LOOP]",
    )
    serve.add_argument(
        "--idempotency-window",
        type=float,
        default=env.idempotency_window_s,
        help="seconds an idempotency key returns its first job [DISPATCHER_IDEMPOTENCY_WINDOW]",
    )
    serve.add_argument(
        "--retention",
        type=float,
        default=env.retention_s,
        help="seconds finished jobs are kept before deletion [DISPATCHER_RETENTION]",
    )
    serve.add_argument(
        "--no-migrate",
        action="store_true",
        default=not env.auto_migrate,
        help="do not migrate the database at startup [DISPATCHER_AUTO_MIGRATE=0]",
    )
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply the Alembic migrations")
    _store_flags(up, env)
    up.add_argument(
        "revision", nargs="?", default="heads", help="target revision (default: every head)"
    )
    cli_admin.add_commands(sub)
    cli_tokens.add_commands(sub, lambda p: _store_flags(p, env))
    return parser


def _security_flags(serve: argparse.ArgumentParser, env: Settings) -> None:
    serve.add_argument(
        "--auth",
        choices=["auto", "required", "off"],
        default=env.auth,
        help="bearer-token authentication; auto = off on loopback, required elsewhere "
        "[DISPATCHER_AUTH]",
    )
    serve.add_argument(
        "--allow-open",
        action="store_true",
        default=env.allow_open,
        help="allow --auth off on a non-loopback address [DISPATCHER_ALLOW_OPEN=1]",
    )
    serve.add_argument(
        "--tls-cert", default=env.tls_cert, help="PEM certificate chain [DISPATCHER_TLS_CERT]"
    )
    serve.add_argument(
        "--tls-key", default=env.tls_key, help="PEM private key [DISPATCHER_TLS_KEY]"
    )
    serve.add_argument(
        "--tls-client-ca",
        default=env.tls_client_ca,
        help="PEM CA bundle; clients must present a certificate it signed (mTLS) "
        "[DISPATCHER_TLS_CLIENT_CA]",
    )
    serve.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=env.max_concurrent_rpcs,
        help="calls in flight before RESOURCE_EXHAUSTED [DISPATCHER_MAX_CONCURRENT_RPCS]",
    )
    serve.add_argument(
        "--max-waiters",
        type=int,
        default=env.max_waiters,
        help="waiting long-polls per namespace [DISPATCHER_MAX_WAITERS]",
    )
    _webhook_flags(serve, env)


def _webhook_flags(serve: argparse.ArgumentParser, env: Settings) -> None:
    serve.add_argument(
        "--webhook-secret",
        default=env.webhook_secret,
        help="whsec_<base64> signing secret(s), space-separated to rotate; without one, "
        "callback URLs are refused [DISPATCHER_WEBHOOK_SECRET]",
    )
    serve.add_argument(
        "--webhook-allow-private",
        action="store_true",
        default=env.webhook_allow_private,
        help="let callbacks reach private and loopback addresses, and plain http "
        "[DISPATCHER_WEBHOOK_ALLOW_PRIVATE=1]",
    )
    serve.add_argument(
        "--webhook-timeout",
        type=float,
        default=env.webhook_timeout_s,
        help="seconds one webhook delivery may take [DISPATCHER_WEBHOOK_TIMEOUT]",
    )
    serve.add_argument(
        "--webhook-ports",
        type=ports,
        default=env.webhook_ports,
        help="comma list of ports callbacks may use; empty: any [DISPATCHER_WEBHOOK_PORTS]",
    )


def _store_flags(p: argparse.ArgumentParser, env: Settings) -> None:
    p.add_argument(
        "--database-url",
        default=env.database_url,
        help="SQLAlchemy URL: sqlite:///file.db or postgresql://... [DISPATCHER_DATABASE_URL]",
    )


def _redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True) if url else "in-process emulation"


async def _serve(settings: Settings) -> None:
    app = DispatcherApp(settings)
    port = await app.start()
    gc_tuning.tune_for_service()  # this process is the server (see gc_tuning)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"dispatcher listening on {settings.host}:{port} "
        f"(database {_redacted(settings.database_url)}, redis {_redacted(settings.redis_url)})",
        flush=True,
    )
    await stop.wait()
    logger.info("shutting down: draining for up to %.1fs", settings.shutdown_grace_s)
    await app.stop()


def main(argv: Sequence[str] | None = None) -> int:
    env = Settings.from_env()
    args = _parser(env).parse_args(argv)
    if hasattr(args, "run"):
        return cli_admin.run(args)
    if hasattr(args, "tokens"):
        return cli_tokens.run(args)
    telemetry.configure_logging()  # serve and db only: operator commands print, not log
    if args.command == "db":
        upgrade(args.database_url, args.revision)
        print(f"database {_redacted(args.database_url)} is at {args.revision}")
        return 0
    settings = replace(
        env,
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        redis_url=args.redis_url,
        redis_prefix=args.redis_prefix,
        reaper_interval_s=args.reaper_interval,
        reconcile_interval_s=args.reconcile_interval,
        shutdown_grace_s=args.shutdown_grace,
        reflection=args.reflection,
        auth=args.auth,
        allow_open=args.allow_open,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        max_waiters=args.max_waiters,
        auto_migrate=not args.no_migrate,
        otel_exporter=args.otel_exporter,
        prometheus_port=args.prometheus_port,
        log_format=args.log_format,
        event_loop=args.event_loop,
        idempotency_window_s=args.idempotency_window,
        retention_s=args.retention,
        webhook_secret=args.webhook_secret,
        webhook_allow_private=args.webhook_allow_private,
        webhook_timeout_s=args.webhook_timeout,
        webhook_ports=args.webhook_ports,
    )
    settings.check_exposure()
    telemetry.configure_logging(settings.log_format)
    telemetry.configure(settings.otel_exporter, settings.prometheus_port)
    try:
        loop_name, new_loop = event_loop.loop_factory(settings.event_loop)
    except event_loop.LoopUnavailable as exc:
        print(f"dispatcher: {exc}", file=sys.stderr)
        return 2
    logger.info("event loop: %s", loop_name)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(_serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
