"""spec.dependsOn as policy: readiness of a dependency, cycles, cross-namespace refusal."""

from __future__ import annotations

from typing import Any

import pytest

from gitferry.api import SyncKey
from gitferry.dependencies import MAX_WALK, check, find_cycle, not_ready
from gitferry.errors import DependencyCycle, DependencyNotReady, InvalidSpec

A, B, C = SyncKey("apps", "a"), SyncKey("apps", "b"), SyncKey("apps", "c")
PLATFORM = SyncKey("platform", "infra")


def body(
    key: SyncKey,
    depends: list[SyncKey] = (),  # type: ignore[assignment]
    ready: str | None = "True",
    generation: int = 1,
    observed: int = 1,
    attempted: str = "main@sha1:1",
    applied: str = "main@sha1:1",
    suspend: bool = False,
    reason: str = "ReconciliationSucceeded",
    message: str = "Applied revision: main@sha1:1",
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": observed,
        "lastAttemptedRevision": attempted,
        "lastAppliedRevision": applied,
    }
    if ready is not None:
        status["conditions"] = [
            {"type": "Ready", "status": ready, "reason": reason, "message": message}
        ]
    return {
        "metadata": {"namespace": key.namespace, "name": key.name, "generation": generation},
        "spec": {
            "suspend": suspend,
            "dependsOn": [
                {"name": d.name} if d.namespace == key.namespace else
                {"name": d.name, "namespace": d.namespace}
                for d in depends
            ],
        },
        "status": status,
    }  # fmt: skip


def reader(bodies: dict[SyncKey, dict[str, Any]]) -> Any:
    reads: list[SyncKey] = []

    def read(key: SyncKey) -> dict[str, Any] | None:
        reads.append(key)
        return bodies.get(key)

    read.reads = reads  # type: ignore[attr-defined]
    return read


def test_no_dependencies_reads_nothing() -> None:
    read = reader({})
    check(A, (), read)
    assert read.reads == []


def test_ready_dependency_passes() -> None:
    check(A, (B,), reader({B: body(B)}))


@pytest.mark.parametrize(
    ("dep", "why"),
    [
        (None, "not found"),
        (body(B, ready=None), "generation 1 has not been reconciled yet"),
        (body(B, generation=2, observed=1), "generation 2 has not been reconciled yet"),
        (
            body(
                B, ready="False", reason="HealthCheckFailed", message="Deployment/apps/web: x\nmore"
            ),
            "HealthCheckFailed: Deployment/apps/web: x",
        ),
        (body(B, ready="Unknown", reason="Progressing", message="waiting"), "Progressing"),
        (
            body(B, ready="False", suspend=True, reason="Suspended", applied=""),
            "suspended (spec.suspend is true) before it applied anything",
        ),
        (
            body(B, attempted="main@sha1:2", applied="main@sha1:1"),
            "revision main@sha1:2 is not applied yet",
        ),
    ],
)
def test_not_ready_says_why(dep: dict[str, Any] | None, why: str) -> None:
    bodies = {B: dep} if dep is not None else {}
    with pytest.raises(DependencyNotReady) as e:
        check(A, (B,), reader(bodies))
    assert str(e.value) == f"dependency apps/b is not ready: {why}"
    assert e.value.reason == "DependencyNotReady" and not e.value.stalled
    assert not_ready(dep) == why


def test_first_unready_dependency_is_named() -> None:
    with pytest.raises(DependencyNotReady, match="apps/c"):
        check(A, (B, C), reader({B: body(B), C: body(C, ready="False")}))


def test_cycle_of_two_is_refused_naming_it() -> None:
    read = reader({B: body(B, depends=[A])})
    with pytest.raises(DependencyCycle) as e:
        check(A, (B,), read)
    assert "apps/a → apps/b → apps/a" in str(e.value)
    assert e.value.stalled and e.value.reason == "DependencyCycle"


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(DependencyCycle, match="apps/a → apps/a"):
        check(A, (A,), reader({}))


def test_shortest_cycle_is_named() -> None:
    bodies = {B: body(B, depends=[C]), C: body(C, depends=[A, B])}
    assert find_cycle(A, (B,), reader(bodies)) == [A, B, C, A]


def test_cycle_not_through_self_is_not_ours() -> None:
    # b ↔ c is their problem (each of them is refused); a only waits for b.
    bodies = {B: body(B, depends=[C], ready="False"), C: body(C, depends=[B])}
    assert find_cycle(A, (B,), reader(bodies)) is None
    with pytest.raises(DependencyNotReady):
        check(A, (B,), reader(bodies))


def test_chain_is_not_a_cycle_and_is_read_once() -> None:
    bodies = {B: body(B, depends=[C]), C: body(C)}
    read = reader(bodies)
    check(A, (B,), read)
    assert read.reads.count(B) == 1  # the cycle walk and the readiness check share reads


def test_walk_is_bounded() -> None:
    chain = [SyncKey("apps", f"s{i}") for i in range(MAX_WALK * 2)]
    bodies = {k: body(k, depends=[chain[i + 1]]) for i, k in enumerate(chain[:-1])}
    read = reader(bodies)
    assert find_cycle(A, (chain[0],), read) is None
    assert len(read.reads) <= MAX_WALK


def test_cross_namespace_refused_when_turned_off() -> None:
    check(A, (PLATFORM,), reader({PLATFORM: body(PLATFORM)}))
    with pytest.raises(InvalidSpec, match="platform/infra is in another namespace"):
        check(A, (PLATFORM,), reader({PLATFORM: body(PLATFORM)}), allow_cross_namespace=False)


def test_a_suspended_dependency_that_applied_is_ready() -> None:
    check(A, (B,), reader({B: body(B, ready="False", suspend=True, reason="Suspended")}))


def test_another_namespace_s_failure_message_is_not_quoted() -> None:
    dep = body(PLATFORM, ready="False", reason="ApplyFailed", message="secret stuff")
    with pytest.raises(DependencyNotReady) as e:
        check(A, (PLATFORM,), reader({PLATFORM: dep}))
    assert str(e.value) == "dependency platform/infra is not ready: ApplyFailed"
