"""The Helm chart as Helm itself lints and renders it, and the rendered objects checked.

helm-python-sdk binds Helm v4's Go library (the code behind `helm lint` and `helm template`), so
the chart is linted strictly and rendered offline for each values set the docs describe; every
rendered object is validated against the Kubernetes 1.33 OpenAPI schema (kubernetes-validate,
strict), and the security-critical fields are asserted on those objects. values.schema.json is
checked through Helm's own validator.

The official dagster chart (a dependency) cannot be fetched where these tests run, so every render
has `dagster.enabled: false` (the dependency's condition) and strict lint is expected to report that
one missing dependency and nothing else. The dagster subchart's own objects are therefore not
rendered here; what this chart asks of them is asserted on the values it passes down.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from test_k8s_manifests import K8S_VERSION, _specs

from c2d_core.environments import EnvironmentsFile
from c2d_defs.k8s_manifests import K8sRunnerConfig, pod_labels

CHART = Path(__file__).resolve().parents[2] / "helm" / "c2d"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
RULES = yaml.safe_load((CHART / "files" / "job-runner-rules.yaml").read_text())
RELEASE = "c2d"
RELEASE_NAMESPACE = "c2d"
# What `helm lint` says about a chart whose dependency is declared but not in charts/.
MISSING_DAGSTER = "chart directory is missing these dependencies: dagster"
# The subchart is absent (see the module docstring); its condition says so to Helm.
NO_DAGSTER = "dagster: {enabled: false}\n"


def _without_dagster(text: str) -> str:
    """A values set with the dagster dependency's condition off (merged into its own `dagster:`)."""
    merged, found = re.subn(r"^dagster:\n", "dagster:\n  enabled: false\n", text, count=1, flags=re.M)
    return merged if found else NO_DAGSTER + text


# Values files as an operator writes them (`helm install -f`), one per option set that values.yaml
# and docs/deploy-kubernetes.md describe. Parsed by Helm (values_from_yaml), so numbers arrive as
# Helm sees them (float64), which is where `quote` alone goes wrong.
VALUE_SETS: dict[str, str] = {
    "default": "",
    # The leak filter on the environment's outputs (issue 15): stage settings pass through as written.
    "output-stages": """
environments:
  - id: small
    cpuNumber: 1
    ramGB: 2
    diskGB: 5
    maxJobDuration: 3600
    maxJobs: 4
    outputStages:
      - name: leak_filter
        settings: {window_bytes: 8192, max_output_share: 0.5}
        deadline: 900
""",
    # Local result store on a shared RWX volume, private registry, runner in another namespace.
    "local-shared-volume": """
jobs:
  sharedClaims: {"/var/lib/c2d/results": c2d-results}
  storageClass: standard-rwo
  imagePullSecrets: [regcred]
  runnerServiceAccountNamespace: dagster
""",
    # S3 on AWS with the pods' own identity (IRSA): no credentials Secret at all.
    "s3-aws-identity": """
resultStore:
  kind: s3
  s3: {bucket: c2d-results, region: eu-west-1, prefix: jobs, sse: AES256}
networkPolicy:
  publish: {cidrs: [52.218.0.0/17], ports: [443]}
""",
    # S3-compatible store (MinIO) with SSE-KMS and a credentials Secret.
    "s3-minio-kms-secret": """
resultStore:
  kind: s3
  s3:
    bucket: c2d-results
    endpointUrl: https://minio.storage.example.internal
    sse: aws:kms
    kmsKeyId: arn:aws:kms:eu-west-1:111122223333:key/abcd
    credentialsSecret: c2d-s3-credentials
    maxAttempts: 8
    timeoutSeconds: 2.5
""",
    "ipfs": """
resultStore:
  kind: ipfs
  ipfs: {apiUrl: "http://ipfs.c2d:5001"}
""",
    # Input staging: a publisher's private network, own gateways, a 5 GiB cap (beyond int32).
    "staging": """
fetch:
  allow: [10.20.0.0/16, data.internal.example.com]
  ipfsGateway: https://gateway.example.com
  arweaveGateway: https://ar.example.com
  maxInputBytes: 5368709120
""",
    # The Provider on the internet: Ingress with TLS, its public URL, placement.
    "public-provider": """
provider:
  replicas: 3
  env: {PROVIDER_URL: "https://provider.example.com", PROVIDER_CHAIN_ID: "137"}
  ingress:
    enabled: true
    className: nginx
    host: provider.example.com
    tlsSecret: provider-tls
    annotations: {nginx.ingress.kubernetes.io/proxy-body-size: 10m}
  nodeSelector: {pool: web}
  tolerations: [{key: web, operator: Exists, effect: NoSchedule}]
""",
    # Results published as Ocean assets, on Sepolia (a chain id beyond 1e6).
    "results-assets": """
resultsAssets:
  enabled: true
  chainId: 11155111
  providerUrl: https://provider.example.com
  addressesFile: /usr/local/lib/python3.11/site-packages/addresses/address.json
""",
    # OpenShift's restricted SCC hands out uids from ranges like this one.
    "openshift-uid-range": """
jobs:
  runAsUser: 1000650000
  runAsGroup: 1000650000
  startTimeoutSeconds: 1200
  ttlSecondsAfterFinished: 86400
""",
    # The dagster chart renamed (its fullnameOverride) and its Postgres user name in the Secret too:
    # the Provider follows that chart's names for the instance ConfigMap and the Postgres Secret.
    "dagster-renamed": """
dagster:
  global:
    fullnameOverride: engine
    postgresqlSecretName: ""
    postgresqlSecretUsernameKey: postgresql-username
""",
    # Dagster installed apart (its own release): the Provider is told its instance file and Secret.
    "external-dagster": """
provider:
  dagsterInstance:
    configMap: ops-dagster-instance
    postgresSecret: ops-dagster-postgres
    postgresSecretKey: password
    mountPath: /etc/dagster-home
""",
    # Engine only: the Provider elsewhere, RBAC and policies managed by the platform team.
    "engine-only": """
provider: {enabled: false}
rbac: {create: false}
networkPolicy: {enabled: false}
""",
}


