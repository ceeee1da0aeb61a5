"""Operator-wide settings, read once from the environment at start."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .metrics import parse_addr
from .render import Limits
from .render.limits import MiB

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    word = value.strip().lower()
    if word not in _TRUE | _FALSE:
        raise SettingsError(f"{name}={value!r}: not one of true, false, 1, 0, yes, no, on, off")
    return word in _TRUE


class SettingsError(ValueError):
    """An operator setting is malformed or out of range; the message names the variable."""


def _float(name: str, default: float, minimum: float = 0.0) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r}: not a number") from None
    if not number >= minimum or number == float("inf"):
        raise SettingsError(f"{name}={value!r}: must be a finite number >= {minimum:g}")
    return number


def _int(name: str, default: int, minimum: int = 1) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r}: not an integer") from None
    if number < minimum:
        raise SettingsError(f"{name}={value!r}: must be at least {minimum}")
    return number


def _addr(name: str, default: str) -> tuple[str, int] | None:
    """HOST:PORT; `off` turns the listener off."""
    value = os.environ.get(name) or default
    if value.strip().lower() == "off":
        return None
    try:
        return parse_addr(value)
    except ValueError as e:
        raise SettingsError(f"{name}={value!r}: {e}, or off") from None


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _secret_ref(name: str) -> tuple[str, str] | None:
    """`<namespace>/<name>` of a Secret, or None when unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    namespace, sep, secret = value.partition("/")
    if not sep or not _DNS_LABEL.match(namespace) or not _DNS_SUBDOMAIN.match(secret):
        raise SettingsError(f"{name}={value!r}: not <namespace>/<name> of a Secret")
    return namespace, secret


def _cluster_name() -> str | None:
    """GITFERRY_CLUSTER_NAME: a DNS label, as it becomes part of a status key."""
    value = (os.environ.get("GITFERRY_CLUSTER_NAME") or "").strip()
    if value and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?", value):
        raise SettingsError(
            f"GITFERRY_CLUSTER_NAME={value!r}: lowercase letters, digits, '-' and '.', "
            "at most 63, starting and ending with a letter or digit"
        )
    return value or None


