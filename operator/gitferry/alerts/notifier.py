"""The Alerts of the cluster, subscribed to SyncReports.

`Notifier.report` is a `reports.Reporter`: called on a reconcile's thread, it
matches the report against the Alerts of the sync's namespace, asks the policy
what to say, and enqueues; it never does I/O. Each Alert has an outbox
(notify.delivery) whose worker reads the Alert's Secret at delivery time, as
the Alert's ServiceAccount (impersonated; else GITFERRY_DEFAULT_SERVICE_ACCOUNT;
else the operator), so a tenant cannot have the operator send a Secret it may
not read itself, and sends through Apprise or the forge's REST API.

A delivery that fails after its retries turns the Alert's Ready condition False
with reason DeliveryFailed and a message that names the target by position and
service, never by URL or token; the next delivery that succeeds turns it True.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..api import Condition, SyncKey, now
from ..constants import READY, Reason
from ..deadline import Deadline, DeadlineExceeded
from ..errors import InvalidSpec
from ..kube import MERGE_PATCH, Kube, KubeError
from ..metrics import Metrics
from ..notify import chat, forges
from ..notify.delivery import Outbox, Policy, Result
from ..notify.errors import NotifyError
from ..reports import SyncReport
from ..status import merge_conditions
from . import policy
from .api import CHAT, Alert, AlertKey, AlertStatus, alert_path, key_of, parse_alert

log = logging.getLogger("gitferry.alerts")

MAX_SYNCS_REMEMBERED = 10_000  # per Alert: the memory of syncs long gone is dropped


@dataclass
class Item:
    """One delivery: a chat message or a commit status about one sync."""

    alert: AlertKey
    sync: SyncKey
    git_url: str
    message: chat.Message | None = None
    status: tuple[str, forges.Status] | None = None  # (sha, status)
    sync_uid: str = ""
    # Chat targets (digests of their URLs) already reached: a retry sends only
    # to those that failed.
    reached: set[str] = field(default_factory=set)

    @property
    def what(self) -> str:
        if self.status is not None:
            sha, st = self.status
            return f"commit status {st.state} on {sha[:12]}"
        return "notification"


@dataclass
class Entry:
    alert: Alert
    outbox: Outbox[Item]
    status: AlertStatus = field(default_factory=AlertStatus)
    memory: OrderedDict[str, policy.SyncMemory] = field(default_factory=OrderedDict)


@dataclass(frozen=True)
class NotifySettings:
    policy: Policy = field(default_factory=Policy)
    default_service_account: str | None = None
    cluster_name: str | None = None


def _digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


class Notifier:
    def __init__(self, kube: Kube, settings: NotifySettings, metrics: Metrics) -> None:
        self.kube = kube
        self.settings = settings
        self.metrics = metrics
        self._alerts: dict[AlertKey, Entry] = {}
        self._lock = threading.Lock()
        self._status_lock = threading.Lock()
        self._closed = False

    # --- the index (Kopf's handlers call these, off the event loop) ---------------
    def upsert(self, body: dict[str, Any]) -> None:
        """An Alert was created or changed (or seen at start)."""
        key = key_of(body)
        try:
            alert = parse_alert(body)
        except InvalidSpec as e:
            self.remove(key)
            log.warning("alert=%s action=parse error=%s", key, e.message)
            self._write(key, AlertStatus.from_dict(body.get("status")),
                        _ready("False", Reason.INVALID_SPEC, e.message), _generation(body))  # fmt: skip
            return
        with self._lock:
            if self._closed:
                return
            entry = self._alerts.get(key)
            if entry is not None and entry.alert.uid != alert.uid:
                entry.outbox.close()  # deleted and created again: a new Alert
                entry = None
            if entry is not None and entry.alert.spec.type != alert.spec.type:
                entry.outbox.close()  # what is queued was meant for the old type
                entry = dataclasses.replace(entry, outbox=self._outbox(key), memory=OrderedDict())
            if entry is None:
                entry = Entry(alert, self._outbox(key),
                              AlertStatus.from_dict(body.get("status")))  # fmt: skip
            entry.alert = alert
            self._alerts[key] = entry
            current = entry.status
        ready = current.ready
        if alert.spec.suspend:
            cond = _ready(
                "False", Reason.SUSPENDED, "suspended: nothing is sent until spec.suspend is false"
            )
        elif (ready is not None and ready.reason == Reason.DELIVERY_FAILED
              and current.observed_generation == alert.generation):  # fmt: skip
            return  # unchanged spec: the failure stands until a delivery succeeds
        else:
            cond = _ready("True", Reason.ALERT_READY, _ready_message(alert))
            # A delivery may fail between the look above and this write: the
            # failure stands (decided again under the status lock).
            self._write(key, current, cond, alert.generation, keep_failure=True)
            return
        self._write(key, current, cond, alert.generation)

    def remove(self, key: AlertKey) -> None:
        with self._lock:
            entry = self._alerts.pop(key, None)
        if entry is not None:
            entry.outbox.close()
            log.info("alert=%s action=forget", key)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            entries = list(self._alerts.values())
            self._alerts.clear()
        for entry in entries:
            entry.outbox.close()

    def idle(self, timeout: float) -> bool:
        """Every outbox empty (tests and the benchmark); False when `timeout` ran out."""
        end = time.monotonic() + timeout
        with self._lock:
            outboxes = [e.outbox for e in self._alerts.values()]
        return all(o.idle(max(0.0, end - time.monotonic())) for o in outboxes)

    # --- the subscriber ----------------------------------------------------------
    def report(self, report: SyncReport) -> None:
        """A reports.Reporter: decide and enqueue, nothing else."""
        at = time.monotonic()
        queued: list[tuple[Outbox[Item], Item]] = []
        with self._lock:
            for key, entry in self._alerts.items():
                spec = entry.alert.spec
                if key.namespace != report.key.namespace or spec.suspend:
                    continue
                if not spec.wants(report.key.name, report.labels):
                    continue
                memory = self._memory(entry, report.uid)
                item = Item(key, report.key, report.url, sync_uid=report.uid)
                if spec.type == CHAT:
                    item.message = policy.chat_notice(spec, report, memory, at)
                else:
                    context = policy.status_context(report.key.namespace, report.key.name,
                                                    self.settings.cluster_name)  # fmt: skip
                    item.status = policy.commit_status(report, memory, context)
                if item.message is not None or item.status is not None:
                    queued.append((entry.outbox, item))
        for outbox, item in queued:
            log.info("alert=%s sync=%s action=enqueue what=%r", item.alert, item.sync, item.what)
            outbox.put(item)

    def _memory(self, entry: Entry, uid: str) -> policy.SyncMemory:
        memory = entry.memory.get(uid)
        if memory is None:
            memory = entry.memory[uid] = policy.SyncMemory()
            while len(entry.memory) > MAX_SYNCS_REMEMBERED:
                entry.memory.popitem(last=False)
        else:
            entry.memory.move_to_end(uid)
        return memory

    # --- the worker side -----------------------------------------------------------
    def _outbox(self, key: AlertKey) -> Outbox[Item]:
        return Outbox(str(key), self._send, self.settings.policy, self._on_result)

    def _send(self, item: Item) -> None:
        with self._lock:
            entry = self._alerts.get(item.alert)
        if entry is None:
            raise NotifyError("the Alert is gone", retryable=False)
        alert = entry.alert
        data = self._secret(alert)
        spec = alert.spec
        if item.message is not None:
            urls = chat.split_urls(data.get("url", ""))
            if not urls:
                raise NotifyError(f"Secret {spec.secret_ref}: no Apprise URL in its key `url`",
                                  retryable=False)  # fmt: skip
            failed: list[NotifyError] = []
            for i, url in enumerate(urls, 1):
                if _digest(url) in item.reached:
                    continue
                try:
                    chat.send(url, item.message, label=f"target {i} of {len(urls)}")
                    item.reached.add(_digest(url))
                except NotifyError as e:
                    failed.append(e)
            if failed:
                raise NotifyError("; ".join(e.message for e in failed),
                                  retryable=any(e.retryable for e in failed))  # fmt: skip
        elif item.status is not None and spec.forge is not None:
            sha, status = item.status
            repo = forges.repo_for(spec.forge, item.git_url, spec.address, spec.repository)
            forges.post(repo, sha, status, data.get("token", "").strip(),
                        timeout=max(1.0, self.settings.policy.timeout - 2.0),
                        ca_pem=data.get("ca.crt") or None)  # fmt: skip

    def _secret(self, alert: Alert) -> dict[str, str]:
        """The Alert's Secret, read now as the Alert's identity."""
        ns, name = alert.key.namespace, alert.spec.secret_ref
        sa = alert.spec.service_account_name or self.settings.default_service_account
        client = self.kube.as_user(f"system:serviceaccount:{ns}:{sa}" if sa else None)
        try:
            secret = client.request("GET", f"/api/v1/namespaces/{ns}/secrets/{name}",
                                    deadline=Deadline.after(min(10.0, self.settings.policy.timeout)))  # fmt: skip
        except KubeError as e:
            raise NotifyError(f"Secret {ns}/{name}: {e.message}",
                              retryable=e.status not in (403, 404)) from None  # fmt: skip
        except DeadlineExceeded:
            raise NotifyError(f"Secret {ns}/{name}: the API server did not answer") from None
        return {
            k: base64.b64decode(v).decode("utf-8", "replace")
            for k, v in (secret.get("data") or {}).items()
        }

    def _on_result(self, result: Result[Item]) -> None:
        item = result.item
        if item.status is not None:
            self.metrics.commit_status(result.outcome)
        else:
            self.metrics.notification(result.outcome)
        if result.outcome == "dropped":
            return
        with self._lock:
            entry = self._alerts.get(item.alert)
            if entry is None:
                return
            if result.outcome == "failed" and item.status is not None:
                memory = entry.memory.get(item.sync_uid)
                if memory is not None and memory.posted == (item.status[0], item.status[1].state):
                    memory.posted = None  # not posted after all: the next report tries again
            current, generation = entry.status, entry.alert.generation
        if result.outcome == "delivered":
            log.info("alert=%s sync=%s action=delivered what=%r attempts=%d", item.alert,
                     item.sync, item.what, result.attempts)  # fmt: skip
            ready = current.ready
            if ready is not None and ready.reason == Reason.DELIVERY_FAILED:
                self._write(item.alert, current,
                            _ready("True", Reason.ALERT_READY, _ready_message(entry.alert)),
                            generation)  # fmt: skip
            return
        log.warning("alert=%s sync=%s action=delivery-failed what=%r attempts=%d error=%s",
                    item.alert, item.sync, item.what, result.attempts, result.error)  # fmt: skip
        message = (f"a {item.what} about sync {item.sync} could not be delivered after "
                   f"{result.attempts} attempt(s): {result.error}")  # fmt: skip
        self._write(
            item.alert, current, _ready("False", Reason.DELIVERY_FAILED, message), generation
        )

    def _write(
        self,
        key: AlertKey,
        old: AlertStatus,
        cond: Condition,
        generation: int,
        keep_failure: bool = False,
    ) -> None:
        """Patch the Alert's status when Ready or observedGeneration changes.
        `keep_failure`: not over a DeliveryFailed of the same generation."""
        with self._status_lock:
            with self._lock:
                entry = self._alerts.get(key)
                if entry is not None:
                    old = entry.status
            ready = old.ready
            if (
                keep_failure
                and ready is not None
                and ready.reason == Reason.DELIVERY_FAILED
                and old.observed_generation == generation
            ):
                return
            new = AlertStatus(
                generation, merge_conditions(old.conditions, [cond], generation, now())
            )
            if old.observed_generation == generation and _same(old.conditions, new.conditions):
                return
            try:
                self.kube.request("PATCH", f"{alert_path(key)}/status", body={"status": new.to_dict()},
                                  content_type=MERGE_PATCH)  # fmt: skip
            except KubeError as e:
                log.warning("alert=%s action=status-failed error=%s", key, e.message)
                return
            with self._lock:
                entry = self._alerts.get(key)
                if entry is not None:
                    entry.status = new


def _same(a: tuple[Condition, ...], b: tuple[Condition, ...]) -> bool:
    def strip(cs: tuple[Condition, ...]) -> tuple[Condition, ...]:
        return tuple(dataclasses.replace(c, last_transition_time="") for c in cs)

    return strip(a) == strip(b)


def _ready(status: str, reason: str, message: str) -> Condition:
    return Condition(type=READY, status=status, reason=reason, message=message)


def _generation(body: dict[str, Any]) -> int:
    return int((body.get("metadata") or {}).get("generation") or 0)


def _ready_message(alert: Alert) -> str:
    spec = alert.spec
    if spec.type == CHAT:
        return f"sending chat messages to the Apprise URLs in Secret {spec.secret_ref}"
    forge = spec.forge
    title = forges.FORGES[forge].title if forge else spec.type
    return f"posting commit statuses to {title} with the token in Secret {spec.secret_ref}"
