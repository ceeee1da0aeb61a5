"""spec.postBuild: `${var}` in the rendered objects, from the spec, a ConfigMap and a
Secret (read with the sync's identity), as Flux substitutes them; a missing
variable fails naming the file and the variable; a Secret's value never shows
in status, Events or the operator's log."""

from __future__ import annotations

import json
import secrets

import pytest

from tests.harness.cluster_fixtures import Operator
from tests.harness.git_fixtures import RepoFactory
from tests.harness.syncs import condition, create_sync, events_for, put_secret, wait_condition

pytestmark = pytest.mark.e2e

SETTINGS = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings-${cluster_env}
data:
  env: ${cluster_env}
  region: ${region:=us}
  tier: ${tier:-standard}
  literal: $${not_a_var}
  shell: echo $HOME
"""

REPLICAS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: ${replicas}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "registry.invalid/web:${version}"}]}
"""

TOKEN = """\
apiVersion: v1
kind: Secret
metadata:
  name: api-token
stringData:
  token: ${token}
"""

LEFT_ALONE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: script
  annotations:
    gitferry.dev/substitute: disabled
data:
  run.sh: echo ${HOME} ${cluster_env}
"""


def test_variables_from_the_spec_a_config_map_and_a_secret(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    token = "tok-" + secrets.token_hex(12)
    cluster.apply({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cluster-vars", "namespace": namespace},
        "data": {"region": "eu-west", "replicas": "2", "cluster_env": "from-configmap"},
    })  # fmt: skip
    put_secret(cluster, namespace, {"token": token, "version": "1.2.3"}, name="cluster-secrets")
    repo = repo_factory("vars")
    sha = repo.commit(
        {"settings.yaml": SETTINGS, "web.yaml": REPLICAS, "token.yaml": TOKEN,
         "script.yaml": LEFT_ALONE},
        "one set of manifests, per-cluster variables",
    )  # fmt: skip
    repo.push()
    create_sync(
        cluster, "vars", namespace, repo.bare.file_url,
        postBuild={
            "substitute": {"cluster_env": "prod"},  # wins over the ConfigMap's
            "substituteFrom": [
                {"kind": "ConfigMap", "name": "cluster-vars"},
                {"kind": "Secret", "name": "cluster-secrets"},
                {"kind": "ConfigMap", "name": "not-there", "optional": True},
            ],
        },
    )  # fmt: skip
    sync = wait_condition(cluster, "vars", namespace, revision_sha=sha)

    settings = cluster.get("configmap", "settings-prod", namespace)
    assert settings is not None, "the name itself is substituted"
    assert settings["data"] == {
        "env": "prod",
        "region": "eu-west",
        "tier": "standard",
        "literal": "${not_a_var}",  # $${…} escapes
        "shell": "echo $HOME",  # $var without braces is left as written
    }
    web = cluster.get("deployment", "web", namespace)
    assert web is not None
    assert web["spec"]["replicas"] == 2  # the integer, as Flux's re-parse gives it
    assert web["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.invalid/web:1.2.3"
    secret = cluster.get("secret", "api-token", namespace)
    assert secret is not None and "token" in secret["data"]
    script = cluster.get("configmap", "script", namespace)
    assert script is not None and script["data"]["run.sh"] == "echo ${HOME} ${cluster_env}"

    # The Secret's value is in the Secret it was meant for, and nowhere else.
    seen = json.dumps(sync.get("status")) + json.dumps(events_for(cluster, "vars", namespace))
    assert token not in seen
    assert token not in operator.log()


def test_a_missing_variable_fails_naming_the_file_and_the_variable(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    token = "tok-" + secrets.token_hex(12)
    put_secret(cluster, namespace, {"token": token}, name="cluster-secrets")
    repo = repo_factory("missing")
    repo.commit({"token.yaml": TOKEN, "settings.yaml": SETTINGS}, "cluster_env is never given")
    repo.push()
    create_sync(
        cluster, "missing", namespace, repo.bare.file_url, retryInterval="1h",
        postBuild={"substituteFrom": [{"kind": "Secret", "name": "cluster-secrets"}]},
    )  # fmt: skip
    sync = wait_condition(cluster, "missing", namespace, status="False", reason="RenderFailed")
    ready = condition(sync, "Ready")
    assert ready is not None
    assert "settings.yaml" in ready["message"] and "cluster_env" in ready["message"]
    assert condition(sync, "Stalled") is None  # a ConfigMap or Secret change can fix it
    assert cluster.get("secret", "api-token", namespace) is None  # nothing applied
    text = json.dumps(sync["status"]) + json.dumps(events_for(cluster, "missing", namespace))
    assert token not in text and token not in operator.log()


def test_a_missing_variable_is_empty_when_the_operator_opts_out_of_strict(
    operator_factory: object, namespace: str, repo_factory: RepoFactory
) -> None:
    op = operator_factory(namespace, GITFERRY_STRICT_SUBSTITUTIONS="false")  # type: ignore[operator]
    cluster = op.cluster
    repo = repo_factory("lenient")
    sha = repo.commit(
        {
            "c.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {v: 'a${unset}b'}\n"
        },
        "an unset variable",
    )
    repo.push()
    create_sync(cluster, "lenient", namespace, repo.bare.file_url,
                postBuild={"substitute": {"other": "x"}})  # fmt: skip
    wait_condition(cluster, "lenient", namespace, revision_sha=sha)
    c = cluster.get("configmap", "c", namespace)
    assert c is not None and c["data"]["v"] == "ab"


def test_a_secret_value_refused_by_the_api_server_is_not_quoted(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    value = "hunter2 " + secrets.token_hex(6)  # spaces: no valid label value
    put_secret(cluster, namespace, {"label": value}, name="cluster-secrets")
    repo = repo_factory("refused")
    repo.commit(
        {"c.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
                   "  labels: {team: '${label}'}\ndata: {v: '1'}\n"},
        "a label from a Secret",
    )  # fmt: skip
    repo.push()
    create_sync(cluster, "refused", namespace, repo.bare.file_url, retryInterval="1h",
                postBuild={"substituteFrom": [{"kind": "Secret", "name": "cluster-secrets"}]})  # fmt: skip
    sync = wait_condition(cluster, "refused", namespace, status="False", reason="ApplyFailed")
    ready = condition(sync, "Ready")
    assert ready is not None and "***" in ready["message"], ready["message"]
    text = json.dumps(sync["status"]) + json.dumps(events_for(cluster, "refused", namespace))
    assert value not in text and value not in operator.log()
