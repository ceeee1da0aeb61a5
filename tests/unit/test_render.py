"""Render: a directory of a checkout becomes the objects it declares, and
nothing in git can make gitferry read outside the checkout, fetch from the
network, run a plugin or exhaust its memory."""

from __future__ import annotations

import base64
import json
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from gitferry.deadline import Deadline, DeadlineExceeded
from gitferry.render import (
    Limits,
    Manifest,
    PathError,
    RenderError,
    assign_namespaces,
    check_duplicates,
    render,
)
from gitferry.render.limits import MiB

LIMITS = Limits()
KUBECTL = shutil.which("kubectl") or str(Path(__file__).parents[2] / ".venv/bin/kubectl")


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def cm(name: str, namespace: str | None = None, **data: str) -> str:
    ns = f"\n  namespace: {namespace}" if namespace else ""
    body = "".join(f"\n  {k}: {v!r}" for k, v in data.items())
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}{ns}\ndata:{body or ' {}'}\n"


def names(manifests: list[Manifest]) -> list[str]:
    return [m.name for m in manifests]


def fake_kubectl(tmp_path: Path) -> tuple[str, Path]:
    """A kubectl that only records that it ran."""
    marker = tmp_path / "kubectl-ran"
    script = tmp_path / "fake-kubectl"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), marker


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    return root


# --- plain directories ------------------------------------------------------
def test_every_manifest_below_the_path_in_path_order(repo: Path) -> None:
    write(
        repo,
        {
            "deploy/b.yaml": cm("b"),
            "deploy/a.yml": cm("a"),
            "deploy/nested/deeper/d.yaml": cm("d"),
            "deploy/nested/c.json": json.dumps(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
            ),
            "deploy/z.yaml": cm("z"),
            "deploy/README.md": "not yaml",
            "deploy/notes.txt": "apiVersion: nope",
            "other/x.yaml": cm("x"),
        },
    )
    out = render(repo, "deploy", LIMITS)
    assert [m.source for m in out] == [
        "deploy/a.yml",
        "deploy/b.yaml",
        "deploy/nested/c.json",
        "deploy/nested/deeper/d.yaml",
        "deploy/z.yaml",
    ]
    assert names(out) == ["a", "b", "c", "d", "z"]
    assert render(repo, "deploy", LIMITS) == out  # stable


@pytest.mark.parametrize("path", ["deploy", "./deploy", "deploy/", "./deploy/", " deploy "])
def test_path_spellings(repo: Path, path: str) -> None:
    write(repo, {"deploy/a.yaml": cm("a")})
    assert [m.source for m in render(repo, path, LIMITS)] == ["deploy/a.yaml"]


def test_dot_is_the_whole_checkout(repo: Path) -> None:
    write(repo, {"a.yaml": cm("a"), "sub/b.yaml": cm("b")})
    assert names(render(repo, ".", LIMITS)) == ["a", "b"]
    assert names(render(repo, "", LIMITS)) == ["a", "b"]


def test_dot_directories_and_dot_files_are_skipped(repo: Path) -> None:
    write(
        repo,
        {
            "a.yaml": cm("a"),
            ".github/workflows/ci.yaml": "on: push\njobs: {}\n",
            ".git/config.yaml": "x: 1\n",
            ".hidden.yaml": cm("hidden"),
            "sub/.secret/s.yaml": cm("s"),
        },
    )
    assert names(render(repo, ".", LIMITS)) == ["a"]


def test_gitferryignore_at_the_path_and_at_the_checkout_root(repo: Path) -> None:
    write(
        repo,
        {
            ".gitferryignore": "*.draft.yaml\n",
            "deploy/.gitferryignore": "tests/\n*.local.yaml\n!keep.local.yaml\n/top-only.yaml\n",
            "deploy/app.yaml": cm("app"),
            "deploy/app.draft.yaml": cm("draft"),
            "deploy/dev.local.yaml": cm("dev"),
            "deploy/keep.local.yaml": cm("keep"),
            "deploy/tests/t.yaml": cm("t"),
            "deploy/sub/tests/t2.yaml": cm("t2"),
            "deploy/top-only.yaml": cm("top"),
            "deploy/sub/top-only.yaml": cm("sub-top"),
        },
    )
    assert names(render(repo, "deploy", LIMITS)) == ["app", "keep", "sub-top"]


def test_multi_document_files_and_empty_documents(repo: Path) -> None:
    write(
        repo,
        {
            "all.yaml": "---\n"
            + cm("one")
            + "---\n---\n# only a comment\n---\nnull\n---\n"
            + cm("two")
        },
    )
    out = render(repo, ".", LIMITS)
    assert names(out) == ["one", "two"]
    assert {m.source for m in out} == {"all.yaml"}


def test_empty_files_give_nothing(repo: Path) -> None:
    write(repo, {"empty.yaml": "", "comment.yaml": "# nothing\n", "empty.json": " \n"})
    assert render(repo, ".", LIMITS) == []


def test_a_list_is_expanded_into_its_items(repo: Path) -> None:
    write(
        repo,
        {
            "list.yaml": """apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}
- apiVersion: v1
  kind: List
  items:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}
- {apiVersion: v1, kind: Service, metadata: {name: c}}
""",
        },
    )
    out = render(repo, ".", LIMITS)
    assert [m.describe() for m in out] == ["ConfigMap/a", "ConfigMap/b", "Service/c"]


