"""Projects and their API keys, for the admin key: list and create projects; list a project's keys, create one
(its secret is shown once, on the page the creation leads to) and revoke one. Project keys are sent away: the
API refuses them these calls anyway."""

from __future__ import annotations

from aiohttp import web

from strait_client._admin_models import ApiKey, Project
from strait_client.v1 import project_pb2
from strait_server.console.sessions import ConsoleSession
from strait_server.console.web import API, caller, query, render, session_of

PAGE_SIZE = 50
WORKERS_SCOPE = "workers:connect"


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/projects", projects_page)
    router.add_post("/projects", create_project)
    router.add_get("/projects/{id}", project_page)
    router.add_post("/projects/{id}/keys", create_key)
    router.add_post("/projects/{id}/keys/{key}/revoke", revoke_key)


def admin_only(session: ConsoleSession) -> None:
    if not session.is_admin:
        raise web.HTTPSeeOther("/")


async def projects_page(request: web.Request) -> web.StreamResponse:
    admin_only(session_of(request))
    api = request.app[API]
    listed = await api.call(caller(request), api.projects.ListProjects, project_pb2.ListProjectsRequest(
        page_size=PAGE_SIZE, page_token=request.query.get("page_token", "")))
    return render(request, "projects.html", title="Projects", projects=[Project.from_proto(p) for p in listed.projects],
                  next_page=query(request, page_token=listed.next_page_token) if listed.next_page_token else "")


async def create_project(request: web.Request) -> web.StreamResponse:
    admin_only(session_of(request))
    form = await request.post()
    api = request.app[API]
    created = await api.call(caller(request), api.projects.CreateProject, project_pb2.CreateProjectRequest(
        slug=str(form.get("slug", "")).strip(), name=str(form.get("name", "")).strip()))
    raise web.HTTPSeeOther(f"/projects/{created.project.id}")


async def project_page(request: web.Request) -> web.StreamResponse:
    session = session_of(request)
    admin_only(session)
    api, who = request.app[API], caller(request)
    project_id = request.match_info["id"]
    project = Project.from_proto(
        (await api.call(who, api.projects.GetProject, project_pb2.GetProjectRequest(id=project_id))).project)
    listed = await api.call(who, api.projects.ListApiKeys, project_pb2.ListApiKeysRequest(
        project_id=project_id, page_size=PAGE_SIZE, page_token=request.query.get("page_token", "")))
    keys = [ApiKey.from_proto(k) for k in listed.api_keys]
    # A secret created for this project's new key is shown on this one rendering only.
    secrets = {name.split("/", 1)[1]: session.shown_once.pop(name) for name in list(session.shown_once)
               if name.startswith(project_id + "/")}
    return render(request, "project.html", title=f"Project {project.slug}", project=project, keys=keys,
                  secrets=secrets, workers_scope=WORKERS_SCOPE,
                  next_page=query(request, page_token=listed.next_page_token) if listed.next_page_token else "")


async def create_key(request: web.Request) -> web.StreamResponse:
    session = session_of(request)
    admin_only(session)
    form = await request.post()
    api = request.app[API]
    project_id = request.match_info["id"]
    created = await api.call(caller(request), api.projects.CreateApiKey, project_pb2.CreateApiKeyRequest(
        project_id=project_id, name=str(form.get("name", "")).strip(),
        scopes=[WORKERS_SCOPE] if form.get("workers") else []))
    session.shown_once[f"{project_id}/{created.api_key.id}"] = created.secret
    raise web.HTTPSeeOther(f"/projects/{project_id}#key-{created.api_key.id}")


async def revoke_key(request: web.Request) -> web.StreamResponse:
    admin_only(session_of(request))
    api = request.app[API]
    project_id, key_id = request.match_info["id"], request.match_info["key"]
    await api.call(caller(request), api.projects.RevokeApiKey, project_pb2.RevokeApiKeyRequest(id=key_id))
    raise web.HTTPSeeOther(f"/projects/{project_id}#key-{key_id}")
