"""Render: one directory of a checkout -> the Kubernetes objects it declares.

Two modes. A directory holding a kustomization file is built by `kubectl
kustomize`; any other directory is read as plain manifests (every *.yaml, *.yml
and *.json below it, in path order), where a subdirectory holding a
kustomization is built in place, as Flux does.

Everything in the checkout is untrusted: nothing outside it is ever read (not
through `..`, an absolute path, a symlink or a kustomize reference), nothing is
fetched from the network, no kustomize plugin runs, and sizes, object counts,
nesting and YAML alias expansion are bounded by `Limits`.

A library: it knows nothing of GitRepositorySync and raises plain errors
(`RenderError`, `PathError`, `DeadlineExceeded`). Its seams, a module each:
`files` (checked paths, bounded reads), `loader` (the bounded YAML/JSON
loader), `objects` (object checks), `walker` (the ignore- and symlink-aware
walk), `kustomize` (the kustomize sandbox), `substitute` (postBuild's
`${var}` substitution on rendered objects; it raises `SubstitutionError`).
"""

from __future__ import annotations

from pathlib import Path

from ..deadline import Deadline
from .errors import PathError, RenderError, SubstitutionError
from .files import kustomization_file, target_dir
from .limits import Limits
from .objects import Manifest, assign_namespaces, check_duplicates
from .substitute import check_variable_names, substitute
from .walker import Renderer

__all__ = [
    "Limits",
    "Manifest",
    "PathError",
    "RenderError",
    "SubstitutionError",
    "assign_namespaces",
    "check_duplicates",
    "check_variable_names",
    "render",
    "substitute",
]


def render(
    checkout: Path,
    path: str,
    limits: Limits,
    deadline: Deadline | None = None,
    *,
    kubectl: str | None = None,
) -> list[Manifest]:
    """The objects under `path` of `checkout`, cleaned, in a stable order.

    Namespaces are left as written; see `assign_namespaces`.
    Raises PathError, RenderError or DeadlineExceeded.
    """
    root = checkout.resolve()
    top = target_dir(root, path)
    renderer = Renderer(root, limits, deadline, kubectl)
    renderer.tick()
    kfile = kustomization_file(root, top)
    if kfile is not None:
        renderer.kustomize(top, kfile)
    else:
        renderer.plain(top)
    check_duplicates(renderer.manifests)
    return renderer.manifests
