"""Discovery (`GET /`) and the nonce route.

Ocean's clients never hard-code a path: they read `serviceEndpoints` from `/` and look each one up by
its Ocean name. The map is built from the app's own routes (a route is listed when its OpenAPI
`summary` is one of Ocean's names), so it lists exactly what this Provider serves.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

from eth_utils import is_address
from fastapi import APIRouter, FastAPI, Query, Request

from provider_api import schemas
from provider_api.deps import NonceStoreDep, SettingsDep
from provider_api.errors import backend_error, field_errors
from provider_api.nonces import NonceStoreUnavailable
from provider_api.schemas import NonceInfo, ProviderInfo

router = APIRouter(tags=["discovery"])

# Ocean's endpoint names, in the order its Provider lists them.
OCEAN_ENDPOINTS = (
    "nonce",
    "fileinfo",
    "initialize",
    "download",
    "initializeCompute",
    "computeStart",
    "computeStatus",
    "computeStop",
    "computeDelete",
    "computeResult",
    "computeStreamableLogs",  # Ocean Node's name; the Python Provider has no live log
    "computeEnvironments",
    "validateContainer",
    "encrypt",
    "decrypt",
    "create_auth_token",
    "delete_auth_token",
)
SOFTWARE = "Provider"


def _version() -> str:
    try:
        return version("c2d-dagster")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0.0.0"


def service_endpoints(app: FastAPI) -> dict[str, list[str]]:
    """Ocean name → [METHOD, path] for each route whose OpenAPI `summary` is an Ocean name.

    Read from the app's OpenAPI schema (built once, then cached by FastAPI): it is the public view of
    every mounted route with its full path, whatever router it came from.
    """
    found: dict[str, list[str]] = {}
    for path, operations in app.openapi().get("paths", {}).items():
        for method, operation in operations.items():
            name = operation.get("summary") if isinstance(operation, dict) else None
            if name in OCEAN_ENDPOINTS and name not in found:
                found[name] = [method.upper(), path]
    return {name: found[name] for name in OCEAN_ENDPOINTS if name in found}


@router.get(
    "/",
    name="root",
    summary="Discovery",
    description=(
        "What Ocean's clients read before every call: the chains served, the provider address per chain "
        "and, under `serviceEndpoints`, each Ocean endpoint name mapped to [METHOD, path]."
    ),
    response_model=ProviderInfo,
)
def root(request: Request, settings: SettingsDep) -> ProviderInfo:
    return ProviderInfo(
        software=SOFTWARE,
        version=_version(),
        chainIds=[settings.chain_id],
        providerAddresses={str(settings.chain_id): settings.address},
        serviceEndpoints=service_endpoints(request.app),
    )


@router.get(
    "/api/services/nonce",
    name="nonce",
    summary="nonce",
    responses=schemas.responses(None, 400, 503),
    description=(
        "The last nonce `userAddress` used in a signed request (1, stored, for an address never seen). "
        "Sign the next request with a larger one, usually this plus one."
    ),
    response_model=NonceInfo,
)
def nonce(
    store: NonceStoreDep,
    user_address: Annotated[str, Query(alias="userAddress", description="0x address of the signer")],
) -> NonceInfo:
    if not is_address(user_address):
        raise field_errors({"userAddress": ["The userAddress must be a 0x address (40 hex digits)."]})
    try:
        return NonceInfo(nonce=store.current(user_address))
    except NonceStoreUnavailable as error:
        raise backend_error(str(error)) from None
