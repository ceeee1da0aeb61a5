"""A sync is an ApplySet parent (KEP-3659): its id is the one kubectl would compute
for `gitrepositorysyncs.gitferry.dev/<name>` in `<namespace>`, so kubectl and other
ApplySet-aware tools recognise gitferry's objects as members of that set."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from gitferry import applyset

# Computed once with the formula below and written down, so that a change of the
# formula (in the test or in gitferry) cannot go unnoticed.
WEB_IN_APPS = "applyset-RvFNCaX6aVfXr5kIdX2bN8KFefDzq2FA-XCrIisp5ks-v1"

# A label value: at most 63 characters, alphanumerics at both ends.
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def kubectl_formula(name: str, namespace: str) -> str:
    """kubectl's ApplySet id: `applyset-` + base64url, unpadded, of the sha256 of
    `<name>.<namespace>.<Kind>.<group>` + `-v1`."""
    digest = hashlib.sha256(f"{name}.{namespace}.GitRepositorySync.gitferry.dev".encode()).digest()
    return "applyset-" + base64.urlsafe_b64encode(digest).decode().rstrip("=") + "-v1"


def test_the_formula_gives_the_known_answer() -> None:
    assert kubectl_formula("web", "apps") == WEB_IN_APPS


def test_applyset_id_of_web_in_apps_is_the_known_answer() -> None:
    assert applyset.applyset_id("web", "apps") == WEB_IN_APPS


@pytest.mark.parametrize(
    ("name", "namespace"),
    [
        ("web", "default"),
        ("apps", "web"),  # name and namespace swapped give another id
        ("a", "b"),
        ("x" * 253, "n" * 63),  # the longest names still give a valid label value
    ],
)
def test_applyset_id_follows_kubectls_formula_and_is_a_label_value(
    name: str, namespace: str
) -> None:
    got = applyset.applyset_id(name, namespace)
    assert got == kubectl_formula(name, namespace)
    assert LABEL_VALUE.match(got), got


def test_different_syncs_get_different_ids() -> None:
    ids = {
        applyset.applyset_id("web", "apps"),
        applyset.applyset_id("apps", "web"),
        applyset.applyset_id("web", "apps2"),
        applyset.applyset_id("web2", "apps"),
    }
    assert len(ids) == 4
