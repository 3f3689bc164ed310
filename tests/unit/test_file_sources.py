"""The file-source registry (c2d_core.fetch) and the example `graphql` source (examples/extensions),
fetched from a loopback GraphQL origin through the real SSRF guard, limits and checksum."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from extension_kit import SECRET_PATH, extensions_loaded, graphql_origin

from c2d_core import extensions
from c2d_core.fetch import (
    FILE_SOURCES,
    FetchError,
    FetchLimits,
    FileSource,
    SourceRequest,
    SourceSettings,
    fetch_to_file,
    file_source_fields,
    file_source_types,
    register_file_source,
    unregister_file_source,
)
from c2d_core.netguard import NetPolicy, guarded_client
from c2d_core.workflow import FileObject

LOOPBACK = NetPolicy.from_allow_list(["127.0.0.1/32"], allow_everything=False)
LIMITS = FetchLimits(retries=0, deadline=20.0)


def test_the_built_in_types_are_registered_sources() -> None:
    assert {"url", "ipfs", "arweave", "s3"} <= set(FILE_SOURCES)
    assert all(isinstance(source, FileSource) for source in FILE_SOURCES.values())
    assert {"hash", "transactionId", "s3Access"} <= set(file_source_fields())


def test_registration_refuses_bad_names_and_a_second_class_for_a_type() -> None:
    class Nameless(FileSource):
        type = "no spaces allowed"

        def request(self, *args: Any) -> SourceRequest:
            raise NotImplementedError

    with pytest.raises(ValueError, match="short name"):
        register_file_source(Nameless)

    class OtherUrl(FileSource):
        type = "url"

        def request(self, *args: Any) -> SourceRequest:
            raise NotImplementedError

    with pytest.raises(ValueError, match="already served by UrlSource"):
        register_file_source(OtherUrl)
    assert type(FILE_SOURCES["url"]).__name__ == "UrlSource"


def test_an_unregistered_type_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="files of type 'graphql' are not supported"):
        fetch_to_file({"type": "graphql", "url": "http://127.0.0.1:9/x"}, tmp_path / "f", LIMITS)


def test_a_source_raising_a_library_error_never_quotes_the_location(tmp_path: Path) -> None:
    @register_file_source
    class Careless(FileSource):
        type = "careless"

        def request(
            self, file_object: FileObject, userdata: Mapping[str, Any] | None, sources: SourceSettings
        ) -> SourceRequest:
            raise RuntimeError(f"cannot parse {file_object.url}")

    try:
        with pytest.raises(FetchError) as caught:
            fetch_to_file({"type": "careless", "url": "http://s3cr3t.example/x"}, tmp_path / "f", LIMITS)
        assert "s3cr3t" not in str(caught.value) and "not a valid URL" in str(caught.value)
    finally:
        unregister_file_source("careless")


def test_the_graphql_example_loads_through_c2d_extensions_and_fetches_through_the_guard(
    tmp_path: Path,
) -> None:
    assert "graphql" not in file_source_types()
    with extensions_loaded("graphql_source"), graphql_origin() as origin:
        assert "graphql" in file_source_types() and "query" in file_source_fields()
        file_object = {
            "type": "graphql",
            "url": origin.url,
            "query": "query { rows { sales } }",
            "headers": {"X-Api-Key": "publisher-key"},
        }
        with guarded_client(LOOPBACK) as client:
            fetched = fetch_to_file(
                file_object,
                tmp_path / "0",
                LIMITS,
                userdata={"limit": 2},
                client=client,
                url_guard=LOOPBACK.check,
            )
        content = (tmp_path / "0").read_bytes()
        assert json.loads(content) == {"data": {"rows": [{"sales": 12}, {"sales": 30}]}}
        assert fetched.size == len(content) and fetched.sha256 == hashlib.sha256(content).hexdigest()
        assert origin.bodies[-1] == {"query": "query { rows { sales } }", "variables": {"limit": 2}}
        assert origin.headers[-1]["x-api-key"] == "publisher-key"

        # The shared size cap holds for the new type as for any other, and leaves no partial file.
        with guarded_client(LOOPBACK) as client, pytest.raises(FetchError, match="byte cap"):
            fetch_to_file(
                file_object,
                tmp_path / "1",
                FetchLimits(retries=0, max_bytes=10),
                client=client,
                url_guard=LOOPBACK.check,
            )
        assert not list(tmp_path.glob("1*"))

        # So does the guard: without the loopback allow-list the request is never sent.
        sent = len(origin.bodies)
        with pytest.raises(FetchError) as refused:
            fetch_to_file(file_object, tmp_path / "2", LIMITS, url_guard=NetPolicy().check)
        assert len(origin.bodies) == sent
        assert SECRET_PATH not in str(refused.value) and "127.0.0.1" not in str(refused.value)

        # A malformed object is refused naming the field, never its value.
        with pytest.raises(FetchError, match="needs a 'query'"):
            fetch_to_file({"type": "graphql", "url": origin.url}, tmp_path / "3", LIMITS)
    assert "graphql" not in file_source_types()


def test_a_missing_extension_module_fails_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("C2D_EXTENSIONS", "no_such_extension_module")
    with pytest.raises(extensions.ExtensionError, match="no_such_extension_module"):
        file_source_types()


def test_the_configure_pod_reports_a_missing_extension_as_status_31(tmp_path: Path) -> None:
    from c2d_defs.pods.configure import main

    environ = {
        "WORKFLOW": str(tmp_path / "workflow.json"),
        "VOLUME": str(tmp_path / "data"),
        "TERMINATION_LOG": str(tmp_path / "termination"),
        "C2D_EXTENSIONS": "no_such_extension_module",
    }
    assert main(environ, client=httpx.Client()) == 31
    report = json.loads((tmp_path / "termination").read_text())
    assert "cannot import extension module 'no_such_extension_module'" in report["message"]
