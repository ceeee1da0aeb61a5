"""spec.serviceAccountName: a tenant's sync applies, and reads its Secret, with that
ServiceAccount's rights only."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness.cluster_fixtures import Cluster, Operator
from tests.harness.git_fixtures import RepoFactory
from tests.harness.gitserver import HttpGitServer
from tests.harness.manifests import config_map
from tests.harness.syncs import condition, create_git_auth_secret, create_sync, wait_condition

pytestmark = pytest.mark.e2e
SECRET = "git-auth"  # create_git_auth_secret's default name

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


def make_deployer(cluster: Cluster, namespace: str) -> None:
    """A tenant's ServiceAccount `deployer` that may manage ConfigMaps of its
    namespace, and nothing else (no Secrets)."""
    cluster.kubectl("create", "serviceaccount", "deployer", "-n", namespace)
    cluster.kubectl(
        "create", "role", "configmaps-only", "-n", namespace,
        "--verb=get,list,watch,create,update,patch,delete", "--resource=configmaps",
    )  # fmt: skip
    cluster.kubectl(
        "create", "rolebinding", "deployer", "-n", namespace,
        "--role=configmaps-only", f"--serviceaccount={namespace}:deployer",
    )  # fmt: skip


def test_tenant_cannot_escalate_through_its_sync(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    make_deployer(cluster, namespace)

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


def test_a_tenant_cannot_send_a_secret_it_may_not_read(
    operator_factory: Callable[..., Operator],
    namespace: str,
    repo_factory: RepoFactory,
    http_git_server: HttpGitServer,
) -> None:
    # Multi-tenant mode: every sync applies as the "deployer" ServiceAccount of its
    # namespace, which may manage ConfigMaps but not read Secrets.
    operator = operator_factory(namespace, GITFERRY_DEFAULT_SERVICE_ACCOUNT="deployer")
    cluster = operator.cluster
    make_deployer(cluster, namespace)
    create_git_auth_secret(cluster, namespace, http_git_server)  # made by someone else
    repo = repo_factory("tenant")
    repo.commit({"cm.yaml": config_map("tenant-config")}, "config")
    repo.push()
    http_git_server.log.clear()

    create_sync(
        cluster, "tenant", namespace, http_git_server.url_for(repo.bare),
        secretRef={"name": SECRET},
    )  # fmt: skip
    sync = wait_condition(
        cluster, "tenant", namespace, status="False", reason="AuthenticationFailed"
    )
    message = condition(sync, "Ready")["message"]  # type: ignore[index]
    assert f"Secret {namespace}/{SECRET}" in message and "forbidden" in message
    assert f"system:serviceaccount:{namespace}:deployer" in message
    # git was never asked: the credentials went nowhere.
    assert http_git_server.log.records == []
    assert cluster.get("configmap", "tenant-config", namespace) is None
