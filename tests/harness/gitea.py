"""A real Gitea on 127.0.0.1: the forge whose commit-status API and push webhooks
the end-to-end tests check gitferry against, beside the fake forges of receivers.py.

The binary comes from hack/gitea/build.sh (Gitea built from the Go module proxy
with SQLite through cgo, cached outside the repo, with the options/ and
templates/ of its module beside it). `Gitea.start` runs it on a free loopback
port from a temporary work dir: SQLite, the install already locked, no mailer,
no SSH (neither its own server nor a write to any authorized_keys), offline (no
avatars or update checks from the internet), webhooks allowed to loopback
targets only. It creates an admin user and an access token with the `gitea
admin` CLI; repositories, statuses and webhooks go through the REST API
(`/api/v1`) with that token, and git pushes over HTTP with the token as
password. `stop` ends the one process it started, by pid.

The `gitea` fixture (one Gitea per test module) fails under CI=true when the
binary cannot be built, and elsewhere skips saying why.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import pytest

from tests.harness.controlplane import REPO
from tests.harness.gitrepo import DEFAULT_BRANCH, BareRepo, WorkRepo, client_env, run_git

__all__ = ["Gitea", "GiteaUnavailable", "build_gitea", "gitea"]

BUILD_SCRIPT = REPO / "hack" / "gitea" / "build.sh"
ADMIN = "gitferry"
ADMIN_EMAIL = "gitferry@gitferry.invalid"
START_TIMEOUT = 60.0


class GiteaUnavailable(Exception):
    """The Gitea binary cannot be had on this machine; one line saying why."""


class GiteaError(AssertionError):
    """Gitea answered an API request with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"Gitea {method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


