"""Strait server: gRPC job orchestration on a PostgreSQL queue."""

from strait_client._version import distribution_version

__version__ = distribution_version()
"""The version of the installed `strait` distribution."""
