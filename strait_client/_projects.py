"""`client.projects`: projects and their API keys, blocking (Projects) and asyncio (AsyncProjects)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from strait_client import _ops
from strait_client._admin_models import ApiKey, CreatedApiKey, Project
from strait_client._ops import DEFAULT_PAGE_SIZE, RateLimit
from strait_client._transport import AsyncTransport, Transport


class Projects:
    """`client.projects`: projects (creating one needs the admin key) and API keys."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(self, slug: str, name: str = "", *, api_rate_limit: RateLimit = None) -> Project:
        """Creates a project. Needs the admin key.

        Args:
            slug: Unique across the server: lower-case letters, digits and hyphens.
            name: A display name.
            api_rate_limit: The limit the project's keys share (an ApiRateLimit or {"requests": ..,
                "window": timedelta}); None: the server default.

        Returns:
            The project.

        Raises:
            PermissionDeniedError: The client's key is not the admin key.
            AlreadyExistsError: The slug is taken.
        """
        return self._t.call(_ops.create_project(slug, name, api_rate_limit))

    def get(self, project_id: str) -> Project:
        """Reads a project (a project key sees only its own).

        Args:
            project_id: The project's id ("proj_...").

        Returns:
            The project.

        Raises:
            NotFoundError: No such project visible to this key.
        """
        return self._t.call(_ops.get_project(project_id))

    def list(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[Project]:
        """The projects this key sees: all of them for the admin key, else its own.

        Args:
            page_size: Projects per call.

        Returns:
            An iterator of projects.

        Raises:
            StraitError: A page could not be fetched (raised while iterating).
        """
        return self._t.pages(_ops.list_projects(page_size))

    def update(self, project_id: str, **fields: Any) -> Project:
        """Changes exactly the given fields of a project. Needs the admin key.

        Args:
            project_id: The project's id.
            **fields: Any of name, api_rate_limit (an ApiRateLimit or a dict; replaced whole),
                monthly_budget_microusd and budget_action (a BudgetAction or "notify"/"reject"). None clears a
                field: api_rate_limit back to the server default, monthly_budget_microusd to no budget.

        Returns:
            The updated project.

        Raises:
            PermissionDeniedError: The client's key is not the admin key.
            NotFoundError: No such project.
            InvalidArgumentError: A value is invalid.
            ValueError: No field was given.
        """
        return self._t.call(_ops.update_project(project_id, fields))

    def create_api_key(self, name: str = "", project_id: str = "", *, api_rate_limit: RateLimit = None,
                       scopes: Sequence[str] = ()) -> CreatedApiKey:
        """Creates an API key.

        Args:
            name: A label for the key.
            project_id: The key's project; empty: the caller's own.
            api_rate_limit: The key's own rate limit (needs the admin key); None: the project's.
            scopes: What it may do beyond the API: "workers:connect" for a key that workers use.

        Returns:
            The key with its `secret`, which is shown only here: store it now.

        Raises:
            PermissionDeniedError: The key may not create keys in that project.
            NotFoundError: No such project.
        """
        return self._t.call(_ops.create_api_key(name, project_id, api_rate_limit, scopes))

    def list_api_keys(self, project_id: str = "", *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[ApiKey]:
        """The API keys of a project, revoked ones included, without their secrets.

        Args:
            project_id: The project; empty: the caller's own.
            page_size: Keys per call.

        Returns:
            An iterator of keys.

        Raises:
            PermissionDeniedError: The key may not see that project's keys (raised while iterating).
        """
        return self._t.pages(_ops.list_api_keys(project_id, page_size))

    def update_api_key(self, key_id: str, **fields: Any) -> ApiKey:
        """Changes exactly the given fields of an API key.

        Args:
            key_id: The key's id ("key_...").
            **fields: name and/or api_rate_limit (an ApiRateLimit or a dict; changing it needs the admin key).
                api_rate_limit=None puts the key back on its project's limit.

        Returns:
            The updated key.

        Raises:
            PermissionDeniedError: Changing api_rate_limit without the admin key.
            NotFoundError: No such key visible to this key.
            ValueError: No field was given.
        """
        return self._t.call(_ops.update_api_key(key_id, fields))

    def revoke_api_key(self, key_id: str) -> ApiKey:
        """Revokes an API key: it no longer authenticates.

        Args:
            key_id: The key's id ("key_...").

        Returns:
            The key, with `revoke_time` set.

        Raises:
            NotFoundError: No such key visible to this key.
        """
        return self._t.call(_ops.revoke_api_key(key_id))


class AsyncProjects:
    """`client.projects` of AsyncClient: the methods of Projects, awaited; `list` and `list_api_keys` are async
    iterators."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def create(self, slug: str, name: str = "", *, api_rate_limit: RateLimit = None) -> Project:
        """Creates a project. Needs the admin key.

        Args:
            slug: Unique across the server: lower-case letters, digits and hyphens.
            name: A display name.
            api_rate_limit: The limit the project's keys share (an ApiRateLimit or {"requests": ..,
                "window": timedelta}); None: the server default.

        Returns:
            The project.

        Raises:
            PermissionDeniedError: The client's key is not the admin key.
            AlreadyExistsError: The slug is taken.
        """
        return await self._t.call(_ops.create_project(slug, name, api_rate_limit))

    async def get(self, project_id: str) -> Project:
        """Reads a project (a project key sees only its own).

        Args:
            project_id: The project's id ("proj_...").

        Returns:
            The project.

        Raises:
            NotFoundError: No such project visible to this key.
        """
        return await self._t.call(_ops.get_project(project_id))

    def list(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[Project]:
        """The projects this key sees: all of them for the admin key, else its own.

        Args:
            page_size: Projects per call.

        Returns:
            An async iterator of projects.

        Raises:
            StraitError: A page could not be fetched (raised while iterating).
        """
        return self._t.pages(_ops.list_projects(page_size))

    async def update(self, project_id: str, **fields: Any) -> Project:
        """Changes exactly the given fields of a project. Needs the admin key.

        Args:
            project_id: The project's id.
            **fields: Any of name, api_rate_limit (an ApiRateLimit or a dict; replaced whole),
                monthly_budget_microusd and budget_action (a BudgetAction or "notify"/"reject"). None clears a
                field: api_rate_limit back to the server default, monthly_budget_microusd to no budget.

        Returns:
            The updated project.

        Raises:
            PermissionDeniedError: The client's key is not the admin key.
            NotFoundError: No such project.
            InvalidArgumentError: A value is invalid.
            ValueError: No field was given.
        """
        return await self._t.call(_ops.update_project(project_id, fields))

    async def create_api_key(self, name: str = "", project_id: str = "", *, api_rate_limit: RateLimit = None,
                             scopes: Sequence[str] = ()) -> CreatedApiKey:
        """Creates an API key.

        Args:
            name: A label for the key.
            project_id: The key's project; empty: the caller's own.
            api_rate_limit: The key's own rate limit (needs the admin key); None: the project's.
            scopes: What it may do beyond the API: "workers:connect" for a key that workers use.

        Returns:
            The key with its `secret`, which is shown only here: store it now.

        Raises:
            PermissionDeniedError: The key may not create keys in that project.
            NotFoundError: No such project.
        """
        return await self._t.call(_ops.create_api_key(name, project_id, api_rate_limit, scopes))

    def list_api_keys(self, project_id: str = "", *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[ApiKey]:
        """The API keys of a project, revoked ones included, without their secrets.

        Args:
            project_id: The project; empty: the caller's own.
            page_size: Keys per call.

        Returns:
            An async iterator of keys.

        Raises:
            PermissionDeniedError: The key may not see that project's keys (raised while iterating).
        """
        return self._t.pages(_ops.list_api_keys(project_id, page_size))

    async def update_api_key(self, key_id: str, **fields: Any) -> ApiKey:
        """Changes exactly the given fields of an API key.

        Args:
            key_id: The key's id ("key_...").
            **fields: name and/or api_rate_limit (an ApiRateLimit or a dict; changing it needs the admin key).
                api_rate_limit=None puts the key back on its project's limit.

        Returns:
            The updated key.

        Raises:
            PermissionDeniedError: Changing api_rate_limit without the admin key.
            NotFoundError: No such key visible to this key.
            ValueError: No field was given.
        """
        return await self._t.call(_ops.update_api_key(key_id, fields))

    async def revoke_api_key(self, key_id: str) -> ApiKey:
        """Revokes an API key: it no longer authenticates.

        Args:
            key_id: The key's id ("key_...").

        Returns:
            The key, with `revoke_time` set.

        Raises:
            NotFoundError: No such key visible to this key.
        """
        return await self._t.call(_ops.revoke_api_key(key_id))
