"""Every name a user can see or script against, in one place."""

from __future__ import annotations

GROUP = "gitferry.dev"
VERSION = "v1alpha1"
KIND = "GitRepositorySync"
PLURAL = "gitrepositorysyncs"
API_VERSION = f"{GROUP}/{VERSION}"
# Chat notifications and commit statuses about syncs (alerts/).
ALERT_KIND = "Alert"
ALERT_PLURAL = "alerts"

FIELD_MANAGER = "gitferry"
# Claims on objects moving between syncs are written under their own manager so
# that they never strip fields that gitferry's apply owns.
CLAIM_FIELD_MANAGER = "gitferry-claim"

LABEL_SYNC_NAME = "gitferry.dev/sync-name"
LABEL_SYNC_NAMESPACE = "gitferry.dev/sync-namespace"

ANNOTATION_PRUNE = "gitferry.dev/prune"  # "disabled": never delete
ANNOTATION_RECONCILE = "gitferry.dev/reconcile"  # "disabled": create once, then leave
ANNOTATION_FORCE = "gitferry.dev/force"  # "enabled": recreate on immutable changes
# "disabled", as a label or an annotation: postBuild leaves ${…} as written
# (Flux: kustomize.toolkit.fluxcd.io/substitute).
ANNOTATION_SUBSTITUTE = "gitferry.dev/substitute"
ANNOTATION_ADOPTED = "gitferry.dev/adopted"
ANNOTATION_CLAIM = "gitferry.dev/claimed-by"
ANNOTATION_REQUESTED_AT = "gitferry.dev/requested-at"

FINALIZER = "gitferry.dev/finalizer"
KOPF_PREFIX = "kopf.gitferry.dev"

DISABLED = "disabled"
ENABLED = "enabled"

# Condition types.
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"


class Reason:
    """Condition reasons (DESIGN.md). Strings, so they serialise as they are."""

    SUCCEEDED = "ReconciliationSucceeded"
    PROGRESSING = "Progressing"
    PROGRESSING_WITH_RETRY = "ProgressingWithRetry"
    SUSPENDED = "Suspended"
    GIT_FETCH_FAILED = "GitFetchFailed"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    REVISION_NOT_FOUND = "RevisionNotFound"
    URL_INVALID = "URLInvalid"
    PATH_NOT_FOUND = "PathNotFound"
    INVALID_SPEC = "InvalidSpec"
    RENDER_FAILED = "RenderFailed"
    APPLY_FAILED = "ApplyFailed"
    OWNERSHIP_CONFLICT = "OwnershipConflict"
    PRUNE_REFUSED = "PruneRefused"
    PRUNE_FAILED = "PruneFailed"
    HEALTH_CHECK_FAILED = "HealthCheckFailed"
    DEPENDENCY_NOT_READY = "DependencyNotReady"
    DEPENDENCY_CYCLE = "DependencyCycle"
    # An Event: another field manager keeps changing fields gitferry applies.
    FIELD_MANAGER_CONFLICT = "FieldManagerConflict"
    HEALTH_CHECK_CANCELED = "HealthCheckCanceled"  # an Event: a newer revision superseded a wait
    # Flux's generic reason: a bug in gitferry, never a stage's failure.
    RECONCILIATION_FAILED = "ReconciliationFailed"
    # Alerts: ready to deliver (Flux's generic Succeeded), and a notification or
    # commit status that kept failing after its retries.
    ALERT_READY = "Succeeded"
    DELIVERY_FAILED = "DeliveryFailed"
