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


@pytest.fixture(scope="session")
def renders(chart: helm.Chart) -> dict[str, Render]:
    """Every values set rendered once per session."""
    result = {}
    for name, text in VALUE_SETS.items():
        overrides = helm.values_from_yaml(NO_DAGSTER + text)
        manifests = chart.render(overrides, name=RELEASE, namespace=RELEASE_NAMESPACE)
        objects = [
            doc
            for path, manifest in sorted(manifests.items())
            if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(manifest)
            if doc
        ]
        result[name] = Render(chart.merge_values(overrides), objects)
    return result


def _namespace(obj: dict[str, Any]) -> str:
    return str(obj["metadata"].get("namespace", RELEASE_NAMESPACE))


def _provider(render: Render) -> dict[str, Any]:
    return render.one("Deployment", f"{RELEASE}-provider")


def _provider_env(render: Render) -> dict[str, dict[str, Any]]:
    [container] = _provider(render)["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item for item in container["env"]}


def _engine_env(render: Render) -> dict[str, str]:
    return dict(render.one("ConfigMap", render.values["jobs"]["engineEnvConfigMap"])["data"])


# --- Helm: lint and render ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_strict_helm_lint_finds_nothing_but_the_absent_dagster_chart(name: str) -> None:
    report = helm.lint(
        CHART,
        helm.values_from_yaml(NO_DAGSTER + VALUE_SETS[name]),
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
    from eth_account import Account

    from provider_api.settings import ProviderSettings

    render = renders[name]
    # The Secret's values (created by the operator, never by the chart); a fresh key, not a dev one.
    secret = {
        "provider-key": Account.create().key.hex(),
        "rpc-url": "https://rpc.example.com/KEY",
        "nonce-db-url": "postgresql+psycopg2://provider@127.0.0.1/provider",
    }
    env = dict(_engine_env(render))
    for item in _provider_env(render).values():
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == render.values["provider"]["existingSecret"]
            env[item["name"]] = secret[ref["key"]]
        else:
            env[item["name"]] = item["value"]
    _settings_from(monkeypatch, env)
    settings = ProviderSettings()
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
    for key in ("PROVIDER_PRIVATE_KEY", "PROVIDER_RPC_URL", "PROVIDER_NONCE_DB_URL"):
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
        chart.validate_schema(chart.merge_values(helm.values_from_yaml(NO_DAGSTER + text)))


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
