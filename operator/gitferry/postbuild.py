"""spec.postBuild: the variables `render.substitute` puts into the objects,
gathered from the sync's spec and its namespace as Flux gathers them.

Flux's rules (docs/spec/v1/kustomizations.md, "Post build variable
substitution"; fluxcd/pkg kustomize/kustomize_varsub.go, LoadVariables):

- `substituteFrom` is read in order: a ConfigMap's `data` (never its
  `binaryData`) and a Secret's `data`, base64-decoded, give one variable per
  key; a later entry wins over an earlier one, and `substitute` wins over all;
- a missing ConfigMap or Secret fails the reconcile unless the entry says
  `optional: true`, and then only a missing one (NotFound) is skipped: one the
  sync may not read still fails;
- every newline is deleted from every value (Flux's guard against YAML
  injection; `substitute` cannot inject YAML, but the values stay Flux's);
- every key must be a variable name (`render.check_variable_names`).

The objects are read with the client the caller passes: the sync's own
identity (`Context.client_for`), so that a tenant cannot pour a Secret it may
not read into objects it can read. Errors name the entry, the object and the
key, never a value.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from .api import PostBuild, SubstituteRef
from .deadline import Deadline
from .errors import SubstitutionFailed
from .kube import Kube, KubeError
from .render import SubstitutionError, check_variable_names

KINDS = {"ConfigMap": "configmaps", "Secret": "secrets"}


def variables(
    client: Kube,
    namespace: str,
    spec: PostBuild,
    deadline: Deadline,
    secret_values: set[str] | None = None,
) -> dict[str, str]:
    """The variables of spec.postBuild for a sync in `namespace`, read with
    `client` (the sync's identity). Every value read from a Secret is added to
    `secret_values`, so that the caller can keep it out of every message (an
    API server's validation error quotes the value it refused). Raises
    SubstitutionFailed (an object missing or unreadable, a key that is no
    variable name, a Secret value that is not UTF-8 text) or DeadlineExceeded."""
    found: dict[str, str] = {}
    for i, ref in enumerate(spec.substitute_from):
        data = _read(client, namespace, ref, f"spec.postBuild.substituteFrom[{i}]", deadline)
        found.update(data)
        if ref.kind == "Secret" and secret_values is not None:
            secret_values.update(v.replace("\n", "") for v in data.values())
    _check_names(spec.substitute, "spec.postBuild.substitute")
    found.update(spec.substitute)  # substitute wins over substituteFrom
    return {name: value.replace("\n", "") for name, value in found.items()}


def _read(
    client: Kube, namespace: str, ref: SubstituteRef, field: str, deadline: Deadline
) -> dict[str, str]:
    """One entry's variables; {} when it is optional and missing."""
    where = f"{field}: {ref.kind} {namespace}/{ref.name}"
    path = f"/api/v1/namespaces/{namespace}/{KINDS[ref.kind]}/{ref.name}"
    try:
        obj = client.request("GET", path, deadline=deadline)
    except KubeError as e:
        if e.not_found:
            if ref.optional:
                return {}
            raise SubstitutionFailed(
                f"{where} not found (create it, or set optional: true)"
            ) from None
        raise SubstitutionFailed(f"{where}: {e.message}") from None
    data = obj.get("data") or {}
    if not isinstance(data, dict):
        raise SubstitutionFailed(f"{where}: data is not a mapping")
    _check_names(data, where)
    if ref.kind == "ConfigMap":
        return {k: str(v) for k, v in data.items()}
    out = {}
    for key, encoded in data.items():
        try:
            out[key] = base64.b64decode(str(encoded), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            # The key, never the value.
            raise SubstitutionFailed(f"{where}: the value of {key!r} is not UTF-8 text") from None
    return out


def _check_names(names: Mapping[str, Any], origin: str) -> None:
    try:
        check_variable_names(names, origin)
    except SubstitutionError as e:
        raise SubstitutionFailed(str(e)) from None
