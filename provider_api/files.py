"""Files a client names: reaching them, probing them (fileinfo) and hashing their content.

A file's location is the data publisher's secret: nothing here returns or logs any part of it, not
even the file name from its path (only a name the server declares in Content-Disposition). Requests
go through c2d_core.netguard: public addresses only (plus `fetch_allow`, or everything with
`allow_non_public_ip` in development), each redirect hop checked again, connecting to the checked IP.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
from pydantic import ValidationError

from c2d_core.fetch import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    FetchedFile,
    FetchError,
    FetchLimits,
    SourceSettings,
    UrlGuard,
    fetch_to_file,
    file_source_fields,
    file_source_types,
    source_request,
)
from c2d_core.netguard import guarded_client
from c2d_core.ocean.refusals import PolicyError
from c2d_core.result_stores import ResultStores
from c2d_core.workflow import FileObject
from provider_api.access import C2D_RESULT, result_file_infos
from provider_api.assets import Assets
from provider_api.dagster_jobs import DagsterJobs
from provider_api.errors import bad_request, resource_error
from provider_api.params import BYTE_DIGITS, NumberError, whole_number
from provider_api.policy import find_service
from provider_api.schemas import FileInfo
from provider_api.settings import ProviderSettings

PROBE_TIMEOUT = httpx.Timeout(10.0)
# Types Ocean knows; those with a registered c2d_core FileSource (built in, or added by C2D_EXTENSIONS)
# are served, the others get "Unsupported type".
OCEAN_FILE_TYPES = frozenset({"url", "ipfs", "arweave", "graphql", "smartcontract", "s3"})
# ASCII: `\d` alone takes every script's digits, which int() then reads or refuses.
_CONTENT_RANGE_TOTAL = re.compile(r"bytes\s+(?:\d+-\d+|\*)/(\d+)", re.IGNORECASE | re.ASCII)


# --- where requests may go ------------------------------------------------------------------------


def url_guard_for(settings: ProviderSettings) -> UrlGuard:
    """The guard every Provider-side fetch of a file object uses (the client checks again on connect)."""
    return settings.net_policy.check


def client_for(settings: ProviderSettings, timeout: httpx.Timeout | None = None) -> httpx.Client:
    """An httpx client that connects only to addresses the Provider's policy allows."""
    return guarded_client(settings.net_policy, timeout=timeout or PROBE_TIMEOUT)


def checksum_limits(settings: ProviderSettings) -> FetchLimits:
    """Limits for hashing a file's content (fileinfo, trusted-algorithm `filesChecksum`)."""
    return FetchLimits(
        connect_timeout=10.0,
        read_timeout=30.0,
        retries=1,
        deadline=120.0,
        max_bytes=max(settings.max_checksum_bytes, 1),
    )


def fetch_file_object(
    file_object: FileObject | Mapping[str, Any], dest: Path, settings: ProviderSettings
) -> FetchedFile:
    """c2d_core's streaming fetch (size, sha256) with the Provider's guard and checksum limits."""
    with client_for(settings) as client:
        return fetch_to_file(
            file_object,
            dest,
            checksum_limits(settings),
            client=client,
            url_guard=url_guard_for(settings),
            label="file",
            sources=settings.sources,
        )


# --- probing a file ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    content_length: int | None
    content_type: str | None
    filename: str | None


def _send(client: httpx.Client, request: httpx.Request) -> httpx.Response:
    # httpx's messages quote the URL: each error becomes a fixed sentence.
    try:
        return client.send(request, stream=True, follow_redirects=False)
    except httpx.TimeoutException:
        raise FetchError("timed out") from None
    except httpx.NetworkError:
        raise FetchError("could not connect to the data source") from None
    except httpx.UnsupportedProtocol:
        raise FetchError("only http and https locations are allowed") from None
    except (httpx.HTTPError, UnicodeError, ValueError):
        raise FetchError("the request to the data source failed") from None


