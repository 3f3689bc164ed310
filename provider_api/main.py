"""Builds the Provider app: settings, error envelopes, open CORS and every router.

No app is created at import: run it with `uvicorn --factory provider_api.main:create_app`, so the
settings (and their refusal of unsafe values) are read when the server starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from provider_api.deps import close_shared
from provider_api.errors import install_error_handlers, strip_urls
from provider_api.policy import PolicyError
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


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
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
