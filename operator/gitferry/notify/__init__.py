"""Telling people: chat messages through Apprise, commit statuses on the forges,
and the asynchronous delivery both use.

A library: it knows nothing of GitRepositorySync or Alert. Modules: `delivery`
(a bounded queue per destination, one worker thread while it holds anything,
retries with exponential backoff, a timeout per attempt), `chat` (Apprise,
with its logging kept from ever printing a URL), `forges` (the commit-status
REST endpoints of GitHub, GitLab, Gitea, Bitbucket Cloud and Server, Azure
DevOps, over plain HTTP), `errors` (`NotifyError`). Nothing here logs or
raises a credential: messages are redacted (`redact`) before they leave.
"""

from __future__ import annotations

from .errors import NotifyError, redact

__all__ = ["NotifyError", "redact"]
