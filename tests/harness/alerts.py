"""Helpers for Alerts in the end-to-end tests: create one, wait for its Ready
condition, and look everywhere a credential must never show."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.harness.cluster_fixtures import Cluster, Operator, wait_for


def create_alert(cluster: Cluster, name: str, namespace: str, **spec: Any) -> None:
    # The install may have just added the CRD: the API serves it once Established.
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/alerts.gitferry.dev"
    )
    cluster.apply(
        {
            "apiVersion": "gitferry.dev/v1alpha1",
            "kind": "Alert",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def ready_of(alert: dict[str, Any] | None) -> dict[str, Any]:
    for c in ((alert or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c  # type: ignore[no-any-return]
    return {}


def wait_alert(
    cluster: Cluster,
    name: str,
    namespace: str,
    status: str = "True",
    reason: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """The Alert once its Ready condition says `status` (and `reason`) for its generation."""

    def check() -> dict[str, Any] | None:
        alert = cluster.get("alert.gitferry.dev", name, namespace)
        ready = ready_of(alert)
        if not alert or ready.get("status") != status:
            return None
        if reason and ready.get("reason") != reason:
            return None
        if alert["status"].get("observedGeneration") != alert["metadata"]["generation"]:
            return None
        return alert

    try:
        return wait_for(f"Ready={status} {reason or ''} on alert/{name}", check, timeout)  # type: ignore[no-any-return]
    except AssertionError as e:
        alert = cluster.get("alert.gitferry.dev", name, namespace)
        raise AssertionError(f"{e}\nstatus: {json.dumps((alert or {}).get('status'))}") from None


def places_a_secret_could_leak(op: Operator, namespace: str) -> dict[str, str]:
    """Everything the operator wrote that a person or a scraper reads: its log, the
    namespace's Events, the status of every Alert and sync there, its command line."""
    cluster = op.cluster
    assert op.proc is not None
    cmdline = Path(f"/proc/{op.proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return {
        "operator log": op.log(),
        "events": cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout,
        "alerts": cluster.kubectl(
            "get", "alert.gitferry.dev", "-n", namespace, "-o", "json"
        ).stdout,
        "syncs": cluster.kubectl("get", "grs", "-n", namespace, "-o", "json").stdout,
        "operator command line": cmdline,
    }


def assert_nowhere(op: Operator, namespace: str, *secrets: str) -> None:
    for where, text in places_a_secret_could_leak(op, namespace).items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into the {where}"