def test_json_files(repo: Path) -> None:
    write(
        repo,
        {
            "obj.json": json.dumps(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "web", "namespace": "apps"},
                    "spec": {"replicas": 2},
                }
            )
        },
    )
    [m] = render(repo, ".", LIMITS)
    assert (m.group, m.version, m.kind, m.namespace, m.name) == (
        "apps",
        "v1",
        "Deployment",
        "apps",
        "web",
    )
    assert m.obj["spec"] == {"replicas": 2}


def test_invalid_json_names_file_and_line(repo: Path) -> None:
    write(repo, {"bad.json": '{\n  "apiVersion": "v1",\n  "kind": \n}\n'})
    with pytest.raises(RenderError, match=r"^bad\.json: line 4: "):
        render(repo, ".", LIMITS)


def test_invalid_yaml_names_file_and_line(repo: Path) -> None:
    write(
        repo,
        {
            "deploy/app.yaml": cm("ok")
            + "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata: a: b\n"
        },
    )
    with pytest.raises(RenderError) as e:
        render(repo, "deploy", LIMITS)
    assert str(e.value).startswith("deploy/app.yaml: line 11: mapping values are not allowed")


def test_duplicate_yaml_keys_are_refused(repo: Path) -> None:
    write(repo, {"a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n"})
    with pytest.raises(
        RenderError, match=r"^a\.yaml: line 5: duplicate key 'name' \(first at line 4\)"
    ):
        render(repo, ".", LIMITS)


def test_a_document_that_is_not_a_mapping(repo: Path) -> None:
    write(repo, {"x.yaml": cm("a") + "---\n- just\n- a list\n"})
    with pytest.raises(RenderError) as e:
        render(repo, ".", LIMITS)
    assert str(e.value) == (
        "x.yaml: document 2 (line 7): expected a Kubernetes object (a mapping), got a list"
    )


def test_a_list_item_that_is_not_a_mapping(repo: Path) -> None:
    write(repo, {"x.yaml": "apiVersion: v1\nkind: List\nitems:\n- hello\n"})
    with pytest.raises(
        RenderError, match=r"^x\.yaml: document 1 \(line 1\), List item 1: expected an object"
    ):
        render(repo, ".", LIMITS)


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("kind: ConfigMap\nmetadata: {name: a}\n", "ConfigMap a has no apiVersion"),
        ("apiVersion: v1\nmetadata: {name: a}\n", "object a has no kind"),
        ("apiVersion: v1\nkind: ConfigMap\n", "ConfigMap has no metadata.name"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {labels: {}}\n",
            "ConfigMap has no metadata.name",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: 7}\n",
            "metadata.name must be a string",
        ),
    ],
)
def test_objects_need_apiversion_kind_and_name(repo: Path, text: str, missing: str) -> None:
    write(repo, {"deploy/x.yaml": cm("fine") + "---\n" + text})
    with pytest.raises(RenderError) as e:
        render(repo, "deploy", LIMITS)
    assert str(e.value).startswith("deploy/x.yaml: document 2 (line 7): ")
    assert missing in str(e.value)


def test_generate_name_alone_is_refused(repo: Path) -> None:
    write(
        repo, {"job.yaml": "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n"}
    )
    with pytest.raises(
        RenderError, match=r"^job\.yaml: document 1 \(line 1\): Job: metadata\.generateName alone"
    ):
        render(repo, ".", LIMITS)


def test_generate_name_beside_a_name_is_ignored_as_the_api_server_does(repo: Path) -> None:
    write(
        repo, {"j.yaml": "apiVersion: batch/v1\nkind: Job\nmetadata: {name: m, generateName: x-}\n"}
    )
    [job] = render(repo, ".", LIMITS)
    assert job.metadata == {"name": "m"}


