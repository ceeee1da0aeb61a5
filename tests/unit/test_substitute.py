"""postBuild substitution: `${var}` in rendered objects becomes what Flux makes
of it, a value never adds structure to an object, and no error shows a value.

The cases marked "Flux" are Flux's own: the examples of its Kustomization docs
(docs/spec/v1/kustomizations.md) and the table of fluxcd/pkg envsubst's tests
(eval_test.go)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gitferry.deadline import Deadline, DeadlineExceeded
from gitferry.render import (
    Limits,
    Manifest,
    RenderError,
    SubstitutionError,
    check_variable_names,
    render,
    substitute,
)

MARK = "gitferry.dev/substitute"
SECRET = "hunter2-0451"  # a Secret's value: never in an error message


def run(
    manifests: list[Manifest],
    variables: dict[str, str],
    *,
    strict: bool = True,
    max_bytes: int = 1 << 20,
    always: bool = False,
    deadline: Deadline | None = None,
) -> list[Manifest]:
    return substitute(
        manifests,
        variables,
        strict=strict,
        max_bytes=max_bytes,
        disabled_annotation=MARK,
        disabled_value="disabled",
        always=always,
        deadline=deadline,
    )


def config_map(data: dict[str, Any], name: str = "cm", **meta: Any) -> Manifest:
    metadata = {"name": name, "namespace": "apps", **meta}
    return Manifest(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}, "cm.yaml"
    )


def value_of(template: str, variables: dict[str, str], strict: bool = False) -> Any:
    """What one plain scalar `template` becomes (substituted even with no variables)."""
    [m] = run([config_map({"v": template})], variables, strict=strict, always=True)
    return m.obj["data"]["v"]


def error_of(manifest: Manifest, variables: dict[str, str], **kw: Any) -> SubstitutionError:
    with pytest.raises(SubstitutionError) as e:
        run([manifest], variables, **kw)
    return e.value


# --- Flux's envsubst table ------------------------------------------------------
V = {"var01": "abcdEFGH28ij", "path_name": "/home/bozo/ideas/thoughts.for.today"}
Z = {"stringZ": "abcABC123ABCabc"}


@pytest.mark.parametrize(
    ("template", "variables", "expected"),
    [
        ("abcdEFGH28ij", {}, "abcdEFGH28ij"),
        ("${#var01}", V, 12),  # a length is a number once re-read, as in Flux
        ("${var01^}", V, "AbcdEFGH28ij"),
        ("${var01^^}", V, "ABCDEFGH28IJ"),
        ("${var01,}", {"var01": "ABCDEFGH28IJ"}, "aBCDEFGH28IJ"),
        ("${var01,,}", {"var01": "ABCDEFGH28IJ"}, "abcdefgh28ij"),
        ("${path_name:11}", V, "ideas/thoughts.for.today"),
        ("${path_name:11:5}", V, "ideas"),
        ("${var=xyz}", {"var": "abc"}, "abc"),
        ("${var=xyz}", {}, "xyz"),
        ("something ${var=${default_var}}", {"default_var": "foo"}, "something foo"),
        ("foo ${var=${default_var}-suffix}", {"default_var": "foo1"}, "foo foo1-suffix"),
        (
            "foo ${var=prefix${default_var}-suffix}",
            {"default_var": "foo1"},
            "foo prefixfoo1-suffix",
        ),
        ("${var:=xyz}", {}, "xyz"),
        ("${stringZ/%abc/XYZ}", Z, "abcABC123ABCXYZ"),
        ("${stringZ/#abc/XYZ}", Z, "XYZABC123ABCabc"),
        ("${stringZ//abc/xyz}", Z, "xyzABC123ABCxyz"),
        ("${stringZ/abc/xyz}", Z, "xyzABC123ABCabc"),
        ("${filename#*.}", {"filename": "bash.string.txt"}, "string.txt"),
        ("${filename#*/}", {"filename": "path/to/file"}, "to/file"),
        ("${filename#*/}", {"filename": "/path/to/file"}, "path/to/file"),
        ("${filename##*.}", {"filename": "bash.string.txt"}, "txt"),
        ("${filename##*/}", {"filename": "path/to/file"}, "file"),
        ("${filename##*/}", {"filename": "/path/to/file"}, "file"),
        ("${filename%.*}", {"filename": "bash.string.txt"}, "bash.string"),
        ("${filename%%.*}", {"filename": "bash.string.txt"}, "bash"),
        ("${var=${var01^^}}", V, "ABCDEFGH28IJ"),
        ("$${var01}", V, "${var01}"),
        (
            "some text ${var01}$${var$${var01}$var01${var01}",
            V,
            "some text abcdEFGH28ij${var${var01}$var01abcdEFGH28ij",
        ),
        ("something $${var=${default_var}}", {"default_var": "foo"}, "something ${var=foo}"),
        (r"${stringZ/\//-}", {"stringZ": "foo/bar"}, "foo-bar"),
        (r"${stringZ//\//-}", {"stringZ": "foo/bar/baz"}, "foo-bar-baz"),
        ("\\\\something ${var=${default_var}}", {"default_var": "foo"}, "\\\\something foo"),
        ("${stringZ/./}", {"stringZ": "foo.bar"}, "foobar"),
    ],
)
def test_flux_envsubst_table(template: str, variables: dict[str, str], expected: Any) -> None:
    assert value_of(template, variables) == expected


@pytest.mark.parametrize(
    "template",
    [
        "${missing}",
        "${#missing}",
        "${missing^}",
        "${missing^^}",
        "${missing,}",
        "${missing,,}",
        "${missing:0}",
        "${missing:0:10}",
        "${missing/pattern/replacement}",
        "${missing//pattern/replacement}",
        "${missing/#pattern/replacement}",
        "${missing/%pattern/replacement}",
        "${missing#pattern}",
        "${missing##pattern}",
        "${missing%pattern}",
        "${missing%%pattern}",
    ],
)
def test_strict_an_unset_variable_without_default_is_an_error(template: str) -> None:
    """Flux: TestExpandStrict, fluxcd/flux2#5836."""
    e = error_of(config_map({"v": template}), {"foo": "bar"}, strict=True)
    assert e.variable == "missing"
    assert e.source == "cm.yaml" and e.obj == "ConfigMap/apps/cm"
    assert str(e).startswith("cm.yaml: ConfigMap/apps/cm: data.v: ")
    assert "variable missing is not set and has no default" in str(e)


