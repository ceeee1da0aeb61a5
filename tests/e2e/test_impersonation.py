"""spec.serviceAccountName: a tenant's sync applies with that ServiceAccount's rights only."""

from __future__ import annotations

import pytest

from tests.harness.cluster_fixtures import Operator
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import config_map
from tests.harness.syncs import condition, create_sync, wait_condition

pytestmark = pytest.mark.e2e

CLUSTER_ROLE = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {name}
rules:
  - apiGroups: ["*"]
    resources: ["*"]
    verbs: ["*"]
"""


def test_tenant_cannot_escalate_through_its_sync(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    cluster.kubectl("create", "serviceaccount", "deployer", "-n", namespace)
    cluster.kubectl(
        "create", "role", "configmaps-only", "-n", namespace,
        "--verb=get,list,watch,create,update,patch,delete", "--resource=configmaps",
    )  # fmt: skip
    cluster.kubectl(
        "create", "rolebinding", "deployer", "-n", namespace,
        "--role=configmaps-only", f"--serviceaccount={namespace}:deployer",
    )  # fmt: skip

    repo = repo_factory("tenant")
    sha = repo.commit({"cm.yaml": config_map("tenant-config")}, "config")
    repo.push()
    create_sync(cluster, "tenant", namespace, repo.bare.file_url, serviceAccountName="deployer")
    wait_condition(cluster, "tenant", namespace, revision_sha=sha)
    assert cluster.get("configmap", "tenant-config", namespace) is not None

    role_name = f"{namespace}-escalate"
    repo.commit(
        {
            "cm.yaml": config_map("tenant-config"),
            "role.yaml": CLUSTER_ROLE.format(name=role_name),
        },
        "try to escalate",
    )
    repo.push()
    sync = wait_condition(cluster, "tenant", namespace, status="False", reason="ApplyFailed")
    message = condition(sync, "Ready")["message"]  # type: ignore[index]
    assert f"ClusterRole/{role_name}" in message and "forbidden" in message
    assert cluster.get("clusterrole", role_name) is None
