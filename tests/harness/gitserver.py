"""Real git servers for tests: smart HTTP(S) through `git http-backend`, and sshd.

Both bind to 127.0.0.1 only. Every process a server starts carries the environment
variable `GITFERRY_TEST_SERVER=<server id>` (sshd's sessions through `SetEnv`), so
`stray_pids()` can prove after `stop()` that nothing survived.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hmac
import io
import os
import pwd
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from types import TracebackType
from typing import IO, Any, Self, cast
from urllib.parse import parse_qs, unquote, urlsplit

from tests.harness.gitrepo import BareRepo
from tests.harness.pki import CertPair

HOST = "127.0.0.1"
MARKER_ENV = "GITFERRY_TEST_SERVER"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# A held request gives up after this long so a forgotten hold cannot hang a test run.
HOLD_TIMEOUT = 120.0
SOCKET_TIMEOUT = 120.0

# Headers that are not forwarded as HTTP_*: the body headers become CONTENT_* (and the
# body is de-chunked), and credentials stay out of the backend's environment, as CGI
# servers do.
_NOT_FORWARDED = frozenset(
    ["authorization", "proxy-authorization", "content-length", "content-type", "transfer-encoding"]
)


# --- processes -------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcId:
    """A pid plus its start time, so a reused pid is not mistaken for ours."""

    pid: int
    start: int


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) from /proc/<pid>/stat, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[19])


def proc_id(pid: int) -> ProcId | None:
    st = _stat(pid)
    return ProcId(pid, st[2]) if st else None


def is_running(p: ProcId) -> bool:
    """True while the process exists and is not a zombie (a zombie runs no code)."""
    st = _stat(p.pid)
    return st is not None and st[2] == p.start and st[0] not in ("Z", "X")


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def descendants(pid: int) -> list[ProcId]:
    """All living descendants of `pid`, found by walking ppid links in /proc."""
    children: dict[int, list[ProcId]] = {}
    for p in _all_pids():
        st = _stat(p)
        if st is not None:
            children.setdefault(st[1], []).append(ProcId(p, st[2]))
    found: list[ProcId] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def pids_with_env(name: str, value: str) -> list[int]:
    """Running processes whose (exec-time) environment has `name=value`."""
    needle = f"{name}={value}".encode()
    found = []
    for p in _all_pids():
        if p == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{p}/environ").read_bytes()
        except OSError:
            continue
        pid_stat = proc_id(p)
        if needle in environ.split(b"\0") and pid_stat is not None and is_running(pid_stat):
            found.append(p)
    return found


def _terminate(procs: list[ProcId], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL after `timeout`, each process that is still the one we saw."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = [p for p in procs if is_running(p)]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)
        deadline = time.monotonic() + timeout
        while any(is_running(p) for p in live) and time.monotonic() < deadline:
            time.sleep(0.02)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --- request log -----------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    status: int
    # Protocol-v2 command of a POST git-upload-pack ("ls-refs", "fetch"); None otherwise.
    command: str | None = None
    git_protocol: str | None = None
    content_encoding: str | None = None
    chunked: bool = False
    body_bytes: int = 0
    user: str | None = None
    stderr: str = ""


@dataclass
class RequestLog:
    """Thread-safe list of the requests a server answered, in completion order."""

    _records: list[RequestRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    @property
    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def count(self, command: str) -> int:
        """How many upload-pack POSTs carried protocol-v2 `command=<command>`."""
        return sum(1 for r in self.records if r.command == command)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


def v2_command(body: bytes) -> str | None:
    """The `command=` of a protocol-v2 request body (the first pkt-lines), if any."""
    pos = 0
    for _ in range(8):
        try:
            size = int(body[pos : pos + 4], 16)
        except ValueError:
            return None
        if size < 4:  # flush-pkt / delim-pkt before any command: not a v2 command request
            return None
        line = body[pos + 4 : pos + size]
        if line.startswith(b"command="):
            return line[len(b"command=") :].strip().decode("ascii", "replace")
        pos += size
    return None


# --- HTTP ------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, owner: HttpGitServer) -> None:
        self.owner = owner
        super().__init__((HOST, port), _Handler)

    def server_bind(self) -> None:
        # Skips HTTPServer.server_bind, whose socket.getfqdn() is a reverse DNS lookup.
        TCPServer.server_bind(self)
        self.server_name = HOST
        self.server_port = int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        ctx = self.owner._ssl_context
        if ctx is not None:
            # The handshake runs in the handler thread (finish_request), not in the
            # accept loop, so one stalled client cannot block the others.
            sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(SOCKET_TIMEOUT)
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):
                return  # e.g. a client that does not trust our CA: its failure, not ours
        with self.owner._track_handler():
            super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (a failed clone, a killed fetch) are expected in tests.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | ssl.SSLError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the RequestLog is the log

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        owner = self.server.owner
        url = urlsplit(self.path)
        path_info = unquote(url.path)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        body = self._read_body(chunked)
        encoding = self.headers.get("Content-Encoding")
        rec: dict[str, Any] = {
            "method": self.command,
            "path": path_info,
            "query": url.query,
            "git_protocol": self.headers.get("Git-Protocol"),
            "content_encoding": encoding,
            "chunked": chunked,
            "body_bytes": len(body),
        }
        if self.command == "POST" and path_info.endswith("/git-upload-pack"):
            rec["command"] = v2_command(_decoded(body, encoding))

        ok, user = owner._authorize(self.headers.get("Authorization"))
        if not ok:
            owner.log.append(RequestRecord(status=401, **rec))
            self._send_simple(401, b"Unauthorized\n", {"WWW-Authenticate": owner._challenge()})
            return
        rec["user"] = user

        service = parse_qs(url.query).get("service", [""])[0]
        upload_pack = path_info.endswith("/git-upload-pack") or service == "git-upload-pack"
        if upload_pack and not owner._wait_gate():
            owner.log.append(RequestRecord(status=503, **rec))
            self._send_simple(503, b"Server stopping\n", {})
            return
        self._run_backend(path_info, url.query, body, user, rec)

    def _read_body(self, chunked: bool) -> bytes:
        if chunked:
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Skip trailers up to the blank line that ends the chunked body.
                    while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(8)  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_simple(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _cgi_env(self, path_info: str, query: str, body: bytes, user: str | None) -> dict[str, str]:
        owner = self.server.owner
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(owner.project_root),
            "LC_ALL": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_PROJECT_ROOT": str(owner.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            MARKER_ENV: owner.server_id,
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_SOFTWARE": "gitferry-test",
            "SERVER_PROTOCOL": self.request_version,
            "SERVER_NAME": HOST,
            "SERVER_PORT": str(owner.port),
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_LENGTH": str(len(body)),
        }
        if "Content-Type" in self.headers:
            env["CONTENT_TYPE"] = self.headers["Content-Type"]
        if user is not None:
            # http-backend enables receive-pack (push) only for an authenticated user.
            env["REMOTE_USER"] = user
        for name in set(self.headers.keys()):
            if name.lower() in _NOT_FORWARDED:
                continue
            key = "HTTP_" + name.upper().replace("-", "_")
            env[key] = ", ".join(self.headers.get_all(name) or [])
        if "Git-Protocol" in self.headers:
            # Without GIT_PROTOCOL, upload-pack silently answers in protocol v0.
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        return env

    def _run_backend(
        self, path_info: str, query: str, body: bytes, user: str | None, rec: dict[str, Any]
    ) -> None:
        owner = self.server.owner
        env = self._cgi_env(path_info, query, body, user)
        status = 500
        complete = False
        with tempfile.TemporaryFile() as errf:
            proc = owner._spawn(env, errf)
            try:
                assert proc.stdin is not None
                # Popen's default bufsize gives a BufferedReader; typeshed only says IO.
                stdout = cast(io.BufferedReader, proc.stdout)
                # Feed stdin from a thread: the backend may write before it has read all.
                writer = threading.Thread(target=_feed, args=(proc.stdin, body), daemon=True)
                writer.start()
                status, reason, headers = _read_cgi_headers(stdout)
                self.send_response(status, reason)
                for k, v in headers:
                    if k.lower() != "content-length":
                        self.send_header(k, v)
                # Chunked, not close-delimited: GnuTLS-built curl (Debian's git) rejects a
                # TLS body that ends without close_notify. The last chunk is sent only
                # after the log record, so a client that finished sees its requests logged.
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                while chunk := stdout.read1(65536):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                proc.wait(timeout=SOCKET_TIMEOUT)
                writer.join(timeout=STOP_TIMEOUT)
                complete = True
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                owner._forget(proc)
                errf.seek(0)
                rec["stderr"] = errf.read().decode("utf-8", "replace")
                owner.log.append(RequestRecord(status=status, **rec))
        if complete:
            self.wfile.write(b"0\r\n\r\n")


def _feed(stdin: IO[bytes], body: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        stdin.write(body)
    with contextlib.suppress(BrokenPipeError, OSError):
        stdin.close()


def _decoded(body: bytes, encoding: str | None) -> bytes:
    if encoding and encoding.lower() in ("gzip", "x-gzip"):
        try:
            return gzip.decompress(body)
        except (OSError, EOFError, zlib.error):
            return b""
    return body


def _read_cgi_headers(stdout: IO[bytes]) -> tuple[int, str, list[tuple[str, str]]]:
    status, reason = 200, "OK"
    headers: list[tuple[str, str]] = []
    while True:
        line = stdout.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            code, _, reason = value.partition(" ")
            status = int(code)
        else:
            headers.append((name, value))
    return status, reason, headers


class HttpGitServer:
    """Smart HTTP(S) git server: `git http-backend` as CGI behind a threaded server.

    Serves every repo under `project_root`. With `username`/`password` requests need
    Basic auth; with `bearer_token` `Authorization: Bearer <token>` is accepted too.
    With `tls` (a server CertPair) it speaks HTTPS instead.
    """

    def __init__(
        self,
        project_root: Path,
        *,
        username: str | None = None,
        password: str | None = None,
        bearer_token: str | None = None,
        tls: CertPair | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        self.project_root = project_root.resolve()
        self.username = username
        self.password = password
        self.bearer_token = bearer_token
        self.tls = tls
        self.server_id = uuid.uuid4().hex
        self.log = RequestLog()
        self.port = 0
        self._ssl_context: ssl.SSLContext | None = None
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls.cert, tls.key)
            self._ssl_context = ctx
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._gate = threading.Event()
        self._gate.set()
        self._stopping = False
        self._cond = threading.Condition()
        self._held = 0
        self._handlers = 0
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._started: list[ProcId] = []

    # lifecycle

    def start(self) -> Self:
        self.project_root.mkdir(parents=True, exist_ok=True)
        self._listen(0)
        return self

    def up(self) -> None:
        """Listen again on the same port after `down()`."""
        if self._httpd is None:
            self._listen(self.port)

    def down(self) -> None:
        """Close the listening socket: new connections are refused until `up()`."""
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """Stop listening, let in-flight requests end (held ones get 503), kill stragglers."""
        with self._cond:
            self._stopping = True
        self._gate.set()
        self.down()
        with self._cond:
            self._cond.wait_for(lambda: self._handlers == 0, timeout=STOP_TIMEOUT)
            procs = list(self._procs)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        _terminate(self.stray_pids_as_ids())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # addresses

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}"

    def url_for(self, repo: BareRepo | Path, host: str = HOST) -> str:
        path = repo.path if isinstance(repo, BareRepo) else repo
        rel = path.resolve().relative_to(self.project_root)
        return f"{self.scheme}://{host}:{self.port}/{rel.as_posix()}"

    # holding requests

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold upload-pack requests (after auth, before the backend runs) until exit."""
        self._gate.clear()
        try:
            yield
        finally:
            self._gate.set()

    def release(self) -> None:
        self._gate.set()

    @property
    def held(self) -> int:
        with self._cond:
            return self._held

    def wait_held(self, count: int = 1, timeout: float = START_TIMEOUT) -> None:
        """Block until `count` requests are being held; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._held >= count, timeout=timeout):
                raise TimeoutError(f"{self._held} request(s) held, wanted {count}")

    # processes

    @property
    def started_pids(self) -> list[ProcId]:
        with self._cond:
            return list(self._started)

    def stray_pids(self) -> list[int]:
        """Processes this server started that still run (http-backend and its children)."""
        return sorted({p.pid for p in self.stray_pids_as_ids()})

    def stray_pids_as_ids(self) -> list[ProcId]:
        own = [p for p in self.started_pids if is_running(p)]
        marked = pids_with_env(MARKER_ENV, self.server_id)
        ids = [p for p in map(proc_id, marked) if p is not None]
        return list({p.pid: p for p in own + ids}.values())

    # internals used by the handler

    def _listen(self, port: int) -> None:
        httpd = _Server(port, self)
        self.port = int(httpd.server_address[1])
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"git-http-{self.port}",
            daemon=True,
        )
        self._httpd, self._thread = httpd, thread
        thread.start()

    def _authorize(self, header: str | None) -> tuple[bool, str | None]:
        if self.username is None and self.bearer_token is None:
            return True, None
        scheme, _, value = (header or "").partition(" ")
        if scheme.lower() == "basic" and self.username is not None:
            try:
                user, _, pw = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False, None
            assert self.password is not None
            # Both compared (no short-circuit) so timing says nothing about which was wrong.
            user_ok = hmac.compare_digest(user.encode(), self.username.encode())
            pw_ok = hmac.compare_digest(pw.encode(), self.password.encode())
            good = user_ok and pw_ok
            return good, user if good else None
        if scheme.lower() == "bearer" and self.bearer_token is not None:
            good = hmac.compare_digest(value.strip().encode(), self.bearer_token.encode())
            return good, "bearer" if good else None
        return False, None

    def _challenge(self) -> str:
        if self.username is not None:
            return 'Basic realm="gitferry-test"'
        return 'Bearer realm="gitferry-test"'

    def _wait_gate(self) -> bool:
        """Wait while held; False if the server is stopping (the request must not run)."""
        with self._cond:
            self._held += 1
            self._cond.notify_all()
        try:
            self._gate.wait(timeout=HOLD_TIMEOUT)
        finally:
            with self._cond:
                self._held -= 1
                self._cond.notify_all()
        return not self._stopping

    @contextlib.contextmanager
    def _track_handler(self) -> Iterator[None]:
        with self._cond:
            self._handlers += 1
        try:
            yield
        finally:
            with self._cond:
                self._handlers -= 1
                self._cond.notify_all()

    def _spawn(self, env: dict[str, str], errf: IO[bytes]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["git", "http-backend"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errf,
            env=env,
            cwd=self.project_root,
        )
        pid = proc_id(proc.pid)
        with self._cond:
            self._procs.add(proc)
            if pid is not None:
                self._started.append(pid)
        return proc

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        with self._cond:
            self._procs.discard(proc)


# --- SSH -------------------------------------------------------------------------------


class SshGitServer:
    """OpenSSH's sshd on 127.0.0.1 with its own host key and one authorized user key.

    The login user is the current user (root here): git runs as whoever sshd logs in,
    and a non-root sshd cannot switch users. Clone with `url_for(bare)` and
    `GIT_SSH_COMMAND=ssh_command()`.
    """

    SSHD = "/usr/sbin/sshd"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.server_id = uuid.uuid4().hex
        self.port = 0
        self.host_key_path = self.workdir / "ssh_host_ed25519_key"
        self.client_key_path = self.workdir / "id_ed25519"
        self.authorized_keys_path = self.workdir / "authorized_keys"
        self.known_hosts_path = self.workdir / "known_hosts"
        self.config_path = self.workdir / "sshd_config"
        self.pid_file = self.workdir / "sshd.pid"
        self.log_path = self.workdir / "sshd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._main: ProcId | None = None
        self._seen: list[ProcId] = []

    # lifecycle

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        _keygen(self.host_key_path, "gitferry-test-host")
        _keygen(self.client_key_path, "gitferry-test-user")
        self.authorized_keys_path.write_text(self.client_public_key + "\n")
        if os.getuid() == 0:
            # sshd's privilege-separation directory; normally created by systemd.
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        last_error = ""
        for _ in range(3):  # another process may take the free port before sshd binds it
            self.port = _free_port()
            self.config_path.write_text(self._config())
            last_error = self._launch()
            if not last_error:
                self.known_hosts_path.write_text(self.known_hosts_line + "\n")
                return self
        raise RuntimeError(f"sshd did not start: {last_error}")

    def stop(self) -> None:
        """Stop the sshd we started (by pid) and any connection processes it forked."""
        proc, main = self._proc, self._main
        if proc is None or main is None:
            return
        self._seen += descendants(main.pid)
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _terminate(self._seen)
        _terminate([p for p in map(proc_id, self._marked()) if p is not None])
        self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # what a client needs

    @property
    def host_public_key(self) -> str:
        """`ssh-ed25519 AAAA...` without the comment."""
        return " ".join(_pub(self.host_key_path).read_text().split()[:2])

    @property
    def client_public_key(self) -> str:
        return " ".join(_pub(self.client_key_path).read_text().split()[:2])

    @property
    def known_hosts_line(self) -> str:
        return f"[{HOST}]:{self.port} {self.host_public_key}"

    def url_for(self, repo: BareRepo | Path) -> str:
        path = (repo.path if isinstance(repo, BareRepo) else repo).resolve()
        return f"ssh://{self.user}@{HOST}:{self.port}{path.as_posix()}"

    def authorize(self, public_key: str) -> None:
        """Also accept `public_key` (read per connection by sshd, so live)."""
        with self.authorized_keys_path.open("a") as f:
            f.write(public_key.strip() + "\n")

    def ssh_command(self, known_hosts: Path | None = None, key: Path | None = None) -> str:
        """A GIT_SSH_COMMAND that trusts only `known_hosts` and offers only `key`."""
        args = [
            "ssh",
            "-F",
            "/dev/null",  # no ~/.ssh/config or /etc/ssh/ssh_config
            "-o",
            f"UserKnownHostsFile={known_hosts or self.known_hosts_path}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-i",
            str(key or self.client_key_path),
        ]
        return shlex.join(args)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stray_pids(self) -> list[int]:
        """Processes of this server still running: sshd, its forks, sessions (git)."""
        live = {p.pid for p in self._seen if is_running(p)}
        if self._main is not None and is_running(self._main):
            live.add(self._main.pid)
            live.update(p.pid for p in descendants(self._main.pid))
        live.update(self._marked())
        return sorted(live)

    # internals

    def _marked(self) -> list[int]:
        return pids_with_env(MARKER_ENV, self.server_id)

    def _config(self) -> str:
        return "\n".join(
            [
                f"ListenAddress {HOST}",
                f"Port {self.port}",
                f"HostKey {self.host_key_path}",
                f"PidFile {self.pid_file}",
                f"AuthorizedKeysFile {self.authorized_keys_path}",
                # The key files live in a temp dir whose modes sshd would otherwise refuse.
                "StrictModes no",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "PermitRootLogin prohibit-password",
                f"AllowUsers {self.user}",
                "AllowTcpForwarding no",
                "X11Forwarding no",
                "PermitTTY no",
                "PrintMotd no",
                "LogLevel VERBOSE",
                # git sends GIT_PROTOCOL=version=2 with SendEnv; without this: protocol v0.
                "AcceptEnv GIT_PROTOCOL",
                # Repos owned by another user trip git's "dubious ownership" check; the
                # marker lets stray_pids() find session processes.
                "SetEnv GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory"
                f" GIT_CONFIG_VALUE_0=* {MARKER_ENV}={self.server_id}",
                "",
            ]
        )

    def _launch(self) -> str:
        """Start sshd and wait until it accepts; return "" or why it failed."""
        log = self.log_path.open("ab")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", MARKER_ENV: self.server_id}
        with log:
            proc = subprocess.Popen(
                [self.SSHD, "-D", "-e", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,  # a ^C in the terminal is not sshd's to handle
            )
        main = proc_id(proc.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return self.log_path.read_text(errors="replace")[-2000:]
            if _banner(self.port):
                self._proc, self._main = proc, main
                return ""
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        return "timed out waiting for the port"


def _banner(port: int) -> bool:
    """True once an SSH server answers on `port` (not just anything accepting)."""
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as s:
            s.settimeout(5.0)
            return s.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def _keygen(path: Path, comment: str) -> None:
    for p in (path, _pub(path)):
        p.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
    )


def _pub(key: Path) -> Path:
    return key.with_name(key.name + ".pub")