@pytest.mark.parametrize(
    ("template", "expected"),
    [("${missing:-fallback}", "fallback"), ("${missing:=assigned}", "assigned"),
     ("${missing=assigned}", "assigned")],
)  # fmt: skip
def test_strict_defaults_still_apply(template: str, expected: str) -> None:
    assert value_of(template, {"foo": "bar"}, strict=True) == expected


def test_not_strict_an_unset_variable_is_empty() -> None:
    """Flux's docs: "All the undefined variables in the format ${var} will be
    substituted with an empty string"; an empty plain scalar reads as null."""
    assert value_of("repo:${TAG}", {"X": "1"}) == "repo:"
    assert value_of("${TAG}", {"X": "1"}) is None
    assert value_of("${#TAG}", {"X": "1"}) == 0


# --- defaults --------------------------------------------------------------------
@pytest.mark.parametrize("op", [":=", ":-", "="])
@pytest.mark.parametrize("variables", [{"a": ""}, {"other": "x"}], ids=["empty", "unset"])
def test_every_default_applies_when_the_variable_is_set_but_empty(
    op: str, variables: dict[str, str]
) -> None:
    """Flux's envsubst gives `=`, `:=` and `:-` one meaning: unset or empty."""
    assert value_of(f"${{a{op}dflt}}", variables, strict=True) == "dflt"
    assert value_of(f"${{a{op}dflt}}", {**variables, "a": "set"}, strict=True) == "set"


