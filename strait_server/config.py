"""One settings object, read from STRAIT_* environment variables (see docs/configuration.md)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from typing import Any


class ConfigError(ValueError):
    """A STRAIT_* variable is missing or malformed."""


def _duration(raw: str, name: str) -> timedelta:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    text = raw.strip()
    for suffix in ("ms", "s", "m", "h", "d"):
        if text.endswith(suffix):
            number = text[: -len(suffix)]
            try:
                return timedelta(seconds=float(number) * units[suffix])
            except ValueError:
                break
    try:
        return timedelta(seconds=float(text))
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a duration (examples: 500ms, 30s, 5m, 720h)") from None


def _bool(raw: str, name: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}: {raw!r} is not a boolean (true/false)")


def parse_lockout(raw: str, name: str) -> tuple[tuple[int, timedelta], ...]:
    """'10:1m,25:5m' -> ((10, 1 min), (25, 5 min)): after N failures an address is blocked that long."""
    tiers: list[tuple[int, timedelta]] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        count, sep, block = part.partition(":")
        try:
            failures = int(count)
        except ValueError:
            failures = 0
        if not sep or failures < 1:
            raise ConfigError(f"{name}: {part!r} is not FAILURES:DURATION (example: 10:1m,25:5m,50:15m)")
        duration = _duration(block, name)
        if duration < timedelta(milliseconds=1):
            raise ConfigError(f"{name}: the block in {part!r} must be at least 1ms")
        tiers.append((failures, duration))
    if len({f for f, _ in tiers}) != len(tiers):
        raise ConfigError(f"{name}: each number of failures may appear once")
    return tuple(sorted(tiers))


def split_host_port(address: str, name: str) -> tuple[str, int]:
    """("host", port) from HOST:PORT, [IPv6]:PORT or :PORT (every interface)."""
    host, sep, port_text = address.strip().rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not sep or not 0 <= port <= 65535:
        raise ConfigError(f"{name}: {address!r} is not HOST:PORT (examples: 0.0.0.0:9464, 127.0.0.1:9464)")
    return host, port


def listening_socket(address: str, variable: str) -> socket.socket:
    """A non-blocking socket listening on `address` (HOST:PORT, port 0: a free one) for an HTTP side server;
    ConfigError naming `variable` when it is malformed or cannot be bound."""
    host, port = split_host_port(address, variable)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot listen on {address}: {exc}") from None
    sock.setblocking(False)
    return sock


MODES = ("all", "api", "worker", "scheduler")


def serve_mode(given: str | None, env: Mapping[str, str] | None = None) -> str:
    """`strait serve`'s roles: `--mode` when given, else STRAIT_MODE (so that a container image or a unit can set
    it), else all."""
    env = os.environ if env is None else env
    mode = given or env.get("STRAIT_MODE") or "all"
    if mode not in MODES:
        raise ConfigError(f"STRAIT_MODE must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Server settings. Field names map to STRAIT_<UPPER_NAME>."""

    database_url: str = ""
    redis_url: str = ""
    address: str = "127.0.0.1:50051"
    # TLS on the gRPC port (PEM files): the server's certificate chain and key, and the authorities whose client
    # certificates it requires (mutual TLS). Empty: plaintext.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    # SO_REUSEPORT on the gRPC listener (gRPC's default on Linux): processes of one host may share the address,
    # and the kernel spreads connections over them. `strait dev` turns it off, so a second one is refused.
    reuse_port: bool = True
    admin_key: str = field(default="", repr=False)
    jwt_signing_key: str = field(default="", repr=False)
    # Namespace for every Redis key and channel, so several deployments (or tests) can share a server.
    redis_namespace: str = "strait"
    # Connections to Redis per process, at most (two of them hold subscriptions).
    redis_max_connections: int = 16
    # Cross-process wake-up hint after an enqueue: "redis" (pub/sub) or "postgres" (LISTEN/NOTIFY).
    wake_via: str = "redis"
    allow_private_endpoints: bool = False
    # Dispatcher.
    dispatch_concurrency: int = 200
    claim_batch_size: int = 100
    poll_interval: timedelta = timedelta(seconds=1)
    settle_flush_interval: timedelta = timedelta(milliseconds=2)
    settle_batch_size: int = 200
    drain_timeout: timedelta = timedelta(seconds=30)
    # Endpoint circuit breakers: consecutive failed dispatches that open a circuit (0: off), and for how long.
    circuit_failure_threshold: int = 5
    circuit_open_for: timedelta = timedelta(seconds=60)
    heartbeat_interval: timedelta = timedelta(seconds=1)
    owner_stale_after: timedelta = timedelta(seconds=5)
    # Times a run lost through no fault of its own (dead dispatcher, outcome lost with the database) is
    # requeued without spending an attempt; past that, a loss counts as an attempt.
    max_lost_requeues: int = 5
    # What one run may report through ReportCost, in all, unless its job sets max_run_cost_microusd ($100).
    max_run_cost_microusd: int = 100_000_000
    sweep_interval: timedelta = timedelta(seconds=1)
    # How often the scheduler role looks for due cron ticks.
    cron_interval: timedelta = timedelta(milliseconds=500)
    max_output_bytes: int = 1024 * 1024
    run_token_ttl_margin: timedelta = timedelta(seconds=60)
    # Database pool.
    db_pool_min: int = 2
    db_pool_max: int = 20
    # API.
    max_payload_bytes: int = 1024 * 1024
    grpc_max_message_bytes: int = 8 * 1024 * 1024
    # Bytes of large requests (64 KiB and up) handled at once, per process and per caller; past them a request
    # is refused with RESOURCE_EXHAUSTED and a retry delay, so that a burst of big batches cannot grow memory.
    max_inflight_request_bytes: int = 16 * 1024 * 1024
    max_inflight_request_bytes_per_caller: int = 16 * 1024 * 1024
    # BatchTriggerJob requests are read a few at a time (the budget above over the largest message); the
    # others wait unread, and are refused with RESOURCE_EXHAUSTED after waiting this long.
    large_request_wait: timedelta = timedelta(seconds=10)
    shutdown_grace: timedelta = timedelta(seconds=5)
    log_level: str = "info"
    # Watch streams (RunService.WatchRun).
    watch_keepalive_interval: timedelta = timedelta(seconds=15)
    watch_max_duration: timedelta = timedelta(minutes=30)
    # A client connection is retired after watch_max_duration (gRPC GOAWAY: its new calls go to a new
    # connection) and closed this much later: a watch stream whose client stopped reading without
    # disconnecting, stuck in a send that cannot be cancelled, ends then with UNAVAILABLE (resumable).
    watch_stall_grace: timedelta = timedelta(seconds=60)
    watch_max_streams_per_project: int = 100
    # Worker sessions (WorkerService.Connect) per project and per API key, per server process.
    worker_max_streams_per_project: int = 1000
    worker_max_streams_per_key: int = 100
    watch_poll_interval: timedelta = timedelta(milliseconds=500)
    # Prometheus metrics at http://<address>/metrics; empty: not served.
    metrics_address: str = ""
    # The web console at http://<address>/ (processes that serve the API); empty: not served.
    console_address: str = ""
    # A console sign-in lasts this long after its last request.
    console_session_ttl: timedelta = timedelta(hours=12)
    # Mark the console's session cookie Secure even on plain HTTP (the console behind a TLS-terminating proxy).
    console_secure_cookie: bool = False
    # Retention (scheduler role): finished runs older than this are deleted with their events; 0 keeps all.
    retention: timedelta = timedelta(days=30)
    retention_interval: timedelta = timedelta(minutes=1)
    retention_batch_size: int = 500
    # API calls per window per API key, unless the key or its project has a limit of its own; 0: no default.
    api_rate_limit: int = 1000
    api_rate_window: timedelta = timedelta(seconds=60)
    # Unrevoked API keys a project may hold, and how many a project's own keys may create per window (the admin
    # key is not limited): each key has a rate limit of its own, so keys must not be free to mint.
    max_api_keys_per_project: int = 100
    api_key_create_limit: int = 20
    api_key_create_window: timedelta = timedelta(hours=1)
    # Failed-authentication lockout per client address: "failures:block" tiers; empty turns it off.
    auth_lockout: str = "10:1m,25:5m,50:15m"
    # How long failed authentications of an address are counted (from its first failure).
    auth_failure_window: timedelta = timedelta(hours=1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = "STRAIT_" + f.name.upper()
            if name not in env:
                continue
            raw = env[name]
            default = getattr(cls(), f.name)
            if isinstance(default, bool):
                values[f.name] = _bool(raw, name)
            elif isinstance(default, int):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise ConfigError(f"{name}: {raw!r} is not an integer") from None
            elif isinstance(default, timedelta):
                values[f.name] = _duration(raw, name)
            else:
                values[f.name] = raw
        values.update(overrides)
        settings = cls(**values)
        if settings.wake_via not in ("redis", "postgres"):
            raise ConfigError(f"STRAIT_WAKE_VIA: {settings.wake_via!r} is not one of redis, postgres")
        if settings.metrics_address:
            split_host_port(settings.metrics_address, "STRAIT_METRICS_ADDRESS")
        if settings.console_address:
            split_host_port(settings.console_address, "STRAIT_CONSOLE_ADDRESS")
        settings.check_tls()
        settings.check_limits()
        return settings

    def check_tls(self) -> None:
        """Raises ConfigError for TLS settings that cannot go together (the files are read when serving starts)."""
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            given, missing = (("STRAIT_TLS_CERT_FILE", "STRAIT_TLS_KEY_FILE") if self.tls_cert_file
                              else ("STRAIT_TLS_KEY_FILE", "STRAIT_TLS_CERT_FILE"))
            raise ConfigError(f"{given} is set but {missing} is not: TLS needs both the certificate and its key")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError("STRAIT_TLS_CLIENT_CA_FILE (mutual TLS) needs TLS: set STRAIT_TLS_CERT_FILE and "
                              "STRAIT_TLS_KEY_FILE too")

    def check_limits(self) -> None:
        """Raises ConfigError for retention and API-limit settings out of range."""
        if self.api_rate_limit < 0:
            raise ConfigError("STRAIT_API_RATE_LIMIT must be 0 (no default limit) or more")
        if self.api_rate_window < timedelta(milliseconds=1):
            raise ConfigError("STRAIT_API_RATE_WINDOW must be at least 1ms")
        if self.retention < timedelta(0):
            raise ConfigError("STRAIT_RETENTION must be 0 (keep every run) or more")
        if self.retention_interval < timedelta(milliseconds=1):
            raise ConfigError("STRAIT_RETENTION_INTERVAL must be at least 1ms")
        if self.retention_batch_size < 1:
            raise ConfigError("STRAIT_RETENTION_BATCH_SIZE must be at least 1")
        if self.auth_failure_window < timedelta(milliseconds=1):
            raise ConfigError("STRAIT_AUTH_FAILURE_WINDOW must be at least 1ms")
        self.lockout_tiers()
        self._check_bounds()

    def _check_bounds(self) -> None:
        """Raises ConfigError for the bounds that protect the service (keys, costs, requests, Redis, losses)."""
        if self.max_api_keys_per_project < 1 or self.api_key_create_limit < 1:
            raise ConfigError("STRAIT_MAX_API_KEYS_PER_PROJECT and STRAIT_API_KEY_CREATE_LIMIT must be at least 1")
        if self.api_key_create_window < timedelta(seconds=1):
            raise ConfigError("STRAIT_API_KEY_CREATE_WINDOW must be at least 1s")
        if not 1 <= self.max_run_cost_microusd <= 10**12:
            raise ConfigError("STRAIT_MAX_RUN_COST_MICROUSD must be between 1 and 1000000000000")
        if min(self.max_inflight_request_bytes,
               self.max_inflight_request_bytes_per_caller) < self.grpc_max_message_bytes:
            raise ConfigError("STRAIT_MAX_INFLIGHT_REQUEST_BYTES(_PER_CALLER) must be at least "
                              "STRAIT_GRPC_MAX_MESSAGE_BYTES, or the largest request could never be handled")
        if self.redis_max_connections < 4:
            raise ConfigError("STRAIT_REDIS_MAX_CONNECTIONS must be at least 4")
        if self.max_lost_requeues < 0:
            raise ConfigError("STRAIT_MAX_LOST_REQUEUES must be 0 or more")

    def lockout_tiers(self) -> tuple[tuple[int, timedelta], ...]:
        """STRAIT_AUTH_LOCKOUT as (failures, block) pairs, by failures ascending; empty: no lockout."""
        return parse_lockout(self.auth_lockout, "STRAIT_AUTH_LOCKOUT")

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def require_backends(self) -> None:
        missing = [n for n, v in (("STRAIT_DATABASE_URL", self.database_url),
                                  ("STRAIT_REDIS_URL", self.redis_url)) if not v]
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} must be set for `strait serve` "
                "(use `strait dev` for an embedded PostgreSQL and Redis)"
            )
        if len(self.jwt_signing_key) < 32:
            raise ConfigError("STRAIT_JWT_SIGNING_KEY must be set to at least 32 characters")
        if self.admin_key and len(self.admin_key) < 32:
            # It creates projects and keys: guessable is as bad as none.
            raise ConfigError("STRAIT_ADMIN_KEY must be at least 32 characters (or unset, for no admin key)")
