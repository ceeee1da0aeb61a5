"""healthCheckExprs as Flux documents them: the docs' SealedSecret and Cluster
examples judge their objects; a bad expression is refused up front naming its
field; an expression that errors or gives no bool leaves the object Unknown
with the reason, never a traceback; the user's expressions win for their kinds."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gitferry.health import (
    MAX_EXPR_CHARS,
    ExprError,
    Exprs,
    Health,
    Status,
    assess,
    compile_exprs,
)

IN_PROGRESS, FAILED, CURRENT, UNKNOWN = (
    Status.IN_PROGRESS,
    Status.FAILED,
    Status.CURRENT,
    Status.UNKNOWN,
)

# From Flux's docs (kustomizations.md "Health check expressions") and its CEL
# cheatsheet.
SEALED_SECRET = {
    "apiVersion": "bitnami.com/v1alpha1",
    "kind": "SealedSecret",
    "failed": "status.conditions.filter(e, e.type == 'Synced').all(e, e.status == 'False')",
    "current": "status.conditions.filter(e, e.type == 'Synced').all(e, e.status == 'True')",
}
CLUSTER = {
    "apiVersion": "cluster.x-k8s.io/v1beta1",
    "kind": "Cluster",
    "failed": "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'False')",
    "current": "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')",
}


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-03-02T10:00:00Z",
    }


def sealed_secret(*conditions: dict[str, str], generation: int = 1, observed: int = 1) -> Any:
    return {
        "apiVersion": "bitnami.com/v1alpha1",
        "kind": "SealedSecret",
        "metadata": {"name": "db-password", "namespace": "apps", "generation": generation},
        "spec": {"encryptedData": {"password": "AgBy3i4OJSWK+PiTySYZZA=="}},
        "status": {"observedGeneration": observed, "conditions": list(conditions)},
    }


def cluster(*conditions: dict[str, str]) -> Any:
    return {
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "Cluster",
        "metadata": {"name": "edge-1", "namespace": "fleet", "generation": 2},
        "spec": {"controlPlaneEndpoint": {"host": "", "port": 0}},
        "status": {
            "observedGeneration": 2,
            "phase": "Provisioning",
            "conditions": list(conditions),
        },
    }


EXPRS = compile_exprs([SEALED_SECRET, CLUSTER])

CASES = [
    (
        "sealed secret synced",
        sealed_secret(cond("Synced", "True")),
        Health(CURRENT, "healthCheckExprs[0].current is true"),
    ),
    (
        "sealed secret that cannot be decrypted",
        sealed_secret(cond("Synced", "False", "ErrUnsealFailed", "no key could decrypt secret")),
        Health(FAILED, "healthCheckExprs[0].failed is true"),
    ),
    (
        "sealed secret not yet observed",
        sealed_secret(cond("Synced", "True"), generation=2, observed=1),
        Health(IN_PROGRESS, "generation 2 not yet observed (observed 1)"),
    ),
    (
        "cluster provisioning",
        cluster(cond("Ready", "False", "WaitingForInfrastructure", "")),
        Health(FAILED, "healthCheckExprs[1].failed is true"),
    ),
    (
        "cluster ready",
        cluster(cond("Ready", "True"), cond("ControlPlaneReady", "True")),
        Health(CURRENT, "healthCheckExprs[1].current is true"),
    ),
]


@pytest.mark.parametrize(("what", "subject", "health"), CASES, ids=[c[0] for c in CASES])
def test_flux_doc_examples(what: str, subject: Any, health: Health) -> None:
    assert assess(subject, EXPRS) == health


def test_a_missing_field_leaves_the_object_unknown_with_the_reason() -> None:
    """Flux's docs: an expression on a field that does not exist yet makes the
    wait last until its timeout; the timeout then says why."""
    fresh = sealed_secret()
    del fresh["status"]
    health = assess(fresh, EXPRS)
    assert health.status is UNKNOWN
    assert health.message == (
        'healthCheckExprs[0].failed: No value with name "status" found in Activation'
    )
    no_conditions = sealed_secret()
    del no_conditions["status"]["conditions"]
    health = assess(no_conditions, EXPRS)
    assert health.status is UNKNOWN
    assert health.message.startswith("healthCheckExprs[0].failed: ")
    assert "conditions" in health.message


def test_has_and_optionals_guard_missing_fields() -> None:
    exprs = compile_exprs(
        [
            {
                "apiVersion": "bitnami.com/v1alpha1",
                "kind": "SealedSecret",
                "inProgress": "!has(status.conditions)",
                "current": "status.?conditions.orValue([]).exists(e, e.type == 'Synced' && "
                "e.status == 'True')",
            }
        ]
    )
    bare = sealed_secret()
    del bare["status"]["conditions"]
    assert assess(bare, exprs) == Health(IN_PROGRESS, "healthCheckExprs[0].inProgress is true")
    assert assess(sealed_secret(cond("Synced", "True")), exprs).status is CURRENT


def test_expressions_are_evaluated_in_progress_then_failed_then_current() -> None:
    exprs = compile_exprs(
        [
            {
                "apiVersion": "example.com/v1",
                "current": "true",
                "failed": "true",
                "inProgress": "true",
            }
        ]
    )
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert assess(widget, exprs).message == "healthCheckExprs[0].inProgress is true"
    exprs = compile_exprs(
        [{"apiVersion": "example.com/v1", "current": "false", "failed": "false", "inProgress": ""}]
    )
    assert assess(widget, exprs) == Health(
        IN_PROGRESS, "no expression of healthCheckExprs[0] is true yet"
    )


def test_a_result_that_is_not_a_bool_is_an_error_naming_the_expression() -> None:
    exprs = compile_exprs([{"apiVersion": "bitnami.com/v1alpha1", "current": "status.conditions"}])
    health = assess(sealed_secret(cond("Synced", "True")), exprs)
    assert health == Health(
        UNKNOWN, "healthCheckExprs[0].current: `status.conditions` gave list<dyn>, not a bool"
    )


@pytest.mark.parametrize(
    ("current", "words"),
    [
        ("metadata.generation + 9223372036854775807 > 0", "integer overflow"),
        ("status.conditions[3].status == 'True'", "index"),
        ("int(metadata.name) > 0", "cannot convert"),
        ("1 / (metadata.generation - 1) > 0", "divide by zero"),
    ],
)
def test_runtime_errors_are_unknown_not_raised(current: str, words: str) -> None:
    exprs = compile_exprs([{"apiVersion": "bitnami.com/v1alpha1", "current": current}])
    health = assess(sealed_secret(cond("Synced", "True")), exprs)
    assert health.status is UNKNOWN
    assert health.message.startswith("healthCheckExprs[0].current: ")
    assert words in health.message.lower()


def test_a_runaway_comprehension_is_stopped() -> None:
    """cel-cpp stops an evaluation after 10,000 comprehension iterations."""
    nested = "status.xs.all(a, status.xs.all(b, status.xs.all(c, a + b + c >= 0)))"
    exprs = compile_exprs([{"apiVersion": "example.com/v1", "current": nested}])
    widget = {"apiVersion": "example.com/v1", "kind": "W", "status": {"xs": list(range(1000))}}
    started = time.monotonic()
    health = assess(widget, exprs)
    assert time.monotonic() - started < 1
    assert health == Health(UNKNOWN, "healthCheckExprs[0].current: Iteration budget exceeded")


def test_values_cel_cannot_hold_are_unknown() -> None:
    exprs = compile_exprs([{"apiVersion": "example.com/v1", "current": "status.n > 0"}])
    widget = {"apiVersion": "example.com/v1", "kind": "W", "status": {"n": 2**70}}
    assert assess(widget, exprs).status is UNKNOWN


@pytest.mark.parametrize(
    ("entry", "path", "words"),
    [
        (
            {**SEALED_SECRET, "current": "status.conditions.filter(e, e.type == 'Synced'"},
            "healthCheckExprs[0].current",
            "1:47: Syntax error: missing ')' at '<EOF>'",
        ),
        (
            {**SEALED_SECRET, "failed": "status.conditions.all(e, e.status = 'False')"},
            "healthCheckExprs[0].failed",
            "Syntax error",
        ),
        (
            {**SEALED_SECRET, "inProgress": "(" * 40 + "true" + ")" * 40},
            "healthCheckExprs[0].inProgress",
            "recursion limit exceeded",
        ),
        (
            {**SEALED_SECRET, "current": "true || " * 300 + "true"},
            "healthCheckExprs[0].current",
            f"longer than {MAX_EXPR_CHARS} characters",
        ),
        ({**SEALED_SECRET, "current": ""}, "healthCheckExprs[0].current", "required"),
        ({**SEALED_SECRET, "current": 7}, "healthCheckExprs[0].current", "non-empty CEL"),
        ({"kind": "SealedSecret", "current": "true"}, "healthCheckExprs[0].apiVersion", "required"),
        ({**SEALED_SECRET, "inprogress": "true"}, "healthCheckExprs[0]", "unknown field"),
        ("status.ready", "healthCheckExprs[0]", "must be an object"),
    ],
)
def test_a_bad_entry_is_refused_up_front_naming_its_field(
    entry: Any, path: str, words: str
) -> None:
    with pytest.raises(ExprError) as caught:
        compile_exprs([entry])
    assert caught.value.path == path
    assert words in caught.value.message
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"{path}: ")


def test_two_entries_for_one_kind_are_refused() -> None:
    with pytest.raises(ExprError) as caught:
        compile_exprs([SEALED_SECRET, CLUSTER, {**SEALED_SECRET, "apiVersion": "bitnami.com/v1"}])
    assert str(caught.value) == (
        "healthCheckExprs[2]: a second entry for SealedSecret in group bitnami.com "
        "(first: healthCheckExprs[0])"
    )


def test_too_many_entries_are_refused() -> None:
    entries = [{"apiVersion": f"g{i}.example.com/v1", "current": "true"} for i in range(101)]
    with pytest.raises(ExprError, match=r"^healthCheckExprs: more than 100 entries$"):
        compile_exprs(entries)


def test_an_entry_covers_every_version_and_a_kind_entry_beats_its_groups() -> None:
    exprs = compile_exprs(
        [
            {"apiVersion": "example.com/v1", "current": "false"},
            {"apiVersion": "example.com/v1", "kind": "Gadget", "current": "true"},
        ]
    )
    gadget = {"apiVersion": "example.com/v2beta1", "kind": "Gadget"}
    widget = {"apiVersion": "example.com/v1alpha1", "kind": "Widget"}
    assert assess(gadget, exprs) == Health(CURRENT, "healthCheckExprs[1].current is true")
    assert assess(widget, exprs).message == "no expression of healthCheckExprs[0] is true yet"
    assert exprs.judge({"apiVersion": "other.example.com/v1", "kind": "Widget"}) is None


def test_the_users_expressions_win_for_the_kinds_they_name() -> None:
    """A Deployment that kstatus calls InProgress, judged by the user's rule; the
    table still judges every other kind."""
    exprs = compile_exprs([{"apiVersion": "apps/v1", "kind": "Deployment", "current": "true"}])
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "generation": 1},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 0},
    }
    assert assess(deployment).status is IN_PROGRESS
    assert assess(deployment, exprs).status is CURRENT
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": {"phase": "Pending"}}
    assert assess(pvc, exprs).status is IN_PROGRESS


def test_no_expressions() -> None:
    assert len(compile_exprs(None)) == 0
    assert len(compile_exprs([])) == 0
    assert isinstance(compile_exprs([]), Exprs)
    with pytest.raises(ExprError, match="^healthCheckExprs: must be a list$"):
        compile_exprs("current: true")  # type: ignore[arg-type]