@pytest.mark.parametrize("field", ["labels", "annotations"])
def test_null_label_and_annotation_maps_are_empty(repo: Path, field: str) -> None:
    write(
        repo, {"a.yaml": f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  {field}: ~\n"}
    )
    [m] = render(repo, ".", LIMITS)
    assert field not in m.metadata


@pytest.mark.parametrize(
    ("meta", "words"),
    [
        ("labels: [a, b]", "ConfigMap a: metadata.labels must be a mapping of strings, got a list"),
        ("labels: x", "metadata.labels must be a mapping of strings, got a string"),
        (
            "annotations: {replicas: 3}",
            "metadata.annotations.replicas must be a string, got a number",
        ),
        ("labels: {on: yes}", "metadata.labels.true must be a string, got a boolean"),
    ],
)
def test_wrong_metadata_shapes_name_the_file_and_field(repo: Path, meta: str, words: str) -> None:
    write(
        repo,
        {"deploy/a.yaml": f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  {meta}\n"},
    )
    with pytest.raises(RenderError) as e:
        render(repo, "deploy", LIMITS)
    assert str(e.value).startswith("deploy/a.yaml: document 1 (line 1): ")
    assert words in str(e.value)


def test_a_typed_list_is_expanded_as_kubectl_does(repo: Path) -> None:
    write(
        repo,
        {
            "svc.yaml": "apiVersion: v1\nkind: ServiceList\nitems:\n"
            "- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n"
            "- metadata: {name: b}\n",  # kind and apiVersion come from the list
        },
    )
    out = render(repo, ".", LIMITS)
    assert [(m.api_version, m.kind, m.name) for m in out] == [
        ("v1", "Service", "a"),
        ("v1", "Service", "b"),
    ]


def test_a_custom_kind_ending_in_list_without_items_is_one_object(repo: Path) -> None:
    write(
        repo,
        {"a.yaml": "apiVersion: example.com/v1\nkind: AllowList\nmetadata: {name: a}\nspec: {}\n"},
    )
    [m] = render(repo, ".", LIMITS)
    assert (m.kind, m.name) == ("AllowList", "a")


@pytest.mark.parametrize(
    ("scalar", "value"),
    [
        ("1:30:00", "1:30:00"),  # YAML 1.1 base-60 in PyYAML; a string for kubectl
        ("0777", 511),
        ("0o17", 15),
        ("0x1F", 31),
        ("1e3", 1000.0),  # a string in PyYAML; a float for kubectl
        ("1_000", 1000),
        ("+1", 1),
        ("-0b101", -5),
        ("yes", True),
        ("y", True),
        ("off", False),
        ("~", None),
        ("2001-12-14", "2001-12-14"),
        ("2001-12-14T21:59:43.10-05:00", "2001-12-14T21:59:43.10-05:00"),
        ("'yes'", "yes"),
        ("12abc", "12abc"),
    ],
)
def test_plain_scalars_resolve_as_kubectl_resolves_them(
    repo: Path, scalar: str, value: object
) -> None:
    write(
        repo, {"a.yaml": f"apiVersion: v1\nkind: X\nmetadata: {{name: a}}\nspec: {{v: {scalar}}}\n"}
    )
    [m] = render(repo, ".", LIMITS)
    got = m.obj["spec"]["v"]
    assert got == value and type(got) is type(value)


def test_infinity_is_refused_as_json_cannot_carry_it(repo: Path) -> None:
    write(repo, {"a.yaml": "apiVersion: v1\nkind: X\nmetadata: {name: a}\nspec: {v: .inf}\n"})
    with pytest.raises(RenderError, match="inf is not a number JSON can carry"):
        render(repo, ".", LIMITS)


def test_the_same_object_twice_names_both_files(repo: Path) -> None:
    write(repo, {"a/one.yaml": cm("cfg", "apps"), "b/two.yaml": cm("cfg", "apps")})
    with pytest.raises(RenderError) as e:
        render(repo, ".", LIMITS)
    assert str(e.value) == "ConfigMap/apps/cfg is declared in a/one.yaml and in b/two.yaml"


def test_same_name_in_other_namespace_or_kind_is_fine(repo: Path) -> None:
    write(
        repo,
        {
            "a.yaml": cm("cfg", "one") + "---\n" + cm("cfg", "two"),
            "b.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: cfg, namespace: one}\n",
        },
    )
    assert len(render(repo, ".", LIMITS)) == 3


def test_server_fields_and_status_are_dropped_owner_references_kept(repo: Path) -> None:
    write(
        repo,
        {
            "exported.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: apps
  uid: 3f2a
  resourceVersion: "812"
  generation: 4
  creationTimestamp: "2024-01-01T00:00:00Z"
  deletionTimestamp: null
  deletionGracePeriodSeconds: 30
  selfLink: /apis/apps/v1/namespaces/apps/deployments/web
  managedFields: [{manager: kubectl}]
  ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: owner, uid: u1}]
  labels: {app: web}
spec: {replicas: 1}
status: {readyReplicas: 1}
"""
        },
    )
    [m] = render(repo, ".", LIMITS)
    assert m.obj == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "apps",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "u1"}
            ],
            "labels": {"app": "web"},
        },
        "spec": {"replicas": 1},
    }


def test_secret_string_data_is_folded_into_data(repo: Path) -> None:
    write(
        repo,
        {
            "s.yaml": """apiVersion: v1
kind: Secret
metadata: {name: creds}
data:
  user: b2xk
  keep: a2VlcA==
stringData:
  user: admin
  password: "p\u00e4ss"
"""
        },
    )
    [m] = render(repo, ".", LIMITS)
    assert "stringData" not in m.obj
    assert m.obj["data"] == {
        "user": base64.b64encode(b"admin").decode(),
        "keep": "a2VlcA==",
        "password": base64.b64encode("p\u00e4ss".encode()).decode(),
    }


def test_secret_string_data_must_be_strings_and_the_value_is_not_shown(repo: Path) -> None:
    write(
        repo,
        {
            "s.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"
            "stringData: {port: 98765}\n"
        },
    )
    with pytest.raises(RenderError, match="stringData.port must be a string") as e:
        render(repo, ".", LIMITS)
    assert "98765" not in str(e.value)


def test_yaml_values_become_json_values(repo: Path) -> None:
    write(
        repo,
        {
            "c.yaml": """apiVersion: v1
kind: ConfigMap
metadata: {name: c}
data:
  date: 2024-05-01
  stamp: 2024-05-01T10:00:00Z
  80: port
  anchored: &v shared
  again: *v
binaryData:
  blob: !!binary aGVs
    bG8=
"""
        },
    )
    [m] = render(repo, ".", LIMITS)
    assert m.obj["data"] == {
        "date": "2024-05-01",
        "stamp": "2024-05-01T10:00:00Z",
        "80": "port",
        "anchored": "shared",
        "again": "shared",
    }
    # !!binary is decoded to its text, as kubectl's reader does (kubectl would then
    # send "hello" where binaryData wants base64: write base64 text instead).
    assert m.obj["binaryData"] == {"blob": "hello"}
    json.dumps(m.obj, allow_nan=False)


def test_yaml_sets_have_no_json_form(repo: Path) -> None:
    write(
        repo,
        {"c.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: !!set {a, b}\n"},
    )
    with pytest.raises(
        RenderError, match=r"^c\.yaml: document 1 \(line 1\): a YAML set has no JSON form"
    ):
        render(repo, ".", LIMITS)


def test_anchors_are_not_shared_between_objects(repo: Path) -> None:
    write(
        repo,
        {
            "l.yaml": """apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: &m {name: a, labels: {x: "1"}}}
- {apiVersion: v1, kind: ConfigMap, metadata: {<<: *m, name: b}}
"""
        },
    )
    a, b = render(repo, ".", LIMITS)
    a.obj["metadata"]["labels"]["x"] = "changed"
    assert b.obj["metadata"]["labels"] == {"x": "1"}


# --- paths and symlinks -----------------------------------------------------
def test_missing_path_is_path_not_found(repo: Path) -> None:
    write(repo, {"deploy/a.yaml": cm("a")})
    with pytest.raises(PathError, match='"deploy/prod"'):
        render(repo, "deploy/prod", LIMITS)


def test_a_file_is_not_a_path(repo: Path) -> None:
    write(repo, {"deploy/a.yaml": cm("a")})
    with pytest.raises(PathError, match="not a directory"):
        render(repo, "deploy/a.yaml", LIMITS)


@pytest.mark.parametrize("path", ["..", "../other", "deploy/../..", "/etc", "/"])
def test_a_path_leaving_the_checkout_is_refused(repo: Path, path: str) -> None:
    write(repo.parent, {"other/a.yaml": cm("a")})
    write(repo, {"deploy/a.yaml": cm("a")})
    with pytest.raises(RenderError):
        render(repo, path, LIMITS)


def test_a_path_through_a_symlink_out_of_the_checkout_is_refused(
    repo: Path, tmp_path: Path
) -> None:
    write(tmp_path, {"outside/a.yaml": cm("a")})
    (repo / "deploy").symlink_to(tmp_path / "outside")
    with pytest.raises(RenderError, match="symlink"):
        render(repo, "deploy", LIMITS)


def test_a_symlink_to_etc_passwd_is_refused_unread(repo: Path) -> None:
    write(repo, {"a.yaml": cm("a")})
    (repo / "link.yaml").symlink_to("/etc/passwd")
    with pytest.raises(RenderError) as e:
        render(repo, ".", LIMITS)
    assert str(e.value).startswith(
        "link.yaml -> /etc/passwd: symlink points outside the repository"
    )
    assert "root:" not in str(e.value)


def test_a_relative_symlink_out_of_the_checkout_is_refused(repo: Path, tmp_path: Path) -> None:
    write(tmp_path, {"outside/secret.yaml": cm("secret")})
    write(repo, {"deploy/sub/a.yaml": cm("a")})
    (repo / "deploy/sub/link.yaml").symlink_to("../../../outside/secret.yaml")
    (repo / "deploy/dir").symlink_to("../../outside")
    with pytest.raises(
        RenderError, match=r"^deploy/dir -> \.\./\.\./outside: symlink points outside"
    ):
        render(repo, "deploy", LIMITS)
    (repo / "deploy/dir").unlink()
    with pytest.raises(
        RenderError, match=r"^deploy/sub/link\.yaml -> \.\./\.\./\.\./outside/secret\.yaml"
    ):
        render(repo, "deploy", LIMITS)


def test_even_a_non_manifest_symlink_out_of_the_checkout_is_refused(repo: Path) -> None:
    write(repo, {"a.yaml": cm("a")})
    (repo / "notes").symlink_to("/etc")
    with pytest.raises(RenderError, match="^notes -> /etc"):
        render(repo, ".", LIMITS)


def test_symlinks_inside_the_checkout_are_followed(repo: Path) -> None:
    write(repo, {"shared/common.yaml": cm("common"), "deploy/app.yaml": cm("app")})
    (repo / "deploy/common.yaml").symlink_to("../shared/common.yaml")
    (repo / "deploy/loop").symlink_to(".")  # a loop: walked once
    out = render(repo, "deploy", LIMITS)
    assert [(m.source, m.name) for m in out] == [
        ("deploy/app.yaml", "app"),
        ("deploy/common.yaml", "common"),
    ]


def test_a_broken_manifest_symlink_is_reported(repo: Path) -> None:
    (repo / "gone.yaml").symlink_to("nowhere.yaml")
    with pytest.raises(RenderError, match="gone.yaml -> nowhere.yaml: broken symlink"):
        render(repo, ".", LIMITS)


# --- limits -----------------------------------------------------------------
def test_a_file_over_the_size_limit_is_refused_before_reading(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(repo, {"big.yaml": cm("big", blob="x" * 3000)})
    reads: list[int] = []
    real_open = Path.open

    def spy_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy_open)
    with pytest.raises(RenderError) as e:
        render(repo, ".", Limits(max_file_bytes=1000))
    assert str(e.value) == "big.yaml: file is 3.0 KiB, over the 1000 bytes limit for one file"
    assert reads == []


def test_a_50_mib_file_is_refused_by_default_without_reading_it(repo: Path) -> None:
    with (repo / "huge.yaml").open("wb") as f:
        f.truncate(50 * MiB)  # sparse: costs no disk
    with pytest.raises(
        RenderError, match=r"^huge\.yaml: file is 50\.0 MiB, over the 5\.0 MiB limit"
    ):
        render(repo, ".", Limits())


def test_total_bytes_limit(repo: Path) -> None:
    write(repo, {f"f{i}.yaml": cm(f"c{i}", blob="x" * 400) for i in range(5)})
    with pytest.raises(RenderError, match=r"add up to more than 2\.0 KiB"):
        render(repo, ".", Limits(max_total_bytes=2048))


def test_object_count_limit(repo: Path) -> None:
    write(repo, {"many.yaml": "---\n".join(cm(f"c{i}") for i in range(11))})
    assert len(render(repo, ".", Limits(max_objects=11))) == 11
    with pytest.raises(RenderError, match=r"^many\.yaml: more than 10 objects"):
        render(repo, ".", Limits(max_objects=10))


def billion_laughs(levels: int = 9) -> str:
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: lol}", 'a0: &a0 "lol"']
    for i in range(1, levels + 1):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 9)}]")
    lines.append(f"data: {{x: *a{levels}}}")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_is_refused_quickly(repo: Path) -> None:
    text = billion_laughs(9)  # 9**9 "lol"s: gigabytes once expanded
    assert len(text) < 1000
    write(repo, {"bomb.yaml": text})
    started = time.monotonic()
    with pytest.raises(RenderError, match=r"^bomb\.yaml: line \d+: YAML aliases expand past"):
        render(repo, ".", Limits())
    assert time.monotonic() - started < 0.5


def test_a_billion_laughs_hidden_behind_merge_keys(repo: Path) -> None:
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: lol}", "m0: &m0 {a: 1, b: 2}"]
    for i in range(1, 12):
        lines.append(f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 9)}]}}")
    write(repo, {"merge.yaml": "\n".join(lines) + "\n"})
    with pytest.raises(RenderError, match="YAML aliases expand past"):
        render(repo, ".", Limits())


def test_modest_aliasing_is_fine(repo: Path) -> None:
    write(repo, {"ok.yaml": billion_laughs(3)})
    [m] = render(repo, ".", Limits())
    assert len(m.obj["data"]["x"]) == 9


def test_a_recursive_alias_is_refused(repo: Path) -> None:
    write(
        repo,
        {"r.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: r}\ndata: &d {self: *d}\n"},
    )
    with pytest.raises(RenderError, match=r"^r\.yaml: line 4: alias \*d refers to itself"):
        render(repo, ".", LIMITS)


@pytest.mark.parametrize("name", ["deep.yaml", "deep.json"])
def test_deep_nesting_is_refused_without_crashing(repo: Path, name: str) -> None:
    depth = 100_000  # libyaml's own composer would overflow the C stack here
    write(repo, {name: "[" * depth + "]" * depth})
    # Behaviour, not a library's wording (PyYAML words its own depth limit
    # differently across releases): a RenderError naming the file and line.
    with pytest.raises(RenderError) as err:
        render(repo, ".", LIMITS)
    assert err.value.message.startswith(f"{name}: ")
    assert "Traceback" not in err.value.message


def test_nesting_limit(repo: Path) -> None:
    nested = "{a: " * 30 + "1" + "}" * 30
    write(repo, {"n.yaml": f"apiVersion: v1\nkind: X\nmetadata: {{name: nest}}\nspec: {nested}\n"})
    assert len(render(repo, ".", Limits(max_depth=40))) == 1
    with pytest.raises(RenderError, match=r"^n\.yaml: line 4: nested deeper than 20 levels"):
        render(repo, ".", Limits(max_depth=20))


def test_non_utf8_is_refused(repo: Path) -> None:
    (repo / "latin1.yaml").write_bytes(
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: caf\xe9}\n"
    )
    with pytest.raises(RenderError, match=r"^latin1\.yaml: not UTF-8"):
        render(repo, ".", LIMITS)


def test_an_expired_deadline_stops_the_render(repo: Path) -> None:
    write(repo, {"a.yaml": cm("a")})
    with pytest.raises(DeadlineExceeded, match="render"):
        render(repo, ".", LIMITS, Deadline.after(-1))


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_objects"):
        Limits(max_objects=0)


# --- kustomize --------------------------------------------------------------
def overlay_repo(repo: Path) -> Path:
    return write(
        repo,
        {
            "base/kustomization.yaml": "resources: [deployment.yaml, service.yaml]\n",
            "base/deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
""",
            "base/service.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
            "spec: {ports: [{port: 80}]}\n",
            "overlays/prod/kustomization.yaml": """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: prod
resources: [../../base, extra.yaml]
patches:
- path: replicas.yaml
configMapGenerator:
- name: settings
  files: [conf=settings.conf]
""",
            "overlays/prod/replicas.yaml": "apiVersion: apps/v1\nkind: Deployment\n"
            "metadata: {name: web}\nspec: {replicas: 3}\n",
            "overlays/prod/extra.yaml": cm("extra"),
            "overlays/prod/settings.conf": "level=debug\n",
            "overlays/prod/ignored.yaml": cm("not-listed"),
        },
    )


