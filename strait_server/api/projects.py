"""ProjectService: projects (admin key) and their API keys."""

from __future__ import annotations

import grpc

from strait_client.v1 import project_pb2, project_pb2_grpc
from strait_server import auth, errors
from strait_server.api import convert, validate
from strait_server.api.deps import Deps
from strait_server.api.interceptor import principal
from strait_server.api.pagination import fingerprint, keyset_page, page_size
from strait_server.errors import Violations
from strait_server.model import ApiRateLimit

PROJECT_MUTABLE_PATHS = frozenset({"name", "api_rate_limit", "monthly_budget_microusd", "budget_action"})
_BUDGET_ACTIONS = {project_pb2.BUDGET_ACTION_UNSPECIFIED: "notify", project_pb2.BUDGET_ACTION_NOTIFY: "notify",
                   project_pb2.BUDGET_ACTION_REJECT: "reject"}
KEY_MUTABLE_PATHS = frozenset({"name", "api_rate_limit"})


def _require_admin(action: str = "creating projects") -> None:
    if not principal().is_admin:
        raise errors.PermissionDenied(f"{action} needs the admin key (STRAIT_ADMIN_KEY)")


def _target_project(requested: str) -> str:
    """Project keys act on their own project only; another project's id is NOT_FOUND (no leak)."""
    p = principal()
    if p.is_admin:
        if not requested:
            raise errors.InvalidArgument([errors.FieldViolation("project_id", "is required with the admin key")])
        return requested
    assert p.project_id is not None
    if requested and requested != p.project_id:
        raise errors.NotFound("project", requested)
    return p.project_id