@dataclass(frozen=True)
class Settings:
    cache_dir: Path
    # file:// lets one tenant read another's files on the operator's disk.
    allow_file_urls: bool = False
    # Applied as this ServiceAccount (in the sync's namespace) when a sync names none:
    # lets a multi-tenant cluster deny syncs the operator's own rights.
    default_service_account: str | None = None
    max_concurrent_reconciles: int = 4
    # Renders at once: rendering is CPU under the GIL (more gain nothing) and its
    # memory grows with the bytes read, so this bounds the operator's peak.
    max_concurrent_renders: int = 2
    apply_concurrency: int = 8
    # Each interval is moved by up to ± this fraction (Flux: ±10 %) so that syncs
    # created together do not all hit the git server in the same second.
    interval_jitter: float = 0.1
    # Untrusted-content bounds for rendering (limits.py) and for fetching.
    limits: Limits = field(default_factory=Limits)
    fetch_timeout: float = 60.0
    max_repo_bytes: int = 500 * MiB
    # Half the cache volume's 2Gi sizeLimit (manifests/deployment.yaml): a mirror
    # and a tree of one repository at max_repo_bytes each still fit, and the
    # kubelet never evicts the pod for its emptyDir.
    max_cache_bytes: int = 1024 * MiB
    max_concurrent_fetches: int = 4
    max_fetches_per_host: int = 2
    git_failure_ttl: float = 30.0
    # Multi-tenant clusters: spec.dependsOn may not name a sync of another
    # namespace (Flux's --no-cross-namespace-refs).
    no_cross_namespace_refs: bool = False
    # Seconds between two health checks of a waiting sync (Flux polls every 2 s).
    health_poll_interval: float = 2.0
    # healthCheckExprs run in worker processes (health/sandbox.py): seconds one
    # evaluation may take, the address space of a worker, and how many run at once.
    cel_timeout: float = 2.0
    cel_memory_bytes: int = 256 * MiB
    cel_workers: int = 2
    # Seconds between two looks at a dependency that is not ready (Flux's
    # --requeue-dependency); a dependency that becomes Ready wakes it at once.
    dependency_requeue: float = 30.0
    # Where /metrics and /readyz listen (GITFERRY_METRICS_ADDR, 0.0.0.0:8081 in the
    # operator); None: nowhere, as for a Runtime that a test or the benchmark drives.
    metrics_addr: tuple[str, int] | None = None
    # spec.postBuild: a ${var} with no value and no default fails the reconcile
    # (Flux's StrictPostBuildSubstitutions, on by default since
    # kustomize-controller v1.9); off, it becomes "".
    strict_substitutions: bool = True
    # Alerts: the cluster's name in commit-status keys (gitferry/<cluster>/<ns>/<name>),
    # so that two clusters syncing one repository report side by side.
    cluster_name: str | None = None
    # Alerts: tries per notification or commit status, seconds per try (the
    # backoff between tries doubles from 2 s, at most 60 s), and how many wait
    # per Alert before the oldest is dropped.
    notify_attempts: int = 5
    notify_timeout: float = 15.0
    notify_queue_size: int = 100
    # Watch what gitferry applied (drift in seconds, no-op reconciles for free).
    drift_watches: bool = True
    # Seconds between two full verifications (a dry-run of every object) of a sync
    # that the watches say is unchanged: the safety net.
    full_verify_interval: float = 3600.0
    # Seconds over which an operator start spreads the first reconciles of syncs
    # that were already Ready (no thundering herd after a restart).
    startup_spread: float = 60.0
    # Test hook: exit hard between apply and prune (proves the inventory is crash-safe).
    crash_before_prune: bool = False
    # Push webhooks (receiver.py): the Secret (namespace, name) holding the forges'
    # secrets — no receiver without it —, where it listens, the largest body it reads.
    webhook_secret: tuple[str, str] | None = None
    webhook_addr: tuple[str, int] = ("0.0.0.0", 9292)
    webhook_max_body_bytes: int = 1 * MiB

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from GITFERRY_* variables; SettingsError names a bad one."""
        cache = os.environ.get("GITFERRY_CACHE_DIR") or str(
            Path(tempfile.gettempdir()) / "gitferry-cache"
        )
        return cls(
            cache_dir=Path(cache),
            allow_file_urls=_bool("GITFERRY_ALLOW_FILE_URLS", False),
            default_service_account=os.environ.get("GITFERRY_DEFAULT_SERVICE_ACCOUNT") or None,
            max_concurrent_reconciles=_int("GITFERRY_MAX_CONCURRENT_RECONCILES", 4),
            max_concurrent_renders=_int("GITFERRY_MAX_CONCURRENT_RENDERS", 2),
            apply_concurrency=_int("GITFERRY_APPLY_CONCURRENCY", 8),
            interval_jitter=_float("GITFERRY_INTERVAL_JITTER", 0.1, 0.0),
            drift_watches=_bool("GITFERRY_DRIFT_WATCHES", True),
            full_verify_interval=_float("GITFERRY_FULL_VERIFY_INTERVAL", 3600.0, 1.0),
            startup_spread=_float("GITFERRY_STARTUP_SPREAD", 60.0, 0.0),
            crash_before_prune=_bool("GITFERRY_TEST_CRASH_BEFORE_PRUNE", False),
            limits=Limits(
                max_file_bytes=_int("GITFERRY_MAX_FILE_BYTES", Limits.max_file_bytes),
                max_total_bytes=_int("GITFERRY_MAX_TOTAL_BYTES", Limits.max_total_bytes),
                max_objects=_int("GITFERRY_MAX_OBJECTS", Limits.max_objects),
                max_depth=_int("GITFERRY_MAX_DEPTH", Limits.max_depth),
            ),
            fetch_timeout=_float("GITFERRY_FETCH_TIMEOUT", 60.0, 1.0),
            max_repo_bytes=_int("GITFERRY_MAX_REPO_BYTES", 500 * MiB),
            max_cache_bytes=_int("GITFERRY_MAX_CACHE_BYTES", 1024 * MiB),
            max_concurrent_fetches=_int("GITFERRY_MAX_CONCURRENT_FETCHES", 4),
            max_fetches_per_host=_int("GITFERRY_MAX_FETCHES_PER_HOST", 2),
            git_failure_ttl=_float("GITFERRY_GIT_FAILURE_TTL", 30.0, 0.0),
            no_cross_namespace_refs=_bool("GITFERRY_NO_CROSS_NAMESPACE_REFS", False),
            health_poll_interval=_float("GITFERRY_HEALTH_POLL_INTERVAL", 2.0, 0.1),
            dependency_requeue=_float("GITFERRY_DEPENDENCY_REQUEUE", 30.0, 1.0),
            cel_timeout=_float("GITFERRY_CEL_TIMEOUT", 2.0, 0.1),
            # The worker itself (Python and the CEL runtime) takes about 40 MiB.
            cel_memory_bytes=_int("GITFERRY_CEL_MEMORY_BYTES", 256 * MiB, 128 * MiB),
            cel_workers=_int("GITFERRY_CEL_WORKERS", 2),
            metrics_addr=_addr("GITFERRY_METRICS_ADDR", "0.0.0.0:8081"),
            strict_substitutions=_bool("GITFERRY_STRICT_SUBSTITUTIONS", True),
            webhook_secret=_secret_ref("GITFERRY_WEBHOOK_SECRET"),
            webhook_addr=_addr("GITFERRY_WEBHOOK_ADDR", "0.0.0.0:9292") or ("0.0.0.0", 9292),
            webhook_max_body_bytes=_int("GITFERRY_WEBHOOK_MAX_BODY_BYTES", 1 * MiB, 1024),
            cluster_name=_cluster_name(),
            notify_attempts=_int("GITFERRY_NOTIFY_ATTEMPTS", 5),
            notify_timeout=_float("GITFERRY_NOTIFY_TIMEOUT", 15.0, 1.0),
            notify_queue_size=_int("GITFERRY_NOTIFY_QUEUE_SIZE", 100),
        )
