"""`fileinfo` (is a file reachable, how big, what type, its sha256) and `validateContainer`.

The probing and hashing live in provider_api.files; nothing here returns or logs any part of a
file's location.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from c2d_core.ocean.checksums import validate_container
from c2d_core.ocean.refusals import PolicyError
from provider_api import files, schemas
from provider_api.deps import AssetsLaterDep, DagsterJobsDep, ParamsDep, ResultStoresLaterDep, SettingsDep
from provider_api.errors import bad_request
from provider_api.schemas import FileInfo

router = APIRouter(prefix="/api/services", tags=["files"])


@router.post(
    "/fileinfo",
    name="fileinfo",
    summary="fileinfo",
    openapi_extra=schemas.operation(body_model=schemas.FileInfoBody),
    responses=schemas.responses(None, 400, 503),
    response_model=list[FileInfo],
    response_model_exclude_none=True,
    description=(
        "Whether a file is reachable, with contentLength, contentType, the server-declared filename and, "
        "when `checksum` is true, the sha256 of its content (files up to the Provider's checksum limit). "
        "Body: one file object `{type: 'url', url, method?, headers?, checksum?}`, or `{did, serviceId, "
        "checksum?}` for every file of a published service (decrypted by the Provider, one entry per file). "
        "Never returns a location."
    ),
)
def fileinfo(
    params: ParamsDep,
    settings: SettingsDep,
    assets: AssetsLaterDep,
    jobs: DagsterJobsDep,
    result_stores: ResultStoresLaterDep,
) -> list[FileInfo]:
    return files.file_infos(params, settings, assets=assets, jobs=jobs, result_stores=result_stores)


# --- validateContainer ---------------------------------------------------------------------------


@router.post(
    "/validateContainer",
    name="validateContainer",
    summary="validateContainer",
    openapi_extra=schemas.operation(body_model=schemas.ContainerBody),
    responses=schemas.responses(schemas.Container, 400, description="The container, echoed"),
    description=(
        "Check an algorithm container `{entrypoint, image, tag, checksum}`: entrypoint, image and checksum "
        "set, checksum a `sha256:` digest. 200 echoes it; 400 `{error: missing_entrypoint_image_checksum | "
        "checksum_prefix | checksum_format}`."
    ),
)
def validate_container_route(params: ParamsDep) -> dict[str, Any]:
    try:
        validate_container(params)
    except PolicyError as error:
        raise bad_request(error.code) from None
    return params
