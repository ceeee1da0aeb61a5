"""spec.postBuild's variables, read from the in-memory API as Flux reads them:
substituteFrom in order, later entries winning, substitute winning over all;
only a missing optional object is skipped; Secrets decoded; newlines dropped;
read as the sync's identity; no value in any message."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from gitferry.api import PostBuild, parse_spec
from gitferry.deadline import Deadline, DeadlineExceeded
from gitferry.errors import InvalidSpec, Stage, SubstitutionFailed, classify
from gitferry.postbuild import variables
from gitferry.render import SubstitutionError
from gitferry.settings import Settings
from tests.unit.fakeapi import FakeKube, manifest

NS = "apps"
DEPLOYER = "system:serviceaccount:apps:deployer"
SECRET = "hunter2-0451"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def fake() -> FakeKube:
    fake = FakeKube(namespaces=("default", NS))
    fake.seed(
        manifest("v1", "ConfigMap", "base", NS, data={"env": "dev", "region": "eu", "tier": "1"}),
        manifest("v1", "ConfigMap", "prod", NS, data={"env": "prod"}),
        manifest("v1", "Secret", "creds", NS, data={"token": b64(SECRET), "env": b64("secret")}),
    )
    return fake


def parsed(post_build: dict[str, Any]) -> PostBuild:
    """spec.postBuild as the spec parser gives it (api.parse_spec)."""
    spec = parse_spec({"url": "https://git.example.com/a.git", "postBuild": post_build}, NS)
    return spec.post_build or PostBuild()


def read(fake: FakeKube, post_build: dict[str, Any], user: str | None = DEPLOYER) -> dict[str, str]:
    return variables(fake.as_user(user).kube, NS, parsed(post_build), Deadline.after(10))


def failure(fake: FakeKube, post_build: dict[str, Any]) -> SubstitutionFailed:
    with pytest.raises(SubstitutionFailed) as e:
        read(fake, post_build)
    assert SECRET not in str(e.value)
    return e.value


def test_later_entries_win_and_substitute_wins_over_all(fake: FakeKube) -> None:
    post_build = {
        "substitute": {"tier": "inline"},
        "substituteFrom": [
            {"kind": "ConfigMap", "name": "base"},
            {"kind": "ConfigMap", "name": "prod"},
            {"kind": "Secret", "name": "creds"},
        ],
    }
    assert read(fake, post_build) == {
        "env": "secret",  # the Secret came last
        "region": "eu",
        "tier": "inline",  # substitute over every substituteFrom
        "token": SECRET,
    }
    post_build["substituteFrom"] = post_build["substituteFrom"][::-1]
    assert read(fake, post_build)["env"] == "dev"


def test_read_as_the_sync_identity_in_the_sync_namespace(fake: FakeKube) -> None:
    read(fake, {"substituteFrom": [{"kind": "Secret", "name": "creds"}]})
    [call] = [c for c in fake.calls if c.path.endswith("/secrets/creds")]
    assert (call.method, call.path, call.user) == (
        "GET",
        f"/api/v1/namespaces/{NS}/secrets/creds",
        DEPLOYER,
    )


def test_a_missing_object_fails_unless_optional(fake: FakeKube) -> None:
    ref = {"kind": "ConfigMap", "name": "absent"}
    e = failure(fake, {"substituteFrom": [{"kind": "ConfigMap", "name": "base"}, ref]})
    assert str(e) == (
        "spec.postBuild.substituteFrom[1]: ConfigMap apps/absent not found "
        "(create it, or set optional: true)"
    )
    assert e.reason == "RenderFailed" and not e.stalled
    optional = {"substituteFrom": [{**ref, "optional": True}], "substitute": {"a": "1"}}
    assert read(fake, optional) == {"a": "1"}


def test_optional_tolerates_only_not_found(fake: FakeKube) -> None:
    """Flux: `optional && apierrors.IsNotFound(err)`; Forbidden still fails."""
    fake.fail("GET", f"/api/v1/namespaces/{NS}/secrets/creds", 403, "secrets is forbidden")
    e = failure(fake, {"substituteFrom": [{"kind": "Secret", "name": "creds", "optional": True}]})
    assert str(e) == "spec.postBuild.substituteFrom[0]: Secret apps/creds: secrets is forbidden"


def test_binary_data_is_not_read_and_newlines_are_dropped(fake: FakeKube) -> None:
    fake.seed(
        manifest(
            "v1",
            "ConfigMap",
            "multi",
            NS,
            data={"cert": "line1\nline2\n"},
            binaryData={"blob": b64("bytes")},
        ),
        manifest("v1", "Secret", "pem", NS, data={"key": b64("a\nb")}),
    )
    post_build = {
        "substitute": {"inline": "x\ny"},
        "substituteFrom": [
            {"kind": "ConfigMap", "name": "multi"},
            {"kind": "Secret", "name": "pem"},
        ],
    }
    assert read(fake, post_build) == {"cert": "line1line2", "key": "ab", "inline": "xy"}


def test_empty_objects_give_no_variables(fake: FakeKube) -> None:
    fake.seed(manifest("v1", "ConfigMap", "empty", NS), manifest("v1", "Secret", "none", NS))
    refs = [{"kind": "ConfigMap", "name": "empty"}, {"kind": "Secret", "name": "none"}]
    assert read(fake, {"substituteFrom": refs}) == {}
    assert read(fake, {}) == {}


@pytest.mark.parametrize(
    ("post_build", "origin"),
    [
        ({"substitute": {"ok": "1", "bad-name": "1"}}, "spec.postBuild.substitute"),
        (
            {"substituteFrom": [{"kind": "ConfigMap", "name": "dashed"}]},
            "spec.postBuild.substituteFrom[0]: ConfigMap apps/dashed",
        ),
        (
            {"substituteFrom": [{"kind": "Secret", "name": "dashed"}]},
            "spec.postBuild.substituteFrom[0]: Secret apps/dashed",
        ),
    ],
)
def test_a_key_that_is_no_variable_name_is_refused_naming_key_and_origin(
    fake: FakeKube, post_build: dict[str, Any], origin: str
) -> None:
    fake.seed(
        manifest("v1", "ConfigMap", "dashed", NS, data={"bad-name": SECRET}),
        manifest("v1", "Secret", "dashed", NS, data={"bad-name": b64(SECRET)}),
    )
    e = failure(fake, post_build)
    assert str(e).startswith(f"{origin}: 'bad-name' is not a variable name (it must match ^[_")


def test_a_secret_value_that_is_not_text_is_refused_by_key(fake: FakeKube) -> None:
    fake.seed(
        manifest(
            "v1", "Secret", "binary", NS, data={"blob": base64.b64encode(b"\xff\xfe").decode()}
        )
    )
    e = failure(fake, {"substituteFrom": [{"kind": "Secret", "name": "binary"}]})
    assert str(e) == (
        "spec.postBuild.substituteFrom[0]: Secret apps/binary: the value of 'blob' is not UTF-8 text"
    )


@pytest.mark.parametrize(
    ("post_build", "field"),
    [
        ({"substitute": {"a": 1}}, "spec.postBuild.substitute"),
        ({"substituteFrom": {"kind": "ConfigMap"}}, "spec.postBuild.substituteFrom"),
        ({"substituteFrom": [{"kind": "Pod", "name": "x"}]}, "substituteFrom[0].kind"),
        ({"substituteFrom": [{"kind": "Secret"}]}, "substituteFrom[0].name"),
        ({"substituteFrom": [{"kind": "Secret", "name": "x", "optional": "yes"}]}, "optional"),
    ],
)
def test_a_malformed_post_build_is_an_invalid_spec(
    fake: FakeKube, post_build: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidSpec, match=field.replace("[", r"\[").replace("]", r"\]")):
        read(fake, post_build)


def test_the_deadline_is_kept(fake: FakeKube) -> None:
    with pytest.raises(DeadlineExceeded):
        variables(
            fake.kube,
            NS,
            parsed({"substituteFrom": [{"kind": "ConfigMap", "name": "base"}]}),
            Deadline(time.monotonic() - 1),
        )


def test_a_substitution_error_while_rendering_is_render_failed_but_not_stalled() -> None:
    error = classify(Stage.RENDER, SubstitutionError("a.yaml: ConfigMap/apps/x: data.v: …"))
    assert isinstance(error, SubstitutionFailed)
    assert (error.reason, error.stalled) == ("RenderFailed", False)
    assert str(error) == "a.yaml: ConfigMap/apps/x: data.v: …"


def test_strict_substitution_is_on_unless_the_operator_opts_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Flux's StrictPostBuildSubstitutions gate, on by default since v1.9."""
    monkeypatch.delenv("GITFERRY_STRICT_SUBSTITUTIONS", raising=False)
    assert Settings.from_env().strict_substitutions is True
    monkeypatch.setenv("GITFERRY_STRICT_SUBSTITUTIONS", "false")
    assert Settings.from_env().strict_substitutions is False
