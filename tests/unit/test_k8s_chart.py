"""The Helm chart without helm: static files parse, values match their schema, and the RBAC and
NetworkPolicy objects validate against Kubernetes' OpenAPI schema.

The `helm` binary is not on this machine kind, so `helm lint` / `helm template` are not run here
(docs/deploy-kubernetes.md says how to run them). The Role's rules are the chart's own file
(files/job-runner-rules.yaml, included verbatim by the template); the NetworkPolicies are built here
from values.yaml the way templates/job-networkpolicies.yaml builds them.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from test_k8s_manifests import K8S_VERSION, _specs

from c2d_core.environments import EnvironmentsFile
from c2d_defs.k8s_pod_runner import K8sRunnerConfig, pod_labels

CHART = Path(__file__).resolve().parents[2] / "helm" / "c2d"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
RULES = yaml.safe_load((CHART / "files" / "job-runner-rules.yaml").read_text())


def _validate(body: dict[str, Any]) -> None:
    kubernetes_validate.validate(body, K8S_VERSION, strict=True)


def test_static_chart_files_parse_and_the_dagster_chart_is_pinned_to_the_installed_dagster() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "c2d"
    [dagster] = chart["dependencies"]
    assert dagster["name"] == "dagster"
    assert dagster["version"] == importlib.metadata.version("dagster") == "1.13.27"
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    templates = sorted(p.name for p in (CHART / "templates").iterdir())
    for name in (
        "_helpers.tpl",
        "provider-deployment.yaml",
        "provider-service.yaml",
        "provider-ingress.yaml",
    ):
        assert name in templates
    for name in ("environments-configmap.yaml", "job-rbac.yaml", "job-networkpolicies.yaml"):
        assert name in templates


def test_values_yaml_matches_its_schema() -> None:
    jsonschema.validate(VALUES, SCHEMA)


@pytest.mark.parametrize(
    ("path", "value"),
    [
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
        (("fetch", "maxInputBytes"), 0),
        (("resultStore", "s3", "maxAttempts"), 0),
    ],
)
def test_bad_values_are_refused_at_install(path: tuple[str, ...], value: Any) -> None:
    values = copy.deepcopy(VALUES)
    target = values
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, SCHEMA)


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


def test_a_store_kind_needs_its_own_settings() -> None:
    for kind, missing in (("s3", {"bucket": ""}), ("ipfs", {"apiUrl": ""})):
        values = copy.deepcopy(VALUES)
        values["resultStore"]["kind"] = kind
        values["resultStore"][kind].update(missing)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(values, SCHEMA)
    values = copy.deepcopy(VALUES)
    values["resultStore"] = {"kind": "s3", "s3": {"bucket": "c2d-results", "sse": "aws:kms", "kmsKeyId": "k"}}
    jsonschema.validate(values, SCHEMA)


def test_every_engine_setting_the_chart_writes_is_one_the_engine_reads() -> None:
    from c2d_core.result_stores import S3Settings
    from c2d_core.settings import EngineSettings
    from c2d_defs.k8s_resources import K8sSettings

    known = {f"C2D_{name.upper()}" for name in EngineSettings.model_fields}
    known |= {f"C2D_K8S_{name.upper()}" for name in K8sSettings.model_fields}
    known |= set(S3Settings(bucket="b").env())
    written: set[str] = set()
    for template in (CHART / "templates").iterdir():
        written |= set(re.findall(r"^\s*(C2D_[A-Z0-9_]+):", template.read_text(), flags=re.MULTILINE))
    assert {"C2D_RESULT_STORE", "C2D_FETCH_ALLOW", "C2D_S3_BUCKET", "C2D_IPFS_API_URL"} <= written
    assert written - known == set()


def test_environments_in_values_are_valid_and_each_has_its_queue_limit() -> None:
    environments = EnvironmentsFile.model_validate({"environments": VALUES["environments"]}).environments
    queue = VALUES["dagster"]["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    limits = {item["value"]: item["limit"] for item in queue["tagConcurrencyLimits"]}
    assert {env.id: env.max_jobs for env in environments} == limits


def test_dagster_instance_values_use_the_kubernetes_parts() -> None:
    dagster = VALUES["dagster"]
    assert dagster["runLauncher"]["type"] == "K8sRunLauncher"
    assert dagster["computeLogManager"]["type"] == "S3ComputeLogManager"
    assert dagster["dagsterDaemon"]["runMonitoring"]["enabled"] is True
    assert dagster["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    [deployment] = dagster["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "c2d_defs.definitions"]


# --- RBAC ---------------------------------------------------------------------------------------------


def _role() -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "c2d-job-runner", "namespace": VALUES["jobs"]["namespace"]},
        "rules": RULES,
    }


def test_job_runner_role_is_valid_and_least_privilege() -> None:
    role = _role()
    _validate(role)
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "c2d-job-runner", "namespace": VALUES["jobs"]["namespace"]},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "c2d-job-runner"},
        "subjects": [
            {"kind": "ServiceAccount", "name": VALUES["jobs"]["runnerServiceAccount"], "namespace": "c2d"}
        ],
    }
    _validate(binding)
    for rule in RULES:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert "secrets" not in rule["resources"], "the runner never reads a Secret"
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
    text = (CHART / "templates" / "job-rbac.yaml").read_text()
    assert "kind: ClusterRole" not in text and "cluster-admin" not in text


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
def test_the_role_allows_each_call_the_runner_makes(group: str, resource: str, verb: str) -> None:
    assert any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for rule in RULES
    )


# --- NetworkPolicies ----------------------------------------------------------------------------------


def _network_policies() -> list[dict[str, Any]]:
    """What templates/job-networkpolicies.yaml renders from values.yaml."""
    n = VALUES["networkPolicy"]
    namespace = VALUES["jobs"]["namespace"]
    job_pods = {"app.kubernetes.io/name": "c2d", "app.kubernetes.io/managed-by": "c2d-engine"}
    dns = {
        "to": [{"namespaceSelector": n["dns"]["namespaceSelector"], "podSelector": n["dns"]["podSelector"]}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    internet = {"ipBlock": {"cidr": n["internet"]["cidr"], "except": n["internet"]["except"]}}

    def policy(
        name: str, selector: dict[str, str] | None, egress: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "podSelector": {"matchLabels": {**job_pods, **selector}} if selector is not None else {},
            "policyTypes": ["Egress"] if egress is not None else ["Ingress", "Egress"],
        }
        if egress is not None:
            spec["egress"] = egress
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }

    def tcp(ports: list[int]) -> list[dict[str, Any]]:
        return [{"protocol": "TCP", "port": port} for port in ports]

    publish_to = [{"ipBlock": {"cidr": c}} for c in n["publish"]["cidrs"]] or [internet]
    return [
        policy("c2d-jobs-deny-all", None, None),
        policy(
            "c2d-configure-egress",
            {"c2d/component": "configure"},
            [dns, {"to": [internet], "ports": tcp(n["configure"]["ports"])}],
        ),
        policy(
            "c2d-publish-egress",
            {"c2d/component": "publish"},
            [dns, {"to": publish_to, "ports": tcp(n["publish"]["ports"])}],
        ),
        policy(
            "c2d-algorithm-network-allowed",
            {"c2d/component": "algorithm", "c2d/network": "allowed"},
            [dns, {"to": [internet], "ports": tcp(n["algorithm"]["ports"])}],
        ),
    ]


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(key) == value for key, value in wanted.items())


def test_network_policies_are_valid_and_deny_everything_first() -> None:
    policies = _network_policies()
    for policy in policies:
        _validate(policy)
    deny = policies[0]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert all("ingress" not in p["spec"] for p in policies), "no job pod accepts connections"
    for policy in policies[1:]:
        for rule in policy["spec"]["egress"]:
            for peer in rule["to"]:
                if "ipBlock" in peer and peer["ipBlock"]["cidr"] == "0.0.0.0/0":
                    assert "169.254.0.0/16" in peer["ipBlock"]["except"], "cloud metadata stays unreachable"
                    assert "10.0.0.0/8" in peer["ipBlock"]["except"]


def test_the_runners_pod_labels_meet_the_policies_they_are_meant_for() -> None:
    config = K8sRunnerConfig()
    policies = _network_policies()
    specs = _specs()

    def allowed_by(labels: dict[str, str]) -> list[str]:
        return [p["metadata"]["name"] for p in policies[1:] if _selects(p, labels)]

    assert allowed_by(pod_labels(specs["algorithm"], config)) == [], "no network: only deny-all applies"
    networked = specs["algorithm"].model_copy(update={"network": True})
    assert allowed_by(pod_labels(networked, config)) == ["c2d-algorithm-network-allowed"]
    assert allowed_by(pod_labels(specs["configure"], config)) == ["c2d-configure-egress"]
    assert allowed_by(pod_labels(specs["publish"], config)) == ["c2d-publish-egress"]
    assert all(_selects(policies[0], pod_labels(spec, config)) for spec in specs.values())


@pytest.mark.skipif(shutil.which("helm") is None, reason="helm is not installed on this machine kind")
def test_helm_lint() -> None:  # pragma: no cover - runs only where helm exists
    import subprocess

    subprocess.run(["helm", "lint", str(CHART)], check=True)
