"""The operator removes GIT_* and SSH_* from its own environment at start, so that
no git it starts (GitPython's copies the operator's environment) inherits them;
it logs the names it removed, never a value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gitferry.__main__ import clean_environment

REPO = Path(__file__).parents[2]
INHERITED = {
    "GIT_DIR": "/nonexistent",
    "GIT_SSH_COMMAND": "ssh -o StrictHostKeyChecking=no",
    "GIT_SSL_NO_VERIFY": "true",
    "GIT_CONFIG_PARAMETERS": "'http.extraheader=Authorization: Bearer s3cr3t-token'",
    "GIT_PYTHON_GIT_EXECUTABLE": "/opt/other/git",
    "GIT_PYTHON_TRACE": "full",
    "SSH_AUTH_SOCK": "/run/user/1000/agent.sock",
}


def test_git_and_ssh_variables_go_and_everything_else_stays() -> None:
    env = {
        **INHERITED,
        "GIT_PYTHON_REFRESH": "quiet",
        "GITFERRY_CACHE_DIR": "/var/cache/gitferry",
        "PATH": "/usr/bin",
        "HOME": "/home/op",
        "MY_GIT_DIR": "kept: not a GIT_ name",
    }
    removed = clean_environment(env)
    assert removed == sorted(INHERITED)
    assert env == {
        "GIT_PYTHON_REFRESH": "quiet",  # git never reads it
        "GITFERRY_CACHE_DIR": "/var/cache/gitferry",
        "PATH": "/usr/bin",
        "HOME": "/home/op",
        "MY_GIT_DIR": "kept: not a GIT_ name",
    }
    assert clean_environment(env) == []


def test_a_child_started_after_the_cleaning_sees_none_of_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in INHERITED.items():
        monkeypatch.setenv(name, value)
    clean_environment(os.environ)
    seen = subprocess.run(["env"], capture_output=True, text=True, check=True, timeout=30).stdout
    names = {line.partition("=")[0] for line in seen.splitlines()}
    assert not names & INHERITED.keys()


def test_the_operator_logs_the_names_it_removed_never_the_values() -> None:
    # A bad setting stops the start right after the cleaning: no cluster needed.
    proc = subprocess.run(
        [sys.executable, "-m", "gitferry", "run"],
        env={**INHERITED, "GITFERRY_MAX_CONCURRENT_RECONCILES": "0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert f"action=clean-environment removed={','.join(sorted(INHERITED))}" in proc.stderr
    for value in INHERITED.values():
        assert value not in proc.stderr
