"""What a watch keeps of an object: field sets read as paths, who owns a path,
an applier's field set as canonical JSON."""

from __future__ import annotations

import json
from typing import Any

from gitferry.kube.managedfields import apply_fields_json, canonical, field_paths, owners

SYNC_NAME = "gitferry.dev/sync-name"
SYNC_NAMESPACE = "gitferry.dev/sync-namespace"

# A Deployment's managedFields as the API server writes them: gitferry's apply,
# the controller's status and revision annotation, and `kubectl scale`.
GITFERRY = {
    "f:metadata": {
        "f:labels": {
            "f:app": {},
            f"f:{SYNC_NAME}": {},
            f"f:{SYNC_NAMESPACE}": {},
        }
    },
    "f:spec": {
        "f:replicas": {},
        "f:selector": {},
        "f:template": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:containers": {
                    'k:{"name":"web"}': {
                        ".": {},
                        "f:image": {},
                        "f:name": {},
                        "f:ports": {
                            'k:{"containerPort":80,"protocol":"TCP"}': {
                                ".": {},
                                "f:containerPort": {},
                            }
                        },
                    }
                }
            },
        },
    },
}
MANAGED_FIELDS: list[dict[str, Any]] = [
    {
        "manager": "gitferry",
        "operation": "Apply",
        "apiVersion": "apps/v1",
        "time": "2025-01-01T00:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": GITFERRY,
    },
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": "2025-01-01T00:00:01Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:annotations": {".": {}, "f:deployment.kubernetes.io/revision": {}}}
        },
    },
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "subresource": "status",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:status": {
                "f:conditions": {
                    ".": {},
                    'k:{"type":"Available"}': {".": {}, "f:status": {}, "f:type": {}},
                },
                "f:observedGeneration": {},
            }
        },
    },
    {
        "manager": "kubectl",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "subresource": "scale",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
    },
    {
        "manager": "kubectl-patch",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:finalizers": {".": {}, 'v:"example.com/keep"': {}}},
        },
    },
]


# --- field sets as paths ---------------------------------------------------------


def test_a_field_set_reads_as_paths() -> None:
    assert field_paths(canonical(GITFERRY)) == {
        "metadata.labels.app",
        f'metadata.labels["{SYNC_NAME}"]',
        f'metadata.labels["{SYNC_NAMESPACE}"]',
        "spec.replicas",
        "spec.selector",
        "spec.template.metadata.labels.app",
        "spec.template.spec.containers[name=web]",
        "spec.template.spec.containers[name=web].image",
        "spec.template.spec.containers[name=web].name",
        "spec.template.spec.containers[name=web].ports[containerPort=80,protocol=TCP]",
        "spec.template.spec.containers[name=web].ports[containerPort=80,protocol=TCP].containerPort",
    }


def test_set_items_list_indexes_and_odd_names_have_a_spelling() -> None:
    fields = {
        "f:metadata": {
            "f:finalizers": {".": {}, 'v:"example.com/keep"': {}},
            "f:annotations": {"f:a.b/c d": {}},
        },
        "f:spec": {"f:args": {"i:0": {}}, "f:ports": {"v:8080": {}}},
    }
    assert field_paths(fields) == {
        "metadata.finalizers",
        "metadata.finalizers[=example.com/keep]",
        'metadata.annotations["a.b/c d"]',
        "spec.args[0]",
        "spec.ports[=8080]",
    }
    assert field_paths("{}") == set()


def test_owners_names_every_manager_of_a_path_once() -> None:
    assert owners(MANAGED_FIELDS, "spec.replicas") == ["gitferry", "kubectl"]
    assert owners(MANAGED_FIELDS, "status.observedGeneration") == ["kube-controller-manager"]
    assert owners(MANAGED_FIELDS, "spec.template.spec.containers[name=web].image") == ["gitferry"]
    assert owners(MANAGED_FIELDS, "spec.paused") == []


def test_the_apply_entry_is_canonical_json_of_the_main_resource_only() -> None:
    got = apply_fields_json(MANAGED_FIELDS, "gitferry")
    assert got == json.dumps(GITFERRY, sort_keys=True, separators=(",", ":"))
    # Key order in the API server's answer does not matter.
    reordered = [dict(MANAGED_FIELDS[0], fieldsV1=reversed_keys(GITFERRY))]
    assert apply_fields_json(reordered, "gitferry") == got
    assert apply_fields_json(MANAGED_FIELDS, "kube-controller-manager") is None  # Update only
    status_apply = [dict(MANAGED_FIELDS[0], subresource="status")]
    assert apply_fields_json(status_apply, "gitferry") is None
    assert apply_fields_json([], "gitferry") is None


def reversed_keys(d: dict[str, Any]) -> dict[str, Any]:
    return {k: reversed_keys(v) if isinstance(v, dict) else v for k, v in reversed(d.items())}
