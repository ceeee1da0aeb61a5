"""What git holds in the end-to-end tests: small manifests as text, ready to commit.

Each function returns one object as JSON (which is YAML too), so a test can put it
in a file (`repo.commit({"a.yaml": config_map("a")}, ...)`) or apply it directly
(`cluster.apply(widget(group, "w1", namespace=ns))`).
"""

from __future__ import annotations

import json
from typing import Any

# kwok's behaviour for a Pod that carries it (hack/controlplane/kwok/test-pod-stages.yaml):
# "never-ready", "crash" (CrashLoopBackOff) or "fail" (phase Failed).
from tests.harness.controlplane import FAKE_POD_ANNOTATION

IMAGE = "registry.invalid/web:1"  # never pulled: kwok only pretends to run it


def _metadata(
    name: str, namespace: str | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if annotations:
        meta["annotations"] = annotations
    return meta


def config_map(
    name: str,
    v: str = "1",
    *,
    namespace: str | None = None,
    annotations: dict[str, str] | None = None,
) -> str:
    """A ConfigMap holding `data: {v: <v>}`."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(name, namespace, annotations),
            "data": {"v": v},
        }
    )


def namespace_manifest(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def service(name: str, namespace: str | None = None) -> str:
    """A Service on port 80 selecting `app: <name>`."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(name, namespace),
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}]},
        }
    )


def _pod_template(name: str, labels: dict[str, str], behaviour: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": labels} if labels else {}
    if behaviour:
        meta["annotations"] = {FAKE_POD_ANNOTATION: behaviour}
    return {"metadata": meta, "spec": {"containers": [{"name": name, "image": IMAGE}]}}


def deployment(
    name: str,
    template_labels: dict[str, str] | None = None,
    *,
    replicas: int = 1,
    behaviour: str | None = None,
) -> str:
    """`replicas` of `app: <name>`; `template_labels` go on the pod template as well;
    `behaviour` tells kwok how its Pods behave (FAKE_POD_ANNOTATION)."""
    labels = {"app": name, **(template_labels or {})}
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": _pod_template(name, labels, behaviour),
            },
        }
    )


def job(name: str, behaviour: str | None = None) -> str:
    """A Job of one Pod that never retries (backoffLimit 0)."""
    template = _pod_template(name, {}, behaviour)
    template["spec"]["restartPolicy"] = "Never"
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": template},
        }
    )


def widget_crd(group: str) -> str:
    """The CRD of `widgets.<group>`: namespaced Widgets with a `spec.size` integer."""
    return json.dumps(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"widgets.{group}"},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "properties": {"size": {"type": "integer"}},
                                    }
                                },
                            }
                        },
                    }
                ],
            },
        }
    )


def widget(group: str, name: str, size: int = 1, namespace: str | None = None) -> str:
    """A Widget of the CRD that `widget_crd(group)` defines."""
    return json.dumps(
        {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": _metadata(name, namespace),
            "spec": {"size": size},
        }
    )


def persistent_volume_claim(name: str, namespace: str | None = None) -> str:
    """A 1Gi ReadWriteOnce claim; it stays Pending (no storage provisioner runs)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _metadata(name, namespace),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )


def in_namespace(manifest: str, namespace: str) -> str:
    """`manifest` (as the builders above return it) with metadata.namespace set."""
    obj = json.loads(manifest)
    obj["metadata"]["namespace"] = namespace
    return json.dumps(obj)
