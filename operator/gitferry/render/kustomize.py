"""The kustomize sandbox: check every reference a kustomization makes, then run
`kubectl kustomize` with a minimal environment, bounded in time and output.

kubectl runs with LoadRestrictionsNone (overlays use ../base), so the walk in
`KustomizeCheck` is the only guard: nothing outside the checkout, nothing from
the network, no plugin.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from ..deadline import Deadline, DeadlineExceeded
from .errors import RenderError
from .files import decode, human_size, kustomization_file, read_bounded, rel, resolve
from .limits import KiB, Limits
from .loader import yaml_documents

KUBECTL_ENV = "GITFERRY_KUBECTL"
STAGE = "render"


def run_kubectl(
    root: Path,
    directory: Path,
    source: str,
    limits: Limits,
    deadline: Deadline | None,
    kubectl: str | None,
    budget: int,
) -> str:
    """`kubectl kustomize <directory>` (already checked by KustomizeCheck) run in
    `root` with a minimal environment; its output as text. Raises RenderError
    (failure, output over `budget` bytes, over the kubectl timeout) or
    DeadlineExceeded."""
    kubectl = find_kubectl(kubectl)
    timeout = limits.kubectl_timeout_seconds
    by_deadline = False
    if deadline is not None:
        left = deadline.remaining(STAGE)
        if left < timeout:
            timeout, by_deadline = left, True
    command = [
        kubectl,
        "kustomize",
        "--load-restrictor=LoadRestrictionsNone",  # overlays use ../base; checked above
        rel(root, directory) or ".",
    ]
    with (
        tempfile.TemporaryDirectory(prefix="gitferry-kubectl-") as home,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
    ):
        # Minimal environment: no kubeconfig, no plugin or helm configuration.
        env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "HOME": home}
        try:
            proc = subprocess.Popen(
                command,
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except OSError as e:
            raise RenderError(f"{source}: cannot run {kubectl}: {e.strerror}") from None
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            if by_deadline:
                raise DeadlineExceeded(f"{STAGE} (kustomize build of {source})") from None
            raise RenderError(f"{source}: kustomize build took longer than {timeout:g}s") from None
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if code != 0:
            raise RenderError(f"{source}: kustomize build failed: {_stderr(root, err)}")
        size = os.fstat(out.fileno()).st_size
        if size > budget:
            raise RenderError(
                f"{source}: the files to render add up to more than "
                f"{human_size(limits.max_total_bytes)}, the limit for one sync"
            )
        out.seek(0)
        data = out.read()
    return decode(data, source)


def _stderr(root: Path, err: IO[bytes]) -> str:
    err.seek(0, os.SEEK_END)
    err.seek(max(0, err.tell() - 4 * KiB))
    text = err.read().decode("utf-8", "replace")
    text = text.replace(f"{root}{os.sep}", "").replace(str(root), ".")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = "; ".join(lines)
    for prefix in ("error: ", "Error: "):
        message = message.removeprefix(prefix)
    if len(message) > 1000:
        message = message[:1000] + "…"
    return message or "(no message)"


def find_kubectl(explicit: str | None) -> str:
    """The argument, $GITFERRY_KUBECTL, the venv's kubectl, then PATH."""
    if explicit:
        return explicit
    from_env = os.environ.get(KUBECTL_ENV)
    if from_env:
        return from_env
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kubectl")
    if found:
        return found
    raise RenderError(
        f"kubectl not found (set {KUBECTL_ENV}); it is needed to build kustomizations"
    )


# Always remote: URLs, go-getter and scp-like forms, well-known hosts, refs.
_REMOTE = re.compile(
    r"""^[a-z][a-z0-9+.-]*://
      | ^git:: | ^gh: | ^[\w.-]+@[\w.-]+:
      | ^(?:www\.)?(?:github\.com|gitlab\.com|bitbucket\.org)[/:]
      | \?(?:ref|version|timeout|submodules)=""",
    re.IGNORECASE | re.VERBOSE,
)
# Remote-looking when missing locally (kustomize would then try to fetch it).
_HOSTLIKE = re.compile(r"^[\w-]+(?:\.[\w-]+)+/|//")
_FUNCTION_ANNOTATIONS = ("config.kubernetes.io/function", "config.k8s.io/function")
_HELM = ("helmCharts", "helmGlobals", "helmChartInflationGenerator")


