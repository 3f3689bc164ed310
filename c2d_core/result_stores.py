"""Result stores beyond the local disk: S3 (any S3 API), IPFS (a kubo node's RPC API), and the ones
extensions register by name.

A result's `location` says which store holds it: `s3://<bucket>/<key>`, `ipfs://<cid>`, a registered
store's own scheme (`<scheme>://…`), or a plain `<job id>/<name>` for the local store. `ResultStores`
opens any of them, so the Provider streams a result from wherever the manifest says it lives. Only
boto3 and httpx here: the publish pod and the Provider use these without importing Dagster.
`result_store_from_settings` is the one store factory (`C2D_RESULT_STORE` names the kind); the S3
client comes from c2d_core.s3 and the `ResultStore` interface from c2d_core.result_store_base. A new
store is a `ResultStore` subclass plus `register_result_store(ResultStoreType(...))` (docs/extending.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from c2d_core.extensions import ExtensionError, load_extensions
from c2d_core.result_store_base import (
    CHUNK,
    LocalResultStore,
    ResultStore,
    StoredObject,
    check_job_id,
    check_name,
)

if TYPE_CHECKING:
    # httpx only for the IPFS store, and the S3 settings (pydantic) and client only for the S3 one,
    # imported when one is made: the publish pod of a local store starts without either
    # (tests/unit/test_pod_imports.py).
    import httpx

    from c2d_core.s3 import S3Settings
    from c2d_core.settings import EngineSettings

S3_SCHEME = "s3://"
IPFS_SCHEME = "ipfs://"
# The built-in values of C2D_RESULT_STORE, in the order errors list them; extensions add more.
RESULT_STORE_KINDS = ("ipfs", "local", "s3")


class _HashingReader(io.RawIOBase):
    """Reads `source` through, counting and hashing what passes (for uploads that pull their input)."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self.source.read(CHUNK if size is None or size < 0 else size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


# --- S3 ---------------------------------------------------------------------------------------------


def _missing(error: Exception) -> bool:
    code = str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket")


