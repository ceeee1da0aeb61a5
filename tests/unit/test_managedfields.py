"""Taking over field ownership on adoption: only the fields the apply sets move."""

from __future__ import annotations

from typing import Any

from gitferry.kube.managedfields import LAST_APPLIED, takeover_patch


def entry(manager: str, operation: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": "v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }


def live(*entries: dict[str, Any], last_applied: bool = True) -> dict[str, Any]:
    annotations = {LAST_APPLIED: "{}"} if last_applied else {}
    return {
        "metadata": {
            "resourceVersion": "7",
            "annotations": annotations,
            "managedFields": list(entries),
        }
    }


CSA = entry(
    "kubectl-client-side-apply",
    "Update",
    {
        "f:metadata": {"f:annotations": {".": {}, f"f:{LAST_APPLIED}": {}}},
        "f:data": {".": {}, "f:a": {}, "f:b": {}},
    },
)


def managed(patch: list[dict[str, Any]]) -> dict[str, Any]:
    (op,) = [o for o in patch if o["path"] == "/metadata/managedFields"]
    return {e["manager"]: e["fieldsV1"] for e in op["value"]}


def test_the_fields_git_sets_move_and_the_rest_stay_with_their_manager() -> None:
    patch = takeover_patch(live(CSA), "gitferry", "v1", {"f:data": {"f:a": {}}})
    assert patch is not None
    assert patch[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    owners = managed(patch)
    assert owners["gitferry"] == {"f:data": {".": {}, "f:a": {}}}
    # b stays kubectl's; the last-applied annotation and its emptied parent go.
    assert owners["kubectl-client-side-apply"] == {"f:data": {"f:b": {}}}
    assert patch[-1] == {
        "op": "remove",
        "path": "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration",
    }


def test_a_manager_left_with_nothing_leaves_the_list() -> None:
    patch = takeover_patch(live(CSA), "gitferry", "v1", {"f:data": {"f:a": {}, "f:b": {}}})
    assert patch is not None
    assert set(managed(patch)) == {"gitferry"}


def test_controllers_and_other_versions_are_never_taken_over() -> None:
    controller = entry("kube-controller-manager", "Update", {"f:data": {"f:a": {}}})
    old_version = dict(CSA, apiVersion="v1beta1")
    patch = takeover_patch(
        live(controller, old_version, last_applied=False), "gitferry", "v1", {"f:data": {"f:a": {}}}
    )
    assert patch is None


def test_an_existing_apply_entry_of_the_manager_grows() -> None:
    ours = entry("gitferry", "Apply", {"f:data": {"f:z": {}}})
    ours["operation"] = "Apply"
    patch = takeover_patch(live(ours, CSA), "gitferry", "v1", {"f:data": {"f:a": {}, "f:z": {}}})
    assert patch is not None
    assert managed(patch)["gitferry"] == {"f:data": {".": {}, "f:a": {}, "f:z": {}}}