def test_defaults_nest_and_are_evaluated_even_when_unused() -> None:
    assert value_of("${a:=${b}-x}", {"b": "B"}, strict=True) == "B-x"
    assert value_of("${a:=${b:=${c}}}", {"c": "C"}, strict=True) == "C"
    # As in Flux, a default's variables must be set in strict mode even when
    # the outer variable is set.
    e = error_of(config_map({"v": "${a:=${b}}"}), {"a": "A"}, strict=True)
    assert e.variable == "b"
    assert value_of("${a:=${b}}", {"a": "A"}, strict=False) == "A"


def test_a_default_ends_at_the_first_brace() -> None:
    assert value_of("${a:=x}y}", {"b": ""}) == "xy}"
    assert value_of("${a:=$$x}", {"b": ""}) == "$$x"  # no escapes inside a default


# --- escapes and what is left as written ---------------------------------------
@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$${HOME}", "${HOME}"),
        ("echo $HOME", "echo $HOME"),  # `$var` is never substituted
        ("echo $$ $1 ${a}", "echo $ $1 A"),  # `$$` is one `$` anywhere, as in Flux
        ("$$$${a}", "$${a}"),
        ("$$${a}", "$A"),
        ("cost: 5$", "cost: 5$"),
    ],
)
def test_escapes(template: str, expected: str) -> None:
    assert value_of(template, {"a": "A"}, strict=True) == expected


def test_a_script_with_bash_variables_keeps_them_when_written_flux_s_way() -> None:
    """Flux's docs: use `$var`, or `$${var}` to keep the braces."""
    script = 'for f in $FILES; do echo "$${f%.txt}" $$; done'
    expected = 'for f in $FILES; do echo "${f%.txt}" $; done'
    assert value_of(script, {"x": "1"}, strict=True) == expected


# --- Flux's documented examples --------------------------------------------------
def test_flux_docs_namespace_example() -> None:
    ns = Manifest(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": "apps",
                "labels": {"environment": "${cluster_env:=dev}", "region": "${cluster_region}"},
            },
        },
        "ns.yaml",
    )
    [m] = run([ns], {"cluster_env": "prod", "cluster_region": "eu-central-1"})
    assert m.obj["metadata"]["labels"] == {"environment": "prod", "region": "eu-central-1"}
    [m] = run([ns], {"cluster_region": "eu-central-1"})
    assert m.obj["metadata"]["labels"]["environment"] == "dev"


def test_flux_docs_quote_idiom_keeps_numbers_and_booleans_text() -> None:
    """docs "Post build substitution of numbers and booleans"."""
    sa = Manifest(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": "app",
                "namespace": "apps",
                "annotations": {
                    "id": "${quote}${id}${quote}",
                    "enabled": "${quote}${enabled}${quote}",
                },
            },
        },
        "sa.yaml",
    )
    [m] = run([sa], {"quote": '"', "id": "123", "enabled": "true"})
    assert m.obj["metadata"]["annotations"] == {"id": "123", "enabled": "true"}
    # Without the idiom the annotation reads as a number, and is refused here
    # instead of at the API server, naming the field.
    sa.obj["metadata"]["annotations"] = {"id": "${id}"}
    e = error_of(sa, {"id": "123"})
    assert "metadata.annotations.id: must be a string, but substituted it reads as a number" in str(
        e
    )
    assert "${quote}" in str(e)


