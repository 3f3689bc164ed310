"""The results manifest and the `ResultStore` interface.

The manifest lists a job's results in Ocean's order (outputs, then the algorithm log, then the
configure and publish logs), then ours, the job's signed attestation (c2d_core.attestation). A
result's position is the `index` consumers download it by. `location` is where the store keeps it and
is internal: consumers never see it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

# The interface and the local store live beside this module, free of pydantic for the publish pod;
# they are imported from here as before.
from c2d_core.result_store_base import (
    CHUNK,
    MANIFEST_NAME,
    LocalResultStore,
    ResultStore,
    ResultType,
    StoredObject,
    check_job_id,
    check_name,
    manifest_bytes,
)

__all__ = [
    "CHUNK",
    "MANIFEST_NAME",
    "LocalResultStore",
    "ResultEntry",
    "ResultStore",
    "ResultType",
    "StoredObject",
    "check_job_id",
    "check_name",
    "manifest_bytes",
    "manifest_document",
    "read_manifest",
]


class ResultEntry(BaseModel):
    index: int = Field(ge=0)
    filename: str
    filesize: int = Field(ge=0)
    type: ResultType
    sha256: str
    location: str = Field(description="store-specific key; internal, never sent to consumers")

    def public(self) -> dict[str, object]:
        return self.model_dump(exclude={"location"})


def manifest_document(entries: list[ResultEntry]) -> bytes:
    """The manifest file's bytes (with locations: it is internal, as the store is)."""
    return manifest_bytes([entry.model_dump() for entry in entries])


def read_manifest(store: ResultStore, job_id: str) -> list[ResultEntry]:
    """A job's full manifest (with locations), as the publish pod stored it."""
    import json

    with store.open(f"{job_id}/{MANIFEST_NAME}") as handle:
        return [ResultEntry.model_validate(item) for item in json.load(handle)]