def test_kustomize_overlay_with_a_base_and_a_patch(repo: Path) -> None:
    overlay_repo(repo)
    out = render(repo, "overlays/prod", LIMITS, Deadline.after(60))  # the venv's kubectl
    assert sorted(m.describe() for m in out if not m.name.startswith("settings-")) == [
        "ConfigMap/prod/extra",
        "Deployment/prod/web",
        "Service/prod/web",
    ]
    [deployment] = [m for m in out if m.kind == "Deployment"]
    assert deployment.obj["spec"]["replicas"] == 3
    assert deployment.namespace == "prod"
    assert {m.source for m in out} == {"overlays/prod/kustomization.yaml"}
    assert "not-listed" not in names(out)
    generated = [m for m in out if m.name.startswith("settings-")]
    assert generated and generated[0].obj["data"] == {"conf": "level=debug\n"}


def test_kubectl_from_the_environment(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(repo, {"kustomization.yaml": "resources: [a.yaml]\n", "a.yaml": cm("a")})
    script, marker = fake_kubectl(tmp_path)
    monkeypatch.setenv("GITFERRY_KUBECTL", script)
    assert render(repo, ".", LIMITS) == []  # the fake prints nothing
    assert marker.exists()


def test_kustomization_yml_and_capitalised_names(repo: Path) -> None:
    write(repo, {"a/kustomization.yml": "resources: [x.yaml]\n", "a/x.yaml": cm("x")})
    write(repo, {"b/Kustomization": "resources: [y.yaml]\n", "b/y.yaml": cm("y")})
    assert names(render(repo, "a", LIMITS, kubectl=KUBECTL)) == ["x"]
    assert names(render(repo, "b", LIMITS, kubectl=KUBECTL)) == ["y"]


def test_kustomize_errors_carry_kubectls_words(repo: Path) -> None:
    write(
        repo,
        {
            "app/kustomization.yaml": "resources: [a.yaml, b.yaml]\n",
            "app/a.yaml": cm("a"),
            "app/b.yaml": cm("a"),
        },
    )
    with pytest.raises(RenderError) as e:
        render(repo, "app", LIMITS, kubectl=KUBECTL)
    message = str(e.value)
    assert message.startswith("app/kustomization.yaml: kustomize build failed: ")
    assert "already registered id" in message
    assert str(repo) not in message and "Traceback" not in message and "\n" not in message


def test_nested_kustomizations_in_a_plain_directory_are_built(repo: Path) -> None:
    write(
        repo,
        {
            "apps/a.yaml": cm("plain"),
            "apps/web/kustomization.yaml": "namePrefix: web-\nresources: [cm.yaml]\n",
            "apps/web/cm.yaml": cm("config"),
            "apps/web/unlisted.yaml": cm("unlisted"),
            "apps/z.yaml": cm("last"),
        },
    )
    out = render(repo, "apps", LIMITS, kubectl=KUBECTL)
    assert [(m.source, m.name) for m in out] == [
        ("apps/a.yaml", "plain"),
        ("apps/web/kustomization.yaml", "web-config"),
        ("apps/z.yaml", "last"),
    ]


REMOTE_REFERENCES = [
    "https://github.com/org/repo//deploy?ref=v1",
    "github.com/org/repo/deploy",
    "git::https://example.com/repo.git",
    "ssh://git@example.com/repo.git",
    "git@github.com:org/repo.git",
    "example.com/org/repo//deploy",
    "../base?ref=main",
]


@pytest.mark.parametrize("reference", REMOTE_REFERENCES)
def test_a_remote_base_is_refused_before_kubectl_runs(
    repo: Path, tmp_path: Path, reference: str
) -> None:
    write(
        repo,
        {"app/kustomization.yaml": f"resources:\n- a.yaml\n- {reference}\n", "app/a.yaml": cm("a")},
    )
    script, marker = fake_kubectl(tmp_path)
    with pytest.raises(RenderError) as e:
        render(repo, "app", LIMITS, kubectl=script)
    assert str(e.value).startswith(f"app/kustomization.yaml: resources: {reference!r}")
    assert "remote" in str(e.value)
    assert not marker.exists()


def test_a_remote_reference_deep_in_a_base_is_refused(repo: Path, tmp_path: Path) -> None:
    write(
        repo,
        {
            "base/kustomization.yaml": "components: [../comp]\n",
            "comp/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\n"
            "kind: Component\npatches:\n- path: https://example.com/patch.yaml\n",
            "app/kustomization.yaml": "resources: [../base]\n",
        },
    )
    script, marker = fake_kubectl(tmp_path)
    with pytest.raises(RenderError, match=r"^comp/kustomization\.yaml: patches path: 'https://"):
        render(repo, "app", LIMITS, kubectl=script)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("kustomization", "expected"),
    [
        ("resources: [../../outside]\n", r"resources: '\.\./\.\./outside' resolves outside"),
        ("resources: [/etc/passwd]\n", r"resources: '/etc/passwd' resolves outside"),
        ("patches:\n- path: ../../outside/p.yaml\n", r"patches path: .* resolves outside"),
        (
            "configMapGenerator:\n- name: x\n  files: [k=/etc/hostname]\n",
            "configMapGenerator: '/etc/hostname' resolves outside",
        ),
        (
            "secretGenerator:\n- name: x\n  envs: [../../outside/.env]\n",
            "secretGenerator: .* resolves outside",
        ),
        ("crds: [../../outside/crd.yaml]\n", "crds: .* resolves outside"),
        ("resources: [missing.yaml]\n", "resources: 'missing.yaml' does not exist"),
        ("resources: [link]\n", r"resources: 'link' resolves outside"),
        ("resources: [sub]\n", "app/sub has no kustomization file"),
    ],
)
def test_kustomize_references_outside_the_checkout_are_refused(
    repo: Path, tmp_path: Path, kustomization: str, expected: str
) -> None:
    write(
        tmp_path, {"outside/p.yaml": cm("p"), "outside/.env": "A=1\n", "outside/crd.yaml": cm("c")}
    )
    write(repo, {"app/kustomization.yaml": kustomization, "app/sub/a.yaml": cm("a")})
    (repo / "app/link").symlink_to(tmp_path / "outside/p.yaml")
    script, marker = fake_kubectl(tmp_path)
    with pytest.raises(RenderError, match=rf"^app/kustomization\.yaml: {expected}"):
        render(repo, "app", LIMITS, kubectl=script)
    assert not marker.exists()