def test_flux_docs_secret_string_data() -> None:
    """Flux: "For substituting variables in a secret, .spec.stringData field
    must be used"; render folded it into data already, and it is still seen."""
    token = base64.b64encode(b"tok-${token}").decode()
    secret = Manifest(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "apps"},
            "data": {"token": token, "other": base64.b64encode(b"${token}").decode()},
        },
        "secret.yaml",
        string_data=("token",),
    )
    [m] = run([secret], {"token": "abc"})
    assert base64.b64decode(m.obj["data"]["token"]) == b"tok-abc"
    # `data` written as base64 in git is what Flux sees as base64 text: untouched.
    assert m.obj["data"]["other"] == secret.obj["data"]["other"]
    assert m.string_data == ("token",)

    secret.obj["data"]["token"] = base64.b64encode(b"${port}").decode()
    e = error_of(secret, {"port": SECRET.split("-")[1]})
    assert "stringData.token: must be a string" in str(e)
    assert "0451" not in str(e)


def test_flux_controller_number_and_boolean_test() -> None:
    """kustomize-controller's TestKustomizationReconciler_VarsubNumberBool."""
    variables = {
        "q": '"',
        "numberStr": "!!str 123",
        "number": "123",
        "booleanStr": "!!str true",
        "boolean": "true",
    }
    repo = Manifest(
        {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {
                "name": "r",
                "namespace": "apps",
                "labels": {"id": "${numberStr}", "enabled": "${booleanStr}"},
                "annotations": {"id": "${q}${number}${q}", "enabled": "${q}${boolean}${q}"},
            },
            "spec": {"interval": "${number}m", "url": "https://host/repo"},
        },
        "templates.yaml",
    )
    text = "This variable is escaped $${var}\n\nLorem ipsum.\n\n\\?\n"
    cm = config_map({"id": "${q}${number}${q}", "text": text})
    out_repo, out_cm = run([repo, cm], variables)
    meta = out_repo.obj["metadata"]
    assert meta["labels"] == {"id": "123", "enabled": "true"}
    assert meta["annotations"] == {"id": "123", "enabled": "true"}
    assert out_repo.obj["spec"]["interval"] == "123m"
    assert out_cm.obj["data"]["id"] == "123"
    assert "${var}" in out_cm.obj["data"]["text"]
    assert "$${var}" not in out_cm.obj["data"]["text"]
    assert "\\?" in out_cm.obj["data"]["text"]


# --- types: what Flux's re-parse of the YAML gives ----------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3),
        ("0x1F", 31),
        ("0777", 511),
        ("1_000", 1000),
        ("-7", -7),
        ("1e3", 1000.0),
        ("1.5", 1.5),
        ("true", True),
        ("on", True),
        ("No", False),
        ("y", True),
        ("~", None),
        ("null", None),
        ("", None),
        ("1:30:00", "1:30:00"),  # go-yaml v2 has no base 60
        ("2024-01-02", "2024-01-02"),  # dates stay text
        ("1e400", "1e400"),  # beyond float64: text for go-yaml
        ("'007'", "007"),  # one whole quoted scalar is that string
        ('"a\\tb"', "a\tb"),
        ("!!str 0x1F", "0x1F"),  # one whole scalar tagged as a string
        ("!!int 5", "!!int 5"),  # other tags are text
        ("'a' 'b'", "'a' 'b'"),
        ('"a": b', '"a": b'),
        ("v1.2", "v1.2"),
    ],
)
def test_a_changed_plain_scalar_is_read_again_as_go_yaml_v2_reads_it(
    value: str, expected: Any
) -> None:
    got = value_of("${v}", {"v": value})
    assert got == expected and type(got) is type(expected)


def test_a_scalar_kustomize_would_quote_stays_a_string() -> None:
    assert value_of(" ${v}", {"v": "3"}) == " 3"
    assert value_of("${v} ", {"v": "3"}) == "3 "
    assert value_of("${v}\n", {"v": "3"}) == "3\n"  # a block scalar
    assert value_of("- ${v}", {"v": "3"}) == "- 3"
    assert value_of("${a}${b}", {"a": "1", "b": "\n2"}) == "1\n2"  # a line break: text


