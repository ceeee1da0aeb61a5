"""The one git repository every operator benchmark syncs from, and the context
they share (control plane, API client, work directory).

Layout of the repository (one commit; N syncs of it use N different paths, so
1000 syncs × 4 objects are 4000 distinct objects in one namespace — cheaper
than 1000 namespaces, each with its own ServiceAccount and quota of controller
work):

    app-0000/app.yaml … app-0999/app.yaml   4 objects each (common.app_objects)
    big-500/app-000.yaml … app-124.yaml     one sync of 500 objects (125 apps)
    hundred/…                               60 ConfigMaps, 20 Services, 20 Deployments
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.cluster_fixtures import Cluster
from tests.harness.controlplane import ControlPlane
from tests.harness.gitrepo import WorkRepo, make_repo

from .common import Api, app_objects, docs, kubectl

APPS = 1000
BIG = 125  # apps in big-500/: 500 objects
HUNDRED_CONFIGMAPS, HUNDRED_SERVICES, HUNDRED_DEPLOYMENTS = 60, 20, 20


def app_dir(i: int) -> str:
    return f"app-{i:04d}"


def hundred_files() -> dict[str, str]:
    """100 objects of the kinds the direct benchmark uses (bench/direct.py)."""
    from .direct import configmap, deployment, service

    cms = [configmap(i) for i in range(HUNDRED_CONFIGMAPS)]
    return {
        "hundred/configmaps.yaml": docs(cms),
        "hundred/services.yaml": docs(service(i) for i in range(HUNDRED_SERVICES)),
        "hundred/deployments.yaml": docs(deployment(i) for i in range(HUNDRED_DEPLOYMENTS)),
    }


def fleet_files() -> dict[str, str]:
    files = {f"{app_dir(i)}/app.yaml": docs(app_objects(app_dir(i))) for i in range(APPS)}
    files |= {f"big-500/app-{i:03d}.yaml": docs(app_objects(f"big-{i:03d}")) for i in range(BIG)}
    return files | hundred_files()


@dataclass
class Bench:
    """What every operator benchmark needs."""

    cp: ControlPlane
    cluster: Cluster
    api: Api
    work: Path
    repo: WorkRepo
    sha: str  # the fleet's commit

    @classmethod
    def make(cls, cp: ControlPlane, work: Path) -> Bench:
        repo = make_repo(work / "git", "fleet")
        sha = repo.commit(fleet_files(), f"{APPS} apps of 4 objects, a 500 and a 100 object sync")
        repo.push()
        return cls(cp, Cluster(cp.kubeconfig, control_plane=cp), Api(cp.kubeconfig), work, repo,
                   sha)  # fmt: skip

    @property
    def kubeconfig(self) -> Path:
        return self.cp.kubeconfig

    @property
    def url(self) -> str:
        return self.repo.bare.file_url

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return kubectl(self.kubeconfig, *args, stdin=stdin)

    def create(self, objs: list[dict[str, Any]]) -> None:
        """`kubectl create` of a List: one process, one POST per object."""
        self.kubectl("create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                            "items": objs}))  # fmt: skip

    def files_of(self, paths: list[str], name: str) -> Path:
        """A copy of these directories of the repository, for kubectl (no .git)."""
        out = self.work / "kubectl" / name
        if out.exists():  # the same N measured again
            return out
        out.mkdir(parents=True)
        for p in paths:
            shutil.copytree(self.repo.path / p, out / p)
        return out
