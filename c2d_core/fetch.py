"""Streaming download of Ocean file objects into the job volume, with limits, retries and a checksum.

Each file `type` (`url`, `ipfs`, `arweave`, `s3`, and whatever the deployment's extensions add) is a
`FileSource` registered in `FILE_SOURCES` by `@register_file_source`: it turns a file object into one
HTTP request, and everything after that (redirects through the guard, `FetchLimits`, retries,
streaming with sha256) is shared. A file's location is a secret of the data publisher, so no error
message, log line or exception raised from here ever contains any part of it. The SSRF guard lives in
`c2d_core.netguard`; callers pass its client. Extending: docs/extending.md.
"""

from __future__ import annotations

import abc
import hashlib
import json
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, TypeVar

import httpx

from c2d_core.extensions import load_extensions
from c2d_core.workflow import FileObject

MIB = 1024 * 1024
MAX_REDIRECTS = 5
ALLOWED_SCHEMES = frozenset({"http", "https"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

# Checks a URL (the first and every redirect hop) before it is requested; raises FetchError to refuse.
# This is the seam for the SSRF guard (private and metadata addresses); by default only schemes are checked.
UrlGuard = Callable[[httpx.URL], None]
Sleeper = Callable[[float], None]
Clock = Callable[[], float]


class FetchError(Exception):
    """A download failed. The message is safe to log and to show a consumer: it names no location."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


@dataclass(frozen=True)
class FetchLimits:
    """How long and how much one download may take. `deadline` bounds all attempts and backoffs."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3  # attempts after the first, for transient failures only
    backoff_base: float = 0.5
    backoff_cap: float = 10.0
    deadline: float = 900.0
    max_bytes: int = 1024 * MIB

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0 or self.read_timeout <= 0 or self.deadline <= 0:
            raise ValueError("timeouts and the deadline must be positive")
        if self.retries < 0 or self.max_bytes < 1:
            raise ValueError("retries must be >= 0 and max_bytes >= 1")


@dataclass(frozen=True)
class FetchedFile:
    size: int
    sha256: str


def check_scheme(url: httpx.URL) -> None:
    """The default guard: plain http(s) only, so no file:, ftp: or gopher: reads the pod's own disk."""
    if url.scheme not in ALLOWED_SCHEMES:
        raise FetchError("only http and https locations are allowed")
    if not url.host:
        raise FetchError("the location has no host")


def _query_params(userdata: Mapping[str, Any]) -> dict[str, str]:
    """Ocean sends userdata as query parameters on GET; nested values travel as JSON text."""
    params: dict[str, str] = {}
    for key, value in userdata.items():
        if isinstance(value, str):
            params[str(key)] = value
        elif isinstance(value, bool) or value is None:
            params[str(key)] = json.dumps(value)
        elif isinstance(value, int | float):
            params[str(key)] = str(value)
        else:
            params[str(key)] = json.dumps(value, separators=(",", ":"))
    return params


@dataclass(frozen=True)
class SourceSettings:
    """Operator-chosen endpoints for content-addressed types (never taken from a file object)."""

    ipfs_gateway: str = "https://ipfs.io"
    arweave_gateway: str = "https://arweave.net"


@dataclass(frozen=True)
class SourceRequest:
    """One file object as the HTTP request that fetches it."""

    method: str
    url: httpx.URL
    headers: dict[str, str]
    json_body: dict[str, Any] | None = None


class FileSource(abc.ABC):
    """One Ocean file `type`: turns a file object of that type into the HTTP request that fetches it.

    Everything after the request is shared by every type: the URL guard on the first and every
    redirect hop, streaming to the job volume with sha256, the deadline, the size cap and the retries.
    A new type is a subclass with `type` (and `fields`, the file object's own fields) plus
    `@register_file_source`. `request` raises FetchError with a message that names no location;
    any other exception becomes one fixed sentence, since library messages quote their input.
    """

    type: ClassVar[str]
    # The file object's fields beyond type, url, method and headers, e.g. ("hash",) for ipfs: what the
    # Provider's fileinfo keeps from a request's file object.
    fields: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def request(
        self, file_object: FileObject, userdata: Mapping[str, Any] | None, sources: SourceSettings
    ) -> SourceRequest:
        """The one request that fetches `file_object` (through the guard, like any URL)."""


# Keyed by Ocean's file `type`; filled by `register_file_source` (the built-in types below, then
# whatever C2D_EXTENSIONS imports).
FILE_SOURCES: dict[str, FileSource] = {}
_TYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")

S = TypeVar("S", bound=type[FileSource])


def register_file_source(source: S) -> S:
    """Class decorator: serve files of `source.type` with an instance of `source`.

    Refuses a second class for a type already registered (two extensions disagreeing on one type is
    a deployment error, not something to resolve by import order); registering the same class again
    (a module imported twice) is a no-op.
    """
    name = getattr(source, "type", None)
    if not isinstance(name, str) or not _TYPE_NAME.match(name):
        raise ValueError(f"{source.__name__}.type must be a short name (letters, digits, '-', '_')")
    current = FILE_SOURCES.get(name)
    if current is not None and type(current).__qualname__ != source.__qualname__:
        raise ValueError(f"file type {name!r} is already served by {type(current).__qualname__}")
    FILE_SOURCES[name] = source()
    return source


def unregister_file_source(name: str) -> None:
    """Stop serving `name` (tests that register a type for a while)."""
    FILE_SOURCES.pop(name, None)


def file_source(name: str) -> FileSource | None:
    """The source for file type `name`, after loading the deployment's extensions."""
    load_extensions()
    return FILE_SOURCES.get(name)


def file_source_types() -> frozenset[str]:
    """Every type this process serves (the built-in ones and the extensions')."""
    load_extensions()
    return frozenset(FILE_SOURCES)


def file_source_fields() -> tuple[str, ...]:
    """Every registered type's own file-object fields, each once."""
    load_extensions()
    return tuple(dict.fromkeys(name for source in FILE_SOURCES.values() for name in source.fields))


def file_field(file_object: FileObject, name: str) -> Any:
    """A type's own field of a file object (kept as a pydantic extra), or None."""
    return (file_object.model_extra or {}).get(name)


def default_headers(file_object: FileObject) -> dict[str, str]:
    """Identity encoding, so Content-Length is meaningful for the early size check; a file object's
    own headers (including its own Accept-Encoding) win."""
    return {"Accept-Encoding": "identity", **file_object.headers}


@register_file_source
class UrlSource(FileSource):
    """Ocean's `{type: url, url, method, headers}`."""

    type = "url"

    def request(
        self, file_object: FileObject, userdata: Mapping[str, Any] | None, sources: SourceSettings
    ) -> SourceRequest:
        if file_object.url is None:
            raise FetchError("a file of type 'url' needs a 'url'")
        url = httpx.URL(file_object.url)
        headers = default_headers(file_object)
        if file_object.method == "POST":
            # As Ocean's Provider does: POST carries userdata as a JSON body, GET as query parameters.
            return SourceRequest("POST", url, headers, json_body=dict(userdata) if userdata else None)
        if userdata:
            # Merged into the URL's own query, as `requests` does for Ocean (httpx's `params=` would
            # replace it).
            url = url.copy_merge_params(_query_params(userdata))
        return SourceRequest("GET", url, headers)


# A CID (v0 base58 or v1 base32/36), optionally with a path inside it; no dots, so no `..`.
_IPFS_PATH = re.compile(r"^[A-Za-z0-9]{10,100}(/[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*)*$")
_ARWEAVE_TX = re.compile(r"^[A-Za-z0-9_-]{43}$")


def gateway_url(gateway: str, path: str) -> httpx.URL:
    """`path` under an operator's gateway (`https://ipfs.io` + `ipfs/<cid>`)."""
    return httpx.URL(gateway.rstrip("/") + "/" + path)


@register_file_source
class IpfsSource(FileSource):
    """Ocean's `{type: ipfs, hash}` through the operator's gateway (`/ipfs/<cid>`)."""

    type = "ipfs"
    fields = ("hash",)

    def request(
        self, file_object: FileObject, userdata: Mapping[str, Any] | None, sources: SourceSettings
    ) -> SourceRequest:
        cid = file_field(file_object, "hash")
        if not isinstance(cid, str):
            raise FetchError("a file of type 'ipfs' needs a 'hash'")
        cid = cid.removeprefix("ipfs://").removeprefix("/ipfs/")
        if not _IPFS_PATH.match(cid):
            raise FetchError("the 'hash' of an ipfs file is not a CID")
        url = gateway_url(sources.ipfs_gateway, f"ipfs/{cid}")
        return SourceRequest("GET", url, default_headers(file_object))


@register_file_source
class ArweaveSource(FileSource):
    """Ocean's `{type: arweave, transactionId}` through the operator's gateway (`/<tx id>`)."""

    type = "arweave"
    fields = ("transactionId",)

    def request(
        self, file_object: FileObject, userdata: Mapping[str, Any] | None, sources: SourceSettings
    ) -> SourceRequest:
        tx_id = file_field(file_object, "transactionId")
        if not isinstance(tx_id, str) or not _ARWEAVE_TX.match(tx_id):
            raise FetchError("a file of type 'arweave' needs a 'transactionId' of 43 base64url characters")
        url = gateway_url(sources.arweave_gateway, tx_id)
        return SourceRequest("GET", url, default_headers(file_object))


@register_file_source
class S3Source(FileSource):
    """Ocean's `{type: s3, s3Access: {endpoint, region, bucket, objectKey, accessKeyId, secretAccessKey}}`:
    boto3 signs a short-lived GET (no network call), and the shared HTTP path fetches it, so the object
    store gets the same guard, limits and streaming as any URL."""

    type = "s3"
    fields = ("s3Access",)

    def request(
        self, file_object: FileObject, userdata: Mapping[str, Any] | None, sources: SourceSettings
    ) -> SourceRequest:
        access = file_field(file_object, "s3Access")
        if not isinstance(access, dict):
            raise FetchError("a file of type 's3' needs an 's3Access' object")
        missing = [
            name for name in ("endpoint", "bucket", "objectKey") if not isinstance(access.get(name), str)
        ]
        if missing:
            raise FetchError(f"the s3Access of an s3 file needs {', '.join(missing)}")
        endpoint = str(access["endpoint"])
        if "://" not in endpoint:
            endpoint = "https://" + endpoint
        check_scheme(httpx.URL(endpoint))
        import boto3

        from c2d_core.s3 import S3Settings, s3_client

        key_id, secret = access.get("accessKeyId"), access.get("secretAccessKey")
        signed = isinstance(key_id, str) and isinstance(secret, str)
        # Only signs (no request is sent); the consumer's keys live in this session alone.
        session = boto3.session.Session(
            aws_access_key_id=key_id if signed else None, aws_secret_access_key=secret if signed else None
        )
        region = str(access.get("region") or "us-east-1")
        settings = S3Settings(endpoint_url=endpoint, region=region)
        client = s3_client(settings, session=session, unsigned=not signed)
        url = client.generate_presigned_url(
            "get_object", Params={"Bucket": access["bucket"], "Key": access["objectKey"]}, ExpiresIn=3600
        )
        return SourceRequest("GET", httpx.URL(url), {"Accept-Encoding": "identity"})


def source_request(
    file_object: FileObject, userdata: Mapping[str, Any] | None, sources: SourceSettings
) -> SourceRequest:
    """The request that fetches `file_object`; FetchError (naming no location) when it cannot be built."""
    source = file_source(file_object.type)
    if source is None:
        raise FetchError(f"files of type '{file_object.type[:40]}' are not supported")
    try:
        request = source.request(file_object, userdata, sources)
    except FetchError:
        raise
    except Exception:
        # httpx and botocore messages quote what they were given: one fixed sentence instead.
        raise FetchError("the location is not a valid URL") from None
    if not isinstance(request, SourceRequest):
        raise FetchError(f"the '{file_object.type}' file source gave no request")
    return request


def _as_file_object(file_object: FileObject | Mapping[str, Any], label: str) -> FileObject:
    if isinstance(file_object, FileObject):
        return file_object
    try:
        return FileObject.model_validate(dict(file_object))
    except ValueError:
        # The validation error would quote the input, i.e. the location: say only what is wrong.
        raise FetchError(f"{label}: not a valid file object (needs 'type' and its fields)") from None


def fetch_to_file(
    file_object: FileObject | Mapping[str, Any],
    dest_path: Path,
    limits: FetchLimits,
    userdata: Mapping[str, Any] | None = None,
    client: httpx.Client | None = None,
    sleeper: Sleeper = time.sleep,
    clock: Clock = time.monotonic,
    *,
    url_guard: UrlGuard = check_scheme,
    label: str = "file",
    sources: SourceSettings | None = None,
) -> FetchedFile:
    """Download `file_object` to `dest_path` (via `<dest>.part`), returning its size and sha256.

    Transient failures (connection errors, timeouts, 5xx, 429) are retried with capped exponential
    backoff and jitter, within `limits.deadline`; anything else fails at once. `label` (e.g.
    "input file 0") starts every error message.
    """
    obj = _as_file_object(file_object, label)
    try:
        request = source_request(obj, userdata, sources or SourceSettings())
        url_guard(request.url)
    except FetchError as error:
        raise FetchError(f"{label}: {error.message}") from None

    own_client = client is None
    if client is None:
        # trust_env=False: no proxy or netrc from the pod's environment changes where requests go.
        client = httpx.Client(follow_redirects=False, trust_env=False)
    try:
        return _fetch_with_retries(request, dest_path, limits, client, sleeper, clock, url_guard, label)
    finally:
        if own_client:
            client.close()


def _fetch_with_retries(
    request: SourceRequest,
    dest_path: Path,
    limits: FetchLimits,
    client: httpx.Client,
    sleeper: Sleeper,
    clock: Clock,
    url_guard: UrlGuard,
    label: str,
) -> FetchedFile:
    deadline_at = clock() + limits.deadline
    attempts = 0
    while True:
        attempts += 1
        try:
            return _attempt(request, dest_path, limits, client, clock, deadline_at, url_guard)
        except FetchError as error:
            if not error.transient:
                raise FetchError(f"{label}: {error.message}") from None
            failure, retry_after = error, _retry_after_of(error)
        if attempts > limits.retries:
            raise FetchError(f"{label}: {failure.message} after {_attempts(attempts)}") from None
        delay = _backoff(attempts, limits, retry_after)
        if clock() + delay >= deadline_at:
            raise FetchError(
                f"{label}: {failure.message} after {_attempts(attempts)}, "
                f"and the {_seconds(limits.deadline)}-second deadline leaves no time to retry"
            ) from None
        sleeper(delay)


def _seconds(value: float) -> str:
    # Callers pass what is left of a larger budget (e.g. 837.4183 s): show it the way a person would.
    return f"{value:.0f}" if value >= 10 else f"{round(value, 1):g}"


def _attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


def _backoff(attempt: int, limits: FetchLimits, retry_after: float | None) -> float:
    ceiling = min(limits.backoff_cap, limits.backoff_base * 2.0 ** (attempt - 1))
    # Half fixed, half random: spreads many pods retrying one source without making waits unbounded.
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not cryptography
    if retry_after is not None:
        delay = max(delay, min(retry_after, limits.backoff_cap))
    return delay


class _TransientStatus(FetchError):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message, transient=True)
        self.retry_after = retry_after


def _retry_after_of(error: FetchError) -> float | None:
    return error.retry_after if isinstance(error, _TransientStatus) else None


def _parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: not worth parsing, the backoff still applies
    return seconds if seconds >= 0 else None


def _timeout(limits: FetchLimits, remaining: float) -> httpx.Timeout:
    # No single read or connect may outlive the overall deadline.
    remaining = max(remaining, 0.001)
    connect = min(limits.connect_timeout, remaining)
    read = min(limits.read_timeout, remaining)
    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


def _attempt(
    request: SourceRequest,
    dest_path: Path,
    limits: FetchLimits,
    client: httpx.Client,
    clock: Clock,
    deadline_at: float,
    url_guard: UrlGuard,
) -> FetchedFile:
    """One try, following redirects by hand so every hop passes the guard. Raises FetchError."""
    try:
        outgoing = client.build_request(
            request.method,
            request.url,
            headers=request.headers,
            json=request.json_body,
            timeout=_timeout(limits, deadline_at - clock()),
        )
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchError("the location is not a valid URL") from None
    if clock() >= deadline_at:
        raise FetchError(f"did not finish within the {_seconds(limits.deadline)}-second deadline")
    for _hop in range(MAX_REDIRECTS + 1):
        response = _send(client, outgoing)
        try:
            if response.status_code in REDIRECT_STATUSES:
                following = response.next_request
                if following is None:
                    raise FetchError(f"HTTP {response.status_code} from the data source without a location")
                url_guard(following.url)
                following.extensions = {
                    **following.extensions,
                    "timeout": _timeout(limits, deadline_at - clock()).as_dict(),
                }
                outgoing = following
                continue
            _check_status(response)
            return _stream_to_file(response, dest_path, limits, clock, deadline_at)
        finally:
            response.close()
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def _send(client: httpx.Client, request: httpx.Request) -> httpx.Response:
    # httpx's own messages quote the URL: map each error to a fixed sentence.
    try:
        return client.send(request, stream=True, follow_redirects=False)
    except httpx.TimeoutException:
        raise FetchError("timed out", transient=True) from None
    except httpx.NetworkError:
        raise FetchError("could not connect to the data source", transient=True) from None
    except httpx.RemoteProtocolError:
        raise FetchError("the data source broke the connection", transient=True) from None
    except httpx.UnsupportedProtocol:
        raise FetchError("only http and https locations are allowed") from None
    except (httpx.HTTPError, UnicodeError):
        # e.g. a header value that cannot be sent; the exception text would quote it.
        raise FetchError("the request to the data source failed") from None


def _check_status(response: httpx.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    message = f"HTTP {status} from the data source"
    if status >= 500 or status == 429:
        raise _TransientStatus(message, _parse_retry_after(response.headers.get("retry-after")))
    raise FetchError(message)


def _declared_length(response: httpx.Response) -> int | None:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        return None  # the length of the encoded body says little about the decoded size
    try:
        value = int(response.headers.get("content-length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


class _HashingWriter:
    """Hashes and writes the body on a second thread while the caller keeps reading the socket.

    sha256 and file writes release the GIL, so on two cores staging runs near the speed of the
    network read instead of read + hash + write in series. Chunks are batched to WRITE_BATCH bytes
    (fewer hand-offs) and at most QUEUE_DEPTH batches wait, which bounds the memory in flight.
    """

    WRITE_BATCH = 1024 * 1024
    QUEUE_DEPTH = 8

    def __init__(self, out: BinaryIO) -> None:
        self.digest = hashlib.sha256()
        self._out = out
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=self.QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="c2d-fetch-writer", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep taking batches so the reader never blocks on a dead writer
            try:
                self.digest.update(batch)
                self._out.write(batch)
            except BaseException as error:  # re-raised on the reading thread
                self._error = error

    def write(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= self.WRITE_BATCH:
            self._hand_off()

    def _hand_off(self) -> None:
        if self._pending:
            self._queue.put(b"".join(self._pending))
            self._pending, self._pending_size = [], 0

    def close(self, *, flush: bool) -> None:
        """Stop the thread; with `flush`, write what is pending first and raise the writer's error."""
        if flush:
            self._hand_off()
        self._queue.put(None)
        self._thread.join()
        if flush and self._error is not None:
            raise self._error


def _stream_to_file(
    response: httpx.Response, dest_path: Path, limits: FetchLimits, clock: Clock, deadline_at: float
) -> FetchedFile:
    """Write the body to `<dest>.part` while hashing it, then rename; never leaves a partial file."""
    cap_message = f"larger than the {limits.max_bytes}-byte cap"
    declared = _declared_length(response)
    if declared is not None and declared > limits.max_bytes:
        raise FetchError(cap_message)
    partial = dest_path.with_name(dest_path.name + ".part")
    size = 0
    completed = False
    try:
        with partial.open("wb") as out:
            writer = _HashingWriter(out)
            try:
                # Chunks as they come off the socket (at most 64 KiB each): a fixed chunk size would
                # make httpx buffer until it is full, and a trickling source could then outrun the
                # deadline. The size cap and the deadline are checked on every chunk.
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limits.max_bytes:
                        raise FetchError(cap_message)
                    if clock() > deadline_at:
                        raise FetchError(
                            f"did not finish within the {_seconds(limits.deadline)}-second deadline"
                        )
                    writer.write(chunk)
            except BaseException:
                writer.close(flush=False)
                raise
            writer.close(flush=True)
        # No fsync: the job volume is scratch space that dies with the job, and the algorithm reads
        # the file through the same kernel; a crash before the data reaches the disk fails the job anyway.
        partial.replace(dest_path)
        completed = True
    except httpx.TimeoutException:
        raise FetchError("timed out", transient=True) from None
    except (httpx.NetworkError, httpx.RemoteProtocolError):
        raise FetchError("the data source broke the connection", transient=True) from None
    except httpx.DecodingError:
        raise FetchError("the data source sent a body that could not be decoded") from None
    except httpx.HTTPError:
        raise FetchError("reading from the data source failed", transient=True) from None
    finally:
        if not completed:
            partial.unlink(missing_ok=True)
    return FetchedFile(size=size, sha256=writer.digest.hexdigest())