def test_replicas_become_an_integer_like_flux() -> None:
    deploy = Manifest(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {"replicas": "${REPLICAS:=1}", "paused": "${PAUSED:=false}"},
        },
        "deploy.yaml",
    )
    [m] = run([deploy], {"REPLICAS": "3"})
    assert m.obj["spec"] == {"replicas": 3, "paused": False}


def test_infinity_is_refused() -> None:
    e = error_of(config_map({"v": "${v}"}), {"v": ".inf"})
    assert "infinity or NaN" in str(e)


# --- no structure injected ---------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    ["a\n- x: y", "{a: b}", "[1, 2]", "x # comment", "a: b", "&a x", "!!binary aGk=", "|\n  x"],
)
def test_a_value_never_adds_structure(value: str) -> None:
    cm = config_map({"v": "${v}", "w": "pre ${v}"})
    [m] = run([cm], {"v": value})
    assert m.obj["data"] == {"v": value, "w": f"pre {value}"}
    assert set(m.obj) == {"apiVersion", "kind", "metadata", "data"}


# --- mapping keys ---------------------------------------------------------------------
def test_keys_are_substituted_and_read_as_kubectl_writes_them() -> None:
    cm = config_map({"${k}": "v", "n-${n}": "x", "${f}": "y", "${b}": "z"})
    [m] = run([cm], {"k": "key", "n": "1", "f": "1.5", "b": "yes"})
    assert m.obj["data"] == {"key": "v", "n-1": "x", "1.5": "y", "true": "z"}


def test_a_substituted_key_that_repeats_another_is_refused() -> None:
    e = error_of(config_map({"a": "1", "${k}": "2"}), {"k": "a"})
    assert 'data["${k}"]: substituted, this key repeats another key' in str(e)


def test_a_key_with_no_json_form_is_refused_without_showing_it() -> None:
    e = error_of(config_map({"${k}": "1"}), {"k": "18446744073709551615"})
    assert "no JSON form" in str(e) and "18446744073709551615" not in str(e)


# --- the object's identity ------------------------------------------------------------
def test_name_and_namespace_may_be_substituted() -> None:
    cm = config_map({}, name="app-${env}", namespace="${ns:=}")
    [m] = run([cm], {"env": "prod"})
    assert m.obj["metadata"] == {"name": "app-prod"}  # an empty namespace is none
    e = error_of(config_map({}, name="${n}"), {"n": ""})
    assert "metadata.name: must be a string, but substituted it reads as null" in str(e)


# --- disabled ----------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["labels", "annotations"])
def test_an_object_marked_disabled_is_left_as_written(where: str) -> None:
    """Flux: kustomize.toolkit.fluxcd.io/substitute: disabled, as a label or an
    annotation; here gitferry.dev/substitute."""
    marked = config_map({"v": "${v}", "bad": "${"}, **{where: {MARK: "disabled"}})
    other = config_map({"v": "${v}"}, name="other")
    out = run([marked, other], {"v": "1"})
    assert out[0] is marked
    assert out[1].obj["data"] == {"v": 1}


def test_unchanged_objects_are_returned_as_they_are_and_inputs_are_not_modified() -> None:
    plain = config_map({"v": "no variables"})
    used = config_map({"v": "${v}", "keep": {"deep": ["x"]}}, name="used")
    out = run([plain, used], {"v": "1"})
    assert out[0] is plain
    assert used.obj["data"]["v"] == "${v}"
    assert out[1].obj["data"]["keep"] is used.obj["data"]["keep"]  # shared, not copied


def test_without_variables_nothing_is_substituted_unless_always() -> None:
    """Flux's substituteStrategy: WithVariables (the default) and Always."""
    cm = config_map({"v": "${v:=dflt}", "w": "${unset}"})
    assert run([cm], {}) == [cm]
    [m] = run([config_map({"v": "${v:=dflt}"})], {}, always=True)
    assert m.obj["data"]["v"] == "dflt"


# --- names -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a", "_", "A_1", "_9lives", "camelCase"])
def test_valid_variable_names(name: str) -> None:
    check_variable_names([name], "ConfigMap apps/vars")


