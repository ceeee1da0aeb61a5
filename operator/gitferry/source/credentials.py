"""Credentials for git (from a Secret's data) and the checks made before git runs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from .errors import AuthError
from .urls import GitURL

# A per-process key for fingerprints: a plain hash of a weak password would be
# guessable from a cache directory name. The cache does not outlive the process.
_FINGERPRINT_KEY = secrets.token_bytes(32)


@dataclass(frozen=True)
class GitCredentials:
    """Secret data for git; `repr` never shows a secret value."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    ca_crt: str | None = field(default=None, repr=False)
    identity: str | None = field(default=None, repr=False)
    known_hosts: str | None = field(default=None, repr=False)

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str]) -> GitCredentials:
        """From a Secret's (decoded) data: keys username, password, bearerToken, ca.crt,
        identity, known_hosts. Empty values count as absent; the trailing newline that
        `kubectl create secret --from-file` keeps is dropped from the one-line values."""

        def line(key: str) -> str | None:
            value = data.get(key)
            return value.strip() or None if value is not None else None

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if value is not None and value.strip() else None

        return cls(
            username=line("username"),
            password=line("password"),
            bearer_token=line("bearerToken"),
            ca_crt=text("ca.crt"),
            identity=text("identity"),
            known_hosts=text("known_hosts"),
        )

    def fingerprint(self) -> str:
        """A keyed SHA-256 of all fields: equal credentials give equal fingerprints
        within this process; the value reveals nothing about the secrets."""
        payload = json.dumps([getattr(self, f.name) for f in fields(self)]).encode()
        return hmac.new(_FINGERPRINT_KEY, payload, hashlib.sha256).hexdigest()

    def secret_values(self) -> list[str]:
        """Every string that must never appear in a message."""
        values = [v for v in (self.password, self.bearer_token) if v]
        if self.username and self.password:
            values.append(basic_token(self.username, self.password))
        if self.identity:
            values.append(self.identity)
            values += [ln.strip() for ln in self.identity.splitlines() if len(ln.strip()) >= 8]
        return values


def basic_token(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def check_credentials(url: GitURL, creds: GitCredentials) -> None:
    """AuthError for credentials git cannot use, before git runs."""
    if url.is_ssh and not creds.known_hosts:
        raise AuthError(
            f"known_hosts is required for SSH ({url.url}): add a known_hosts key to the Secret "
            f"named by spec.secretRef; host key checking is never turned off"
        )
    if url.scheme in ("http", "https"):
        if creds.bearer_token and (creds.username or creds.password):
            raise AuthError("the Secret sets both bearerToken and username/password: keep one")
        if bool(creds.username) != bool(creds.password):
            raise AuthError("the Secret must set both username and password, or neither")
        for name, value in (
            ("username", creds.username),
            ("password", creds.password),
            ("bearerToken", creds.bearer_token),
        ):
            if value and any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
                raise AuthError(f"the Secret's {name} contains a control character")
        if creds.username and ":" in creds.username:
            raise AuthError("the Secret's username contains ':'")
