"""What a broken, restarting or overloaded backend raises, named once for every caller.

asyncpg reports a connection broken by a PostgreSQL restart in several ways that share no base class besides
Exception: `PostgresConnectionError` subclasses (connection does not exist), `OperatorInterventionError`
subclasses ("the database system is shutting down" / "starting up"), `InterfaceError` ("connection is closed")
and `InternalClientError` ("another operation is in progress"). Catching only `PostgresError` and `OSError`
lets the last two end a loop silently, so loops and the API use the tuples below and nothing narrower.
"""

from __future__ import annotations

import asyncpg
from asyncpg.exceptions import OperatorInterventionError
from redis.exceptions import RedisError

DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # connection lost, refused, or never made
    OperatorInterventionError,  # shutting down, starting up, crashed, statement canceled
    asyncpg.InsufficientResourcesError,  # too many connections, out of memory or disk
    asyncpg.InterfaceError,  # the connection was closed under the call
    asyncpg.InternalClientError,  # the protocol state was broken by a lost connection
    OSError,  # the socket (TimeoutError, a pool acquire that timed out, is an OSError too)
)
"""The database cannot answer now; the same call may succeed later. Callers get UNAVAILABLE with retry info."""

DATABASE_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *DATABASE_UNAVAILABLE)
"""Everything a database call may raise short of a bug in our code: what a background loop logs, counts and
retries. A statement PostgreSQL refuses (a constraint, a lock timeout) is retried too, since the rows it
touched may have changed by the next pass; anything else ends the loop, and the supervisor ends the process."""

REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)
"""Everything a Redis call may raise short of a bug: Redis only speeds things up, so callers degrade."""


def database_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, DATABASE_UNAVAILABLE)


def statement_refused(exc: BaseException) -> bool:
    """PostgreSQL answered and refused the statement (a constraint, a value it cannot store): trying the same
    statement again will not help, unlike when the database is unavailable."""
    return isinstance(exc, asyncpg.PostgresError) and not database_unavailable(exc)