def _request(
    client: httpx.Client, method: str, url: httpx.URL, headers: dict[str, str], guard: UrlGuard
) -> httpx.Response:
    """One request, following redirects by hand so each hop passes `guard`. The caller closes it."""
    guard(url)
    try:
        outgoing = client.build_request(method, url, headers=headers)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchError("the location is not a valid URL") from None
    for _hop in range(MAX_REDIRECTS + 1):
        response = _send(client, outgoing)
        if response.status_code not in REDIRECT_STATUSES:
            return response
        following = response.next_request
        response.close()
        if following is None:
            raise FetchError(f"HTTP {response.status_code} from the data source without a location")
        guard(following.url)
        outgoing = following
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def _declared_filename(response: httpx.Response) -> str | None:
    value = response.headers.get("content-disposition")
    if not value:
        return None
    message = Message()
    message["content-disposition"] = value
    name = message.get_filename()
    if not name:
        return None
    # Only the last path component, printable and short: the name is shown to consumers.
    name = PurePosixPath(name.replace("\\", "/")).name
    name = "".join(char for char in name if char.isprintable())[:255]
    return name or None


def _declared_size(text: str) -> int | None:
    """A size a data source declares, or None when it is not plain ASCII digits of a sane length."""
    try:
        return whole_number(text.strip(), BYTE_DIGITS)
    except NumberError:
        return None


def _probe_from(response: httpx.Response, ranged: bool) -> Probe:
    length: int | None = None
    if ranged and response.status_code == 206:
        match = _CONTENT_RANGE_TOTAL.search(response.headers.get("content-range", ""))
        length = _declared_size(match.group(1)) if match else None
    elif response.headers.get("content-encoding", "identity").lower() in ("", "identity"):
        length = _declared_size(response.headers.get("content-length", ""))
    content_type = response.headers.get("content-type") or None
    return Probe(length, content_type, _declared_filename(response))


def probe_file(
    file_object: FileObject,
    guard: UrlGuard,
    client: httpx.Client,
    sources: SourceSettings | None = None,
) -> Probe:
    """Reach the file without downloading it: HEAD, or where HEAD is not answered with 2xx (servers
    without HEAD, presigned URLs signed for GET), a GET of its first byte. POST files are checked with
    their own method, as Ocean does. Every type goes through its c2d_core FileSource (an ipfs hash via
    the gateway, an s3 object via a presigned GET). Raises FetchError, whose message names no location."""
    source = source_request(file_object, None, sources or SourceSettings())
    url, headers, method = source.url, source.headers, source.method
    if method == "GET":
        response = _request(client, "HEAD", url, headers, guard)
        try:
            if 200 <= response.status_code < 300:
                return _probe_from(response, ranged=False)
        finally:
            response.close()
    response = _request(client, method, url, {**headers, "Range": "bytes=0-0"}, guard)
    try:
        if 200 <= response.status_code < 300:
            return _probe_from(response, ranged=True)
        raise FetchError(f"HTTP {response.status_code} from the data source")
    finally:
        response.close()  # the body is never read


# --- fileinfo ------------------------------------------------------------------------------------


def _file_object(raw: Mapping[str, Any], label: str) -> FileObject:
    """A file object from a request, refused (400) in Ocean's words when malformed or not served."""
    kind = raw.get("type")
    if not isinstance(kind, str) or not kind:
        raise bad_request(f"malformed file object: {label} needs a 'type'")
    served_types = file_source_types()
    if kind not in served_types:
        known = kind in OCEAN_FILE_TYPES
        served = ", ".join(sorted(served_types))
        raise bad_request(
            f"Unsupported type {kind[:40]}" + (f" by this Provider (only {served})" if known else "")
        )
    method = raw.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
        raise bad_request(f"Unsafe method {str(method)[:20]}: {label} may use GET or POST")
    fields = {key: raw[key] for key in ("type", "url", "headers", *file_source_fields()) if key in raw}
    fields["method"] = method.upper()
    try:
        return FileObject.model_validate(fields)
    except ValidationError as error:
        # Field names and rules only: the rejected input would be the location.
        reasons = "; ".join(_reason(item) for item in error.errors())
        raise bad_request(f"malformed file object: {label}: {reasons}") from None


