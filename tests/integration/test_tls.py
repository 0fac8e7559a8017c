"""TLS and mutual TLS on the gRPC port, with a throwaway certificate authority: what a client trusting it, a
client that does not, and a client without a certificate each get; the health check and its probe over TLS."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from strait_client import AsyncClient, RetryPolicy, RunStatus, TlsConfig, UnavailableError
from strait_server.app import App, Role
from strait_server.config import Settings
from tests.conftest import AppFactory
from tests.processes import free_port
from tests.sink import Sink

NO_RETRY = RetryPolicy(max_attempts=1)
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Pki:
    """PEM files of a throwaway CA: the server's certificate (localhost and 127.0.0.1) and a client's."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _issue(ca: trustme.CA, directory: Path, name: str, *identities: str) -> tuple[Path, Path]:
    cert = ca.issue_cert(*identities)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return cert_path, key_path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = _issue(ca, tmp_path, "server", "localhost", "127.0.0.1")
    client = _issue(ca, tmp_path, "client", "worker-1.example")
    return Pki(tmp_path / "ca.pem", *server, *client)


@pytest.fixture
def stranger(tmp_path: Path) -> Pki:
    """Another CA's files: trusted by nobody here."""
    directory = tmp_path / "stranger"
    directory.mkdir()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server = _issue(ca, directory, "server", "localhost", "127.0.0.1")
    client = _issue(ca, directory, "client", "intruder.example")
    return Pki(directory / "ca.pem", *server, *client)


async def _tls_app(make_app: AppFactory, pki: Pki, *, mutual: bool = False) -> App:
    return await make_app(tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key),
                          tls_client_ca_file=str(pki.ca) if mutual else "")


def _client(app: App, key: str, tls: TlsConfig | None) -> AsyncClient:
    return AsyncClient(f"127.0.0.1:{app.port}", key, tls=tls, timeout=10, retry=NO_RETRY)


async def _project_key(app: App, settings: Settings, tls: TlsConfig) -> str:
    async with _client(app, settings.admin_key, tls) as admin:
        project = await admin.projects.create(f"p-{uuid.uuid4().hex[:8]}")
        return (await admin.projects.create_api_key("tls", project.id, scopes=["workers:connect"])).secret


async def _trigger_to_completion(client: AsyncClient, sink: Sink) -> None:
    job = await client.jobs.create(f"tls-{uuid.uuid4().hex[:6]}", sink.script("/tls"))
    run = await client.jobs.trigger(job.id, {"over": "tls"})
    done = await client.runs.wait(run.id, timeout=15)
    assert done.status is RunStatus.COMPLETED
    assert done.output == {"ok": True}
    [request] = sink.for_path("/tls")
    assert request.json() == {"over": "tls"}


async def test_a_client_trusting_the_ca_triggers_a_run_over_tls(
        make_app: AppFactory, settings: Settings, pki: Pki, sink: Sink) -> None:
    app = await _tls_app(make_app, pki)
    trusted = TlsConfig(ca_file=pki.ca)
    key = await _project_key(app, settings, trusted)
    async with _client(app, key, trusted) as client:
        await _trigger_to_completion(client, sink)
    # The certificate names localhost too: the address's host is what is verified.
    async with AsyncClient(f"localhost:{app.port}", key, tls=trusted, retry=NO_RETRY) as by_name:
        assert [job.slug async for job in by_name.jobs.list()] != []


async def test_a_client_that_does_not_trust_the_ca_gets_unavailable(
        make_app: AppFactory, settings: Settings, pki: Pki, stranger: Pki) -> None:
    app = await _tls_app(make_app, pki)
    for tls in (TlsConfig(), TlsConfig(ca_file=stranger.ca)):  # the public roots; another CA
        async with _client(app, settings.admin_key, tls) as client:
            with pytest.raises(UnavailableError):
                await client.projects.create(f"p-{uuid.uuid4().hex[:8]}")
    async with _client(app, settings.admin_key, None) as plaintext:
        with pytest.raises(UnavailableError):
            await plaintext.projects.create(f"p-{uuid.uuid4().hex[:8]}")


async def test_a_certificate_for_another_name_is_refused_unless_the_name_is_given(
        make_app: AppFactory, settings: Settings, pki: Pki, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "named-ca.pem"))
    cert, key = _issue(ca, tmp_path, "named", "strait.internal.example")
    app = await make_app(tls_cert_file=str(cert), tls_key_file=str(key))
    async with _client(app, settings.admin_key, TlsConfig(ca_file=tmp_path / "named-ca.pem")) as client:
        with pytest.raises(UnavailableError):
            await client.projects.create(f"p-{uuid.uuid4().hex[:8]}")
    named = TlsConfig(ca_file=tmp_path / "named-ca.pem", server_name="strait.internal.example")
    async with _client(app, settings.admin_key, named) as client:
        assert (await client.projects.create(f"p-{uuid.uuid4().hex[:8]}")).id


