"""Settings of `dispatcher serve`: flags, with environment variables as defaults.

| flag                   | environment variable            | default                     |
|------------------------|---------------------------------|-----------------------------|
| --host                 | DISPATCHER_HOST                 | 127.0.0.1                   |
| --port                 | DISPATCHER_PORT                 | 50051                       |
| --database-url         | DISPATCHER_DATABASE_URL         | sqlite:///dispatcher.db     |
| --redis-url            | DISPATCHER_REDIS_URL            | (empty: in-process fakeredis)|
| --redis-prefix         | DISPATCHER_REDIS_PREFIX         | dsp                         |
| --reaper-interval      | DISPATCHER_REAPER_INTERVAL      | 0.5 (seconds)               |
| --reconcile-interval   | DISPATCHER_RECONCILE_INTERVAL   | 5 (seconds)                 |
| --shutdown-grace       | DISPATCHER_SHUTDOWN_GRACE       | 10 (seconds)                |
| --reflection/--no-reflection | DISPATCHER_REFLECTION     | on for loopback, else off   |
| --auth                 | DISPATCHER_AUTH                 | auto: off on loopback, else required |
| --allow-open           | DISPATCHER_ALLOW_OPEN=1         | refuse to run open off loopback |
| --tls-cert/--tls-key   | DISPATCHER_TLS_CERT/_KEY        | plaintext                   |
| --tls-client-ca        | DISPATCHER_TLS_CLIENT_CA        | no client certificates      |
| --max-concurrent-rpcs  | DISPATCHER_MAX_CONCURRENT_RPCS  | 2000                        |
| --max-waiters          | DISPATCHER_MAX_WAITERS          | 1000 long-polls per namespace |
| --no-migrate           | DISPATCHER_AUTO_MIGRATE=0       | migrate at startup          |
| --otel-exporter        | DISPATCHER_OTEL_EXPORTER        | none (otlp, prometheus)     |
| --prometheus-port      | DISPATCHER_PROMETHEUS_PORT      | 9464                        |
| --log-format           | DISPATCHER_LOG_FORMAT           | text (or json)              |
| --idempotency-window   | DISPATCHER_IDEMPOTENCY_WINDOW   | 86400 (seconds)             |
| --retention            | DISPATCHER_RETENTION            | 604800 (seconds)            |
| --webhook-secret       | DISPATCHER_WEBHOOK_SECRET       | none: callback URLs refused |
| --webhook-allow-private | DISPATCHER_WEBHOOK_ALLOW_PRIVATE=1 | internal addresses refused |
| --webhook-timeout      | DISPATCHER_WEBHOOK_TIMEOUT      | 15 (seconds)                |
| --webhook-ports        | DISPATCHER_WEBHOOK_PORTS        | any port (comma list)       |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dispatcher.domain.limits import Limits

DEFAULT_DATABASE_URL = "sqlite:///dispatcher.db"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off", "")


def ports(text: str) -> tuple[int, ...]:
    """A comma-separated port list ("443,8443")."""
    return tuple(int(p) for p in text.replace(" ", "").split(",") if p)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 50051
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = ""
    redis_prefix: str = "dsp"
    reaper_interval_s: float = 0.5
    reconcile_interval_s: float = 5.0
    shutdown_grace_s: float = 10.0
    reflection: bool | None = None  # None: on when listening on loopback only
    auth: str = "auto"  # auto | required | off
    allow_open: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    max_concurrent_rpcs: int = 2000
    max_waiters: int = 1000
    auto_migrate: bool = True
    max_message_bytes: int = 8 * 1024 * 1024
    otel_exporter: str = "none"
    prometheus_port: int = 9464
    log_format: str = "text"
    event_loop: str = "auto"  # auto: uvloop where installed (worker_sdk/event_loop.py)
    idempotency_window_s: float = 86_400.0
    retention_s: float = 604_800.0
    # "whsec_..." (space-separated for rotation); empty: webhooks off (docs/webhooks.md).
    webhook_secret: str = field(default="", repr=False)
    webhook_allow_private: bool = False
    webhook_timeout_s: float = 15.0
    webhook_ports: tuple[int, ...] = ()  # empty: any

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            host=_env("DISPATCHER_HOST", cls.host),
            port=int(_env("DISPATCHER_PORT", str(cls.port))),
            database_url=_env("DISPATCHER_DATABASE_URL", cls.database_url),
            redis_url=_env("DISPATCHER_REDIS_URL", cls.redis_url),
            redis_prefix=_env("DISPATCHER_REDIS_PREFIX", cls.redis_prefix),
            reaper_interval_s=float(_env("DISPATCHER_REAPER_INTERVAL", str(cls.reaper_interval_s))),
            reconcile_interval_s=float(
                _env("DISPATCHER_RECONCILE_INTERVAL", str(cls.reconcile_interval_s))
            ),
            shutdown_grace_s=float(_env("DISPATCHER_SHUTDOWN_GRACE", str(cls.shutdown_grace_s))),
            reflection=(
                None
                if os.environ.get("DISPATCHER_REFLECTION") is None
                else _env_bool("DISPATCHER_REFLECTION", False)
            ),
            auth=_env("DISPATCHER_AUTH", cls.auth),
            allow_open=_env_bool("DISPATCHER_ALLOW_OPEN", False),
            tls_cert=_env("DISPATCHER_TLS_CERT", ""),
            tls_key=_env("DISPATCHER_TLS_KEY", ""),
            tls_client_ca=_env("DISPATCHER_TLS_CLIENT_CA", ""),
            max_concurrent_rpcs=int(_env("DISPATCHER_MAX_CONCURRENT_RPCS", "2000")),
            max_waiters=int(_env("DISPATCHER_MAX_WAITERS", "1000")),
            auto_migrate=_env_bool("DISPATCHER_AUTO_MIGRATE", True),
            otel_exporter=_env("DISPATCHER_OTEL_EXPORTER", cls.otel_exporter),
            prometheus_port=int(_env("DISPATCHER_PROMETHEUS_PORT", str(cls.prometheus_port))),
            log_format=_env("DISPATCHER_LOG_FORMAT", cls.log_format),
            event_loop=_env("DISPATCHER_EVENT_LOOP", cls.event_loop),
            idempotency_window_s=float(
                _env("DISPATCHER_IDEMPOTENCY_WINDOW", str(cls.idempotency_window_s))
            ),
            retention_s=float(_env("DISPATCHER_RETENTION", str(cls.retention_s))),
            webhook_secret=_env("DISPATCHER_WEBHOOK_SECRET", ""),
            webhook_allow_private=_env_bool("DISPATCHER_WEBHOOK_ALLOW_PRIVATE", False),
            webhook_timeout_s=float(_env("DISPATCHER_WEBHOOK_TIMEOUT", str(cls.webhook_timeout_s))),
            webhook_ports=ports(_env("DISPATCHER_WEBHOOK_PORTS", "")),
        )

    def limits(self) -> Limits:
        return Limits(
            idempotency_window_ms=round(self.idempotency_window_s * 1000),
            retention_ms=round(self.retention_s * 1000),
            max_waiters_per_namespace=self.max_waiters,
        )

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url == ""

    @property
    def loopback(self) -> bool:
        return self.host in ("localhost", "::1") or self.host.startswith("127.")

    @property
    def reflection_on(self) -> bool:
        return self.loopback if self.reflection is None else self.reflection

    @property
    def auth_required(self) -> bool:
        if self.auth not in ("auto", "required", "off"):
            raise ValueError("auth must be auto, required or off")
        return self.auth == "required" or (self.auth == "auto" and not self.loopback)

    def check_exposure(self) -> None:
        """Refuse to serve without credentials beyond loopback unless told to."""
        if not self.auth_required and not self.loopback and not self.allow_open:
            raise SystemExit(
                f"refusing to serve on {self.host} without authentication: "
                "use --auth required, or --allow-open if you really mean it"
            )
