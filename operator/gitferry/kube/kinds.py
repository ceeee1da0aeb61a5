"""Policy about kinds, as data: apply order and what is never force-recreated."""

from __future__ import annotations

# Written first, in their own stage: everything else can only be dry-run once
# its Namespace exists and its CRD is Established.
FIRST_STAGE_KINDS = frozenset(
    {("", "Namespace"), ("apiextensions.k8s.io", "CustomResourceDefinition")}
)

# Apply order inside a stage (prune walks it backwards). Kinds not listed are
# custom resources and the like: they go after the built-ins they may refer to;
# webhooks go last so a new webhook cannot block the objects it ships with.
_ORDER = [
    "Namespace",
    "CustomResourceDefinition",
    "PriorityClass",
    "ResourceQuota",
    "LimitRange",
    "StorageClass",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "IngressClass",
    "Ingress",
    "APIService",
]
_LATE = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
_RANK = {kind: i for i, kind in enumerate(_ORDER)}
_UNLISTED = len(_ORDER)
_RANK.update({kind: _UNLISTED + 1 + i for i, kind in enumerate(_LATE)})

# Deleting these to recreate them would delete data or everything inside them.
NEVER_RECREATE = frozenset(
    {
        ("", "Namespace"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("", "PersistentVolumeClaim"),
        ("", "PersistentVolume"),
    }
)


def apply_rank(kind: str) -> int:
    return _RANK.get(kind, _UNLISTED)


def is_first_stage(group: str, kind: str) -> bool:
    return (group, kind) in FIRST_STAGE_KINDS
