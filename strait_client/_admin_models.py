"""What the client returns for projects, API keys and endpoint circuits (see _models for the conventions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from strait_client._enums import BudgetAction, CircuitState, from_proto
from strait_client._models import duration_of, time_of
from strait_client.v1 import circuit_pb2, project_pb2


@dataclass(frozen=True, slots=True)
class ApiRateLimit:
    """At most `requests` calls per `window` (strait.v1.ApiRateLimit). Also accepted as input, e.g.
    `projects.update(project_id, api_rate_limit=ApiRateLimit(100, timedelta(seconds=1)))`."""

    requests: int
    window: timedelta

    @classmethod
    def from_proto(cls, m: project_pb2.ApiRateLimit) -> ApiRateLimit:
        """Decodes a strait.v1.ApiRateLimit message.

        Args:
            m: The message.

        Returns:
            The limit.
        """
        return cls(m.requests, duration_of(m, "window") or timedelta(0))


def _rate_limit(m: project_pb2.Project | project_pb2.ApiKey) -> ApiRateLimit | None:
    return ApiRateLimit.from_proto(m.api_rate_limit) if m.HasField("api_rate_limit") else None


@dataclass(frozen=True, slots=True)
class Project:
    """A project (strait.v1.Project). `api_rate_limit` None: the server default; `monthly_budget_microusd`
    None: no budget."""

    id: str
    slug: str
    name: str
    create_time: datetime | None
    api_rate_limit: ApiRateLimit | None
    monthly_budget_microusd: int | None
    budget_action: BudgetAction | None
    month_to_date_spend_microusd: int

    @classmethod
    def from_proto(cls, m: project_pb2.Project) -> Project:
        """Decodes a strait.v1.Project message.

        Args:
            m: The message.

        Returns:
            The project.
        """
        budget = m.monthly_budget_microusd if m.HasField("monthly_budget_microusd") else None
        return cls(m.id, m.slug, m.name, time_of(m, "create_time"), _rate_limit(m), budget,
                   from_proto(BudgetAction, m.budget_action), m.month_to_date_spend_microusd)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key, without its secret (strait.v1.ApiKey). `revoke_time` is set once it is revoked;
    `api_rate_limit` None: the project's limit, else the server default; `scopes` what it may do beyond the
    API ("workers:connect": open worker sessions)."""

    id: str
    project_id: str
    name: str
    key_prefix: str
    create_time: datetime | None
    revoke_time: datetime | None
    api_rate_limit: ApiRateLimit | None
    scopes: tuple[str, ...]

    @classmethod
    def from_proto(cls, m: project_pb2.ApiKey) -> ApiKey:
        """Decodes a strait.v1.ApiKey message.

        Args:
            m: The message.

        Returns:
            The key.
        """
        return cls(m.id, m.project_id, m.name, m.key_prefix, time_of(m, "create_time"), time_of(m, "revoke_time"),
                   _rate_limit(m), tuple(m.scopes))


@dataclass(frozen=True, slots=True)
class CreatedApiKey(ApiKey):
    """The key `projects.create_api_key` returns: an ApiKey plus its `secret` ("strait_..."), which the server
    shows only this once. The secret is left out of repr() so that logging the key does not leak it."""

    secret: str = field(repr=False)

    @classmethod
    def from_response(cls, m: project_pb2.CreateApiKeyResponse) -> CreatedApiKey:
        """Decodes a CreateApiKeyResponse.

        Args:
            m: The response.

        Returns:
            The key with its secret.
        """
        key = ApiKey.from_proto(m.api_key)
        return cls(key.id, key.project_id, key.name, key.key_prefix, key.create_time, key.revoke_time,
                   key.api_rate_limit, key.scopes, m.secret)


@dataclass(frozen=True, slots=True)
class EndpointCircuit:
    """The circuit breaker of one endpoint URL of the project (strait.v1.EndpointCircuit):
    `consecutive_failures` failed dispatches in a row; while OPEN, runs for it wait until `open_until`."""

    endpoint_url: str
    state: CircuitState | None
    consecutive_failures: int
    open_until: datetime | None
    update_time: datetime | None
    last_error: str

    @classmethod
    def from_proto(cls, m: circuit_pb2.EndpointCircuit) -> EndpointCircuit:
        """Decodes a strait.v1.EndpointCircuit message.

        Args:
            m: The message.

        Returns:
            The circuit.
        """
        return cls(m.endpoint_url, from_proto(CircuitState, m.state), m.consecutive_failures,
                   time_of(m, "open_until"), time_of(m, "update_time"), m.last_error)