class ProjectServicer(project_pb2_grpc.ProjectServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._d = deps

    async def CreateProject(self, request: project_pb2.CreateProjectRequest,
                            context: grpc.aio.ServicerContext) -> project_pb2.CreateProjectResponse:
        _require_admin()
        v = Violations()
        if not validate.SLUG_RE.fullmatch(request.slug):
            v.add("slug", "must be 1-128 characters of a-z, 0-9, '-' or '_', starting with a letter or digit")
        validate.check_text(v, "name", request.name, max_len=255)
        limit = validate.api_rate_limit(v, "api_rate_limit", request)
        v.raise_if_any()
        created = await self._d.projects.create(request.slug, request.name or request.slug, limit)
        return project_pb2.CreateProjectResponse(project=convert.project(created))

    async def GetProject(self, request: project_pb2.GetProjectRequest,
                         context: grpc.aio.ServicerContext) -> project_pb2.GetProjectResponse:
        v = Violations()
        validate.check_text(v, "id", request.id, max_len=128, required=True)
        v.raise_if_any()
        project_id = _target_project(request.id)
        found = await self._d.projects.get(project_id)
        if found is None:
            raise errors.NotFound("project", request.id)
        return project_pb2.GetProjectResponse(project=convert.project(found))

    async def ListProjects(self, request: project_pb2.ListProjectsRequest,
                           context: grpc.aio.ServicerContext) -> project_pb2.ListProjectsResponse:
        size = page_size(request.page_size)
        p = principal()
        only = None if p.is_admin else [p.project_id or ""]
        items, token = await keyset_page(
            self._d.page_tokens, request.page_token, fingerprint("projects", only), size,
            lambda cursor, limit: self._d.projects.list_projects(only, cursor, limit))
        return project_pb2.ListProjectsResponse(projects=[convert.project(i) for i in items],
                                                next_page_token=token)

    async def UpdateProject(self, request: project_pb2.UpdateProjectRequest,
                            context: grpc.aio.ServicerContext) -> project_pb2.UpdateProjectResponse:
        _require_admin("updating projects")
        v = Violations()
        paths = validate.mask_paths(v, list(request.update_mask.paths), PROJECT_MUTABLE_PATHS, "project")
        validate.check_text(v, "project.id", request.project.id, max_len=128, required=True)
        if "name" in paths:
            validate.check_text(v, "project.name", request.project.name, max_len=255, required=True)
        limit = validate.api_rate_limit(v, "project.api_rate_limit", request.project)
        p = request.project
        budget = p.monthly_budget_microusd if p.HasField("monthly_budget_microusd") else None
        if budget is not None and not 0 <= budget <= 10**15:
            v.add("project.monthly_budget_microusd", "must be between 0 and 1,000,000,000,000,000 micro-USD")
        action = _BUDGET_ACTIONS.get(p.budget_action) if "budget_action" in paths else None
        if "budget_action" in paths and action is None:
            v.add("project.budget_action", "is not a known budget action")
        v.raise_if_any()
        updated = await self._d.projects.update(
            request.project.id, name=request.project.name if "name" in paths else None,
            set_rate_limit="api_rate_limit" in paths, rate_limit=limit,
            set_budget="monthly_budget_microusd" in paths, budget=budget, budget_action=action)
        if updated is None:
            raise errors.NotFound("project", request.project.id)
        self._d.authenticator.forget()  # cached keys carry their project's limit
        self._d.budgets.forget(p.id)
        return project_pb2.UpdateProjectResponse(project=convert.project(updated))

    async def CreateApiKey(self, request: project_pb2.CreateApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> project_pb2.CreateApiKeyResponse:
        v = Violations()
        validate.check_text(v, "project_id", request.project_id, max_len=128)
        validate.check_text(v, "name", request.name, max_len=255)
        limit = validate.api_rate_limit(v, "api_rate_limit", request)
        for i, scope in enumerate(request.scopes):
            if scope not in auth.SCOPES:
                v.add(f"scopes[{i}]", f"is not a known scope ({', '.join(sorted(auth.SCOPES))})")
        v.raise_if_any()
        if limit is not None:
            # Otherwise a project key could mint itself a key with a higher limit.
            _require_admin("setting a rate limit")
        project_id = _target_project(request.project_id)
        if await self._d.projects.get(project_id) is None:
            raise errors.NotFound("project", project_id)
        s = self._d.settings
        if not principal().is_admin and self._d.limiter is not None:
            await self._d.limiter.admit_key_creation(project_id, ApiRateLimit(s.api_key_create_limit,
                                                                              s.api_key_create_window))
        secret, prefix, digest = auth.new_api_key()
        key = await self._d.projects.create_key(project_id, request.name, prefix, digest, limit,
                                                max_keys=s.max_api_keys_per_project,
                                                scopes=tuple(sorted(set(request.scopes))))
        if key is None:
            raise errors.ResourceExhausted(
                f"the project has {s.max_api_keys_per_project} API keys already (STRAIT_MAX_API_KEYS_PER_PROJECT); "
                "revoke one first", reason="API_KEY_LIMIT", quota_subject=f"project:{project_id}")
        return project_pb2.CreateApiKeyResponse(api_key=convert.api_key(key), secret=secret)

    async def ListApiKeys(self, request: project_pb2.ListApiKeysRequest,
                          context: grpc.aio.ServicerContext) -> project_pb2.ListApiKeysResponse:
        v = Violations()
        validate.check_text(v, "project_id", request.project_id, max_len=128)
        v.raise_if_any()
        size = page_size(request.page_size)
        project_id = _target_project(request.project_id)
        items, token = await keyset_page(
            self._d.page_tokens, request.page_token, fingerprint("keys", project_id), size,
            lambda cursor, limit: self._d.projects.list_keys(project_id, cursor, limit))
        return project_pb2.ListApiKeysResponse(api_keys=[convert.api_key(k) for k in items],
                                               next_page_token=token)

    async def UpdateApiKey(self, request: project_pb2.UpdateApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> project_pb2.UpdateApiKeyResponse:
        v = Violations()
        paths = validate.mask_paths(v, list(request.update_mask.paths), KEY_MUTABLE_PATHS, "API key")
        validate.check_text(v, "api_key.id", request.api_key.id, max_len=128, required=True)
        if "name" in paths:
            validate.check_text(v, "api_key.name", request.api_key.name, max_len=255)
        limit = validate.api_rate_limit(v, "api_key.api_rate_limit", request.api_key)
        v.raise_if_any()
        if "api_rate_limit" in paths:
            _require_admin("changing a rate limit")
        p = principal()
        key = await self._d.projects.update_key(
            request.api_key.id, None if p.is_admin else p.project_id,
            name=request.api_key.name if "name" in paths else None,
            set_rate_limit="api_rate_limit" in paths, rate_limit=limit)
        if key is None:
            raise errors.NotFound("api_key", request.api_key.id)
        self._d.authenticator.forget()
        return project_pb2.UpdateApiKeyResponse(api_key=convert.api_key(key))

    async def RevokeApiKey(self, request: project_pb2.RevokeApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> project_pb2.RevokeApiKeyResponse:
        v = Violations()
        validate.check_text(v, "id", request.id, max_len=128, required=True)
        v.raise_if_any()
        p = principal()
        key = await self._d.projects.revoke_key(request.id, None if p.is_admin else p.project_id)
        if key is None:
            raise errors.NotFound("api_key", request.id)
        self._d.authenticator.forget()
        return project_pb2.RevokeApiKeyResponse(api_key=convert.api_key(key))
