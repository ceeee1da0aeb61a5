"""Installing gitferry: the CRD, its admission rules, the manifests, the operator's RBAC."""

from __future__ import annotations

import pytest

from tests.harness.cluster_fixtures import Cluster, Operator, wait_for

pytestmark = pytest.mark.e2e


def _sync(name: str, namespace: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "gitferry.dev/v1alpha1",
        "kind": "GitRepositorySync",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"url": "https://git.invalid/org/repo.git", **spec},
    }


def test_crd_is_established_and_printer_columns_show(
    gitferry_installed: Cluster, namespace: str
) -> None:
    crd = gitferry_installed.get("crd", "gitrepositorysyncs.gitferry.dev")
    assert crd is not None
    conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conds["Established"] == "True"
    assert set(crd["spec"]["names"]["shortNames"]) == {"grs", "gitsync"}

    gitferry_installed.apply(_sync("cols", namespace, suspend=True))
    out = gitferry_installed.kubectl("get", "grs", "-n", namespace).stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "READY", "STATUS", "REVISION", "AGE"]
    wide = gitferry_installed.kubectl("get", "gitsync", "-n", namespace, "-o", "wide").stdout
    assert wide.splitlines()[0].split()[-2:] == ["URL", "PATH"]


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"url": ""}, "spec.url", "should be at least 1 chars long"),
        (
            {"ref": {"branch": "main", "tag": "v1"}},
            "spec.ref",
            "at most one of branch, tag, semver and commit",
        ),
        ({"ref": {"semver": ">=1", "commit": "a" * 40}}, "spec.ref", "at most one of"),
        ({"interval": "5 minutes"}, "spec.interval", "duration"),
        ({"timeout": "2d"}, "spec.timeout", "duration"),
        ({"interval": "0s"}, "spec.interval", "between 1s and 720h"),
        ({"ref": {"commit": "ab" * 32}}, "spec.ref.commit", "40"),
        ({"retryInterval": "0.0001ms"}, "spec.retryInterval", "between 1s and 720h"),
        ({"timeout": "3000000h"}, "spec.timeout", "between 1s and 720h"),
        ({"interval": "720h0m1s"}, "spec.interval", "between 1s and 720h"),
        ({"interval": "0" * 34 + "s"}, "spec.interval", "32"),
        ({"path": "../other-team"}, "spec.path", "must stay inside the repository"),
        ({"path": "/etc"}, "spec.path", "must stay inside the repository"),
    ],
)
def test_bad_specs_are_rejected_at_admission(
    gitferry_installed: Cluster, namespace: str, spec: dict[str, object], field: str, words: str
) -> None:
    body = _sync("bad", namespace)
    body["spec"] = {**body["spec"], **spec}  # type: ignore[dict-item]
    proc = gitferry_installed.kubectl(
        "apply", "-f", "-", input=__import__("json").dumps(body), check=False
    )
    assert proc.returncode != 0, "the API server accepted a bad spec"
    assert field in proc.stderr and words in proc.stderr, proc.stderr


def test_a_name_that_cannot_be_a_label_value_is_rejected_at_admission(
    gitferry_installed: Cluster, namespace: str
) -> None:
    body = _sync("x" * 64, namespace)
    proc = gitferry_installed.kubectl(
        "apply", "-f", "-", input=__import__("json").dumps(body), check=False
    )
    assert proc.returncode != 0, "the API server accepted a 64-character sync name"
    assert "metadata.name must be at most 63 characters" in proc.stderr, proc.stderr
    gitferry_installed.apply(_sync("x" * 63, namespace, suspend=True))


def test_branch_with_commit_is_allowed(gitferry_installed: Cluster, namespace: str) -> None:
    gitferry_installed.apply(
        _sync("pinned", namespace, ref={"branch": "main", "commit": "a" * 40}, suspend=True)
    )


def test_manifests_apply_and_operator_rbac_suffices(operator: Operator, namespace: str) -> None:
    """The operator runs with the token of the install's ServiceAccount (not admin)
    and gives a new sync a Ready condition."""
    cluster = operator.cluster
    cluster.apply(_sync("first", namespace, suspend=True))
    sync = wait_for(
        "a Ready condition",
        lambda: (
            (s := cluster.get("grs", "first", namespace))
            and any(c["type"] == "Ready" for c in (s.get("status") or {}).get("conditions", []))
            and s
        ),
    )
    ready = next(c for c in sync["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Suspended"
    # Everything it wrote, it wrote as the ServiceAccount.
    assert "system:serviceaccount:gitferry-system:gitferry" in operator.user
    assert "Forbidden" not in operator.log() and "forbidden" not in operator.log()
