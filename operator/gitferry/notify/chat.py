"""Chat messages through Apprise (Slack, Teams, Discord, Matrix, e-mail,
generic JSON/form webhooks and 100+ other services), one URL at a time.

An Apprise URL is a credential: `slack://T…/B…/token`, `json://user:pass@host`.
It never reaches a log line or an error message here:

- Apprise's own logger (`apprise`) stops propagating to the operator's log and
  is capped at WARNING (its DEBUG lines print request URLs and payloads); what
  it says at WARNING or above during one send is captured for that send only
  (a context variable), redacted, and becomes the error message;
- everything said about a URL is redacted against the URL, its user and
  password, its host when the host is a token rather than a DNS name or an
  address, and each path segment and query value (`secrets_of`);
- a target is named by its position and Apprise's service name ("target 2
  (Slack)"), never by its URL.

`notify()` is synchronous; the caller runs it off the reconcile threads
(delivery.Outbox) with a timeout. Apprise's persistent store stays in memory
(the operator's root filesystem is read-only).
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise

from .errors import NotifyError, redact

Kind = Literal["info", "success", "warning", "failure"]

_APPRISE_LOGGER = "apprise"
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]{0,31}$")
# A host that is a name or an address, not a token (Slack's `T…`, Discord's id).
_NETWORK_HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9-]+(\.[a-z0-9-]+)+|localhost)$", re.I)
MAX_ERROR = 300  # characters of Apprise's own words kept in an error


class _Capture(logging.Handler):
    """Keeps what Apprise logs (WARNING and above) for the send that asked: a
    context variable, which Apprise carries into the worker threads it may use."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
            "gitferry_apprise_capture", default=None
        )

    def emit(self, record: logging.LogRecord) -> None:
        lines = self.lines.get()
        if lines is not None:
            try:
                lines.append(record.getMessage())
            except Exception:  # a malformed record must not break a send
                lines.append(record.levelname)

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        lines: list[str] = []
        token = self.lines.set(lines)
        try:
            yield lines
        finally:
            self.lines.reset(token)


def _silence_apprise() -> _Capture:
    """Install (once) the capture on Apprise's logger and cut it off the root."""
    logger = logging.getLogger(_APPRISE_LOGGER)
    for handler in logger.handlers:
        if isinstance(handler, _Capture):
            return handler
    handler = _Capture()
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    return handler


_capture = _silence_apprise()


def split_urls(text: str) -> list[str]:
    """The Apprise URLs of a Secret's `url` value: separated by whitespace or
    newlines; blank lines and lines starting with `#` are skipped."""
    urls: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            urls.extend(line.split())
    return urls


def secrets_of(url: str) -> list[str]:
    """Every piece of `url` that could be a credential: the URL, its user and
    password, a host that is not a network name, each path segment and query
    value (decoded and as written)."""
    pieces = [url]
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        user_info, _, host_port = netloc.rpartition("@")
        if user_info:
            user, _, password = user_info.partition(":")
            pieces += [user_info, user, password]
        host = host_port.rsplit(":", 1)[0] if host_port.count(":") == 1 else host_port
        if host and not _NETWORK_HOST.match(host):
            pieces += [host_port, host]
        pieces += [s for s in parts.path.split("/") if s]
        pieces += [v for _, v in parse_qsl(parts.query, keep_blank_values=False)]
        pieces += [parts.query, parts.fragment]
    except ValueError:  # not even a URL: the whole string is the secret
        pass
    return pieces + [unquote(p) for p in pieces if "%" in p]


def scheme_of(url: str) -> str:
    """The URL's scheme when it looks like one, else "" (never part of a secret)."""
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    return scheme if sep and _SCHEME.match(scheme) else ""


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    kind: Kind = "info"


def send(url: str, message: Message, label: str = "target") -> None:
    """Deliver `message` to one Apprise URL. NotifyError (its message names
    `label` and Apprise's service, never the URL) when Apprise cannot use the
    URL (not retryable) or the service did not take the message (retryable)."""
    hidden = secrets_of(url)
    asset = apprise.AppriseAsset(storage_mode="memory")
    notifier = apprise.Apprise(asset=asset)
    with _capture.capture() as said:
        added = notifier.add(url)
    if not added or len(notifier) != 1:
        scheme = scheme_of(url)
        what = f"{scheme}://" if scheme else "not an Apprise URL"
        raise NotifyError(
            f"{label}: Apprise cannot use this URL ({what}){_words(said, hidden)}",
            retryable=False,
        )
    service = str(getattr(notifier[0], "service_name", "") or scheme_of(url) or "?")
    with _capture.capture() as said:
        try:
            ok = bool(
                notifier.notify(
                    body=message.body,
                    title=message.title,
                    notify_type=apprise.NotifyType(message.kind),
                    body_format=apprise.NotifyFormat.TEXT,
                )
            )
        except Exception as e:  # its text could hold the URL: only its type
            raise NotifyError(f"{label} ({service}): {type(e).__name__}") from None
    if not ok:
        raise NotifyError(f"{label} ({service}): not delivered{_words(said, hidden)}")


def _words(lines: list[str], hidden: list[str]) -> str:
    """What Apprise said, redacted and bounded, as `: …` (or nothing)."""
    text = " ".join(line.strip() for line in lines if line.strip())
    if not text:
        return ""
    text = redact(text, hidden)
    return ": " + (text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…")