@pytest.mark.parametrize("name", ["", "1a", "a-b", "a.b", "é", "a b", "a\n", "$a"])
def test_invalid_variable_names_are_refused_naming_the_key_and_origin(name: str) -> None:
    with pytest.raises(SubstitutionError) as e:
        check_variable_names(["ok", name], "ConfigMap apps/vars")
    assert str(e.value).startswith(f"ConfigMap apps/vars: {name!r} is not a variable name")
    assert "^[_[:alpha:]][_[:alpha:][:digit:]]*$" in str(e.value)
    with pytest.raises(SubstitutionError):
        run([config_map({"v": "x"})], {name: "1"})


# --- what is refused, and how it is said ---------------------------------------------------
@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("${}", "at character 1: '${' must be followed by a variable name"),
        ("a ${ b}", "at character 3: '${' must be followed by a variable name"),
        ("${a", "missing '}' after ${a"),
        ("${a:=x", "missing '}'"),
        ("${a-b}", "${a-…} is not supported (Flux refuses it too)"),
        ("${a+b}", "${a+…} is not supported"),
        ("${a?b}", "${a?…} is not supported"),
        ("${a:+b}", "${a:+…} is not supported (Flux reads it as ${a:-…}"),
        ("${a:?b}", "${a:?…} is not supported"),
        ("${a/#x/}", "empty replacement is not supported"),
        ("${a/%x/}", "empty replacement is not supported"),
        ("${a^,}", "${a^,} is not supported"),
        ("${a//x}", "needs a second '/'"),
        ("${a:}", "an argument is missing"),
        ("${a:1x:2}", ""),  # text after the position is part of it: no integer, the value
    ],
)
def test_malformed_and_unsupported_forms(template: str, words: str) -> None:
    if not words:
        assert value_of(template, {"a": "abc"}) == "abc"
        return
    e = error_of(config_map({"v": template}), {"a": "abc"})
    assert str(e).startswith("cm.yaml: ConfigMap/apps/cm: data.v: ")
    assert words in str(e)


def test_substring_edges() -> None:
    v = {"a": "abcdef"}
    assert value_of("${a:-2}", v) == "abcdef"  # `:-` is a default, as in bash
    assert value_of("${a:${n}}", {**v, "n": "-2"}) == "ef"
    assert value_of("${a:${n}:1}", {**v, "n": "-9"}) == "a"
    assert value_of("${a:9}", v) is None
    assert value_of("${a:2:99}", v) == "cdef"
    assert value_of("${a: 2}", v) == "abcdef"  # Go's Atoi: no spaces
    assert value_of("${a:x}", v) == "abcdef"
    assert value_of("${a:1:x}", v) == "abcdef"
    assert value_of("${a:" + "9" * 5000 + "}", v) == "abcdef"  # beyond int64: no integer
    assert value_of("${a:00000000000000000000001}", v) == "bcdef"
    e = error_of(config_map({"v": "${a:1:${n}}"}), {**v, "n": "-1"})
    assert "${a:…}: a negative length is not supported" in str(e)


def test_characters_not_bytes_except_for_the_length() -> None:
    v = {"a": "päß"}
    assert value_of("${a:1:1}", v) == "ä"
    assert value_of("${#a}", v) == 5  # UTF-8 bytes, as Flux counts
    assert value_of("${a^^}", v) == "PÄß"  # one character for one, as Go maps it
    assert value_of("${a^}", {"a": "élan"}) == "Élan"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${a#[0-9]*-}", "2-rest"),
        ("${a##[0-9]*-}", "rest"),
        ("${a#[^0-9]}", "1-2-rest"),  # no match: unchanged
        ("${a%-[a-z]*}", "1-2"),  # a class in a suffix pattern works (Flux's does not)
        ("${a%%-*}", 1),
        (r"${a#1\-}", "2-rest"),
        ("${a#*}", "-2-rest"),  # a match is never empty: Flux strips one character
        ("${a#?}", "-2-rest"),
        ("${a%?}", "1-2-res"),
        ("${a#${p}}", "2-rest"),
        ("${a##${p}}", "rest"),
    ],
)
def test_glob_trims(template: str, expected: Any) -> None:
    assert value_of(template, {"a": "1-2-rest", "p": "*-"}) == expected


