"""Endpoint URL rules: scheme, host, and no private or loopback targets unless allowed (SSRF guard)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from urllib.parse import urlsplit

_BLOCKED_NAMES = frozenset({"localhost", "localhost.localdomain", "metadata.google.internal"})
_EXTRA_BLOCKED = [ipaddress.ip_network(n) for n in (
    "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16",
)]


def is_private_address(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (not ip.is_global or ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified or any(ip in net for net in _EXTRA_BLOCKED))


def _literal_ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    try:  # non-standard IPv4 forms such as 0x7f.1 or 2130706433
        return socket.inet_ntoa(socket.inet_aton(host))
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return None


def check_url(url: str, *, allow_private: bool) -> str | None:
    """Returns why `url` is not acceptable as an endpoint, or None when it is."""
    if len(url) > 2048:
        return "must be at most 2048 characters"
    if any(c <= " " or c == "\x7f" for c in url):
        # Never sent as they are: CR and LF would be dropped at send, and the rest make another request line.
        return "must not contain spaces or control characters (percent-encode them)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    host = (parts.hostname or "").lower()
    if not host:
        return "must name a host"
    if parts.username or parts.password:
        return "must not carry credentials"
    del port
    if allow_private:
        return None
    if host in _BLOCKED_NAMES or host.endswith(".localhost"):
        return "must not point at a loopback or private host (set STRAIT_ALLOW_PRIVATE_ENDPOINTS to allow)"
    literal = _literal_ip(host)
    if literal is not None and is_private_address(literal):
        return "must not point at a loopback or private address (set STRAIT_ALLOW_PRIVATE_ENDPOINTS to allow)"
    return None


class Resolver:
    """Endpoint host names to addresses at dial time, cached for `ttl` seconds. Unless private endpoints
    are allowed, refuses blocked names and names resolving only to private addresses: job validation
    checked the URL, this also catches a public name later pointed at a private address (DNS rebinding)."""

    def __init__(self, *, allow_private: bool, ttl: float = 60.0) -> None:
        self._allow_private = allow_private
        self._ttl = ttl
        self._cache: dict[tuple[str, int], tuple[float, list[tuple[int, str]]]] = {}

    async def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """(address family, address) pairs to try in order; OSError when there is none allowed."""
        key = (host, port)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        addresses = await self._lookup(host, port)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + self._ttl, addresses)
        return addresses

    async def _lookup(self, host: str, port: int) -> list[tuple[int, str]]:
        # One message whether the name is blocked, unknown, or resolves only to private addresses: the error is
        # shown to whoever made the job, and must not tell them what internal names exist.
        refused = OSError(f"endpoint host {host!r} does not resolve to an address that may be called")
        if not self._allow_private and (host in _BLOCKED_NAMES or host.endswith(".localhost")):
            raise refused
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError):
                if self._allow_private:
                    raise
                raise refused from None
            found = list(dict.fromkeys((int(family), str(sockaddr[0])) for family, _, _, _, sockaddr in infos))
        else:
            found = [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, str(ip))]
        if self._allow_private:
            return found
        public = [(family, address) for family, address in found if not is_private_address(address)]
        if not public:
            raise refused
        return public