def test_a_kustomization_symlinked_out_of_the_checkout_is_refused(
    repo: Path, tmp_path: Path
) -> None:
    write(tmp_path, {"outside/kustomization.yaml": "resources: []\n"})
    (repo / "app").mkdir()
    (repo / "app/kustomization.yaml").symlink_to(tmp_path / "outside/kustomization.yaml")
    script, marker = fake_kubectl(tmp_path)
    with pytest.raises(RenderError, match="symlink points outside"):
        render(repo, "app", LIMITS, kubectl=script)
    assert not marker.exists()


APP = r"^app/kustomization\.yaml: "


@pytest.mark.parametrize(
    ("kustomization", "expected"),
    [
        (
            "helmCharts:\n- name: redis\n  repo: https://charts.example.com\n",
            APP + "helmCharts: Helm charts are not supported",
        ),
        ("helmGlobals: {chartHome: charts}\n", APP + "helmGlobals: Helm charts are not supported"),
        (
            "transformers:\n- |-\n  apiVersion: example.com/v1\n  kind: Exec\n"
            "  metadata: {name: x}\n",
            APP + r"transformers: inline entry 1: Exec \(example.com/v1\) is a kustomize plugin",
        ),
        (
            "generators: [gen.yaml]\n",
            APP + r"generators: gen.yaml: Fn \(fn.example.com/v1\) is a kustomize plugin",
        ),
        (
            "validators: [plugins]\n",
            r"^app/plugins/kustomization\.yaml: resources: v\.yaml: Validate .* kustomize plugin",
        ),
        (
            "generators:\n- |-\n  apiVersion: builtin\n  kind: HelmChartInflationGenerator\n"
            "  metadata: {name: h}\n",
            APP + "generators: inline entry 1: Helm charts are not supported",
        ),
        (
            "transformers:\n- |-\n  apiVersion: builtin\n  kind: PatchTransformer\n"
            "  metadata: {name: p}\n  path: /etc/passwd\n",
            APP + "transformers: '/etc/passwd' resolves outside",
        ),
    ],
)
def test_helm_and_plugins_are_refused(
    repo: Path, tmp_path: Path, kustomization: str, expected: str
) -> None:
    write(
        repo,
        {
            "app/kustomization.yaml": kustomization,
            "app/gen.yaml": "apiVersion: fn.example.com/v1\nkind: Fn\nmetadata:\n  name: f\n"
            "  annotations: {config.kubernetes.io/function: 'exec: {path: ./fn}'}\n",
            "app/plugins/kustomization.yaml": "resources: [v.yaml]\n",
            "app/plugins/v.yaml": "apiVersion: x.example.com/v1\nkind: Validate\n"
            "metadata: {name: v}\n",
        },
    )
    script, marker = fake_kubectl(tmp_path)
    with pytest.raises(RenderError, match=expected):
        render(repo, "app", LIMITS, kubectl=script)
    assert not marker.exists()