@pytest.mark.parametrize("pattern", ["[", "[a", "[]", "[-a]", "a\\", "[a-"])
def test_a_malformed_glob_is_refused(pattern: str) -> None:
    e = error_of(config_map({"v": "${a#${p}}"}), {"a": "abc", "p": pattern})
    assert "${a#…}: its pattern" in str(e)


# --- bounds ---------------------------------------------------------------------------
def test_output_is_bounded_across_the_whole_call() -> None:
    big = "x" * 1024
    cms = [config_map({"v": "${big}" * 10}, name=f"cm{i}") for i in range(10)]
    run(cms, {"big": big}, max_bytes=300 * 1024)
    e = error_of(config_map({"v": "${big}" * 100}), {"big": big}, max_bytes=64 * 1024)
    assert "writes more than 64.0 KiB, the limit for one sync" in str(e)
    with pytest.raises(SubstitutionError, match="limit for one sync"):
        run(cms, {"big": big}, max_bytes=64 * 1024)


def test_a_replace_all_that_would_explode_is_refused_before_it_is_built() -> None:
    e = error_of(
        config_map({"v": "${a//x/${a}}"}), {"a": "x" * 100_000}, max_bytes=10 * 1024 * 1024
    )
    assert "writes more than 10.0 MiB" in str(e)


def test_a_glob_is_linear_in_the_value() -> None:
    start = time.monotonic()
    # Backtracking matchers take exponential time on this pattern and value.
    value_of("${a##*a*a*a*a*a*a*a*a*b}", {"a": "a" * 20_000})
    assert time.monotonic() - start < 5


def test_nesting_is_bounded() -> None:
    deep = "${a:=" * 32 + "x" + "}" * 32
    assert value_of(deep, {}) == "x"
    e = error_of(config_map({"v": "${a:=" * 10_000 + "}" * 10_000}), {"a": ""})
    assert "nested deeper than 32 levels" in str(e)


def test_the_deadline_is_kept() -> None:
    with pytest.raises(DeadlineExceeded):
        run([config_map({"v": "${v}"})], {"v": "1"}, deadline=Deadline(time.monotonic() - 1))


# --- no value in any message ------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [
        {"v": "${missing}", "s": "${s}"},
        {"v": "${s:1:${neg}}"},
        {"v": "${s#${glob}}"},
        {"${s}": "1", "hunter2-0451": "2"},
        {"v": "${s}" * 400},
        {"v": "${inf}${s:0:0}"},
    ],
)
def test_no_error_message_shows_a_value(data: dict[str, str]) -> None:
    values = {"s": SECRET, "neg": "-1", "glob": f"[{SECRET}", "inf": ".inf"}
    e = error_of(config_map(data), values, max_bytes=4096)
    assert isinstance(e, RenderError)
    for value in (SECRET, "hunter2", "0451"):
        assert value not in str(e)


def test_no_error_message_shows_a_value_in_a_label_or_name() -> None:
    cm = config_map({}, name="n-${s}", labels={"id": "${num}"})
    e = error_of(cm, {"s": SECRET, "num": "0451"})
    assert "metadata.labels.id: must be a string" in str(e)
    assert "ConfigMap/apps/n-${s}" in str(e)  # the object as git names it
    assert SECRET not in str(e) and "0451" not in str(e)