class S3ResultStore(ResultStore):
    """Results as objects `<prefix><job id>/<name>` in one bucket, optionally server-side encrypted."""

    def __init__(self, client: Any, settings: S3Settings) -> None:
        if not settings.bucket:
            raise ValueError("the S3 result store needs a bucket (C2D_S3_BUCKET)")
        self.client = client
        self.settings = settings

    def _key(self, location: str) -> str:
        if location.startswith(S3_SCHEME):
            bucket, _, key = location.removeprefix(S3_SCHEME).partition("/")
            if bucket != self.settings.bucket or not key.startswith(self.settings.prefix):
                raise ValueError("location outside the result store")
            return key
        job_id, _, name = location.partition("/")
        return f"{self.settings.prefix}{check_job_id(job_id)}/{check_name(name)}"

    def put(self, job_id: str, name: str, source: BinaryIO) -> StoredObject:
        key = f"{self.settings.prefix}{check_job_id(job_id)}/{check_name(name)}"
        extra: dict[str, str] = {}
        if self.settings.sse:
            extra["ServerSideEncryption"] = self.settings.sse
            if self.settings.sse == "aws:kms" and self.settings.kms_key_id:
                extra["SSEKMSKeyId"] = self.settings.kms_key_id
        reader = _HashingReader(source)
        # upload_fileobj streams (multipart above 8 MiB) and reads its input in order, so the hash is
        # of exactly what was sent; boto3 retries failed parts itself.
        try:
            self.client.upload_fileobj(reader, self.settings.bucket, key, ExtraArgs=extra or None)
        except Exception as error:
            tries = self.settings.max_attempts
            raise OSError(0, f"S3 upload failed ({type(error).__name__}) after up to {tries} tries") from None
        return StoredObject(
            location=f"{S3_SCHEME}{self.settings.bucket}/{key}",
            size=reader.size,
            sha256=reader.digest.hexdigest(),
        )

    def _get(self, location: str, **kwargs: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.settings.bucket, Key=self._key(location), **kwargs)
        except Exception as error:
            if _missing(error):
                raise FileNotFoundError(location) from None
            raise

    def open(self, location: str) -> BinaryIO:
        return cast(BinaryIO, self._get(location)["Body"])

    def read_range(self, location: str, start: int, length: int) -> Iterator[bytes]:
        if length <= 0:
            return
        body = self._get(location, Range=f"bytes={start}-{start + length - 1}")["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def delete_job(self, job_id: str) -> None:
        prefix = f"{self.settings.prefix}{check_job_id(job_id)}/"
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(
                    Bucket=self.settings.bucket, Delete={"Objects": keys, "Quiet": True}
                )


# --- IPFS -------------------------------------------------------------------------------------------


class _ResponseReader(io.RawIOBase):
    """A streamed httpx response as a read-only file."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.chunks = response.iter_bytes()
        self.buffer = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = None if size is None or size < 0 else size
        while want is None or len(self.buffer) < want:
            chunk = next(self.chunks, b"")
            if not chunk:
                break
            self.buffer += chunk
        if want is None:
            data, self.buffer = self.buffer, b""
        else:
            data, self.buffer = self.buffer[:want], self.buffer[want:]
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.response.close()
        super().close()


class IpfsResultStore(ResultStore):
    """Results added (and pinned) through a kubo node's RPC API (`/api/v0`); locations are `ipfs://<cid>`.

    Each result is also linked in the node's MFS at `<root>/<job id>/<name>`, which is how a job's
    results are found again to unpin them (`delete_job`) and how `<job id>/<name>` locations open.
    """

    def __init__(self, api_url: str, client: httpx.Client | None = None, root: str = "/c2d") -> None:
        import httpx

        self.api = api_url.rstrip("/") + "/api/v0/"
        self.client = client or httpx.Client(timeout=httpx.Timeout(60.0), trust_env=False)
        self.root = root.rstrip("/")

    def _call(self, command: str, params: dict[str, Any], **kwargs: Any) -> httpx.Response:
        # The RPC API takes every command as POST, arguments as `arg` query parameters.
        response = self.client.post(self.api + command, params=params, **kwargs)
        if response.status_code != 200:
            message = _rpc_message(response)
            if "does not exist" in message or "not pinned" in message:
                raise FileNotFoundError(message)
            raise OSError(0, f"IPFS {command} failed: HTTP {response.status_code} {message[:200]}")
        return response

    def put(self, job_id: str, name: str, source: BinaryIO) -> StoredObject:
        path = f"{self.root}/{check_job_id(job_id)}/{check_name(name)}"
        reader = _HashingReader(source)
        added = self._call(
            "add",
            {"pin": "true", "cid-version": "1", "raw-leaves": "true", "quieter": "true"},
            files={"file": (name, cast(BinaryIO, reader), "application/octet-stream")},
        ).json()
        cid = str(added["Hash"])
        self._call("files/mkdir", {"arg": f"{self.root}/{job_id}", "parents": "true"})
        with contextlib.suppress(FileNotFoundError):  # replacing an earlier copy of the same name
            self._call("files/rm", {"arg": path})
        self._call("files/cp", {"arg": [f"/ipfs/{cid}", path]})
        return StoredObject(
            location=f"{IPFS_SCHEME}{cid}", size=reader.size, sha256=reader.digest.hexdigest()
        )

    def _stream(self, command: str, params: dict[str, Any]) -> httpx.Response:
        request = self.client.build_request("POST", self.api + command, params=params)
        response = self.client.send(request, stream=True)
        if response.status_code != 200:
            response.read()
            message = _rpc_message(response)
            response.close()
            if "does not exist" in message or "not found" in message:
                raise FileNotFoundError(message)
            raise OSError(0, f"IPFS {command} failed: HTTP {response.status_code}")
        return response

    def _source(self, location: str) -> tuple[str, dict[str, Any]]:
        if location.startswith(IPFS_SCHEME):
            return "cat", {"arg": location.removeprefix(IPFS_SCHEME)}
        job_id, _, name = location.partition("/")
        return "files/read", {"arg": f"{self.root}/{check_job_id(job_id)}/{check_name(name)}"}

    def open(self, location: str) -> BinaryIO:
        command, params = self._source(location)
        return cast(BinaryIO, io.BufferedReader(_ResponseReader(self._stream(command, params))))

    def read_range(self, location: str, start: int, length: int) -> Iterator[bytes]:
        if length <= 0:
            return
        command, params = self._source(location)
        # Both `cat` and `files/read` take offset and length (named `count` for files/read).
        extra = (
            {"offset": start, "length": length} if command == "cat" else {"offset": start, "count": length}
        )
        response = self._stream(command, {**params, **extra})
        try:
            yield from response.iter_bytes(CHUNK)
        finally:
            response.close()

    def delete_job(self, job_id: str) -> None:
        folder = f"{self.root}/{check_job_id(job_id)}"
        try:
            listing = self._call("files/ls", {"arg": folder, "long": "true"}).json()
        except FileNotFoundError:
            return
        for entry in listing.get("Entries") or []:
            with contextlib.suppress(FileNotFoundError):  # unpinned already (a retried expiry)
                self._call("pin/rm", {"arg": entry["Hash"]})
        self._call("files/rm", {"arg": folder, "recursive": "true"})


def _rpc_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("Message", ""))
    except ValueError:
        return response.text[:200]


# --- stores that extensions register ----------------------------------------------------------------


@dataclass(frozen=True)
class ResultStoreType:
    """A result store an extension adds, chosen by `C2D_RESULT_STORE=<name>`.

    `build` makes the store from a process's environment: the code location's (the ops read the
    manifest back, expiry deletes), the publish pod's (it stores the results) and the Provider's (it
    streams them to consumers). The publish pod's environment is cleared, so `variables` names what
    `build` reads there; they travel in the pod spec, so keep credentials out of them (read a
    mounted file instead). `scheme` starts every location the store's `put` returns (`webdav://…`):
    it is how a manifest entry finds its store again.
    """

    name: str
    build: Callable[[Mapping[str, str]], ResultStore]
    scheme: str
    variables: tuple[str, ...] = ()
    # Whether the publish pod needs the network to reach the store (a mounted folder would not).
    network: bool = True

    def __post_init__(self) -> None:
        if not _STORE_NAME.match(self.name) or self.name in RESULT_STORE_KINDS:
            raise ValueError(
                f"a result store's name must be a short lower-case word other than {RESULT_STORE_KINDS}"
            )
        if not _SCHEME.match(self.scheme) or self.scheme in (S3_SCHEME, IPFS_SCHEME):
            raise ValueError(f"result store {self.name!r}: scheme must look like 'name://' and be its own")


_STORE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]{0,30}://$")
RESULT_STORE_TYPES: dict[str, ResultStoreType] = {}


def register_result_store(store_type: ResultStoreType) -> ResultStoreType:
    """Make `store_type` available as `C2D_RESULT_STORE=<its name>`; refuses a name or scheme that
    another registration holds (the same registration again, a module imported twice, is a no-op)."""
    for other in RESULT_STORE_TYPES.values():
        if other == store_type:
            return store_type
        if store_type.name == other.name or store_type.scheme == other.scheme:
            raise ValueError(f"result store {store_type.name!r} clashes with {other.name!r} (name or scheme)")
    RESULT_STORE_TYPES[store_type.name] = store_type
    return store_type


def unregister_result_store(name: str) -> None:
    """Forget a registered store (tests that register one for a while)."""
    RESULT_STORE_TYPES.pop(name, None)


def result_store_type(name: str) -> ResultStoreType | None:
    """The registered store called `name`, after loading the deployment's extensions."""
    load_extensions()
    return RESULT_STORE_TYPES.get(name)


def result_store_kinds() -> list[str]:
    """Every value C2D_RESULT_STORE may take in this process."""
    load_extensions()
    return sorted({*RESULT_STORE_KINDS, *RESULT_STORE_TYPES})


# --- choosing a store -------------------------------------------------------------------------------


class ResultStores:
    """Opens a result wherever its location says it lives (the Provider's view of every store)."""

    def __init__(
        self,
        local: LocalResultStore,
        s3: ResultStore | None = None,
        ipfs: ResultStore | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.local, self.s3, self.ipfs = local, s3, ipfs
        # Registered stores are built from this environment when a location first names them.
        self._environ = environ
        self._registered: dict[str, ResultStore] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: EngineSettings, local_root: Path) -> ResultStores:
        """Local (`local_root`), and S3 / IPFS when `C2D_S3_BUCKET` / `C2D_IPFS_API_URL` set them up."""

        def store(kind: str, configured: object) -> ResultStore | None:
            return result_store_from_settings(kind, **store_options(settings)) if configured else None

        return cls(
            LocalResultStore(local_root),
            store("s3", settings.s3.bucket),
            store("ipfs", settings.ipfs_api_url),
        )

    def for_location(self, location: str) -> ResultStore:
        if location.startswith(S3_SCHEME):
            if self.s3 is None:
                raise LookupError("the result is in S3, which this service is not configured for")
            return self.s3
        if location.startswith(IPFS_SCHEME):
            if self.ipfs is None:
                raise LookupError("the result is in IPFS, which this service is not configured for")
            return self.ipfs
        scheme, separator, _ = location.partition("://")
        if separator:
            return self._registered_store(scheme + separator)
        return self.local

    def _registered_store(self, scheme: str) -> ResultStore:
        load_extensions(self._environ)
        for store_type in RESULT_STORE_TYPES.values():
            if store_type.scheme == scheme:
                with self._lock:
                    if store_type.name not in self._registered:
                        environ = os.environ if self._environ is None else self._environ
                        self._registered[store_type.name] = store_type.build(environ)
                    return self._registered[store_type.name]
        # The scheme alone: a location may carry a path that is the store's business.
        raise LookupError(f"the result is in a {scheme} store, which this service has no extension for")


def store_options(settings: EngineSettings) -> dict[str, Any]:
    """What `result_store_from_settings` needs, from the settings tree."""
    return {
        "local_root": settings.resolved_results_dir,
        "s3": settings.s3,
        "ipfs_api_url": settings.ipfs_api_url,
    }


def result_store_from_settings(
    kind: str,
    *,
    local_root: Path | None = None,
    s3: S3Settings | None = None,
    ipfs_api_url: str = "",
    client: Any = None,
    environ: Mapping[str, str] | None = None,
) -> ResultStore:
    """The one store factory (`kind` is `C2D_RESULT_STORE`): the Dagster resources, the publish pod
    and the Provider each hand it their view of the settings. `client` reuses an S3 client; a
    registered store is built from `environ` (the process's environment by default)."""
    if kind == "local":
        if local_root is None:
            raise ValueError("the local result store needs a folder (C2D_RESULTS_DIR)")
        return LocalResultStore(local_root)
    if kind == "s3":
        from c2d_core.s3 import S3Settings, s3_client

        settings = s3 or S3Settings()
        if not settings.bucket:
            raise ValueError("the S3 result store needs a bucket (C2D_S3_BUCKET)")
        return S3ResultStore(client or s3_client(settings), settings)
    if kind == "ipfs":
        if not ipfs_api_url:
            raise ValueError("the IPFS result store needs C2D_IPFS_API_URL (the node's RPC API)")
        return IpfsResultStore(ipfs_api_url)
    try:
        store_type = result_store_type(kind)
    except ExtensionError as error:
        raise ValueError(str(error)) from None
    if store_type is not None:
        return store_type.build(os.environ if environ is None else environ)
    kinds = ", ".join(result_store_kinds())
    raise ValueError(f"C2D_RESULT_STORE={kind[:40]!r} is not one of: {kinds}")