def test_builtin_transformers_are_allowed(repo: Path) -> None:
    write(
        repo,
        {
            "app/kustomization.yaml": """resources: [a.yaml]
transformers:
- |-
  apiVersion: builtin
  kind: PrefixSuffixTransformer
  metadata: {name: prefix}
  prefix: team-
  fieldSpecs: [{path: metadata/name}]
""",
            "app/a.yaml": cm("a"),
        },
    )
    assert names(render(repo, "app", LIMITS, kubectl=KUBECTL)) == ["team-a"]


def test_kubectl_is_timed_out_by_the_deadline(repo: Path, tmp_path: Path) -> None:
    write(repo, {"kustomization.yaml": "resources: []\n"})
    slow = tmp_path / "slow-kubectl"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="kustomize build of kustomization.yaml"):
        render(repo, ".", LIMITS, Deadline.after(0.5), kubectl=str(slow))
    assert time.monotonic() - started < 5


def test_kubectl_runs_with_a_minimal_environment(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(repo, {"kustomization.yaml": "resources: []\n"})
    dump = tmp_path / "env.txt"
    spy = tmp_path / "spy-kubectl"
    spy.write_text(f'#!/bin/sh\nenv > {dump}\necho "$@" >> {dump}\npwd >> {dump}\n')
    spy.chmod(0o755)
    monkeypatch.setenv("KUBECONFIG", "/root/.kube/config")
    monkeypatch.setenv("GIT_TOKEN", "hunter2")
    render(repo, ".", LIMITS, kubectl=str(spy))
    text = dump.read_text()
    assert "KUBECONFIG" not in text and "hunter2" not in text
    assert "LC_ALL=C" in text
    assert "kustomize --load-restrictor=LoadRestrictionsNone ." in text
    assert str(repo.resolve()) in text.splitlines()[-1]


# --- namespaces -------------------------------------------------------------
CRD = "apiextensions.k8s.io"
DISCOVERY: dict[tuple[str, str], bool] = {
    ("", "ConfigMap"): True,
    ("apps", "Deployment"): True,
    ("", "Namespace"): False,
    ("rbac.authorization.k8s.io", "ClusterRole"): False,
    (CRD, "CustomResourceDefinition"): False,
}


def discovery(group: str, kind: str) -> bool | None:
    return DISCOVERY.get((group, kind))


def manifest(
    api_version: str, kind: str, name: str, namespace: str | None = None, **rest: Any
) -> Manifest:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return Manifest(
        {"apiVersion": api_version, "kind": kind, "metadata": meta, **rest}, f"{name}.yaml"
    )


def crd(group: str, kind: str, scope: str) -> Manifest:
    return manifest(
        f"{CRD}/v1",
        "CustomResourceDefinition",
        f"{kind.lower()}s.{group}",
        spec={
            "group": group,
            "names": {"kind": kind, "plural": f"{kind.lower()}s"},
            "scope": scope,
        },
    )


def test_namespaced_objects_get_the_default_namespace() -> None:
    given = [manifest("v1", "ConfigMap", "a"), manifest("apps/v1", "Deployment", "b", "elsewhere")]
    out = assign_namespaces(given, discovery, "apps")
    assert [m.describe() for m in out] == ["ConfigMap/apps/a", "Deployment/elsewhere/b"]
    assert given[0].namespace is None  # inputs untouched


def test_cluster_scoped_objects_never_have_a_namespace() -> None:
    out = assign_namespaces(
        [
            manifest("v1", "Namespace", "team", "oops"),
            manifest("rbac.authorization.k8s.io/v1", "ClusterRole", "r"),
        ],
        discovery,
        "apps",
    )
    assert [m.describe() for m in out] == ["Namespace/team", "ClusterRole/r"]
    assert "namespace" not in out[0].obj["metadata"]


def test_crds_in_the_same_set_define_scope_before_discovery() -> None:
    # Discovery does not know the kinds yet, and would be wrong about Widget.
    def stale(group: str, kind: str) -> bool | None:
        return False if kind == "Widget" else discovery(group, kind)

    given = [
        manifest("example.com/v1", "Widget", "w"),
        manifest("example.com/v1", "Gadget", "g", "ignored"),
        crd("example.com", "Widget", "Namespaced"),
        crd("example.com", "Gadget", "Cluster"),
    ]
    out = assign_namespaces(given, stale, "apps")
    assert [m.describe() for m in out[:2]] == ["Widget/apps/w", "Gadget/g"]


def test_an_unknown_kind_names_file_and_object() -> None:
    with pytest.raises(RenderError) as e:
        assign_namespaces([manifest("example.com/v1", "Widget", "w", "apps")], discovery, "apps")
    assert (
        str(e.value)
        == "w.yaml: Widget/apps/w: no API for example.com/Widget (is its CRD installed?)"
    )


def test_duplicates_are_found_after_namespace_defaulting() -> None:
    first = manifest("v1", "ConfigMap", "a")
    second = Manifest({**manifest("v1", "ConfigMap", "a", "apps").obj}, "other.yaml")
    check_duplicates([first, second])  # different until defaulted
    with pytest.raises(
        RenderError, match="ConfigMap/apps/a is declared in a.yaml and in other.yaml"
    ):
        assign_namespaces([first, second], discovery, "apps")


def test_manifest_describes_itself() -> None:
    m = manifest("apps/v1", "Deployment", "web", "apps")
    assert (m.api_version, m.group, m.version, m.kind, m.name, m.namespace) == (
        "apps/v1",
        "apps",
        "v1",
        "Deployment",
        "web",
        "apps",
    )
    assert m.describe() == "Deployment/apps/web"
    core = manifest("v1", "Namespace", "team")
    assert (core.group, core.namespace, core.describe()) == ("", None, "Namespace/team")


def test_render_then_assign_end_to_end(repo: Path) -> None:
    write(
        repo,
        {"a.yaml": cm("a"), "ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n"},
    )
    out = assign_namespaces(render(repo, ".", LIMITS), discovery, "team")
    assert [m.describe() for m in out] == ["ConfigMap/team/a", "Namespace/team"]
