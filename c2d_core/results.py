"""The results manifest and the `ResultStore` interface.

The manifest lists a job's results in Ocean's order (outputs, then the algorithm log, then the
configure and publish logs), then ours, the job's signed attestation (c2d_core.attestation). A
result's position is the `index` consumers download it by. `location` is where the store keeps it and
is internal: consumers never see it.
"""

from __future__ import annotations

import abc
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel, Field

ResultType = Literal["output", "algorithmLog", "configurationLog", "publishLog", "attestation"]
CHUNK = 1024 * 1024
# The manifest sits beside a job's results; output names never start with a dot, so it cannot clash.
MANIFEST_NAME = ".manifest.json"


class ResultEntry(BaseModel):
    index: int = Field(ge=0)
    filename: str
    filesize: int = Field(ge=0)
    type: ResultType
    sha256: str
    location: str = Field(description="store-specific key; internal, never sent to consumers")

    def public(self) -> dict[str, object]:
        return self.model_dump(exclude={"location"})


class StoredObject(BaseModel):
    location: str
    size: int
    sha256: str


class ResultStore(abc.ABC):
    """Where a job's results go. Local directory here; S3 and IPFS implement the same calls."""

    @abc.abstractmethod
    def put(self, job_id: str, name: str, source: BinaryIO) -> StoredObject:
        """Store `source` (read to its end) as `name` of `job_id`."""

    @abc.abstractmethod
    def open(self, location: str) -> BinaryIO:
        """Open a stored result for reading."""

    @abc.abstractmethod
    def delete_job(self, job_id: str) -> None:
        """Remove everything stored for `job_id` (storage expiry, cleanup)."""

    def read_range(self, location: str, start: int, length: int) -> Iterator[bytes]:
        """`length` bytes from `start` of a stored result, in chunks; stores with ranged reads override."""
        with self.open(location) as handle:
            handle.seek(start)
            remaining = length
            while remaining > 0:
                data = handle.read(min(CHUNK, remaining))
                if not data:
                    break
                remaining -= len(data)
                yield data


def check_job_id(job_id: str) -> str:
    if not job_id or "/" in job_id or job_id.startswith("."):
        raise ValueError(f"bad job id {job_id!r}")
    return job_id


def check_name(name: str) -> str:
    if not name or "/" in name or name in {".", ".."}:
        raise ValueError(f"bad result name {name!r}")
    return name


class LocalResultStore(ResultStore):
    """Results as files under `<root>/<job id>/`; locations are `<job id>/<name>`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _job_dir(self, job_id: str) -> Path:
        return self.root / check_job_id(job_id)

    def put(self, job_id: str, name: str, source: BinaryIO) -> StoredObject:
        check_name(name)
        target_dir = self._job_dir(job_id)
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / name
        digest = hashlib.sha256()
        size = 0
        partial = target.with_name(f".{name}.part")
        with partial.open("wb") as out:
            for chunk in iter(lambda: source.read(CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        partial.replace(target)
        return StoredObject(location=f"{job_id}/{name}", size=size, sha256=digest.hexdigest())

    def _path(self, location: str) -> Path:
        path = (self.root / location).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError("location outside the result store")
        return path

    def open(self, location: str) -> BinaryIO:
        return self._path(location).open("rb")

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self._job_dir(job_id), ignore_errors=True)


def manifest_document(entries: list[ResultEntry]) -> bytes:
    """The manifest file's bytes (with locations: it is internal, as the store is)."""
    import json

    return json.dumps([entry.model_dump() for entry in entries], indent=1).encode("utf-8")


def read_manifest(store: ResultStore, job_id: str) -> list[ResultEntry]:
    """A job's full manifest (with locations), as the publish pod stored it."""
    import json

    with store.open(f"{job_id}/{MANIFEST_NAME}") as handle:
        return [ResultEntry.model_validate(item) for item in json.load(handle)]
