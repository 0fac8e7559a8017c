from __future__ import annotations

import pytest

from strait_server.endpoints import Resolver, check_url


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


@pytest.mark.parametrize("url", ["http://example.com/a b", "http://example.com/a\r\nX-Injected: 1",
                                 "http://example.com/\x00", "http://exa\x00mple.com/", "http://example.com/\x7f",
                                 "http://example.com/\ttab"])
def test_spaces_and_control_characters_refused(url: str) -> None:
    assert check_url(url, allow_private=False) == "must not contain spaces or control characters (percent-encode them)"
    assert check_url(url, allow_private=True) is not None


async def test_dial_refusals_say_the_same_whatever_the_reason() -> None:
    """Whoever made the job sees the dial error: it must not tell a blocked name from a private address."""
    resolver = Resolver(allow_private=False)
    messages = set()
    for host in ("localhost", "127.0.0.1", "10.0.0.1", "metadata.google.internal"):
        with pytest.raises(OSError) as caught:
            await resolver.resolve(host, 80)
        messages.add(str(caught.value).replace(repr(host), "HOST"))
    assert messages == {"endpoint host HOST does not resolve to an address that may be called"}
