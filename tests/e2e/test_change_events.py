"""Who changed what: push a commit → the sync's Event names each object it changed,
Flux style, with the commit's subject and author; and an operator started with
GIT_* and SSH_* variables in its environment removes them, so that no git it
starts (its own runner's or GitPython's) sees them, and still syncs."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.cluster_fixtures import Operator
from tests.harness.git_fixtures import RepoFactory
from tests.harness.gitrepo import WorkRepo
from tests.harness.manifests import config_map, deployment
from tests.harness.syncs import create_sync, events_for, wait_condition, wait_event

pytestmark = pytest.mark.e2e

ADA = "Ada Lovelace <ada@analytical-engine.invalid>"


def web(replicas: int) -> str:
    obj = json.loads(deployment("web"))
    obj["spec"]["replicas"] = replicas
    return json.dumps(obj)


def push_as_ada(repo: WorkRepo, files: dict[str, str | bytes | None], message: str) -> str:
    repo.commit(files, message)
    repo.git("commit", "-q", "--amend", "--no-edit", f"--author={ADA}")
    repo.push()
    return repo.head()


def test_a_pushed_commit_is_named_with_its_subject_author_and_objects(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("app")
    first = repo.commit({"deploy/web.yaml": web(1)}, "Add web")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, path="deploy")
    wait_condition(cluster, "web", namespace, revision_sha=first)

    # Push a commit that changes the Deployment and adds a ConfigMap.
    sha = push_as_ada(
        repo,
        {"deploy/web.yaml": web(3), "deploy/x.yaml": config_map("x")},
        "Scale web to 3\n\nAnd give it its settings.",
    )
    wait_condition(cluster, "web", namespace, revision_sha=sha)
    assert cluster.get("deployment", "web", namespace)["spec"]["replicas"] == 3  # type: ignore[index]
    head = f'main@sha1:{sha}: "Scale web to 3" by Ada Lovelace'
    event = wait_event(cluster, "web", namespace, "^" + re.escape(head), "Normal")
    assert event["reason"] == "ReconciliationSucceeded"
    assert event["message"].splitlines() == [
        head,
        f"ConfigMap/{namespace}/x created",  # apply order: ConfigMaps before Deployments
        f"Deployment/{namespace}/web configured",
        "created 1, configured 1",
    ]
    # The author's name, never the address: Events are for whoever may list them.
    assert "analytical-engine" not in json.dumps(events_for(cluster, "web", namespace))
    assert "analytical-engine" not in operator.log()
    # The log line of the revision says which paths changed.
    assert re.search(rf"revision=main@sha1:{sha} action=history paths=2\b", operator.log())


def git_shim(directory: Path, seen: Path) -> Path:
    """A `git` first on PATH that writes, per run, its arguments and the environment
    it was given, then runs the real git."""
    real = shutil.which("git")
    assert real is not None
    directory.mkdir()
    seen.mkdir()
    shim = directory / "git"
    shim.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" > "{seen}/$$.args"\n'
        f'env > "{seen}/$$.env"\n'
        f'exec {real} "$@"\n'
    )
    shim.chmod(0o755)
    return directory


def runs(seen: Path) -> list[tuple[str, dict[str, str]]]:
    """(arguments, environment) of every git the shim saw."""
    out = []
    for args in sorted(seen.glob("*.args")):
        lines = args.with_suffix(".env").read_text().splitlines()
        env = dict(line.partition("=")[::2] for line in lines if "=" in line)
        out.append((args.read_text().strip(), env))
    return out


def test_git_and_ssh_variables_reach_no_git_and_the_sync_still_works(
    operator_factory: Callable[..., Operator],
    namespace: str,
    repo_factory: RepoFactory,
    tmp_path: Path,
) -> None:
    token = secrets.token_urlsafe(24)
    inherited = {
        "GIT_DIR": "/nonexistent",
        "GIT_OBJECT_DIRECTORY": "/nonexistent",
        "GIT_COMMON_DIR": "/nonexistent",
        "GIT_CONFIG_PARAMETERS": f"'http.extraheader=Authorization: Bearer {token}'",
        "GIT_SSH_COMMAND": "ssh -o StrictHostKeyChecking=no",
        "GIT_TRACE": str(tmp_path / "trace"),  # git would write every command here
        "SSH_AUTH_SOCK": str(tmp_path / "agent.sock"),
    }
    seen = tmp_path / "seen"
    shim = git_shim(tmp_path / "shim", seen)
    operator = operator_factory(namespace, PATH=f"{shim}:{os.environ['PATH']}", **inherited)
    cluster = operator.cluster
    removed = ",".join(sorted(inherited))
    assert f"action=clean-environment removed={removed}" in operator.log()

    repo = repo_factory("app")
    first = repo.commit({"deploy/a.yaml": config_map("a")}, "first")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, path="deploy")
    wait_condition(cluster, "web", namespace, revision_sha=first)
    sha = push_as_ada(repo, {"deploy/b.yaml": config_map("b")}, "Add b")
    wait_condition(cluster, "web", namespace, revision_sha=sha)
    # GitPython read the commit from the mirror although GIT_DIR and friends said otherwise.
    wait_event(cluster, "web", namespace, re.escape(f'{sha}: "Add b" by Ada Lovelace'), "Normal")

    gits = runs(seen)
    commands = [args for args, _ in gits]
    assert any(a.startswith("cat-file --batch") for a in commands), commands  # GitPython's
    assert any(" fetch " in f" {a} " for a in commands), commands  # the runner's
    for args, env in gits:
        kept = {name for name, value in inherited.items() if env.get(name) == value}
        assert not kept, f"git {args} inherited {kept}"
        if args.startswith("cat-file"):  # GitPython's, told which repository to read
            assert env["GIT_DIR"].startswith(str(operator.workdir / "cache"))
            assert env["GIT_CONFIG_PARAMETERS"] == ""
    assert not (tmp_path / "trace").exists()
    # Names are logged, values never: not the token, nor the agent's socket.
    log = operator.log()
    assert token not in log and inherited["SSH_AUTH_SOCK"] not in log
    assert token not in json.dumps(events_for(cluster, "web", namespace))
