"""The webhook library's errors: plain, and never quoting a secret."""

from __future__ import annotations


class WebhookError(ValueError):
    """A webhook request gitferry cannot act on."""


class UnknownForge(WebhookError):
    """The forge named in the request path is not one this library knows."""


class PayloadError(WebhookError):
    """The body is not a payload of the forge it claims to come from."""