# --- fuzzed -------------------------------------------------------------------------
# Templates use the grammar's characters; values start with a marker no
# template can write (no Q, 7 or Z), so a value in a message is seen.
PIECES = [
    *"${}:=-+?#%/^,\\*[]!. \n'\"~ab1",
    *("${", "$$", "${a}", "${b", "${_c", "${ab:=", "${a:-", "${#", "${a:1", ":2}", "${a/"),
    *("${a//", "${a#", "${a%%", "${a^^}", "${a,}", "x}", "*.", "[0-9]", "true", "0x1F"),
]
WHOLE = [
    *("${a}", "${b}", "${ab:=x}", "${_c:-${a}}", "${#a}", "${a:1}", "${b:1:2}", "${a/x/y}"),
    *("${a//./${b}}", "${a/#Q/R}", "${a#*.}", "${b%%[0-9]*}", "${a^^}", "${b,}", "$${a}"),
]
TEMPLATE = st.lists(st.sampled_from(WHOLE) | st.sampled_from(PIECES), max_size=10).map("".join)
VALUE = st.text(alphabet="xy09 .:-'\"[]*~\n", max_size=12).map(lambda v: "Q7Z" + v)
NAMES = st.sampled_from(["a", "b", "_c", "ab"])
FUZZ = settings(max_examples=400, deadline=None, database=None)


class Recording(Mapping[str, str]):
    """A variables map that records what is read from it."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


@FUZZ
@given(
    data=st.dictionaries(TEMPLATE, TEMPLATE | st.lists(TEMPLATE, max_size=3), max_size=4),
    name=TEMPLATE,
    variables=st.dictionaries(NAMES, VALUE, max_size=3),
    strict=st.booleans(),
    max_bytes=st.sampled_from([64, 4096]),
)
def test_fuzz_substitution_ends_in_objects_or_a_substitution_error(
    data: dict[str, Any], name: str, variables: dict[str, str], strict: bool, max_bytes: int
) -> None:
    """Whatever git and the variables hold: objects fit for JSON, or a
    SubstitutionError that shows no value; nothing is read but the map (the
    environment holds every name, with a value that must never appear)."""
    manifest = config_map(data, name=f"n{name}")
    recording = Recording(variables)
    environment = {n: "ENVLEAK" for n in ("a", "b", "_c", "ab")}
    with mock.patch.dict(os.environ, environment):
        try:
            [out] = run([manifest], recording, strict=strict, max_bytes=max_bytes, always=True)
        except SubstitutionError as e:
            assert str(e).startswith(f"cm.yaml: ConfigMap/apps/n{name}: ")
            assert "q7z" not in str(e).lower()
            return
    assert recording.read <= set(variables)
    json.dumps(out.obj, allow_nan=False)
    assert all("envleak" not in s.lower() for s in strings(out.obj))
    assert isinstance(out.obj["metadata"]["name"], str) and out.obj["metadata"]["name"]


def test_after_render_as_the_pipeline_calls_it(tmp_path: Path) -> None:
    """render folds stringData into data; substitution still sees its text."""
    (tmp_path / "app.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"
        "stringData:\n  url: https://${host}/${path:=api}\n"
        "---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
        "spec:\n  replicas: ${replicas}\n  template:\n    spec:\n      containers:\n"
        "      - name: web\n        image: web:${tag}\n        env:\n"
        '        - {name: PORT, value: "${port}"}\n'
    )
    manifests = render(tmp_path, ".", Limits())
    secret, deploy = run(
        manifests,
        {"host": "example.com", "replicas": "2", "tag": "1.0", "port": "8080"},
        max_bytes=Limits().max_total_bytes,
    )
    assert base64.b64decode(secret.obj["data"]["url"]) == b"https://example.com/api"
    spec = deploy.obj["spec"]
    assert spec["replicas"] == 2
    [container] = spec["template"]["spec"]["containers"]
    assert container["image"] == "web:1.0"
    # As in Flux (kustomize drops the quotes before it substitutes), a number:
    # the API server refuses it, and Flux's docs say to use ${quote}.
    assert container["env"] == [{"name": "PORT", "value": 8080}]
