"""Alerts: chat notifications and commit statuses about GitRepositorySyncs.

The pipeline side of issue 12's feedback loop: `api` (the Alert resource as
typed values), `policy` (what a SyncReport is worth saying, deduplicated; pure),
`notifier` (the index of Alerts, subscribed to SyncReports, delivering through
the `notify` library and writing each Alert's status).
"""

from __future__ import annotations

from .api import Alert, AlertKey, parse_alert
from .notifier import Notifier, NotifySettings

__all__ = ["Alert", "AlertKey", "Notifier", "NotifySettings", "parse_alert"]