@dataclass(frozen=True)
class Render:
    """One values set as Helm merged and rendered it."""

    values: dict[str, Any]  # what the templates saw (chart defaults coalesced with the set)
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        [found] = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        return found


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def _render(chart: helm.Chart, text: str) -> Render:
    """One values file (as an operator writes it) rendered by Helm."""
    overrides = helm.values_from_yaml(_without_dagster(text))
    manifests = chart.render(overrides, name=RELEASE, namespace=RELEASE_NAMESPACE)
    objects = [
        doc
        for path, manifest in sorted(manifests.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(manifest)
        if doc
    ]
    return Render(chart.merge_values(overrides), objects)


@pytest.fixture(scope="session")
def renders(chart: helm.Chart) -> dict[str, Render]:
    """Every values set rendered once per session."""
    return {name: _render(chart, text) for name, text in VALUE_SETS.items()}


def _namespace(obj: dict[str, Any]) -> str:
    return str(obj["metadata"].get("namespace", RELEASE_NAMESPACE))


def _provider(render: Render) -> dict[str, Any]:
    return render.one("Deployment", f"{RELEASE}-provider")


def _provider_env(render: Render) -> dict[str, dict[str, Any]]:
    [container] = _provider(render)["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item for item in container["env"]}


@dataclass(frozen=True)
class DagsterNames:
    """What the Provider needs of the dagster chart to read its run storage."""

    instance_config_map: str  # key dagster.yaml
    postgres_secret: str
    password_key: str
    username_key: str  # "" = the user name is written in the instance file


def _dagster_names(values: dict[str, Any]) -> DagsterNames:
    """The dagster chart's names by that chart's own rules (its "dagster.fullname", the instance
    ConfigMap `<fullname>-instance` and "dagster.postgresql.secretName"; checked against its
    templates, docs/deploy-kubernetes.md), unless provider.dagsterInstance names others."""
    own = values["provider"]["dagsterInstance"]
    dagster_global = values["dagster"].get("global", {})
    fullname = dagster_global.get("fullnameOverride") or f"{RELEASE}-dagster"
    return DagsterNames(
        instance_config_map=own["configMap"] or f"{fullname}-instance",
        postgres_secret=own["postgresSecret"]
        or dagster_global.get("postgresqlSecretName")
        or f"{fullname}-postgresql-secret",
        password_key=own["postgresSecretKey"],
        username_key=dagster_global.get("postgresqlSecretUsernameKey", ""),
    )


# The only secrets in the Provider's env that are not the Provider's own: the run storage's Postgres
# credentials, which the engine's instance file reads from the environment. They come from the
# dagster chart's Postgres Secret, the one Dagster's own pods read (docs/deploy-kubernetes.md).
RUN_STORAGE_SECRET_ENV = {"DAGSTER_PG_PASSWORD", "DAGSTER_PG_USERNAME"}


def _provider_pod_env(
    render: Render, provider_secret: dict[str, str], run_storage_secret: dict[str, str]
) -> dict[str, str]:
    """The Provider container's environment as Kubernetes would give it (the engine ConfigMap, then
    `env`), with each secret taken from the Secret it must come from: the Provider's own
    (provider.existingSecret), or, for the run storage's credentials only, the dagster chart's."""
    names = _dagster_names(render.values)
    env = dict(_engine_env(render))
    for item in _provider_env(render).values():
        if "valueFrom" not in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        if item["name"] in RUN_STORAGE_SECRET_ENV:
            assert ref["name"] == names.postgres_secret, item
            env[item["name"]] = run_storage_secret[ref["key"]]
        else:
            assert ref["name"] == render.values["provider"]["existingSecret"], item
            env[item["name"]] = provider_secret[ref["key"]]
    return env


def _engine_env(render: Render) -> dict[str, str]:
    return dict(render.one("ConfigMap", render.values["jobs"]["engineEnvConfigMap"])["data"])


# --- Helm: lint and render ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_strict_helm_lint_finds_nothing_but_the_absent_dagster_chart(name: str) -> None:
    report = helm.lint(
        CHART,
        helm.values_from_yaml(_without_dagster(VALUE_SETS[name])),
        strict=True,
        namespace=RELEASE_NAMESPACE,
        kube_version="v" + K8S_VERSION,
    )
    findings = [m["error"] for m in report["messages"] if m["severity"] >= 2]
    assert findings == [MISSING_DAGSTER], findings
    assert report["errors"] == [MISSING_DAGSTER]


def test_the_lint_check_above_catches_a_broken_template(tmp_path: Path) -> None:
    """Strict lint still renders the templates with the dependency absent: a bad one is reported."""
    copy_dir = tmp_path / "c2d"
    shutil.copytree(CHART, copy_dir)
    (copy_dir / "templates" / "broken.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.jobs.nope.deeper }}\n"
    )
    report = helm.lint(copy_dir, strict=True, kube_version="v" + K8S_VERSION)
    errors = [m["error"] for m in report["messages"] if m["severity"] == 3]
    assert any("broken.yaml" in error and "nil pointer" in error for error in errors), report


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_rendered_object_is_valid_for_kubernetes_1_33(renders: dict[str, Render], name: str) -> None:
    render = renders[name]
    assert render.objects
    for obj in render.objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        metadata = obj["metadata"]
        assert len(metadata["name"]) <= 63 and re.fullmatch(
            r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", metadata["name"]
        )
        assert metadata["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_each_values_set_renders_the_objects_it_asks_for(renders: dict[str, Render]) -> None:
    def kinds(name: str) -> list[tuple[str, str]]:
        return sorted((o["kind"], o["metadata"]["name"]) for o in renders[name].objects)

    default = [
        ("ConfigMap", "c2d-engine-env"),
        ("ConfigMap", "c2d-environments"),
        ("Deployment", "c2d-provider"),
        ("NetworkPolicy", "c2d-algorithm-network-allowed"),
        ("NetworkPolicy", "c2d-configure-egress"),
        ("NetworkPolicy", "c2d-jobs-deny-all"),
        ("NetworkPolicy", "c2d-publish-egress"),
        ("Role", "c2d-job-runner"),
        ("RoleBinding", "c2d-job-runner"),
        ("Service", "c2d-provider"),
    ]
    assert kinds("default") == default
    assert kinds("public-provider") == sorted([*default, ("Ingress", "c2d-provider")])
    assert kinds("engine-only") == [("ConfigMap", "c2d-engine-env"), ("ConfigMap", "c2d-environments")]


def test_the_provider_rolls_when_the_engine_settings_change(renders: dict[str, Render]) -> None:
    def checksum(name: str) -> str:
        return str(
            _provider(renders[name])["spec"]["template"]["metadata"]["annotations"]["checksum/engine-env"]
        )

    assert checksum("default") != checksum("ipfs"), "envFrom is read once: a changed store must restart"
    assert checksum("default") != checksum("staging")


# --- What the engine and the Provider read back ----------------------------------------------------


def _settings_from(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """The process environment a pod would have: only `env` among the settings' prefixes."""
    for key in list(os.environ):
        if key.startswith(("C2D_", "PROVIDER_", "AWS_")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_engine_reads_back_what_the_values_say(
    renders: dict[str, Render], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from c2d_core.s3 import S3Settings
    from c2d_core.settings import EngineSettings

    render = renders[name]
    v = render.values
    env = _engine_env(render)
    _settings_from(monkeypatch, env)
    engine = EngineSettings()
    k8s = engine.k8s
    jobs = v["jobs"]
    assert engine.deployment == "k8s"
    assert engine.pod_image == f"{jobs['podImage']['repository']}:{jobs['podImage']['tag']}"
    assert engine.max_input_bytes == v["fetch"]["maxInputBytes"]
    assert engine.fetch_allow == v["fetch"]["allow"]
    assert (engine.ipfs_gateway, engine.arweave_gateway) == (
        v["fetch"]["ipfsGateway"],
        v["fetch"]["arweaveGateway"],
    )
    assert k8s.namespace == jobs["namespace"]
    assert (k8s.run_as_user, k8s.run_as_group) == (jobs["runAsUser"], jobs["runAsGroup"])
    assert k8s.start_timeout == jobs["startTimeoutSeconds"]
    assert k8s.ttl_seconds_after_finished == jobs["ttlSecondsAfterFinished"]
    assert k8s.shared_claims == jobs["sharedClaims"]
    assert k8s.image_pull_secrets == jobs["imagePullSecrets"]
    assert k8s.storage_class == (jobs["storageClass"] or None)
    assert k8s.release_name == RELEASE
    store = v["resultStore"]
    assert env["C2D_RESULT_STORE"] == store["kind"]
    expected_secrets = {"provider-key": jobs["providerKeySecret"]}
    if store["s3"]["credentialsSecret"]:
        expected_secrets["s3-credentials"] = store["s3"]["credentialsSecret"]
    assert k8s.secret_names == expected_secrets
    if store["kind"] == "s3":
        s3 = S3Settings.from_env(env)
        given = store["s3"]
        assert (s3.bucket, s3.region, s3.sse, s3.kms_key_id) == (
            given["bucket"],
            given["region"],
            given["sse"],
            given["kmsKeyId"],
        )
        assert s3.endpoint_url == (given["endpointUrl"] or None)
        assert s3.prefix == (given["prefix"] + "/" if given["prefix"] else "")
        assert (s3.max_attempts, s3.timeout) == (given["maxAttempts"], given["timeoutSeconds"])
    if store["kind"] == "ipfs":
        assert env["C2D_IPFS_API_URL"] == store["ipfs"]["apiUrl"]
    if v["resultsAssets"]["enabled"]:
        assets = v["resultsAssets"]
        assert engine.chain_id == assets["chainId"]
        assert engine.provider_url == assets["providerUrl"]
        assert str(engine.addresses_file) == assets["addressesFile"]
        assert str(engine.provider_key_file) == assets["providerKeyFile"]


@pytest.mark.parametrize("name", [n for n in VALUE_SETS if n != "engine-only"])
def test_the_provider_starts_in_production_on_the_rendered_env(
    renders: dict[str, Render], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from provider_api.settings import ProviderSettings

    render = renders[name]
    secret = _production_secret()
    names = _dagster_names(render.values)
    env = _provider_pod_env(render, secret, {names.password_key: "pg-secret", names.username_key: "dagster"})
    _settings_from(monkeypatch, env)
    settings = ProviderSettings()
    assert settings.dagster_home == Path(render.values["provider"]["dagsterInstance"]["mountPath"])
    fetch = render.values["fetch"]
    assert settings.environment == "production"
    assert settings.fetch_allow == fetch["allow"], "fileinfo may reach what configure pods may reach"
    assert (settings.ipfs_gateway, settings.arweave_gateway) == (
        fetch["ipfsGateway"],
        fetch["arweaveGateway"],
    )
    assert settings.graphql_url == "http://c2d-dagster-webserver:80/graphql"
    assert settings.rpc_url == secret["rpc-url"]
    for key, value in render.values["provider"]["env"].items():
        assert env[key] == value


def _production_secret() -> dict[str, str]:
    """The Provider's Secret as an operator creates it (never the chart); a fresh key, not a dev one."""
    from eth_account import Account

    return {
        "provider-key": Account.create().key.hex(),
        "rpc-url": "https://rpc.example.com/KEY",
        "nonce-db-url": "postgresql+psycopg2://provider@127.0.0.1/provider",
    }


@pytest.mark.parametrize(
    ("values", "rendered", "cache_seconds"),
    [
        # The chart's default (2 replicas): each replica has its own status cache, so none keeps an
        # unfinished job between requests (a poll reaching the other one could go back in time).
        ("", "0", 0.0),
        ("provider: {replicas: 3}\n", "0", 0.0),
        # One replica: nothing to disagree with, the Provider's own default (1 s) stands.
        ("provider: {replicas: 1}\n", None, 1.0),
        # The operator's word wins, with one entry for the name (no duplicate for kubectl to pick).
        ('provider: {replicas: 2, env: {PROVIDER_STATUS_CACHE_SECONDS: "0.5"}}\n', "0.5", 0.5),
    ],
)
def test_several_provider_replicas_keep_no_unfinished_job_in_their_caches(
    chart: helm.Chart,
    values: str,
    rendered: str | None,
    cache_seconds: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from provider_api.settings import ProviderSettings

    render = _render(chart, values)
    [container] = _provider(render)["spec"]["template"]["spec"]["containers"]
    entries = [item for item in container["env"] if item["name"] == "PROVIDER_STATUS_CACHE_SECONDS"]
    assert [item["value"] for item in entries] == ([] if rendered is None else [rendered])
    kubernetes_validate.validate(_provider(render), K8S_VERSION, strict=True)
    names = _dagster_names(render.values)
    env = _provider_pod_env(
        render, _production_secret(), {names.password_key: "pg-secret", names.username_key: "dagster"}
    )
    _settings_from(monkeypatch, env)
    assert ProviderSettings().status_cache_seconds == cache_seconds


# --- The Provider reads job state from Dagster's run storage -------------------------------------

PROVIDER_SETS = [n for n in VALUE_SETS if n != "engine-only"]
# (instance ConfigMap, Postgres Secret, its password key) the Provider must use, as the dagster chart
# names them for that values set (or as the operator named their own Dagster's).
EXPECTED_RUN_STORAGE = {
    "default": ("c2d-dagster-instance", "c2d-dagster-postgresql", "postgresql-password"),
    "dagster-renamed": ("engine-instance", "engine-postgresql-secret", "postgresql-password"),
    "external-dagster": ("ops-dagster-instance", "ops-dagster-postgres", "password"),
}


@pytest.mark.parametrize("name", PROVIDER_SETS)
def test_each_provider_secret_is_its_own_but_the_run_storage_password_the_dagster_charts(
    renders: dict[str, Render], name: str
) -> None:
    """The rule: every secret in the Provider's env comes from the Provider's own Secret, except the
    run storage's Postgres credentials, which come from the dagster chart's Postgres Secret (named
    here as that chart names it): the same Postgres, read with the credentials Dagster's pods use."""
    render = renders[name]
    names = _dagster_names(render.values)
    own = render.values["provider"]["existingSecret"]
    refs = {
        key: item["valueFrom"]["secretKeyRef"]
        for key, item in _provider_env(render).items()
        if "valueFrom" in item
    }
    expected = {
        "PROVIDER_PRIVATE_KEY": {"name": own, "key": "provider-key"},
        "PROVIDER_RPC_URL": {"name": own, "key": "rpc-url"},
        "PROVIDER_NONCE_DB_URL": {"name": own, "key": "nonce-db-url"},
        "DAGSTER_PG_PASSWORD": {"name": names.postgres_secret, "key": names.password_key},
    }
    if names.username_key:
        expected["DAGSTER_PG_USERNAME"] = {"name": names.postgres_secret, "key": names.username_key}
    assert refs == expected
    assert names.postgres_secret != own


@pytest.mark.parametrize("name", EXPECTED_RUN_STORAGE)
def test_the_provider_mounts_the_engines_instance_file_as_its_dagster_home(
    renders: dict[str, Render], name: str
) -> None:
    render = renders[name]
    deployment = _provider(render)
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    config_map, secret, key = EXPECTED_RUN_STORAGE[name]
    names = _dagster_names(render.values)
    assert (names.instance_config_map, names.postgres_secret, names.password_key) == (config_map, secret, key)
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    home = render.values["provider"]["dagsterInstance"]["mountPath"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "dagster-instance"]
    assert volume["configMap"] == {
        "name": config_map,
        "items": [{"key": "dagster.yaml", "path": "dagster.yaml"}],
    }
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "dagster-instance"]
    assert mount == {"name": "dagster-instance", "mountPath": home, "readOnly": True}
    assert [m["mountPath"] for m in container["volumeMounts"] if m["mountPath"].startswith(home)] == [home]
    env = _provider_env(render)
    assert env["PROVIDER_DAGSTER_HOME"]["value"] == home
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": secret, "key": key}}
    assert ("DAGSTER_PG_USERNAME" in env) == (name == "dagster-renamed")


def test_without_a_postgres_password_the_provider_gets_none(chart: helm.Chart) -> None:
    """The dagster chart's workload-identity mode (no password): nothing to take from a Secret."""
    text = _without_dagster("dagster:\n  global: {postgresqlAuthWifEnabled: true}\n")
    manifests = chart.render(helm.values_from_yaml(text), name=RELEASE, namespace=RELEASE_NAMESPACE)
    deployment = yaml.safe_load(manifests["c2d/templates/provider-deployment.yaml"])
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    names = [item["name"] for item in container["env"]]
    assert "DAGSTER_PG_PASSWORD" not in names and "PROVIDER_DAGSTER_HOME" in names


@pytest.mark.parametrize("name", PROVIDER_SETS)
def test_no_network_policy_stands_between_the_provider_and_run_storage(
    renders: dict[str, Render], name: str
) -> None:
    """The Provider now reaches Postgres (run storage) besides the webserver, the chain and the
    result store: the chart's policies are the job namespace's and none selects the Provider's pods,
    so its egress is the cluster's default. A policy of your own there must allow Postgres
    (docs/deploy-kubernetes.md)."""
    render = renders[name]
    labels = _provider(render)["spec"]["template"]["metadata"]["labels"]
    for policy in _network_policies(render):
        assert _namespace(policy) != RELEASE_NAMESPACE or not _selects(policy, labels), policy["metadata"]


def _dagster_chart_instance_file(dagster: dict[str, Any]) -> dict[str, Any]:
    """The instance file the dagster chart writes into its `<fullname>-instance` ConfigMap for these
    dagster values, in that chart's layout (checked against its templates, docs/deploy-kubernetes.md):
    run, event-log and schedule storage as three dagster_postgres classes whose password is read from
    DAGSTER_PG_PASSWORD, next to the engine-only parts it names (K8sRunLauncher from dagster_k8s, our
    run coordinator from c2d_defs, S3 compute logs from dagster_aws)."""
    postgres = dagster["postgresql"]
    dagster_global = dagster.get("global", {})
    db = {
        "username": {"env": "DAGSTER_PG_USERNAME"}
        if dagster_global.get("postgresqlSecretUsernameKey")
        else postgres["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": postgres["postgresqlHost"],
        "db_name": postgres["postgresqlDatabase"],
        "port": postgres["service"]["port"],
        "params": postgres.get("postgresqlParams", {}),
        "scheme": postgres["postgresqlScheme"],
    }

    def storage(module: str, name: str) -> dict[str, Any]:
        return {"module": f"dagster_postgres.{module}", "class": name, "config": {"postgres_db": db}}

    launcher = dagster["runLauncher"]["config"]["k8sRunLauncher"]
    coordinator = dagster["dagsterDaemon"]["runCoordinator"]["config"]["customRunCoordinator"]
    logs = dagster["computeLogManager"]["config"]["s3ComputeLogManager"]
    monitoring = dagster["dagsterDaemon"]["runMonitoring"]
    return {
        "scheduler": {"module": "dagster._core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": storage("schedule_storage", "PostgresScheduleStorage"),
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": {
                "load_incluster_config": True,
                "job_namespace": RELEASE_NAMESPACE,
                "image_pull_policy": "Always",
                "service_account_name": dagster["serviceAccount"]["name"],
                "dagster_home": {"env": "DAGSTER_HOME"},
                "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
                "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
                "env_config_maps": [
                    {"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"},
                    *(item["name"] for item in launcher["envConfigMaps"]),
                ],
            },
        },
        "run_storage": storage("run_storage", "PostgresRunStorage"),
        "event_log_storage": storage("event_log", "PostgresEventLogStorage"),
        "run_coordinator": {
            "module": coordinator["module"],
            "class": coordinator["class"],
            "config": coordinator["config"],
        },
        "compute_logs": {
            "module": "dagster_aws.s3.compute_log_manager",
            "class": "S3ComputeLogManager",
            "config": {"bucket": logs["bucket"], "prefix": logs["prefix"]},
        },
        "run_monitoring": {
            "enabled": True,
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
        },
        "telemetry": {"enabled": True},
    }


# The Provider's process as the Deployment starts it, less what the engine's image alone must have:
# importing c2d_defs or an engine-only Dagster integration fails, as it would in an image without them.
PROVIDER_READ = r"""
import importlib.abc, json, sys

ENGINE_ONLY = ("c2d_defs", "dagster_k8s", "dagster_aws")


class EngineOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ENGINE_ONLY:
            raise ImportError(f"{name} is the engine's, not the Provider's")
        return None


sys.meta_path.insert(0, EngineOnly())
from provider_api.dagster_jobs import DagsterJobs
from provider_api.settings import ProviderSettings

settings = ProviderSettings()
with DagsterJobs(
    settings.graphql_url, environments_file=settings.environments_file, dagster_home=settings.dagster_home
) as jobs:
    record = jobs.job(sys.argv[1])
    found = record and {"run_id": record.run_id, "run_status": record.run_status, "tags": record.tags}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ENGINE_ONLY)
print(json.dumps({"record": found, "engine_only_loaded": loaded}))
"""


def test_the_provider_reads_a_run_through_the_mounted_instance_file_on_postgres(
    chart: helm.Chart, tmp_path: Path
) -> None:
    """End to end on the machine's Postgres: the chart rendered for a Postgres at 127.0.0.1, the
    dagster chart's instance file for those values written where the Deployment mounts it, a run
    written by the engine's side through that file, and the Provider's process, started on the
    rendered env (secrets from the Secrets they must come from), reads it back from run storage,
    without c2d_defs, dagster_k8s or dagster_aws importable."""
    import subprocess
    import sys
    import uuid

    from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
    from dagster._core.instance.ref import InstanceRef
    from eth_account import Account
    from fixtures_postgres import fresh_database

    from c2d_core import engine

    with fresh_database("c2d_chart") as database:
        text = _without_dagster(
            "dagster:\n  postgresql:\n    postgresqlHost: 127.0.0.1\n    postgresqlUsername: postgres\n"
            f"    postgresqlDatabase: {database}\n"
        )
        overrides = helm.values_from_yaml(text)
        manifests = chart.render(overrides, name=RELEASE, namespace=RELEASE_NAMESPACE)
        objects = [
            doc
            for path, manifest in sorted(manifests.items())
            if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(manifest)
            if doc
        ]
        render = Render(chart.merge_values(overrides), objects)
        provider_secret = {
            "provider-key": Account.create().key.hex(),
            "rpc-url": "http://127.0.0.1:9",
            "nonce-db-url": f"sqlite:///{tmp_path / 'nonces.db'}",
        }
        # The machine's Postgres trusts loopback: the Secret's password is empty.
        pod_env = _provider_pod_env(render, provider_secret, {"postgresql-password": ""})
        # The pod's files, under tmp_path: the instance ConfigMap at its mount, the environments file.
        home = tmp_path / pod_env["PROVIDER_DAGSTER_HOME"].lstrip("/")
        home.mkdir(parents=True)
        (home / "dagster.yaml").write_text(
            yaml.safe_dump(_dagster_chart_instance_file(render.values["dagster"]))
        )
        environments = tmp_path / "environments.yaml"
        environments.write_text(
            render.one("ConfigMap", render.values["environmentsConfigMap"])["data"]["environments.yaml"]
        )
        pod_env |= {
            "PROVIDER_DAGSTER_HOME": str(home),
            "PROVIDER_ENVIRONMENTS_FILE": str(environments),
            "C2D_HOME": str(tmp_path / "c2d"),
        }

        job_id = uuid.uuid4().hex
        run_id = str(uuid.uuid4())
        tags = {
            engine.JOB_ID: job_id,
            engine.OWNER: "0x" + "ab" * 20,
            engine.ENVIRONMENT: "small",
            engine.STATUS: "40",
        }
        os.environ["DAGSTER_PG_PASSWORD"] = ""
        try:
            # The engine's side: Dagster's full instance over the same file (what its pods load).
            with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as dagster:
                dagster.add_run(
                    DagsterRun(
                        job_name=engine.JOB_NAME, run_id=run_id, status=DagsterRunStatus.STARTED, tags=tags
                    )
                )
        finally:
            del os.environ["DAGSTER_PG_PASSWORD"]

        base = {
            k: v for k, v in os.environ.items() if not k.startswith(("C2D_", "PROVIDER_", "AWS_", "DAGSTER_"))
        }
        done = subprocess.run(
            [sys.executable, "-c", PROVIDER_READ, job_id],
            env=base | pod_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["engine_only_loaded"] == []
    record = answer["record"]
    assert record is not None, "the Provider did not find the run the engine wrote"
    assert (record["run_id"], record["run_status"]) == (run_id, "STARTED")
    assert record["tags"][engine.STATUS] == "40" and record["tags"][engine.JOB_ID] == job_id


# --- Security-critical fields, on the rendered objects ------------------------------------------


def _network_policies(render: Render) -> list[dict[str, Any]]:
    return render.of_kind("NetworkPolicy")


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(key) == value for key, value in wanted.items())


@pytest.mark.parametrize("name", [n for n in VALUE_SETS if n != "engine-only"])
def test_network_policies_deny_everything_first(renders: dict[str, Render], name: str) -> None:
    render = renders[name]
    policies = _network_policies(render)
    [deny] = [p for p in policies if p["metadata"]["name"] == "c2d-jobs-deny-all"]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert {_namespace(p) for p in policies} == {render.values["jobs"]["namespace"]}
    assert all("ingress" not in p["spec"] for p in policies), "no job pod accepts connections"
    for policy in policies:
        if policy is deny:
            continue
        assert policy["spec"]["policyTypes"] == ["Egress"]
        for rule in policy["spec"]["egress"]:
            for peer in rule["to"]:
                if "ipBlock" in peer and peer["ipBlock"]["cidr"] == "0.0.0.0/0":
                    assert "169.254.0.0/16" in peer["ipBlock"]["except"], "cloud metadata stays unreachable"
                    assert "10.0.0.0/8" in peer["ipBlock"]["except"]
    publish = next(p for p in policies if p["metadata"]["name"] == "c2d-publish-egress")
    cidrs = render.values["networkPolicy"]["publish"]["cidrs"]
    if cidrs:
        assert publish["spec"]["egress"][1]["to"] == [{"ipBlock": {"cidr": c}} for c in cidrs]


def test_the_runners_pod_labels_meet_the_policies_they_are_meant_for(renders: dict[str, Render]) -> None:
    config = K8sRunnerConfig()
    policies = _network_policies(renders["default"])
    specs = _specs()

    def allowed_by(labels: dict[str, str]) -> list[str]:
        return [p["metadata"]["name"] for p in policies if p["spec"]["podSelector"] and _selects(p, labels)]

    assert allowed_by(pod_labels(specs["algorithm"], config)) == [], "no network: only deny-all applies"
    networked = specs["algorithm"].model_copy(update={"network": True})
    assert allowed_by(pod_labels(networked, config)) == ["c2d-algorithm-network-allowed"]
    assert allowed_by(pod_labels(specs["configure"], config)) == ["c2d-configure-egress"]
    assert allowed_by(pod_labels(specs["publish"], config)) == ["c2d-publish-egress"]
    [deny] = [p for p in policies if not p["spec"]["podSelector"]]
    assert all(_selects(deny, pod_labels(spec, config)) for spec in specs.values())


@pytest.mark.parametrize("name", [n for n in VALUE_SETS if n != "engine-only"])
def test_the_provider_pod_is_non_root_unprivileged_and_limited(renders: dict[str, Render], name: str) -> None:
    pod = _provider(renders[name])["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rbac_is_one_role_in_the_job_namespace(renders: dict[str, Render], name: str) -> None:
    render = renders[name]
    assert not render.of_kind("ClusterRole") and not render.of_kind("ClusterRoleBinding")
    if not render.values["rbac"]["create"]:
        assert not render.of_kind("Role") and not render.of_kind("RoleBinding")
        return
    jobs = render.values["jobs"]
    [role], [binding] = render.of_kind("Role"), render.of_kind("RoleBinding")
    assert _namespace(role) == _namespace(binding) == jobs["namespace"]
    assert role["rules"] == RULES, "the Role is files/job-runner-rules.yaml verbatim"
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert "secrets" not in rule["resources"], "the runner never reads a Secret"
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": jobs["runnerServiceAccount"],
            "namespace": jobs["runnerServiceAccountNamespace"] or RELEASE_NAMESPACE,
        }
    ]


# Every API call K8sPodRunner makes through DagsterKubernetesClient, as (group, resource, verb).
RUNNER_CALLS = [
    ("batch", "jobs", "create"),
    ("batch", "jobs", "list"),
    ("batch", "jobs", "delete"),
    ("batch", "jobs/status", "get"),
    ("", "pods", "list"),
    ("", "pods", "get"),
    ("", "pods", "delete"),
    ("", "pods/log", "get"),
    ("", "persistentvolumeclaims", "create"),
    ("", "persistentvolumeclaims", "list"),
    ("", "persistentvolumeclaims", "delete"),
    ("", "configmaps", "create"),
    ("", "configmaps", "get"),
    ("", "configmaps", "update"),
    ("", "configmaps", "delete"),
]


@pytest.mark.parametrize(("group", "resource", "verb"), RUNNER_CALLS)
def test_the_role_allows_each_call_the_runner_makes(
    renders: dict[str, Render], group: str, resource: str, verb: str
) -> None:
    [role] = renders["default"].of_kind("Role")
    assert any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for rule in role["rules"]
    )


# Names that would mean a secret sits in plain text.
SECRET_NAME = re.compile(r"PRIVATE_KEY|PASSWORD|SECRET_ACCESS|TOKEN|RPC_URL|NONCE_DB_URL|CREDENTIALS$")


@pytest.mark.parametrize("name", VALUE_SETS)
def test_no_secret_is_inlined(renders: dict[str, Render], name: str) -> None:
    render = renders[name]
    assert not render.of_kind("Secret"), "Secrets are the operator's, never the chart's"
    for config_map in render.of_kind("ConfigMap"):
        for key, value in config_map["data"].items():
            assert not SECRET_NAME.search(key), f"{config_map['metadata']['name']} holds {key}"
            assert not re.search(r"0x[0-9a-fA-F]{64}", value), "a private key in a ConfigMap"
    if not render.values["provider"]["enabled"]:
        return
    env = _provider_env(render)
    for key in ("PROVIDER_PRIVATE_KEY", "PROVIDER_RPC_URL", "PROVIDER_NONCE_DB_URL", "DAGSTER_PG_PASSWORD"):
        assert set(env[key]) == {"name", "valueFrom"} and "secretKeyRef" in env[key]["valueFrom"]
    assert not [key for key, item in env.items() if "value" in item and SECRET_NAME.search(key)]
    volumes = _provider(render)["spec"]["template"]["spec"]["volumes"]
    credentials = render.values["resultStore"]["s3"]["credentialsSecret"]
    secrets = [v["secret"]["secretName"] for v in volumes if "secret" in v]
    assert secrets == ([credentials] if credentials else [])


def test_nothing_is_exposed_outside_the_cluster_by_default(renders: dict[str, Render]) -> None:
    render = renders["default"]
    assert not render.of_kind("Ingress")
    assert all(s["spec"]["type"] == "ClusterIP" for s in render.of_kind("Service"))
    # The dagster subchart is not rendered here: what reaches it are these values, which keep its
    # UI (unauthenticated, able to launch and cancel runs) cluster-internal.
    dagster = render.values["dagster"]
    assert dagster["dagsterWebserver"]["service"]["type"] == "ClusterIP"
    assert dagster["ingress"]["enabled"] is False
    assert dagster["dagsterWebserver"]["service"]["port"] == render.values["provider"]["dagsterWebserverPort"]


# --- values.schema.json, through Helm's validator ---------------------------------------------------


def _override(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    target = values
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return values


BAD_VALUES = [
    (("jobs", "runAsUser"), 0),
    (("jobs", "namespace"), "Not_A_Namespace"),
    (("networkPolicy", "internet", "cidr"), "everywhere"),
    (("provider", "image", "pullPolicy"), "Sometimes"),
    (("rbac", "clusterAdmin"), True),
    (("jobs", "sharedClaims"), {"relative/path": "claim"}),
    (("resultStore", "kind"), "gcs"),
    (("resultStore", "s3", "sse"), "rot13"),
    (("fetch", "allow"), ["*"]),
    (("fetch", "allow"), ["0.0.0.0/0"]),
    (("fetch", "allow"), ["::/0"]),
    (("fetch", "maxInputBytes"), 0),
    (("resultStore", "s3", "maxAttempts"), 0),
    (("provider", "env"), {"lower_case": "x"}),
    (("unknownTopLevelKey",), 1),
]


@pytest.mark.parametrize(("path", "value"), BAD_VALUES)
def test_bad_values_are_refused_at_install(chart: helm.Chart, path: tuple[str, ...], value: Any) -> None:
    overrides = _override(path, value)
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(chart.merge_values(overrides))
    # The same values through the Python validator (the schema is plain draft 7).
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(chart.merge_values(overrides), SCHEMA)


def test_an_install_with_bad_values_renders_nothing(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmValuesError, match="runAsUser"):
        chart.render(
            {"dagster": {"enabled": False}, "jobs": {"runAsUser": 0}},
            name=RELEASE,
            namespace=RELEASE_NAMESPACE,
        )


def test_a_store_kind_needs_its_own_settings(chart: helm.Chart) -> None:
    for kind, missing in (("s3", {"bucket": ""}), ("ipfs", {"apiUrl": ""})):
        with pytest.raises(helm.HelmValuesError, match=kind):
            chart.validate_schema(chart.merge_values({"resultStore": {"kind": kind, kind: missing}}))
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(chart.merge_values({"resultsAssets": {"enabled": True}}))
    chart.validate_schema(
        chart.merge_values(
            {
                "resultStore": {
                    "kind": "s3",
                    "s3": {"bucket": "c2d-results", "sse": "aws:kms", "kmsKeyId": "k"},
                }
            }
        )
    )


def test_every_values_set_and_the_defaults_pass_the_schema(chart: helm.Chart) -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(VALUES, SCHEMA)
    for text in VALUE_SETS.values():
        chart.validate_schema(chart.merge_values(helm.values_from_yaml(_without_dagster(text))))


# --- Static checks: the chart's files against the code that reads them ---------------------------


def test_static_chart_files_parse_and_the_dagster_chart_is_pinned_to_the_installed_dagster() -> None:
    # A fresh load: rendering with the condition false drops the dependency from the loaded
    # chart's metadata (Helm processes dependencies in place).
    with helm.Chart.load(CHART) as chart:
        metadata, dependencies, templates = chart.metadata, chart.dependencies, chart.templates
    assert metadata["apiVersion"] == "v2" and metadata["name"] == "c2d"
    [dagster] = metadata["dependencies"]
    assert dagster["name"] == "dagster" and dagster["condition"] == "dagster.enabled"
    assert dagster["version"] == importlib.metadata.version("dagster") == "1.13.27"
    assert dependencies == [], "the dagster chart is not vendored (see the module docstring)"
    names = {t["name"] for t in templates}
    for name in (
        "_helpers.tpl",
        "provider-deployment.yaml",
        "provider-service.yaml",
        "provider-ingress.yaml",
        "environments-configmap.yaml",
        "job-rbac.yaml",
        "job-networkpolicies.yaml",
    ):
        assert f"templates/{name}" in names


def test_every_value_the_templates_read_exists() -> None:
    aliases = {
        "$j": "jobs",
        "$p": "provider",
        "$n": "networkPolicy",
        "$i": "provider.ingress",
        "$r": "resultStore",
        "$f": "fetch",
    }
    for template in (CHART / "templates").iterdir():
        text = template.read_text()
        paths = re.findall(r"\.Values\.([A-Za-z0-9_.]+)", text)
        for alias, base in aliases.items():
            paths += [f"{base}.{rest}" for rest in re.findall(re.escape(alias) + r"\.([A-Za-z0-9_.]+)", text)]
        for path in paths:
            node: Any = VALUES
            for key in path.split("."):
                assert isinstance(node, dict) and key in node, f"{template.name} reads .Values.{path}"
                node = node[key]


def test_every_engine_setting_the_chart_writes_is_one_the_engine_reads(renders: dict[str, Render]) -> None:
    from c2d_core.settings import env_names

    known = env_names()  # every C2D_* name of the settings tree (flat, C2D_S3_*, C2D_K8S_*, ...)
    written: set[str] = set()
    for render in renders.values():
        written |= set(_engine_env(render))
    assert {
        "C2D_RESULT_STORE",
        "C2D_FETCH_ALLOW",
        "C2D_S3_BUCKET",
        "C2D_IPFS_API_URL",
        "C2D_CHAIN_ID",
    } <= written
    assert written - known == set()


def test_environments_in_values_are_valid_and_each_has_its_queue_limit(renders: dict[str, Render]) -> None:
    render = renders["default"]
    mounted = yaml.safe_load(
        render.one("ConfigMap", VALUES["environmentsConfigMap"])["data"]["environments.yaml"]
    )
    environments = EnvironmentsFile.model_validate(mounted).environments
    coordinator = VALUES["dagster"]["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "CustomRunCoordinator"
    custom = coordinator["config"]["customRunCoordinator"]
    assert (custom["module"], custom["class"]) == ("c2d_defs.run_coordinator", "ImmediateRunCoordinator")
    limits = {item["value"]: item["limit"] for item in custom["config"]["tag_concurrency_limits"]}
    assert {env.id: env.max_jobs for env in environments} == limits


def test_the_run_coordinator_runs_where_it_can_be_imported() -> None:
    # The webserver and the daemon load c2d_defs.run_coordinator from the instance file: the engine
    # image, as the code location's, not the dagster chart's default image.
    engine_image = VALUES["dagster"]["dagster-user-deployments"]["deployments"][0]["image"]
    for part in ("dagsterWebserver", "dagsterDaemon"):
        image = VALUES["dagster"][part]["image"]
        assert (image["repository"], image["tag"]) == (engine_image["repository"], engine_image["tag"])


def test_dagster_instance_values_use_the_kubernetes_parts() -> None:
    dagster = copy.deepcopy(VALUES["dagster"])
    assert dagster["runLauncher"]["type"] == "K8sRunLauncher"
    assert dagster["computeLogManager"]["type"] == "S3ComputeLogManager"
    assert dagster["dagsterDaemon"]["runMonitoring"]["enabled"] is True
    assert dagster["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    [deployment] = dagster["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "c2d_defs.definitions"]
    assert dagster["serviceAccount"]["name"] == VALUES["jobs"]["runnerServiceAccount"]
    run_pods = dagster["runLauncher"]["config"]["k8sRunLauncher"]
    assert run_pods["envConfigMaps"] == [{"name": VALUES["jobs"]["engineEnvConfigMap"]}]
    security = run_pods["runK8sConfig"]["containerConfig"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["allowPrivilegeEscalation"] is False


def test_output_stages_in_values_reach_the_mounted_environments(renders: dict[str, Render]) -> None:
    """Issue 15 item 1d: an environment's outputStages render into the file the engine and the
    Provider load, settings and deadline as written; the engine checks the settings at load."""
    mounted = yaml.safe_load(
        renders["output-stages"].one("ConfigMap", VALUES["environmentsConfigMap"])["data"][
            "environments.yaml"
        ]
    )
    (environment,) = EnvironmentsFile.model_validate(mounted).environments
    (stage,) = environment.output_stages
    assert (stage.name, stage.settings, stage.deadline) == (
        "leak_filter",
        {"window_bytes": 8192, "max_output_share": 0.5},
        900,
    )
    default = yaml.safe_load(
        renders["default"].one("ConfigMap", VALUES["environmentsConfigMap"])["data"]["environments.yaml"]
    )
    assert all(not env.output_stages for env in EnvironmentsFile.model_validate(default).environments)
    # A bad setting is refused where the file loads, naming the stage and the field.
    mounted["environments"][0]["outputStages"][0]["settings"]["window_bytes"] = 10
    with pytest.raises(ValueError, match="output stage 'leak_filter': bad settings: window_bytes"):
        EnvironmentsFile.model_validate(mounted)


def test_the_schema_refuses_a_malformed_output_stage(chart: helm.Chart) -> None:
    for bad in (
        "{name: Leak-Filter}",
        "{name: leak_filter, deadline: 0}",
        "{name: leak_filter, when: always}",
    ):
        values = helm.values_from_yaml(NO_DAGSTER + f"environments: [{{id: small, outputStages: [{bad}]}}]\n")
        with pytest.raises(Exception, match="outputStages"):
            chart.render(values, name=RELEASE, namespace=RELEASE_NAMESPACE)
