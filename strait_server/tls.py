"""TLS on the gRPC port: the server credentials that STRAIT_TLS_CERT_FILE, STRAIT_TLS_KEY_FILE and
STRAIT_TLS_CLIENT_CA_FILE name, read and checked at start-up so that a wrong file stops the server with its name
rather than failing every handshake."""

from __future__ import annotations

import grpc

from strait_client._tls import read_ca, read_key_pair
from strait_server.config import ConfigError, Settings


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The gRPC server credentials of the TLS settings; None when TLS is off (plaintext).

    With STRAIT_TLS_CLIENT_CA_FILE every client must present a certificate signed by one of its authorities.
    Raises ConfigError naming the variable whose file cannot be read, holds no PEM, or does not match."""
    settings.check_tls()
    if not settings.tls_cert_file:
        return None
    _check_readable(settings.tls_cert_file, "STRAIT_TLS_CERT_FILE")
    _check_readable(settings.tls_key_file, "STRAIT_TLS_KEY_FILE")
    try:
        cert, key = read_key_pair(settings.tls_cert_file, settings.tls_key_file)
    except ValueError as exc:
        raise ConfigError(f"STRAIT_TLS_CERT_FILE and STRAIT_TLS_KEY_FILE: {exc}") from None
    client_ca = None
    if settings.tls_client_ca_file:
        try:
            client_ca = read_ca(settings.tls_client_ca_file)
        except ValueError as exc:
            raise ConfigError(f"STRAIT_TLS_CLIENT_CA_FILE: {exc}") from None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def _check_readable(path: str, name: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path!r}: {exc.strerror or exc}") from None