def _is_inline(entry: str) -> bool:
    return "\n" in entry or entry.lstrip().startswith(("{", "apiVersion:", "kind:"))


class KustomizeCheck:
    """Walks every kustomization reachable from one and refuses, before kubectl
    runs, anything that would read outside the checkout, fetch from the network
    or run a plugin. kubectl itself runs with LoadRestrictionsNone, so this walk
    is the only guard: every field that names a file is covered."""

    def __init__(self, root: Path, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        self.seen: set[Path] = set()

    def directory(self, directory: Path, referrer: str, plugin_base: Path | None = None) -> None:
        if directory in self.seen:
            return
        self.seen.add(directory)
        kfile = kustomization_file(self.root, directory)
        if kfile is None:
            raise RenderError(f"{referrer}: {rel(self.root, directory)} has no kustomization file")
        source = rel(self.root, kfile)
        if not resolve(kfile, source).is_relative_to(self.root):
            raise RenderError(
                f"{source} -> {os.readlink(kfile)}: symlink points outside the repository"
            )
        docs = self._documents(kfile, source)
        if len(docs) != 1 or not isinstance(docs[0], dict):
            raise RenderError(f"{source}: expected one kustomization (a mapping)")
        self.kustomization(docs[0], directory, source, plugin_base)

    def _documents(self, path: Path, source: str) -> list[Any]:
        text = decode(read_bounded(path, source, self.limits.max_file_bytes), source)
        return self._parse(text, source)

    def _parse(self, text: str, source: str) -> list[Any]:
        limit = self.limits.max_file_bytes
        docs, _ = yaml_documents(
            text, source, limit, f"the {human_size(limit)} limit", self.limits.max_depth
        )
        return [data for _, data in docs]

    def kustomization(
        self, k: dict[str, Any], base: Path, source: str, plugin_base: Path | None
    ) -> None:
        for key in _HELM:
            if k.get(key):
                raise RenderError(
                    f"{source}: {key}: Helm charts are not supported; "
                    "render the chart into the repository instead"
                )
        for key in ("resources", "bases", "components"):
            for entry in self._list(k, key, source):
                p = self.local(source, key, entry, base)
                if p.is_dir():
                    self.directory(p, source, plugin_base)
                else:
                    self.file(source, key, entry, p)
                    if plugin_base is not None:
                        self.plugins(
                            source,
                            key,
                            entry,
                            self._documents(p, rel(self.root, p)),
                            (plugin_base, p.parent),
                        )
        for key in ("crds", "configurations"):
            for entry in self._list(k, key, source):
                self.file(source, key, entry, self.local(source, key, entry, base))
        for entry in self._list(k, "patchesStrategicMerge", source):
            if not (isinstance(entry, str) and _is_inline(entry)):
                p = self.local(source, "patchesStrategicMerge", entry, base)
                self.file(source, "patchesStrategicMerge", entry, p)
        for key in ("patches", "patchesJson6902", "replacements"):
            for item in self._list(k, key, source):
                if isinstance(item, dict) and item.get("path") is not None:
                    entry = item["path"]
                    self.file(source, key, entry, self.local(source, f"{key} path", entry, base))
        openapi = k.get("openapi")
        if isinstance(openapi, dict) and openapi.get("path") is not None:
            entry = openapi["path"]
            self.file(source, "openapi", entry, self.local(source, "openapi path", entry, base))
        for key in ("configMapGenerator", "secretGenerator"):
            for item in self._list(k, key, source):
                if isinstance(item, dict):
                    self.generator_files(source, key, item, (base,), must_exist=True)
        for key in ("generators", "transformers", "validators"):
            for n, entry in enumerate(self._list(k, key, source), 1):
                if isinstance(entry, str) and _is_inline(entry):
                    docs = self._parse(entry, f"{source}: {key} entry {n}")
                    self.plugins(source, key, f"inline entry {n}", docs, (base,))
                    continue
                p = self.local(source, key, entry, base)
                if p.is_dir():
                    self.directory(p, source, plugin_base or base)
                else:
                    self.file(source, key, entry, p)
                    docs = self._documents(p, rel(self.root, p))
                    self.plugins(source, key, entry, docs, (base, p.parent))

    def _list(self, k: dict[str, Any], key: str, source: str) -> list[Any]:
        value = k.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise RenderError(f"{source}: {key} must be a list")
        return value

    def local(self, source: str, key: str, entry: Any, base: Path, must_exist: bool = True) -> Path:
        """The checked, resolved path of a kustomization entry."""
        if not isinstance(entry, str) or not entry.strip():
            raise RenderError(f"{source}: {key}: entries must be non-empty strings")
        if _REMOTE.search(entry):
            raise RenderError(
                f"{source}: {key}: {entry!r} is a remote reference; gitferry builds only "
                "from the repository it fetched"
            )
        label = f"{source}: {key}: {entry!r}"
        # kustomize joins and cleans lexically, the OS resolves `..` after links:
        # both readings must stay inside.
        joined = Path(os.path.normpath(base / entry))
        for candidate in (joined, base / entry):
            if not resolve(candidate, label).is_relative_to(self.root):
                raise RenderError(f"{label} resolves outside the repository")
        if not joined.exists():
            if not must_exist:
                return joined
            if _HOSTLIKE.search(entry):
                raise RenderError(
                    f"{label} is not in the repository (remote references are not allowed)"
                )
            raise RenderError(f"{label} does not exist")
        return joined.resolve()

    def file(self, source: str, key: str, entry: Any, p: Path) -> None:
        if p.is_dir():
            # kustomize lists a directory's files for generators; check each.
            for child in sorted(p.iterdir()):
                if not resolve(child, str(child)).is_relative_to(self.root):
                    raise RenderError(
                        f"{source}: {key}: {rel(self.root, child)} -> {os.readlink(child)}: "
                        "symlink points outside the repository"
                    )
            return
        size = p.stat().st_size
        if size > self.limits.max_file_bytes:
            raise RenderError(
                f"{source}: {key}: {entry!r} is {human_size(size)}, over the "
                f"{human_size(self.limits.max_file_bytes)} limit for one file"
            )

    def generator_files(
        self,
        source: str,
        key: str,
        item: dict[str, Any],
        bases: tuple[Path, ...],
        must_exist: bool,
    ) -> None:
        entries: list[Any] = []
        for field_name in ("files", "envs", "paths"):
            value = item.get(field_name)
            if value is None:
                continue
            if not isinstance(value, list):
                raise RenderError(f"{source}: {key} {field_name} must be a list")
            # files entries may be "key=path".
            entries += [
                e.split("=", 1)[1]
                if field_name == "files" and isinstance(e, str) and "=" in e
                else e
                for e in value
            ]
        for single in ("env", "path"):
            if item.get(single) is not None:
                entries.append(item[single])
        for replacement in item.get("replacements") or []:
            if isinstance(replacement, dict) and replacement.get("path") is not None:
                entries.append(replacement["path"])
        for entry in entries:
            for b in bases:
                p = self.local(source, key, entry, b, must_exist=must_exist)
                if p.exists():
                    self.file(source, key, entry, p)

    def plugins(
        self, source: str, key: str, entry: Any, docs: list[Any], bases: tuple[Path, ...]
    ) -> None:
        """Generator/transformer/validator configs: builtins only, and their own
        file references checked like a kustomization's."""
        for data in docs:
            if not isinstance(data, dict):
                continue  # kustomize will refuse it
            api_version, kind = data.get("apiVersion"), data.get("kind")
            meta = data.get("metadata")
            annotations = meta.get("annotations") if isinstance(meta, dict) else None
            is_function = isinstance(annotations, dict) and any(
                a in annotations for a in _FUNCTION_ANNOTATIONS
            )
            if api_version != "builtin" or is_function:
                raise RenderError(
                    f"{source}: {key}: {entry}: {kind} ({api_version}) is a kustomize plugin; "
                    "only kustomize's builtin generators and transformers are allowed"
                )
            if kind == "HelmChartInflationGenerator":
                raise RenderError(
                    f"{source}: {key}: {entry}: Helm charts are not supported; "
                    "render the chart into the repository instead"
                )
            # Paths in builtin configs: relative to which kustomization is a
            # kustomize detail, so every plausible base must stay inside.
            self.generator_files(source, key, data, bases, must_exist=False)
