"""Operator-wide policy: retries back off, settings are checked at start, and
every identity shares one connection pool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client as k8s

from gitferry.api import SyncKey
from gitferry.context import Context
from gitferry.kube import Kube
from gitferry.settings import Settings, SettingsError

KEY = SyncKey("apps", "web")


def context(tmp_path: Path) -> Context:
    return Context(
        kube=None,  # type: ignore[arg-type]
        discovery=None,  # type: ignore[arg-type]
        source=None,  # type: ignore[arg-type]
        settings=Settings(cache_dir=tmp_path),
        status=None,  # type: ignore[arg-type]
        events=None,  # type: ignore[arg-type]
    )


def test_failures_in_a_row_back_off_exponentially_up_to_a_cap(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    waits = [ctx.retry_after(KEY, retry=30, interval=3600) for _ in range(7)]
    assert waits == [30, 60, 120, 240, 480, 600, 600]  # capped at 10 minutes
    ctx.succeeded(KEY)
    assert ctx.retry_after(KEY, retry=30, interval=3600) == 30  # a success resets it


def test_the_backoff_never_waits_past_the_interval_nor_below_the_retry(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    assert [ctx.retry_after(KEY, retry=20, interval=60) for _ in range(4)] == [20, 40, 60, 60]
    other = SyncKey("apps", "slow")
    assert [ctx.retry_after(other, retry=900, interval=60) for _ in range(2)] == [900, 900]


def test_a_forgotten_sync_leaves_no_lock_or_state_behind(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    with ctx.sync_lock(KEY):
        pass
    ctx.retry_after(KEY, 30, 60)
    ctx.forget(KEY)
    assert KEY not in ctx._sync_locks and KEY not in ctx._failures


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("GITFERRY_MAX_CONCURRENT_RECONCILES", "0", "must be at least 1"),
        ("GITFERRY_APPLY_CONCURRENCY", "many", "not an integer"),
        ("GITFERRY_FETCH_TIMEOUT", "0.5", "must be a finite number >= 1"),
        ("GITFERRY_INTERVAL_JITTER", "inf", "finite"),
        ("GITFERRY_MAX_FILE_BYTES", "-1", "must be at least 1"),
        ("GITFERRY_ALLOW_FILE_URLS", "ture", "not one of true, false"),
        ("GITFERRY_CEL_TIMEOUT", "0", "must be a finite number >= 0.1"),
        ("GITFERRY_CEL_MEMORY_BYTES", "1000000", "must be at least 134217728"),
        ("GITFERRY_CEL_WORKERS", "0", "must be at least 1"),
    ],
)
def test_a_bad_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"^{name}={value!r}: .*{words}"):
        Settings.from_env()


def test_the_operator_refuses_to_start_with_a_bad_setting_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gitferry", "run"],
        env={"GITFERRY_MAX_CONCURRENT_RECONCILES": "0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "gitferry: invalid setting: GITFERRY_MAX_CONCURRENT_RECONCILES='0': must be at least 1"
    )


def test_every_identity_shares_one_connection_pool() -> None:
    cfg = k8s.Configuration()
    cfg.host = "https://127.0.0.1:1"
    operator = Kube(cfg)
    tenants = [operator.as_user(f"system:serviceaccount:t{i}:deployer") for i in range(50)]
    assert {id(t._api) for t in tenants} == {id(operator._api)}
    assert tenants[0].impersonate == "system:serviceaccount:t0:deployer"
    assert operator.as_user(None) is operator
    operator.close()
