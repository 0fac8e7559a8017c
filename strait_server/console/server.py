"""The console's HTTP server: sign-in, the session and CSRF checks every page passes, security headers, static
files, and the pages (pages/*). Served on STRAIT_CONSOLE_ADDRESS by the process that serves the API."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import grpc
from aiohttp import web

from strait_client._errors import (
    AbortedError,
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    StraitError,
    UnauthenticatedError,
)
from strait_client.v1 import job_pb2, project_pb2
from strait_server.config import listening_socket
from strait_server.console import pages
from strait_server.console.api import Caller, ConsoleApi
from strait_server.console.sessions import COOKIE, SessionStore
from strait_server.console.web import API, SESSION, TEMPLATES, environment, render

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATIC = Path(__file__).parent / "static"
SIGNIN_COOKIE = "strait_console_signin"
SESSIONS: web.AppKey[SessionStore] = web.AppKey("sessions", SessionStore)
SECURE_COOKIE: web.AppKey[bool] = web.AppKey("secure_cookie", bool)
# No script, style or frame from anywhere else; no inline script.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
STATUS_OF_ERROR: list[tuple[type[StraitError], int]] = [
    (InvalidArgumentError, 400), (NotFoundError, 404), (PermissionDeniedError, 403),
    (FailedPreconditionError, 409), (AbortedError, 409), (AlreadyExistsError, 409), (ResourceExhaustedError, 429)]
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects and refusals carry them too
        exc.headers.update(SECURITY_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _same_origin(request: web.Request) -> bool:
    """A browser names the page that sent a request in Origin (or Referer): it must be this console."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    return origin is None or urlsplit(origin).netloc == request.host


@web.middleware
async def signed_in(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every page but sign-in and static files needs a session; a change also needs the session's CSRF token
    (a form field, or the header htmx sends) and to come from the console's own origin."""
    if request.path.startswith("/static/") or request.path in ("/signin", "/healthz"):
        return await handler(request)
    session = request.app[SESSIONS].get(request.cookies.get(COOKIE, ""))
    if session is None:
        if request.method in UNSAFE or request.headers.get("Accept") == "text/event-stream":
            raise web.HTTPUnauthorized(text="sign in first")
        raise web.HTTPSeeOther(f"/signin?next={request.path_qs}" if request.path != "/" else "/signin")
    request[SESSION] = session
    if request.method in UNSAFE:
        token = request.headers.get("X-CSRF-Token") or str((await request.post()).get("csrf_token", ""))
        if not _same_origin(request) or not session.csrf_matches(token):
            raise web.HTTPForbidden(text="the form is stale or did not come from this console: reload the page")
    return await handler(request)


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An API call the key may not make, or that fails, becomes a page that says why (never a traceback)."""
    try:
        return await handler(request)
    except UnauthenticatedError:  # the key was revoked meanwhile
        request.app[SESSIONS].drop(request.cookies.get(COOKIE, ""))
        raise web.HTTPSeeOther("/signin") from None
    except StraitError as err:
        status = next((code for kind, code in STATUS_OF_ERROR if isinstance(err, kind)), 503)
        return render(request, "error.html", http_status=status, error=err)


async def signin_page(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(32)
    response = render(request, "signin.html", token=token, next=_next(request), problem="")
    response.set_cookie(SIGNIN_COOKIE, token, httponly=True, samesite="Strict", path="/signin")
    return response


def _next(request: web.Request) -> str:
    target = request.query.get("next", "/")
    return target if target.startswith("/") and not target.startswith("//") else "/"


async def signin(request: web.Request) -> web.StreamResponse:
    """Checks the key against the API (which also counts failures toward its lockout) and starts a session."""
    form = await request.post()
    token = str(form.get("csrf_token", ""))
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not secrets.compare_digest(token, expected) or not _same_origin(request):
        raise web.HTTPForbidden(text="the sign-in form is stale: reload the page")
    key = str(form.get("api_key", "")).strip()
    api = request.app[API]
    who = Caller.of(key, request.remote)

    def again(problem: str) -> web.Response:
        return render(request, "signin.html", http_status=401, token=expected, next=_next(request), problem=problem)
    if not key:
        return again("Enter an API key.")
    try:
        listed = await api.call(who, api.projects.ListProjects, project_pb2.ListProjectsRequest(page_size=1))
    except (UnauthenticatedError, PermissionDeniedError, InvalidArgumentError):
        return again("This key was not accepted.")
    try:
        await api.call(who, api.jobs.ListJobs, job_pb2.ListJobsRequest(page_size=1))
        admin = False
    except PermissionDeniedError:  # the admin key has no project of its own
        admin = True
    project = listed.projects[0] if listed.projects and not admin else None
    session = request.app[SESSIONS].create(key, project.id if project else "", project.slug if project else "",
                                           admin)
    response = web.HTTPSeeOther(_next(request) if not admin else "/projects")
    response.set_cookie(COOKIE, session.id, httponly=True, samesite="Strict", path="/",
                        secure=request.secure or request.app[SECURE_COOKIE])
    response.del_cookie(SIGNIN_COOKIE, path="/signin")
    raise response


async def signout(request: web.Request) -> web.StreamResponse:
    request.app[SESSIONS].drop(request.cookies.get(COOKIE, ""))
    response = web.HTTPSeeOther("/signin")
    response.del_cookie(COOKIE, path="/")
    raise response


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


def build_app(channel: grpc.aio.Channel, session_ttl_s: float, secure_cookie: bool = False) -> web.Application:
    app = web.Application(middlewares=[security_headers, api_errors, signed_in], client_max_size=1024 * 1024)
    app[API] = ConsoleApi(channel)
    app[TEMPLATES] = environment()
    app[SESSIONS] = SessionStore(session_ttl_s)
    app[SECURE_COOKIE] = secure_cookie
    app.router.add_get("/signin", signin_page)
    app.router.add_post("/signin", signin)
    app.router.add_post("/signout", signout)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static/", STATIC, append_version=True)
    pages.register(app.router)
    return app


class ConsoleServer:
    """The console on `address`, calling the API at `api_target` (this process's private Unix socket)."""

    def __init__(self, address: str, api_target: str, session_ttl_s: float, *, secure_cookie: bool = False) -> None:
        self._address = address
        self._api_target = api_target
        self._session_ttl_s = session_ttl_s
        self._secure_cookie = secure_cookie
        self._runner: web.AppRunner | None = None
        self._channel: grpc.aio.Channel | None = None
        self.port = 0

    async def start(self) -> None:
        sock = listening_socket(self._address, "STRAIT_CONSOLE_ADDRESS")
        self.port = sock.getsockname()[1]
        self._channel = grpc.aio.insecure_channel(self._api_target)
        app = build_app(self._channel, self._session_ttl_s, self._secure_cookie)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        log.info("serving the console", extra={"action": "console_serve", "address": self._address,
                                               "port": self.port})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
