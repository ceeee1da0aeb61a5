"""Credentials for git (from a Secret's data) and the checks made before git runs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from .errors import AuthError
from .urls import GitURL

# Fingerprints name mirror directories, which outlive the process (cache.py), and
# their key lies on the same volume: whoever copies the volume has both. scrypt
# makes each guess of a weak password cost ~25 ms and 16 MiB instead of a hash's
# microsecond; the result is remembered per credentials (keyed by a fast HMAC), so
# a process pays once per distinct set, not per fetch.
_SCRYPT_N, _SCRYPT_R = 1 << 14, 8
_REMEMBERED = 4096
_remembered: OrderedDict[bytes, str] = OrderedDict()
_remembered_lock = threading.Lock()
# One scrypt at a time: each takes 16 MiB for its moment, and 4 reconcile threads
# starting at once took the operator's peak memory up by 64 MiB (make bench).
_scrypt_lock = threading.Lock()
# The fingerprint of no credentials: nothing secret to hide, no scrypt.
NO_CREDENTIALS = "none"


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

    def fingerprint(self, key: bytes) -> str:
        """64 hex digits, scrypt of all fields salted with `key` (the cache's
        fingerprint key), or NO_CREDENTIALS when every field is empty: equal credentials and key give equal fingerprints in any
        process; without the key the value says nothing about the secrets, and
        with it each guess costs an scrypt. The first call per credentials takes
        ~25 ms of CPU; later ones are remembered."""
        if not any(getattr(self, f.name) for f in fields(self)):
            return NO_CREDENTIALS
        payload = json.dumps([getattr(self, f.name) for f in fields(self)]).encode()
        memo = hmac.new(key, payload, hashlib.sha256).digest()
        with _scrypt_lock:
            with _remembered_lock:
                known = _remembered.get(memo)
                if known is not None:
                    _remembered.move_to_end(memo)
                    return known
            value = hashlib.scrypt(payload, salt=key, n=_SCRYPT_N, r=_SCRYPT_R, p=1, dklen=32).hex()
        with _remembered_lock:
            _remembered[memo] = value
            while len(_remembered) > _REMEMBERED:
                _remembered.popitem(last=False)
        return value

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
