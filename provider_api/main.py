"""Builds the Provider app: settings, error envelopes, open CORS and every router.

No app is created at import: run it with `uvicorn --factory provider_api.main:create_app`, so the
settings (and their refusal of unsafe values) are read when the server starts. At start-up (the
lifespan) the Provider's database is migrated; a database that fails stops the start.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from c2d_core.ocean.refusals import PolicyError
from provider_api.deps import close_shared, shared
from provider_api.errors import install_error_handlers, strip_urls
from provider_api.nonces import NonceStore, NonceStoreUnavailable
from provider_api.routes import routers
from provider_api.routes.root import _version
from provider_api.schemas import components
from provider_api.settings import ProviderSettings

DESCRIPTION = (
    "Ocean Protocol Provider compute API (wire-compatible with ocean.py / ocean.js 3.x) on a Dagster "
    "compute engine. Signed routes take EIP-191 signatures over keccak(message + nonce); see each route."
)


async def _policy_refusal(request: Request, error: PolicyError) -> JSONResponse:
    """A compute-policy refusal in Ocean's shape: 400 `{"error": {"<resource>": "<code>"}}`."""
    return JSONResponse(status_code=400, content={"error": error.wire, "message": strip_urls(error.message)})


def migrate_at_start(app: FastAPI) -> None:
    """Build the nonce store now, which brings the Provider's database to its newest migration.

    At start-up rather than on the first request that needs it: that request would pay for the
    migrations, and a database that is unreachable or refuses them stops the Provider at once with
    the reason (uvicorn: "Application startup failed") instead of a Provider that answers 503 later.
    """
    settings: ProviderSettings = app.state.settings
    try:
        shared(app, "nonce_store", lambda: NonceStore(settings.nonce_db_url))
    except NonceStoreUnavailable as error:
        cause = error.__cause__
        reason = f"{type(cause).__name__}: {str(cause).splitlines()[0]}" if cause else str(error)
        # The URL without its password: the operator needs to know which database failed.
        where = make_url(settings.nonce_db_url).render_as_string(hide_password=True)
        raise RuntimeError(f"the Provider's database ({where}) cannot be migrated: {reason}") from None


# What a route may serve; OPTIONS is answered for every path that has a route.
CANDIDATE_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def methods_of(app: FastAPI, path: str) -> set[str]:
    """Every method some route serves at `path` (empty when no route has it), found by asking the
    routes themselves, as the router does for a request."""
    found: set[str] = set()
    for method in CANDIDATE_METHODS:
        scope: Scope = {"type": "http", "path": path, "method": method, "root_path": "", "path_params": {}}
        if any(route.matches(dict(scope))[0] is Match.FULL for route in app.router.routes):
            found.add(method)
    return found


class AllowedMethods:
    """`OPTIONS` answers 204 with `Allow` naming every method of the path, and so does a 405's `Allow`.

    Starlette answers both from the first route matching the path alone, so `/api/services/compute`
    (four routes, one per method) claimed to allow only POST. CORS preflights never get here: the
    CORS middleware, outside this one, answers them.
    """

    def __init__(self, app: ASGIApp, provider: FastAPI) -> None:
        self.app = app
        self.provider = provider

    def _allow(self, path: str) -> str | None:
        methods = methods_of(self.provider, path)
        return ", ".join(sorted(methods | {"OPTIONS"})) if methods else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and (allow := self._allow(scope["path"])):
            await Response(status_code=204, headers={"Allow": allow})(scope, receive, send)
            return

        async def fix_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allow = self._allow(scope["path"])
                if allow:
                    MutableHeaders(scope=message)["Allow"] = allow
            await send(message)

        await self.app(scope, receive, fix_allow)


def openapi_document(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The app's `openapi()`: FastAPI's document, plus the request models the routes name in their
    `openapi_extra` (provider_api.schemas), without FastAPI's 422 (this app answers 400 in Ocean's shape)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in components().items():
            schemas.setdefault(name, schema)
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = document
        return document

    return build


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Off the event loop: the migrations are blocking database work.
    await run_in_threadpool(migrate_at_start, app)
    yield
    close_shared(app)


def create_app(settings: ProviderSettings | None = None) -> FastAPI:
    settings = settings or ProviderSettings()
    app = FastAPI(
        title="C2D Provider",
        version=_version(),
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_exception_handler(PolicyError, _policy_refusal)  # type: ignore[arg-type]
    app.add_middleware(AllowedMethods, provider=app)
    # Added last, so it is outermost: error answers carry the CORS headers too. Ocean's Provider
    # is open to every origin (browsers running ocean.js call it directly); no cookies are used.
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
    for router in routers():
        app.include_router(router)
    app.openapi = openapi_document(app)  # type: ignore[method-assign]
    return app
