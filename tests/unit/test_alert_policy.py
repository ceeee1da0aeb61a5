"""What an Alert says about a sync's reports, and when it stays silent: the
dedupe key, one message per event that matters, severities and reasons, the
message text, and commit statuses once per state and commit."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gitferry.alerts.api import Reasons, Severity, SyncSelector, parse_alert
from gitferry.alerts.policy import (
    FLAP_WINDOW,
    MAX_CHANGES,
    SyncMemory,
    chat_notice,
    commit_status,
    dedupe_key,
    normalize,
    status_context,
)
from gitferry.api import SyncKey
from gitferry.errors import InvalidSpec
from gitferry.reports import Phase, SyncReport

SHA1, SHA2, SHA3 = ("1" * 40, "2" * 40, "3" * 40)
KEY = SyncKey("apps", "web")


def report(phase: Phase, revision: str = SHA1, reason: str = "ReconciliationSucceeded",
           message: str = "", changes: tuple[str, ...] = (), **kw: Any) -> SyncReport:  # fmt: skip
    return SyncReport(KEY, "uid-1", "https://github.com/o/r", f"main@sha1:{revision}", phase,
                      reason, message, changes, {"team": "a"}, **kw)  # fmt: skip


def alert_body(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "chat", "namespace": "apps", "uid": "a-1", "generation": 1},
        "spec": {"syncs": [{"name": "*"}], "secretRef": {"name": "chat-url"}, **spec},
    }


SPEC = parse_alert(alert_body()).spec

FAIL = "deploy/bad.yaml: ConfigMap/apps/bad: mapping values are not allowed here (after 812ms)"


# --- the dedupe key -----------------------------------------------------------------
def test_the_same_failure_retried_gives_the_same_key() -> None:
    a = report(Phase.FAILED, reason="ApplyFailed",
               message="2026-01-02T03:04:05Z deploy/a.yaml: timed out after 30s (attempt 3)")  # fmt: skip
    b = dataclasses.replace(
        a, message="2026-01-02T03:09:11.5Z deploy/a.yaml: timed out after 1m2.5s (attempt 7)"
    )
    assert dedupe_key(a) == dedupe_key(b)
    key = " ".join(dedupe_key(a))
    for volatile in ("2026", "30s", "attempt 3"):
        assert volatile not in key


def test_a_different_file_or_reason_is_a_different_failure() -> None:
    a = report(Phase.FAILED, reason="RenderFailed", message="deploy/a.yaml: bad")
    assert dedupe_key(a) != dedupe_key(dataclasses.replace(a, message="deploy/b.yaml: bad"))
    assert dedupe_key(a) != dedupe_key(dataclasses.replace(a, reason="ApplyFailed"))
    # names that merely end in digits and units stay: they are objects, not durations
    assert normalize("ConfigMap/apps/cache-5m in deploy/v2s.yaml") == (
        "ConfigMap/apps/cache-5m in deploy/v2s.yaml"
    )
    assert normalize('conflict: resourceVersion "1234" (x3) 5 retries') == (
        "conflict: resourceVersion=<n> (x<n>) <n> retries"
    )


# --- chat: one message per event that matters ------------------------------------------
def test_applied_failed_retried_recovered_is_three_messages() -> None:
    mem, spec = SyncMemory(), SPEC
    said = []
    said.append(chat_notice(spec, report(Phase.PENDING), mem, 0))
    said.append(chat_notice(spec, report(Phase.SUCCEEDED, changes=("ConfigMap/apps/a created",)),
                            mem, 1))  # fmt: skip
    said.append(chat_notice(spec, report(Phase.SUCCEEDED), mem, 2))  # every interval: silent
    for t in (10, 12, 16, 24):  # the same failure on each retry
        said.append(chat_notice(spec, report(Phase.FAILED, SHA2, "RenderFailed",
                                             FAIL.replace("812ms", f"{t}ms")), mem, t))  # fmt: skip
    said.append(chat_notice(spec, report(Phase.PENDING, SHA3), mem, 250))
    said.append(chat_notice(spec, report(Phase.SUCCEEDED, SHA3, changes=("ConfigMap/apps/a configured",)),
                            mem, 250))  # fmt: skip
    sent = [m for m in said if m is not None]
    assert [m.kind for m in sent] == ["success", "failure", "success"]
    applied, failed, recovered = sent
    assert applied.title == f"apps/web applied main@sha1:{SHA1[:12]}"
    assert "ConfigMap/apps/a created" in applied.body
    assert failed.title == "apps/web failed: RenderFailed"
    assert "deploy/bad.yaml" in failed.body and f"main@sha1:{SHA2}" in failed.body
    assert recovered.title == "apps/web is Ready again after 4m0s"
    assert "Ready again after 4m0s failing (RenderFailed)" in recovered.body
    assert "ConfigMap/apps/a configured" in recovered.body


def test_a_new_failure_in_a_streak_is_said_and_two_taking_turns_once_per_window() -> None:
    mem = SyncMemory()
    a = report(Phase.FAILED, reason="RenderFailed", message="deploy/a.yaml: bad")
    b = report(Phase.FAILED, reason="ApplyFailed", message="ConfigMap/apps/b: forbidden")
    seq = [chat_notice(SPEC, r, mem, t) for t, r in enumerate([a, a, b, a, b])]
    assert [m is not None for m in seq] == [True, False, True, False, False]
    assert chat_notice(SPEC, a, mem, FLAP_WINDOW + 10) is not None


def test_the_same_failure_after_a_recovery_is_said_again() -> None:
    mem = SyncMemory()
    a = report(Phase.FAILED, reason="RenderFailed", message="deploy/a.yaml: bad")
    assert chat_notice(SPEC, a, mem, 0) is not None
    assert chat_notice(SPEC, report(Phase.SUCCEEDED), mem, 5) is not None  # recovered
    assert chat_notice(SPEC, a, mem, 10) is not None


def test_severity_error_says_failures_and_recoveries_only() -> None:
    spec = dataclasses.replace(SPEC, severity=Severity.ERROR)
    mem = SyncMemory()
    assert chat_notice(spec, report(Phase.SUCCEEDED, changes=("x created",)), mem, 0) is None
    assert chat_notice(spec, report(Phase.FAILED, reason="ApplyFailed", message="m"), mem, 1)
    assert chat_notice(spec, report(Phase.SUCCEEDED), mem, 61) is not None


def test_reasons_filter_failures_and_their_recoveries() -> None:
    spec = dataclasses.replace(SPEC, reasons=Reasons(exclude=frozenset({"DependencyNotReady"})))
    mem = SyncMemory()
    assert chat_notice(spec, report(Phase.FAILED, reason="DependencyNotReady"), mem, 0) is None
    assert chat_notice(spec, report(Phase.SUCCEEDED), mem, 1) is None  # nothing recovered
    only = dataclasses.replace(SPEC, reasons=Reasons(include=frozenset({"RenderFailed"})))
    mem = SyncMemory()
    assert chat_notice(only, report(Phase.SUCCEEDED, changes=("x created",)), mem, 0) is None
    assert (
        chat_notice(only, report(Phase.FAILED, reason="ApplyFailed", message="m"), mem, 1) is None
    )
    assert chat_notice(only, report(Phase.FAILED, reason="RenderFailed", message="m"), mem, 2)
    assert chat_notice(only, report(Phase.SUCCEEDED), mem, 3) is not None


def test_a_new_revision_that_changed_nothing_and_a_repeated_drift() -> None:
    mem = SyncMemory()
    assert chat_notice(SPEC, report(Phase.SUCCEEDED), mem, 0) is None  # first sight, no change
    assert chat_notice(SPEC, report(Phase.SUCCEEDED, SHA2), mem, 1) is not None  # new revision
    drift = report(Phase.SUCCEEDED, SHA2, changes=("Deployment/apps/web configured",))
    assert chat_notice(SPEC, drift, mem, 2) is not None
    assert chat_notice(SPEC, drift, mem, 3) is None  # the same drift put back again


def test_a_drift_correction_is_no_commit_s_news() -> None:
    mem = SyncMemory()
    assert chat_notice(SPEC, report(Phase.SUCCEEDED), mem, 0) is None
    drift = report(Phase.SUCCEEDED, changes=("Deployment/apps/web configured",), drift=True)
    message = chat_notice(SPEC, drift, mem, 1)
    assert message is not None
    assert message.title == f"{KEY} corrected drift at main@sha1:{SHA1[:12]}"
    assert "Changed outside git, put back:\n- Deployment/apps/web configured" in message.body
    assert "Commit:" not in message.body


def test_summary_author_subject_and_capped_changes() -> None:
    spec = dataclasses.replace(SPEC, summary="cluster prod-eu")
    changes = tuple(f"ConfigMap/apps/c{i} created" for i in range(MAX_CHANGES + 5))
    msg = chat_notice(spec, report(Phase.SUCCEEDED, changes=changes, author="Ada",
                                   subject="Add config maps"), SyncMemory(), 0)  # fmt: skip
    assert msg is not None
    lines = msg.body.splitlines()
    assert lines[0] == "cluster prod-eu"
    assert "Commit: Add config maps (Ada)" in lines
    assert f"Changed ({MAX_CHANGES + 5}):" in lines
    assert "… and 5 more" in lines and f"- ConfigMap/apps/c{MAX_CHANGES} created" not in lines


# --- commit statuses ----------------------------------------------------------------
def test_commit_statuses_once_per_state_and_commit() -> None:
    mem, ctx = SyncMemory(), status_context("apps", "web")
    seq = [
        report(Phase.PENDING, SHA1, "Progressing"),
        report(Phase.SUCCEEDED, SHA1),
        report(Phase.SUCCEEDED, SHA1),  # every interval
        report(Phase.FAILED, SHA2, "RenderFailed", "deploy/a.yaml: bad"),
        report(Phase.FAILED, SHA2, "RenderFailed", "deploy/a.yaml: bad"),  # retried
        report(Phase.FAILED, SHA2, "GitFetchFailed", "unreachable"),  # not the commit's fault
        report(Phase.PENDING, SHA3, "Progressing"),
        report(Phase.SUCCEEDED, SHA3),
    ]
    posted = [p for r in seq if (p := commit_status(r, mem, ctx))]
    assert [(sha, s.state) for sha, s in posted] == [
        (SHA1, "pending"), (SHA1, "success"), (SHA2, "failure"), (SHA3, "pending"),
        (SHA3, "success"),
    ]  # fmt: skip
    assert {s.context for _, s in posted} == {"gitferry/apps/web"}
    assert posted[2][1].description == "RenderFailed: deploy/a.yaml: bad"
    assert commit_status(dataclasses.replace(seq[0], revision=""), SyncMemory(), ctx) is None


def test_the_status_key_names_the_cluster_when_set() -> None:
    assert status_context("apps", "web", "prod-eu") == "gitferry/prod-eu/apps/web"


# --- the resource -------------------------------------------------------------------
def test_parse_an_alert() -> None:
    alert = parse_alert(alert_body(
        syncs=[{"name": "web"}, {"selector": {"matchLabels": {"team": "a"},
               "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}}],
        severity="error", reasons={"exclude": ["DependencyNotReady"]}, summary="prod",
        serviceAccountName="notifier",
    ))  # fmt: skip
    spec = alert.spec
    assert (spec.type, spec.secret_ref, spec.severity, spec.summary) == ("apprise", "chat-url",
                                                                       Severity.ERROR, "prod")  # fmt: skip
    assert spec.service_account_name == "notifier" and spec.forge is None
    assert spec.wants("web", {}) and spec.wants("api", {"team": "a"})
    assert not spec.wants("api", {"team": "a", "tier": "x"}) and not spec.wants("api", {})
    forge = parse_alert(alert_body(type="gitlab", address="https://gitlab.example.com/api/v4"))
    assert forge.spec.forge is not None and forge.spec.forge.value == "gitlab"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "teams"}, "spec.type"),
        ({"secretRef": {}}, "spec.secretRef.name"),
        ({"syncs": []}, "spec.syncs"),
        ({"syncs": [{}]}, "spec.syncs[0]"),
        ({"syncs": [{"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]},
         "spec.syncs[0].selector.matchExpressions[0].values"),
        ({"severity": "warn"}, "spec.severity"),
        ({"address": "ftp://x"}, "spec.address"),
    ],
)  # fmt: skip
def test_a_bad_alert_names_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec, match=field.replace("[", r"\[").replace(".", r"\.")):
        parse_alert(alert_body(**spec))


def test_selector_entries() -> None:
    assert SyncSelector().matches("any", {})
    assert not SyncSelector(name="web").matches("api", {})
    assert SyncSelector(match_labels=(("a", "1"),)).matches("x", {"a": "1", "b": "2"})
