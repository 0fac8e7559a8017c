from __future__ import annotations

import time

import jwt
import pytest

from strait_server import auth


def test_run_tokens_verify_with_pyjwt_and_carry_the_claims() -> None:
    key = "k" * 32
    token = auth.RunTokenSigner(key).issue("run_abc", 3, ttl_seconds=60)
    claims = jwt.decode(token, key, algorithms=["HS256"], issuer="strait:run-token")
    assert claims["sub"] == "run_abc" and claims["attempt"] == 3
    assert 59 <= claims["exp"] - int(time.time()) <= 62
    assert auth.verify_run_token(key, token)["sub"] == "run_abc"


def test_run_token_signed_with_another_key_is_refused() -> None:
    token = auth.RunTokenSigner("a" * 32).issue("run_abc", 1, ttl_seconds=60)
    with pytest.raises(jwt.InvalidSignatureError):
        auth.verify_run_token("b" * 32, token)


def test_expired_run_token_is_refused() -> None:
    token = auth.RunTokenSigner("a" * 32).issue("run_abc", 1, ttl_seconds=-10)
    with pytest.raises(jwt.ExpiredSignatureError):
        auth.verify_run_token("a" * 32, token)


def test_signature_matches_the_documented_scheme() -> None:
    import hashlib
    import hmac
    expected = "v1=" + hmac.new(b"secret", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert auth.sign_body("secret", 1700000000, b"{}") == expected
