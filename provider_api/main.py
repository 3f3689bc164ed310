"""Builds the Provider app: settings, error envelopes, open CORS and every router.

No app is created at import: run it with `uvicorn --factory provider_api.main:create_app`, so the
settings (and their refusal of unsafe values) are read when the server starts. At start-up (the
lifespan) the Provider's database is migrated; a database that fails stops the start.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

from c2d_core.ocean.refusals import PolicyError
from provider_api.deps import close_shared, shared
from provider_api.errors import install_error_handlers, strip_urls
from provider_api.nonces import NonceStore, NonceStoreUnavailable
from provider_api.routes import routers
from provider_api.routes.root import _version
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
    # Added last, so it is outermost: error answers carry the CORS headers too. Ocean's Provider
    # is open to every origin (browsers running ocean.js call it directly); no cookies are used.
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
    for router in routers():
        app.include_router(router)
    return app
