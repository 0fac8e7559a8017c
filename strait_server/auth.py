"""API keys (random secrets stored as SHA-256 digests), the admin key, and run tokens (HS256 JWT)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import jwt

KEY_PREFIX = "strait_"
RUN_TOKEN_ISSUER = "strait:run-token"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin (no project) or a project API key."""

    project_id: str | None
    is_admin: bool = False


def new_api_key() -> tuple[str, str, str]:
    """Returns (secret, display prefix, digest)."""
    secret = KEY_PREFIX + secrets.token_hex(32)
    return secret, secret[:12], digest_of(secret)


def digest_of(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def is_admin_key(presented: str, admin_key: str) -> bool:
    return bool(admin_key) and hmac.compare_digest(presented.encode(), admin_key.encode())


def run_token(signing_key: str, run_id: str, attempt: int, ttl_seconds: float) -> str:
    now = int(time.time())
    claims = {"iss": RUN_TOKEN_ISSUER, "sub": run_id, "attempt": attempt, "iat": now,
              "exp": now + int(ttl_seconds) + 1}
    return jwt.encode(claims, signing_key, algorithm="HS256")


def sign_body(secret: str, timestamp: int, body: bytes) -> str:
    """X-Strait-Signature: v1= + hex HMAC-SHA256(secret, "<timestamp>.<body>")."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()