def _reason(item: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in item.get("loc", ()))
    message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def inspect_file(
    index: int, file_object: FileObject, settings: ProviderSettings, with_checksum: bool
) -> FileInfo:
    guard = url_guard_for(settings)
    try:
        with client_for(settings) as client:
            probe = probe_file(file_object, guard, client, settings.sources)
    except FetchError as error:
        return FileInfo(index=index, valid=False, type=file_object.type, error=error.message)
    info = FileInfo(
        index=index,
        valid=True,
        type=file_object.type,
        contentLength=None if probe.content_length is None else str(probe.content_length),
        contentType=probe.content_type,
        filename=probe.filename,
    )
    too_big = probe.content_length is not None and probe.content_length > settings.max_checksum_bytes
    if not with_checksum or too_big or settings.max_checksum_bytes == 0:
        return info
    with tempfile.TemporaryDirectory(prefix="c2d-fileinfo-") as tmp:
        try:
            fetched = fetch_file_object(file_object, Path(tmp) / "content", settings)
        except FetchError as error:
            # The size cap is not a fault of the file: like Ocean, it is then reported without checksum.
            if error.message.endswith("-byte cap"):
                return info
            return FileInfo(index=index, valid=False, type=file_object.type, error=error.message)
    return info.model_copy(
        update={"checksum": fetched.sha256, "checksumType": "sha256", "contentLength": str(fetched.size)}
    )


def inspect_files(
    files: Sequence[Mapping[str, Any]], settings: ProviderSettings, *, with_checksum: bool
) -> list[FileInfo]:
    """fileinfo for decrypted service files (the `{did, serviceId}` form) or a single file object."""
    objects = [_file_object(raw, f"file {index}") for index, raw in enumerate(files)]
    return [inspect_file(index, obj, settings, with_checksum) for index, obj in enumerate(objects)]


def _truthy(value: object) -> bool:
    # ocean.py sends `checksum: 1`, ocean.js `true`; query strings carry text.
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _service_files(assets_later: Callable[[], Assets], did: object, service_id: object) -> list[Any]:
    """The decrypted file objects of a DDO service, resolved as the compute routes resolve DDOs."""
    if not isinstance(did, str) or not did or service_id is None or service_id == "":
        raise bad_request("fileinfo by did and serviceId needs both a did and a serviceId")
    # The chain is reached only for this form, and only once the form is complete.
    assets = assets_later()
    asset = assets.resolve(did, "did")
    try:
        found = find_service(asset.ddo, service_id, "did")
    except PolicyError:
        raise resource_error("serviceId", "not_found") from None
    return assets.service_files(asset, found)


def file_infos(
    params: dict[str, Any],
    settings: ProviderSettings,
    *,
    assets: Callable[[], Assets],
    jobs: DagsterJobs,
    result_stores: Callable[[], ResultStores],
) -> list[FileInfo]:
    """fileinfo: one file object, or every file of a published service (`did`, `serviceId`).

    `assets` and `result_stores` are built only when needed: the chain is reached for the did form
    alone (a file object needs no chain), the result stores for a results asset's files alone.
    """
    with_checksum = _truthy(params.get("checksum", False))
    if "did" in params or "serviceId" in params:
        files = _service_files(assets, params.get("did"), params.get("serviceId"))
        if all(item.get("type") == C2D_RESULT for item in files):
            # A results asset (issue 8): its files are job results, described from the job's manifest.
            did = str(params.get("did"))
            return result_file_infos(jobs, result_stores, did, files, with_checksum=with_checksum)
        return inspect_files(files, settings, with_checksum=with_checksum)
    if not params:
        raise bad_request("malformed file object: send a file object such as {type: 'url', url: ...}")
    return inspect_files([params], settings, with_checksum=with_checksum)
