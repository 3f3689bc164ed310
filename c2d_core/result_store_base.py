"""The `ResultStore` interface, what a store reports for a stored result, and the local store.

No pydantic here: the publish pod imports this in a fresh interpreter for every job
(tests/unit/test_pod_imports.py). c2d_core.results re-exports all of it beside the manifest's model.
"""

from __future__ import annotations

import abc
import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

ResultType = Literal["output", "algorithmLog", "configurationLog", "publishLog", "attestation"]
CHUNK = 1024 * 1024
# The manifest sits beside a job's results; output names never start with a dot, so it cannot clash.
MANIFEST_NAME = ".manifest.json"
# A job the review gate holds (c2d_core.review) has its results under `<job id>.held`, which the
# Provider never serves.
HELD_SUFFIX = ".held"


def held_key(job_id: str) -> str:
    """The result store key a held job's results are stored under (a job id never holds a dot)."""
    return f"{job_id}{HELD_SUFFIX}"


def store_key_problem(job_id: str, key: str) -> str | None:
    """Why `key` may not be the store key of job `job_id`'s results (publish pod check), or None."""
    if key in (job_id, held_key(job_id)):
        return None
    return f"the results key must be the job id or {held_key('<job id>')}"


@dataclass(frozen=True)
class StoredObject:
    """Where a store put one result, and what it stored (size in bytes, sha256 hex)."""

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


def manifest_bytes(entries: Sequence[Mapping[str, Any]]) -> bytes:
    """The manifest file's bytes from its entries as mappings (`ResultEntry.model_dump()`'s keys)."""
    return json.dumps([dict(entry) for entry in entries], indent=1).encode("utf-8")
