"""FastAPI dependencies: the settings, nonce store, chain, Dagster jobs and environments a route needs.

Each shared object is built on first use and kept on `app.state`, one per app: creating the app
touches no database, chain or Dagster, and a part that is down fails the requests that need it (503)
rather than the Provider's start-up. The one exception is the nonce store: the app's start-up
(provider_api.main, its lifespan) builds it, migrating the Provider's database, and fails if it cannot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request

from c2d_core.chain import Chain, ChainError
from c2d_core.environments import Environments
from provider_api.dagster_jobs import DagsterJobs
from provider_api.errors import backend_error
from provider_api.nonces import NonceStore, NonceStoreUnavailable
from provider_api.settings import ProviderSettings

T = TypeVar("T")
_LOCKS_GUARD = threading.Lock()


def _build_lock(app: FastAPI, name: str) -> threading.Lock:
    # One lock per object, so a slow build (a chain that takes its timeout) holds up only its own users.
    with _LOCKS_GUARD:
        locks: dict[str, threading.Lock] | None = getattr(app.state, "build_locks", None)
        if locks is None:
            locks = app.state.build_locks = {}
        return locks.setdefault(name, threading.Lock())


def shared(app: FastAPI, name: str, build: Callable[[], T]) -> T:
    """`app.state.<name>`, built once by `build` (a failed build is retried by the next request)."""
    value = getattr(app.state, name, None)
    if value is None:
        with _build_lock(app, name):
            value = getattr(app.state, name, None)
            if value is None:
                value = build()
                setattr(app.state, name, value)
    return value


def get_settings(request: Request) -> ProviderSettings:
    settings: ProviderSettings = request.app.state.settings
    return settings


SettingsDep = Annotated[ProviderSettings, Depends(get_settings)]


def get_nonce_store(request: Request, settings: SettingsDep) -> NonceStore:
    try:
        return shared(request.app, "nonce_store", lambda: NonceStore(settings.nonce_db_url))
    except NonceStoreUnavailable as error:
        raise backend_error(str(error)) from None


NonceStoreDep = Annotated[NonceStore, Depends(get_nonce_store)]


def get_chain(request: Request, settings: SettingsDep) -> Chain:
    def connect() -> Chain:
        return Chain.connect(
            settings.rpc_url, settings.addresses_file, settings.chain_id, timeout=settings.rpc_timeout
        )

    try:
        return shared(request.app, "chain", connect)
    except ChainError as error:
        raise backend_error(f"the chain is unavailable: {error}") from None


ChainDep = Annotated[Chain, Depends(get_chain)]


def get_dagster_jobs(request: Request, settings: SettingsDep) -> DagsterJobs:
    return shared(
        request.app,
        "dagster_jobs",
        lambda: DagsterJobs(settings.graphql_url, environments_file=settings.environments_file),
    )


DagsterJobsDep = Annotated[DagsterJobs, Depends(get_dagster_jobs)]


def get_environments(request: Request, settings: SettingsDep) -> Environments:
    return shared(request.app, "environments", lambda: Environments.load(settings.environments_file))


EnvironmentsDep = Annotated[Environments, Depends(get_environments)]


def close_shared(app: FastAPI) -> None:
    """Release what `shared` built (database pools, HTTP clients); called when the app stops."""
    store: Any = getattr(app.state, "nonce_store", None)
    if store is not None:
        store.dispose()
    dagster_jobs: Any = getattr(app.state, "dagster_jobs", None)
    if dagster_jobs is not None:
        dagster_jobs.close()