async def test_mutual_tls_requires_a_client_certificate_from_the_ca(
        make_app: AppFactory, settings: Settings, pki: Pki, stranger: Pki, sink: Sink) -> None:
    app = await _tls_app(make_app, pki, mutual=True)
    with_cert = TlsConfig(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    key = await _project_key(app, settings, with_cert)
    async with _client(app, key, with_cert) as client:
        await _trigger_to_completion(client, sink)
    without_cert = TlsConfig(ca_file=pki.ca)
    foreign_cert = TlsConfig(ca_file=pki.ca, cert_file=stranger.client_cert, key_file=stranger.client_key)
    for tls in (without_cert, foreign_cert):
        async with _client(app, key, tls) as client:
            with pytest.raises(UnavailableError):
                await client.jobs.get("any")


async def test_a_worker_serves_its_jobs_over_mutual_tls_from_the_variables(
        make_app: AppFactory, settings: Settings, pki: Pki) -> None:
    """examples/worker.py unchanged: Client.from_env and Worker.from_env take TLS from STRAIT_TLS_*."""
    app = await _tls_app(make_app, pki, mutual=True)
    with_cert = TlsConfig(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    key = await _project_key(app, settings, with_cert)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STRAIT_")},
           "STRAIT_ADDRESS": f"localhost:{app.port}", "STRAIT_API_KEY": key, "STRAIT_TLS_CA_FILE": str(pki.ca),
           "STRAIT_TLS_CLIENT_CERT_FILE": str(pki.client_cert), "STRAIT_TLS_CLIENT_KEY_FILE": str(pki.client_key)}
    setup = await asyncio.create_subprocess_exec(sys.executable, "examples/worker.py", "--setup", cwd=ROOT, env=env)
    assert await asyncio.wait_for(setup.wait(), 60) == 0
    worker = await asyncio.create_subprocess_exec(sys.executable, "-m", "strait_server", "worker",
                                                  "examples.worker:worker", cwd=ROOT, env=env)
    try:
        async with _client(app, key, with_cert) as client:
            run = await client.jobs.trigger("thumbnail", {"width": 1280})
            done = await client.runs.wait(run.id, timeout=60)
        assert done.status is RunStatus.COMPLETED and done.output == {"width": 320, "attempt": 1}
    finally:
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 30) == 0


async def _health(port: int, credentials: grpc.ChannelCredentials) -> int:
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(reply.status)


async def test_the_health_service_answers_over_tls(make_app: AppFactory, pki: Pki) -> None:
    app = await _tls_app(make_app, pki)
    assert await _health(app.port, TlsConfig(ca_file=pki.ca).credentials()) == health_pb2.HealthCheckResponse.SERVING
    mutual = await _tls_app(make_app, pki, mutual=True)
    client_tls = TlsConfig(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    assert await _health(mutual.port, client_tls.credentials()) == health_pb2.HealthCheckResponse.SERVING


async def _probe(env: dict[str, str]) -> tuple[int, str]:
    """`python -m strait_server.healthcheck` (a container's HEALTHCHECK) with these variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STRAIT_")}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "strait_server.healthcheck",
                                                env={**base, **env}, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_the_healthcheck_probe_follows_the_servers_tls(make_app: AppFactory, pki: Pki, stranger: Pki) -> None:
    app = await _tls_app(make_app, pki)
    server_env = {"STRAIT_ADDRESS": f"0.0.0.0:{app.port}", "STRAIT_TLS_CERT_FILE": str(pki.server_cert),
                  "STRAIT_TLS_KEY_FILE": str(pki.server_key)}
    assert await _probe({**server_env, "STRAIT_TLS_CA_FILE": str(pki.ca)}) == (0, "")
    status, err = await _probe({**server_env, "STRAIT_TLS_CA_FILE": str(stranger.ca)})
    assert status == 1 and "UNAVAILABLE" in err, err
    status, err = await _probe({**server_env, "STRAIT_TLS_CA_FILE": str(pki.ca), "STRAIT_MODE": "sideways"})
    assert status == 2 and "STRAIT_MODE must be one of" in err, err


async def test_the_healthcheck_probe_of_a_worker_reads_its_metrics(make_app: AppFactory) -> None:
    worker = await make_app(roles=frozenset({Role.WORKER}), metrics_address="127.0.0.1:0")
    env = {"STRAIT_MODE": "worker", "STRAIT_METRICS_ADDRESS": f"127.0.0.1:{worker.metrics_port}"}
    assert await _probe(env) == (0, "")
    await worker.stop()
    status, err = await _probe(env)
    assert status == 1 and "/metrics" in err, err
    assert await _probe({"STRAIT_MODE": "scheduler"}) == (0, "")  # nothing to ask: healthy while it runs


async def test_strait_serve_names_the_tls_file_it_cannot_use(settings: Settings, pki: Pki, tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STRAIT_")}
    env = {**base, "STRAIT_DATABASE_URL": settings.database_url, "STRAIT_REDIS_URL": settings.redis_url,
           "STRAIT_JWT_SIGNING_KEY": settings.jwt_signing_key, "STRAIT_ADDRESS": f"127.0.0.1:{free_port()}"}
    cases = {
        "STRAIT_TLS_KEY_FILE is set but STRAIT_TLS_CERT_FILE is not": {"STRAIT_TLS_KEY_FILE": str(pki.server_key)},
        f"STRAIT_TLS_KEY_FILE: cannot read '{tmp_path / 'nope.pem'}': No such file or directory": {
            "STRAIT_TLS_CERT_FILE": str(pki.server_cert), "STRAIT_TLS_KEY_FILE": str(tmp_path / "nope.pem")},
        "the key does not belong to the certificate": {
            "STRAIT_TLS_CERT_FILE": str(pki.server_cert), "STRAIT_TLS_KEY_FILE": str(pki.client_key)},
        "STRAIT_TLS_CLIENT_CA_FILE: ": {
            "STRAIT_TLS_CERT_FILE": str(pki.server_cert), "STRAIT_TLS_KEY_FILE": str(pki.server_key),
            "STRAIT_TLS_CLIENT_CA_FILE": str(pki.server_key)},
    }
    for expected, tls_env in cases.items():
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "strait_server", "serve", "--mode", "api",
                                                    env={**env, **tls_env}, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2, err.decode()
        assert err.decode().startswith("strait: ") and expected in err.decode(), err.decode()
