"""The one settings tree (c2d_core.settings): the flat `C2D_*` names fill its sub-models, the cached
accessor sees a changed environment, the K8s runner's config comes from `.k8s` without a mapper, and
every S3 client (the store's, dagster-aws's S3Resource's) is built the same way."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dagster as dg
import pytest

from c2d_core.s3 import S3Settings
from c2d_core.settings import EngineSettings, engine_settings, env_names


def test_flat_names_fill_the_sub_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("C2D_S3_BUCKET", "results")
    monkeypatch.setenv("C2D_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("C2D_S3_PREFIX", "jobs")
    monkeypatch.setenv("C2D_K8S_SECRET_NAMES", '{"provider-key": "key"}')
    monkeypatch.setenv("C2D_SANDBOX_SLOTS", "3")
    monkeypatch.setenv("C2D_MAX_INPUT_BYTES", "5")
    settings = EngineSettings()
    assert (settings.s3.bucket, settings.s3.endpoint_url, settings.s3.prefix) == (
        "results",
        "http://127.0.0.1:9000",
        "jobs/",
    )
    assert settings.k8s.secret_names == {"provider-key": "key"}
    assert (settings.sandbox.slots, settings.max_input_bytes) == (3, 5)
    assert {"C2D_S3_BUCKET", "C2D_K8S_NAMESPACE", "C2D_SANDBOX_CGROUP_ROOT", "C2D_FETCH_ALLOW"} <= env_names()
    assert "C2D_S3" not in env_names()


def test_the_cached_settings_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("C2D_MAX_QUEUE_WAIT", "7")
    first = engine_settings()
    assert first is engine_settings() and first.max_queue_wait == 7
    monkeypatch.setenv("C2D_MAX_QUEUE_WAIT", "8")
    assert engine_settings().max_queue_wait == 8


def test_the_k8s_runner_config_is_the_settings_sub_model() -> None:
    from c2d_defs.k8s_manifests import K8sRunnerConfig

    update = {"namespace": "jobs", "image_pull_secrets": ["pull"], "release_name": "prod", "tmp_bytes": 2**21}
    k8s = EngineSettings().k8s.model_copy(update=update)
    config = K8sRunnerConfig.from_settings(k8s, "registry.example/pod:1")
    assert (config.namespace, config.image_pull_secrets, config.tmp_bytes) == ("jobs", ("pull",), 2**21)
    assert config.pod_image == "registry.example/pod:1"
    assert config.labels == {"app.kubernetes.io/instance": "prod"}
    # Every setting reaches the runner, except the two that are not the runner's.
    runner_fields = {item.name for item in dataclasses.fields(K8sRunnerConfig)}
    assert set(type(k8s).model_fields) - runner_fields == {"release_name", "cleanup_grace_seconds"}


def test_s3_resource_and_store_clients_share_timeouts_retries_and_addressing() -> None:
    from c2d_core.s3 import s3_client
    from c2d_defs.resources import S3ClientResource

    settings = S3Settings(endpoint_url="http://127.0.0.1:9", max_attempts=3, timeout=7.5)
    resource = S3ClientResource(endpoint_url=settings.endpoint_url, max_attempts=3, timeout=7.5)
    for client in (s3_client(settings), resource.get_client()):
        config = client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (7.5, 7.5)
        assert config.retries == {"mode": "standard", "total_max_attempts": 4}  # botocore counts the first
        assert config.s3 == {"addressing_style": "path"}
        assert client.meta.endpoint_url == "http://127.0.0.1:9"


def test_result_store_resources_hand_the_ops_plain_objects(tmp_path: Path) -> None:
    from c2d_core.results import LocalResultStore
    from c2d_defs.resources import LocalResultStoreResource, ResultStorage

    resource = LocalResultStoreResource(results_dir=str(tmp_path))
    assert resource.results_dir == str(tmp_path)
    with dg.build_resources({"result_store": resource}) as built:
        storage = built.result_store
        assert isinstance(storage, ResultStorage) and isinstance(storage.store, LocalResultStore)
        assert storage.publish_env()["C2D_RESULT_STORE"] == "local" and not storage.publish_network
        assert storage.publish_mounts("a" * 32)[0].host_path == str(tmp_path / ("a" * 32))


def test_resource_fields_show_real_values_not_empty_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from c2d_defs.resources import LocalPodRunnerResource, S3ResultStoreResource

    monkeypatch.setenv("C2D_HOME", "/srv/c2d")
    monkeypatch.setenv("C2D_S3_REGION", "eu-west-1")
    assert LocalPodRunnerResource().work_dir == "/srv/c2d/jobs"
    assert S3ResultStoreResource().region_name == "eu-west-1"
    monkeypatch.setenv("C2D_S3_BUCKET", "results")
    configured = S3ResultStoreResource.configured()
    assert isinstance(configured, S3ResultStoreResource)
    # The environment's value is a reference the run resolves, shown as the variable's name.
    assert isinstance(configured.bucket, dg.EnvVar) and configured.bucket.env_var_name == "C2D_S3_BUCKET"


def test_an_extensions_path_alone_names_folders_and_no_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """C2D_EXTENSIONS_PATH also reads as a nested `extensions.path`: it must not break the settings."""
    monkeypatch.delenv("C2D_EXTENSIONS", raising=False)
    monkeypatch.setenv("C2D_EXTENSIONS_PATH", "/opt/ext,/srv/more")
    settings = EngineSettings()
    assert settings.extensions == [] and settings.extensions_path == ["/opt/ext", "/srv/more"]
    monkeypatch.setenv("C2D_EXTENSIONS", "my_sources")
    settings = EngineSettings()
    assert settings.extensions == ["my_sources"] and settings.extensions_path == ["/opt/ext", "/srv/more"]
