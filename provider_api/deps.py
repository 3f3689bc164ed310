"""FastAPI dependencies: every `Annotated[..., Depends(...)]` a route takes (settings, parameters, nonce
store, chain, Dagster jobs, environments, the services, agreement claims, result stores).

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
from c2d_core.result_stores import ResultStores
from c2d_core.run_stamp import stamp_key
from c2d_core.settings import engine_settings
from provider_api.access import AccessService
from provider_api.agreements import AgreementClaims
from provider_api.assets import Assets
from provider_api.compute import ComputeService
from provider_api.dagster_jobs import DagsterJobs
from provider_api.errors import backend_error
from provider_api.fees import ProviderFees
from provider_api.nonces import NonceStore, NonceStoreUnavailable
from provider_api.params import request_params
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

# A request's parameters (provider_api.params). For sync routes (run in the threadpool, so they may
# block on a database or the network): the body is read here, on the event loop.
ParamsDep = Annotated[dict[str, Any], Depends(request_params)]


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
        lambda: DagsterJobs(
            settings.graphql_url,
            environments_file=settings.environments_file,
            stamp_key=stamp_key(settings.private_key_hex),
            dagster_home=settings.dagster_home,
            active_seconds=settings.status_cache_seconds,
            cache_entries=settings.status_cache_entries,
        ),
    )


DagsterJobsDep = Annotated[DagsterJobs, Depends(get_dagster_jobs)]


def get_environments(request: Request, settings: SettingsDep) -> Environments:
    return shared(request.app, "environments", lambda: Environments.load(settings.environments_file))


EnvironmentsDep = Annotated[Environments, Depends(get_environments)]


def get_assets(request: Request, settings: SettingsDep, chain: ChainDep) -> Assets:
    def build() -> Assets:
        from c2d_core.publishing import ecies_decryptor
        from provider_api.assets import ChainDdoResolver

        resolver = ChainDdoResolver(chain, ecies_decryptor(settings.private_key_hex))
        return Assets(resolver, settings.private_key_hex)

    # One per app: its DDO index is shared by every request.
    return shared(request.app, "assets", build)


AssetsDep = Annotated[Assets, Depends(get_assets)]


def get_assets_later(request: Request, settings: SettingsDep) -> Callable[[], Assets]:
    """`Assets` built when called: for a route that reaches the chain for one form of its request only."""
    return lambda: get_assets(request, settings, get_chain(request, settings))


AssetsLaterDep = Annotated[Callable[[], Assets], Depends(get_assets_later)]


def get_fees(request: Request, settings: SettingsDep, chain: ChainDep) -> ProviderFees:
    return shared(request.app, "fees", lambda: ProviderFees(settings, chain))


FeesDep = Annotated[ProviderFees, Depends(get_fees)]


def get_compute_service(
    request: Request,
    settings: SettingsDep,
    environments: EnvironmentsDep,
    assets: AssetsDep,
    fees: FeesDep,
    chain: ChainDep,
) -> ComputeService:
    # One per app (its checksum cache is shared), built once under the app's lock.
    return shared(
        request.app, "compute_service", lambda: ComputeService(settings, environments, assets, fees, chain)
    )


ComputeDep = Annotated[ComputeService, Depends(get_compute_service)]


def get_access_service(
    request: Request, settings: SettingsDep, chain: ChainDep, assets: AssetsDep, fees: FeesDep
) -> AccessService:
    return shared(request.app, "access_service", lambda: AccessService(settings, chain, assets, fees))


AccessDep = Annotated[AccessService, Depends(get_access_service)]


def get_agreement_claims(request: Request, store: NonceStoreDep) -> AgreementClaims:
    """The agreement claims, in the nonce store's database (its engine, its schema)."""
    return shared(request.app, "agreement_claims", lambda: AgreementClaims(store.engine, schema=store.schema))


AgreementClaimsDep = Annotated[AgreementClaims, Depends(get_agreement_claims)]


def get_result_stores(request: Request, settings: SettingsDep) -> ResultStores:
    """Every store a manifest may point into: local (results_dir), and S3 / IPFS when `C2D_S3_*` /
    `C2D_IPFS_API_URL` configure them. Built once per app; their clients are reused."""
    return shared(
        request.app,
        "result_stores",
        lambda: ResultStores.from_settings(engine_settings(), settings.results_dir),
    )


ResultStoresDep = Annotated[ResultStores, Depends(get_result_stores)]


def get_result_stores_later(request: Request, settings: SettingsDep) -> Callable[[], ResultStores]:
    """The result stores built when called: for a route that reads results for one form of its request."""
    return lambda: get_result_stores(request, settings)


ResultStoresLaterDep = Annotated[Callable[[], ResultStores], Depends(get_result_stores_later)]


def close_shared(app: FastAPI) -> None:
    """Release what `shared` built (database pools, HTTP clients); called when the app stops."""
    store: Any = getattr(app.state, "nonce_store", None)
    if store is not None:
        store.dispose()
    dagster_jobs: Any = getattr(app.state, "dagster_jobs", None)
    if dagster_jobs is not None:
        dagster_jobs.close()
