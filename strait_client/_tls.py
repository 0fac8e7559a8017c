"""TLS for the client's connection (TlsConfig, also read from STRAIT_TLS* variables), and the PEM checks that the
server shares: files are read and checked when a channel is opened, so that a wrong path or a key that does not
belong to its certificate is reported by name instead of as a failed handshake later."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

PathLike = str | os.PathLike[str]

ON = ("1", "true", "yes", "on")
OFF = ("0", "false", "no", "off")


class _EncryptedKey(Exception):
    """Raised by the password callback: gRPC takes only unencrypted keys, so an encrypted one is refused."""


def _refuse_password() -> str:
    raise _EncryptedKey


def _read(path: PathLike) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}") from None


def read_ca(path: PathLike) -> bytes:
    """The PEM certificates in `path`; ValueError (naming the file and the reason) unless it holds at least one."""
    data = _read(path)
    try:
        ssl.create_default_context(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise ValueError(f"{os.fspath(path)!r} holds no PEM certificate ({exc})") from None
    return data


def read_key_pair(cert_path: PathLike, key_path: PathLike) -> tuple[bytes, bytes]:
    """(certificate chain, private key) as PEM bytes; ValueError unless both read, parse and belong together."""
    cert, key = _read(cert_path), _read(key_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert_path, key_path, password=_refuse_password)
    except _EncryptedKey:
        raise ValueError(f"the key {os.fspath(key_path)!r} is encrypted; gRPC needs an unencrypted PEM key") from None
    except ssl.SSLError as exc:
        reason = "the key does not belong to the certificate" if exc.reason == "KEY_VALUES_MISMATCH" else (
            "not a PEM certificate chain and a PEM private key")
        raise ValueError(f"{os.fspath(cert_path)!r} and {os.fspath(key_path)!r}: {reason} ({exc})") from None
    return cert, key


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS on the client's connection (Client, AsyncClient, Worker, RunContext).

    Args:
        ca_file: PEM certificates of the authorities to trust; None: the public roots that gRPC ships.
        cert_file: The client's PEM certificate chain, for a server that requires mutual TLS.
        key_file: The client certificate's unencrypted PEM private key (with cert_file, or neither).
        server_name: The name the server's certificate must carry, when it is not the address's host (for
            example when connecting by IP address or through a tunnel); gRPC's ssl_target_name_override.

    Raises:
        ValueError: Only one of cert_file and key_file is given.
    """

    ca_file: PathLike | None = None
    cert_file: PathLike | None = None
    key_file: PathLike | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")

    def credentials(self) -> grpc.ChannelCredentials:
        """Reads the files and returns the channel credentials they make.

        Returns:
            The credentials for grpc.secure_channel.

        Raises:
            ValueError: A file cannot be read, holds no PEM certificate, or the key does not match its certificate.
        """
        roots = read_ca(self.ca_file) if self.ca_file is not None else None
        cert = key = None
        if self.cert_file is not None and self.key_file is not None:
            cert, key = read_key_pair(self.cert_file, self.key_file)
        return grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=cert)

    def channel_options(self) -> list[tuple[str, str]]:
        """The gRPC channel options these settings stand for.

        Returns:
            grpc.ssl_target_name_override when server_name is set, else nothing.
        """
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TlsConfig | None:
        """TLS as the STRAIT_TLS* variables say: STRAIT_TLS (1/0), STRAIT_TLS_CA_FILE, STRAIT_TLS_CLIENT_CERT_FILE,
        STRAIT_TLS_CLIENT_KEY_FILE and STRAIT_TLS_SERVER_NAME. Any of the last four turns TLS on by itself.

        Args:
            env: The variables (default os.environ).

        Returns:
            The settings, or None for plaintext (no variable set, or STRAIT_TLS=0).

        Raises:
            ValueError: STRAIT_TLS is not a boolean, STRAIT_TLS=0 contradicts another variable, or only one of
                STRAIT_TLS_CLIENT_CERT_FILE and STRAIT_TLS_CLIENT_KEY_FILE is set.
        """
        env = os.environ if env is None else env
        names = ("STRAIT_TLS_CA_FILE", "STRAIT_TLS_CLIENT_CERT_FILE", "STRAIT_TLS_CLIENT_KEY_FILE",
                 "STRAIT_TLS_SERVER_NAME")
        ca, cert, key, server_name = (env.get(name) or None for name in names)
        switch = env.get("STRAIT_TLS", "").strip().lower()
        given = [name for name, value in zip(names, (ca, cert, key, server_name), strict=True) if value]
        if switch in OFF and given:
            raise ValueError(f"STRAIT_TLS turns TLS off, but {' and '.join(given)} set TLS options")
        if switch and switch not in ON + OFF:
            raise ValueError(f"STRAIT_TLS: {env['STRAIT_TLS']!r} is not a boolean (1 or 0)")
        if switch in OFF or not (switch or given):  # unset (or empty) and no option: plaintext
            return None
        if (cert is None) != (key is None):
            raise ValueError("STRAIT_TLS_CLIENT_CERT_FILE and STRAIT_TLS_CLIENT_KEY_FILE must be set together")
        return cls(ca_file=ca, cert_file=cert, key_file=key, server_name=server_name)
