"""The installed distribution's version, shared by the client and the server."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def distribution_version() -> str:
    try:
        return version("strait")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"
