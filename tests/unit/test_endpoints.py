from __future__ import annotations

import pytest

from strait_server.endpoints import check_url


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x", "http://localhost:8080/", "http://10.1.2.3/", "http://192.168.0.1/",
    "http://[::1]/", "http://169.254.169.254/latest", "http://0x7f000001/", "http://2130706433/",
    "http://metadata.google.internal/", "http://100.64.0.1/", "http://[::ffff:127.0.0.1]/",
])
def test_private_targets_refused_by_default(url: str) -> None:
    assert check_url(url, allow_private=False) is not None
    assert check_url(url, allow_private=True) is None


@pytest.mark.parametrize("url", ["ftp://example.com/", "example.com", "http:///nohost", "http://u:p@example.com/",
                                 "http://example.com:99999/"])
def test_malformed_urls_refused(url: str) -> None:
    assert check_url(url, allow_private=True) is not None


def test_public_url_accepted() -> None:
    assert check_url("https://api.example.com/hooks/run", allow_private=False) is None
