"""Result stores registered by name (c2d_core.result_stores) and the example WebDAV store
(examples/extensions/webdav_store.py) against a loopback WebDAV folder: the store factory, the
Provider's location routing, and the code location's resource."""

from __future__ import annotations

import io
from pathlib import Path

import dagster as dg
import pytest
from extension_kit import dav_server, extensions_loaded

from c2d_core.result_stores import (
    RESULT_STORE_TYPES,
    ResultStores,
    ResultStoreType,
    register_result_store,
    result_store_from_settings,
    result_store_kinds,
)
from c2d_core.results import LocalResultStore, ResultStore


def test_names_and_schemes_are_checked_and_unique() -> None:
    def build(environ: object) -> ResultStore:
        return LocalResultStore(Path("/nonexistent"))

    with pytest.raises(ValueError, match="other than"):
        ResultStoreType(name="s3", build=build, scheme="mys3://")
    with pytest.raises(ValueError, match="scheme must look like"):
        ResultStoreType(name="mine", build=build, scheme="ipfs://")
    with pytest.raises(ValueError, match="scheme must look like"):
        ResultStoreType(name="mine", build=build, scheme="mine:")
    first = ResultStoreType(name="mine", build=build, scheme="mine://")
    try:
        register_result_store(first)
        register_result_store(first)  # the same registration again: a module imported twice
        with pytest.raises(ValueError, match="clashes"):
            register_result_store(ResultStoreType(name="other", build=build, scheme="mine://"))
    finally:
        RESULT_STORE_TYPES.pop("mine", None)


def test_an_unknown_store_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match="is not one of: ipfs, local, s3"):
        result_store_from_settings("webdav")


def test_the_webdav_example_stores_reads_ranges_and_deletes(tmp_path: Path) -> None:
    with extensions_loaded("webdav_store"), dav_server(tmp_path) as dav:
        assert "webdav" in result_store_kinds()
        with pytest.raises(ValueError, match="needs C2D_WEBDAV_URL"):
            result_store_from_settings("webdav", environ={})
        store = result_store_from_settings("webdav", environ={"C2D_WEBDAV_URL": dav.url})
        data = bytes(range(256)) * 4096  # 1 MiB, more than one upload chunk
        stored = store.put("job1", "out.bin", io.BytesIO(data))
        assert stored.location == "webdav://job1/out.bin" and stored.size == len(data)
        assert (dav.root / "job1" / "out.bin").read_bytes() == data

        # The Provider's view: a manifest location finds its store by scheme; the engine's own
        # `<job id>/<name>` form (how the manifest is read back) opens too.
        stores = ResultStores(LocalResultStore(tmp_path / "local"), environ={"C2D_WEBDAV_URL": dav.url})
        routed = stores.for_location(stored.location)
        assert b"".join(routed.read_range(stored.location, 1000, 10)) == data[1000:1010]
        with store.open("job1/out.bin") as handle:
            assert handle.read() == data
        with pytest.raises(FileNotFoundError):
            store.open("webdav://job1/missing.bin")
        with pytest.raises(LookupError, match="no extension"):
            stores.for_location("gopher://job1/out.bin")

        store.delete_job("job1")
        assert not (dav.root / "job1").exists()
        store.delete_job("job1")  # already gone: storage expiry may retry


def test_the_code_location_builds_the_registered_store_as_its_resource(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from c2d_defs.resources import ExtensionResultStoreResource, result_store_resource

    with pytest.raises(ValueError, match="is not one of"):
        result_store_resource("webdav")
    with extensions_loaded("webdav_store"), dav_server(tmp_path) as dav:
        monkeypatch.setenv("C2D_WEBDAV_URL", dav.url)
        resource = result_store_resource("webdav")
        assert isinstance(resource, ExtensionResultStoreResource)
        with dg.build_resources({"result_store": resource}) as built:
            storage = built.result_store
            # The publish pod gets the store's name and variables, and the network to reach it.
            assert storage.publish_env() == {"C2D_RESULT_STORE": "webdav", "C2D_WEBDAV_URL": dav.url}
            assert storage.publish_network and storage.publish_mounts("job2") == []
            storage.store.put("job2", "a.txt", io.BytesIO(b"hello"))
        assert (dav.root / "job2" / "a.txt").read_bytes() == b"hello"
