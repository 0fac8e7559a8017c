"""One retry rule: the delay the dispatcher computes in Python and the one RECOVER computes in SQL agree."""

from __future__ import annotations

import random

import asyncpg
import pytest

from strait_server.dispatch.backoff import retry_delay_ms, retry_delay_sql

CASES = [("exponential", 1000, 60_000, attempt) for attempt in (1, 2, 3, 7, 20)] + [("fixed", 1500, 60_000, 4)]
SAMPLES = 400


@pytest.mark.parametrize(("strategy", "initial", "most", "attempt"), CASES)
async def test_python_and_sql_retry_delays_follow_one_rule(database_url: str, strategy: str, initial: int,
                                                           most: int, attempt: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        expression = retry_delay_sql("$1", "$2", "$3", "$4")
        rows = await conn.fetch(f"SELECT {expression} FROM generate_series(1, {SAMPLES})",
                                strategy, initial, most, attempt)
    finally:
        await conn.close()
    in_sql = [r[0] for r in rows]
    rng = random.Random(attempt)
    in_python = [retry_delay_ms(strategy, initial, most, attempt, rng) for _ in range(SAMPLES)]
    base = initial if strategy == "fixed" else min(initial * 2 ** (attempt - 1), most)
    for delays in (in_sql, in_python):
        assert int(base * 0.8) <= min(delays) and max(delays) <= base * 1.2
        # Jittered over most of the range: runs that failed together do not come back together.
        assert max(delays) - min(delays) > base * 0.3
