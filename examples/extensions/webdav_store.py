"""Example result store: a WebDAV folder (nginx `dav_methods`, Apache mod_dav, Nextcloud, rclone serve).

Results go to `<C2D_WEBDAV_URL>/<job id>/<name>` with HTTP PUT; locations are `webdav://<job id>/<name>`.
Enable it with `C2D_EXTENSIONS=webdav_store`, `C2D_EXTENSIONS_PATH=<this folder>`,
`C2D_RESULT_STORE=webdav` and `C2D_WEBDAV_URL=https://dav.example.org/c2d` in the code location's and
the Provider's environment (docs/extending.md). This sketch sends no credentials: put the server on
a network only the engine reaches, or add a header read from a mounted file.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, cast

import httpx

from c2d_core.result_stores import ResultStoreType, register_result_store
from c2d_core.results import CHUNK, ResultStore, StoredObject, check_job_id, check_name

SCHEME = "webdav://"
URL_VARIABLE = "C2D_WEBDAV_URL"


class _Counting:
    """Reads `source` in chunks for httpx's streaming upload, counting and hashing what is sent."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.digest = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.source.read(CHUNK):
            self.digest.update(chunk)
            self.size += len(chunk)
            yield chunk


class WebdavResultStore(ResultStore):
    def __init__(self, base_url: str, client: httpx.Client | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.client = client or httpx.Client(timeout=httpx.Timeout(60.0), trust_env=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> WebdavResultStore:
        base = environ.get(URL_VARIABLE, "").strip()
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"the webdav result store needs {URL_VARIABLE} (an http(s) folder URL)")
        return cls(base)

    def _url(self, location: str) -> str:
        # Its own locations and the engine's `<job id>/<name>` (how the manifest is read back).
        job_id, _, name = location.removeprefix(SCHEME).partition("/")
        return f"{self.base}/{check_job_id(job_id)}/{check_name(name)}"

    def _check(self, response: httpx.Response, what: str, location: str) -> None:
        if response.status_code == 404:
            raise FileNotFoundError(location)
        if response.status_code >= 300:
            raise OSError(0, f"WebDAV {what} failed: HTTP {response.status_code}")

    def put(self, job_id: str, name: str, source: BinaryIO) -> StoredObject:
        location = f"{SCHEME}{check_job_id(job_id)}/{check_name(name)}"
        # A collection must exist before a PUT into it; 405 means it already does.
        folder = self.client.request("MKCOL", f"{self.base}/{job_id}/")
        if folder.status_code not in (201, 405):
            raise OSError(0, f"WebDAV MKCOL failed: HTTP {folder.status_code}")
        body = _Counting(source)
        response = self.client.put(self._url(location), content=iter(body))
        self._check(response, "PUT", location)
        return StoredObject(location=location, size=body.size, sha256=body.digest.hexdigest())

    def open(self, location: str) -> BinaryIO:
        response = self.client.get(self._url(location))
        self._check(response, "GET", location)
        # Results are downloaded whole here; a production store would stream (see IpfsResultStore).
        return cast(BinaryIO, io.BytesIO(response.content))

    def read_range(self, location: str, start: int, length: int) -> Iterator[bytes]:
        if length <= 0:
            return
        headers = {"Range": f"bytes={start}-{start + length - 1}"}
        with self.client.stream("GET", self._url(location), headers=headers) as response:
            self._check(response, "GET", location)
            data: Any = response.iter_bytes(CHUNK)
            if response.status_code == 200:  # the server ignored the range: cut it here
                data = _slice(data, start, length)
            yield from data

    def delete_job(self, job_id: str) -> None:
        response = self.client.delete(f"{self.base}/{check_job_id(job_id)}/")
        if response.status_code not in (200, 204, 404):
            raise OSError(0, f"WebDAV DELETE failed: HTTP {response.status_code}")


def _slice(chunks: Iterator[bytes], start: int, length: int) -> Iterator[bytes]:
    position = 0
    for chunk in chunks:
        low, high = max(start - position, 0), min(start + length - position, len(chunk))
        if low < high:
            yield chunk[low:high]
        position += len(chunk)
        if position >= start + length:
            return


register_result_store(
    ResultStoreType(
        name="webdav",
        build=WebdavResultStore.from_environ,
        scheme=SCHEME,
        variables=(URL_VARIABLE,),
    )
)
