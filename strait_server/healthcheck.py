"""`python -m strait_server.healthcheck`: a probe for container HEALTHCHECKs and similar, run beside a `strait
serve` process with the same environment. Exit status 0 when the process is healthy, 1 when not, 2 for a
configuration error.

- With the `api` role (STRAIT_MODE all or api): asks the gRPC health service on the port of STRAIT_ADDRESS
  (on loopback when it listens on every interface), over TLS when the server has a certificate. The client's
  STRAIT_TLS_CA_FILE, STRAIT_TLS_SERVER_NAME and, for mutual TLS, STRAIT_TLS_CLIENT_CERT_FILE/KEY_FILE apply.
- Otherwise, when STRAIT_METRICS_ADDRESS is set: GET /metrics must answer 200.
- Otherwise there is nothing to ask: a worker or scheduler process exits when it cannot go on, so it is healthy
  while it runs.
"""

from __future__ import annotations

import sys
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from strait_client._tls import TlsConfig
from strait_server.config import ConfigError, Settings, serve_mode, split_host_port

TIMEOUT_S = 3.0
EVERY_INTERFACE = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def local_target(address: str, name: str) -> str:
    """HOST:PORT to reach a server listening on `address` from its own machine."""
    host, port = split_host_port(address, name)
    host = EVERY_INTERFACE.get(host, host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def probe_grpc(settings: Settings) -> str | None:
    """None when the health service answers SERVING, else what went wrong."""
    target = local_target(settings.address, "STRAIT_ADDRESS")
    tls = TlsConfig.from_env()
    if tls is None and settings.tls_cert_file:
        tls = TlsConfig()  # the server speaks TLS: trust the public roots unless STRAIT_TLS_CA_FILE says otherwise
    channel = (grpc.secure_channel(target, tls.credentials(), options=tls.channel_options()) if tls is not None
               else grpc.insecure_channel(target))
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
        except grpc.RpcError as err:
            return f"gRPC health check on {target}: {err.code().name} {err.details() or ''}".rstrip()
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"gRPC health check on {target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return None


def probe_metrics(address: str) -> str | None:
    """None when GET /metrics answers 200, else what went wrong."""
    url = f"http://{local_target(address, 'STRAIT_METRICS_ADDRESS')}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except OSError as exc:
        return f"GET {url}: {exc}"
    return None if status == 200 else f"GET {url}: status {status}"


def check() -> str | None:
    """None when healthy, else the reason; ConfigError (or ValueError) for a malformed setting."""
    mode = serve_mode(None)
    settings = Settings.from_env()
    if mode in ("all", "api"):
        return probe_grpc(settings)
    if settings.metrics_address:
        return probe_metrics(settings.metrics_address)
    return None


def main() -> int:
    try:
        problem = check()
    except (ConfigError, ValueError) as exc:
        print(f"strait healthcheck: {exc}", file=sys.stderr)
        return 2
    if problem is not None:
        print(f"strait healthcheck: unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