def build_gitea(timeout: float = 3600) -> Path:
    """The bin dir holding `gitea`, built by hack/gitea/build.sh if missing (a few
    minutes cold; `make test` builds it before pytest starts)."""
    try:
        out = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise GiteaUnavailable(f"hack/gitea/build.sh took over {timeout:.0f}s") from None
    if out.returncode != 0:
        said = (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
        raise GiteaUnavailable(f"hack/gitea/build.sh failed ({said.strip()[:300]})")
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _app_ini(work: Path, static: Path, port: int) -> str:
    root_url = f"http://127.0.0.1:{port}/"
    # Gitea refuses to run as root unless told: CI and the dev machines run as root.
    as_root = "I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true\n" if os.getuid() == 0 else ""
    return f"""\
APP_NAME = gitferry-test
RUN_MODE = prod
WORK_PATH = {work}
{as_root}
[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = {port}
ROOT_URL = {root_url}
LOCAL_ROOT_URL = {root_url}
DOMAIN = 127.0.0.1
OFFLINE_MODE = true
DISABLE_SSH = true
START_SSH_SERVER = false
SSH_ROOT_PATH = {work / "ssh"}
SSH_CREATE_AUTHORIZED_KEYS_FILE = false
LFS_START_SERVER = false
APP_DATA_PATH = {work / "data"}
; No `bindata` build: options/ (locales, licenses) and templates/ are read from here.
STATIC_ROOT_PATH = {static}

[database]
DB_TYPE = sqlite3
PATH = {work / "data" / "gitea.db"}

[repository]
ROOT = {work / "repositories"}
DEFAULT_BRANCH = {DEFAULT_BRANCH}

[security]
INSTALL_LOCK = true
SECRET_KEY = {secrets.token_hex(32)}
INTERNAL_TOKEN = {secrets.token_hex(52)}

[oauth2]
ENABLED = false

[mailer]
ENABLED = false

[service]
DISABLE_REGISTRATION = true

[indexer]
ISSUE_INDEXER_TYPE = db

[webhook]
ALLOWED_HOST_LIST = loopback
DELIVER_TIMEOUT = 10

; In memory: the default on-disk queue polls once a second when idle, and a push
; goes through two (push_update, then webhook_sender): its webhook left 2-3 s late.
[queue]
TYPE = channel

[cron.update_checker]
ENABLED = false

[actions]
ENABLED = false

[packages]
ENABLED = false

[log]
MODE = console
LEVEL = Info
"""


@dataclass
class Gitea:
    """One Gitea process serving http://127.0.0.1:<port>, its state under `workdir`."""

    workdir: Path
    bin_dir: Path
    port: int = 0
    token: str = ""
    password: str = field(default="", repr=False)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    @property
    def config(self) -> Path:
        return self.workdir / "app.ini"

    @property
    def log_path(self) -> Path:
        return self.workdir / "gitea.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _env(self) -> dict[str, str]:
        # Its own HOME: nothing it writes lands in the user's.
        return {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.workdir / "home"),
            "LANG": "C.UTF-8",
            "GITEA_WORK_DIR": str(self.workdir),
        }

    # --- lifecycle -------------------------------------------------------------
    def start(self) -> Gitea:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "home").mkdir(exist_ok=True)
        self.port = free_port()
        self.config.write_text(_app_ini(self.workdir, self.bin_dir.parent / "static", self.port))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(self.bin_dir / "gitea"), "web", "--config", str(self.config),
             "--work-path", str(self.workdir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.workdir, env=self._env(),
            start_new_session=True,  # pytest's and a terminal's signals don't reach it
        )  # fmt: skip
        log.close()
        try:
            self._wait_healthy()
            self.password = secrets.token_urlsafe(18)
            self.cli("admin", "user", "create", "--admin", "--username", ADMIN,
                     "--email", ADMIN_EMAIL, "--password", self.password,
                     "--must-change-password=false")  # fmt: skip
            self.token = self.cli(
                "admin", "user", "generate-access-token", "--username", ADMIN,
                "--token-name", "gitferry-tests", "--scopes", "all", "--raw",
            ).strip().splitlines()[-1]  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def cli(self, *args: str) -> str:
        """`gitea --config … <args>` (the admin CLI, straight on the database)."""
        proc = subprocess.run(
            [str(self.bin_dir / "gitea"), "--config", str(self.config),
             "--work-path", str(self.workdir), *args],
            capture_output=True, text=True, env=self._env(), cwd=self.workdir, timeout=60,
        )  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"gitea {args[0]} {args[1]} … failed: {proc.stderr[-2000:]}")
        return proc.stdout

    def _wait_healthy(self) -> None:
        end = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < end:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"gitea exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/api/healthz", timeout=5) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError) as e:  # not listening yet
                last = str(e)
            time.sleep(0.2)
        raise AssertionError(f"gitea not healthy within {START_TIMEOUT}s ({last}):\n{self.log()}")

    def stop(self, grace: float = 15) -> None:
        """SIGTERM to the process started here, by pid; SIGKILL after `grace` seconds."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    # --- the REST API ----------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One API request as the admin (token auth); the decoded JSON answer."""
        req = urllib.request.Request(
            f"{self.api}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"token {self.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read()
        except urllib.error.HTTPError as e:
            raise GiteaError(method, path, e.code, e.read().decode(errors="replace")) from None
        return json.loads(text) if text else None

    def create_repo(self, name: str, private: bool = True) -> str:
        """A new empty repository of the admin; its `owner/name`."""
        repo = self.request(
            "POST", "/user/repos",
            {"name": name, "private": private, "default_branch": DEFAULT_BRANCH},
        )  # fmt: skip
        return str(repo["full_name"])

    def clone_url(self, full_name: str) -> str:
        return f"{self.url}/{full_name}.git"

    def statuses(self, full_name: str, sha: str) -> list[dict[str, Any]]:
        """Every status posted on commit `sha`, oldest first (Gitea lists newest first)."""
        found = self.request("GET", f"/repos/{_path(full_name)}/commits/{sha}/statuses?limit=50")
        return sorted(found, key=lambda s: int(s["id"]))

    def combined_status(self, full_name: str, ref: str) -> dict[str, Any]:
        """What branch protection reads: the latest state per context, and overall."""
        return self.request("GET", f"/repos/{_path(full_name)}/commits/{ref}/status")  # type: ignore[no-any-return]

    def add_webhook(
        self, full_name: str, url: str, secret: str, events: tuple[str, ...] = ("push",)
    ) -> int:
        """A Gitea-type webhook (JSON, HMAC-signed with `secret`); its id."""
        hook = self.request(
            "POST", f"/repos/{_path(full_name)}/hooks",
            {"type": "gitea", "active": True, "events": list(events), "branch_filter": "*",
             "config": {"url": url, "content_type": "json", "secret": secret}},
        )  # fmt: skip
        return int(hook["id"])

    # --- git -------------------------------------------------------------------
    def work_repo(self, full_name: str, root: Path) -> WorkRepo:
        """An empty work tree under `root` whose `origin` is the Gitea repository,
        pushed to over HTTP as the admin with the token as password (GIT_ASKPASS:
        the token is on no command line and in no remote URL)."""
        work = root / full_name.replace("/", "-")
        env = client_env(root / "home", username=ADMIN, password=self.token)
        run_git(["init", "-q", "-b", DEFAULT_BRANCH, str(work)], env)
        run_git(["remote", "add", "origin", self.clone_url(full_name)], env, cwd=work)
        # There is no local bare repository: `bare` names the work tree's own, unused.
        return WorkRepo(path=work, bare=BareRepo(work / ".git"), env=env)


def _path(full_name: str) -> str:
    owner, _, name = full_name.partition("/")
    return f"{quote(owner)}/{quote(name)}"


def unavailable(why: str) -> NoReturn:
    """Under CI the real-Gitea tests must run: fail. Elsewhere, skip and say why."""
    fix = "`make gitea` builds it (Go and gcc needed) and shows any error"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI tests against a real Gitea and {why}; {fix}", pytrace=False)
    pytest.skip(f"no Gitea binary: {why}; {fix}")


@pytest.fixture(scope="module")
def gitea(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Gitea]:
    """A Gitea for this test module, stopped at its end. Its work dir goes with it,
    unless a test failed: then it stays (log: gitea.log) and its path is printed."""
    try:
        bin_dir = build_gitea()
    except GiteaUnavailable as e:
        unavailable(str(e))
    failed_before = request.session.testsfailed
    server = Gitea(tmp_path_factory.mktemp("gitea"), bin_dir).start()
    try:
        yield server
    finally:
        server.stop()
        if request.session.testsfailed == failed_before:
            shutil.rmtree(server.workdir, ignore_errors=True)
        else:
            print(f"\nGitea's work dir and log are kept in {server.workdir}")
