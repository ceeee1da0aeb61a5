"""The spec fields of health checks, dependencies and variables, parsed once at
the edge into typed values; bad shapes are InvalidSpec naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from gitferry.api import HealthCheckRef, PostBuild, SubstituteRef, SyncKey, parse_spec
from gitferry.errors import InvalidSpec

URL = "https://git.example.com/a.git"


def spec(**fields: Any) -> Any:
    return parse_spec({"url": URL, **fields}, namespace="apps")


def test_defaults_check_nothing() -> None:
    s = spec()
    assert not s.wait and not s.checks_health
    assert s.health_checks == () and s.health_check_exprs == ()
    assert s.depends_on == () and s.post_build is None


def test_health_checks_take_group_from_api_version_and_keep_namespace_open() -> None:
    s = spec(healthChecks=[
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "db", "namespace": "data"},
        {"apiVersion": "v1", "kind": "Service", "name": "web"},
    ])  # fmt: skip
    assert s.health_checks == (
        HealthCheckRef("apps", "Deployment", "db", "data"),
        HealthCheckRef("", "Service", "web", None),
    )
    assert s.checks_health and not s.wait


def test_health_check_exprs_keep_what_was_written() -> None:
    s = spec(healthCheckExprs=[
        {"apiVersion": "x.io/v1", "kind": "Cache", "current": "status.ok", "failed": "status.bad"},
    ])  # fmt: skip
    assert s.health_check_exprs == (
        {"apiVersion": "x.io/v1", "kind": "Cache", "current": "status.ok", "failed": "status.bad"},
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"healthChecks": {"a": 1}}, "spec.healthChecks: must be a list of objects"),
        ({"healthChecks": [{"kind": "Deployment", "name": "x"}]}, "spec.healthChecks[0].apiVersion"),
        ({"healthCheckExprs": [{"apiVersion": "v1", "kind": "X"}]}, "spec.healthCheckExprs[0].current"),
        ({"postBuild": {"substituteFrom": [{"kind": "Pod", "name": "x"}]}},
         "spec.postBuild.substituteFrom[0].kind: must be ConfigMap or Secret"),
        ({"postBuild": {"substitute": ["a"]}}, "spec.postBuild.substitute"),
    ],
)  # fmt: skip
def test_bad_shapes_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message.replace("[", r"\[").replace("]", r"\]")):
        spec(**fields)


def test_depends_on_defaults_to_the_syncs_namespace() -> None:
    s = spec(dependsOn=[{"name": "platform"}, {"name": "infra", "namespace": "ops"}])
    assert s.depends_on == (SyncKey("apps", "platform"), SyncKey("ops", "infra"))


def test_post_build_is_typed() -> None:
    s = spec(postBuild={
        "substitute": {"cluster": "prod", "replicas": "3"},
        "substituteFrom": [{"kind": "ConfigMap", "name": "vars"},
                           {"kind": "Secret", "name": "creds", "optional": True}],
    })  # fmt: skip
    assert s.post_build == PostBuild(
        substitute={"cluster": "prod", "replicas": "3"},
        substitute_from=(
            SubstituteRef("ConfigMap", "vars"),
            SubstituteRef("Secret", "creds", True),
        ),
    )
