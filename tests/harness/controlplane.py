"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, and kwok with one fake Node, so Pods are
scheduled and become Ready (or never ready, or crash, on request: FAKE_POD_ANNOTATION).

The binaries come from hack/controlplane/build.sh (built from the Go module proxy,
cached outside the repo). Everything listens on loopback with free ports, lives in
one state directory and is stopped by pid. Used by the pytest `cluster` fixture,
`make cluster-up` / `make cluster-down` and `make demo`:

    python -m tests.harness.controlplane up [--dir .cluster]   # prints export KUBECONFIG=...
    python -m tests.harness.controlplane down [--dir .cluster]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "controlplane" / "build.sh"
# gitferry's own kwok Stages; kwok's come from the build cache (kwok-stages.yaml).
TEST_POD_STAGES = REPO / "hack" / "controlplane" / "kwok" / "test-pod-stages.yaml"
# A Pod annotated with this key and `never-ready` runs but never becomes ready
# (containers waiting, ContainerCreating); with `crash` it is in CrashLoopBackOff.
FAKE_POD_ANNOTATION = "gitferry.dev/test-pod"

# Services get ClusterIPs from SERVICE_CIDR (a /24 is full at ~250 Services; the
# `kubernetes` Service keeps 10.0.0.1); Pods get IPs from POD_CIDR; the fake Node
# reports NODE_IP. None of them is routed anywhere: nothing runs in a Pod.
SERVICE_CIDR = "10.0.0.0/16"
POD_CIDR = "10.244.0.0/16"
NODE_IP = "10.240.0.1"
NODE_NAME = "kwok-node-0"
# kwok manages only the Nodes it is told to: the ones carrying this annotation.
FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version", "/openapi*", "/api*"]
    verbs: [get]
  - level: Metadata
"""


def build_binaries() -> Path:
    """The bin dir with etcd, kube-apiserver, kube-controller-manager, kube-scheduler
    and kwok (built if missing); kwok's Stages are in kwok-stages.yaml beside it."""
    # build.sh prints progress on stderr (inherited) and the bin dir on stdout.
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(d: Path) -> None:
    """CA, serving cert for 127.0.0.1/localhost, service-account signing key."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", "/CN=gitferry-test-ca", cwd=d)  # fmt: skip
    _openssl("req", *ec, "-keyout", "apiserver.key", "-out", "apiserver.csr",
             "-subj", "/CN=kube-apiserver", cwd=d)  # fmt: skip
    (d / "apiserver.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "apiserver.crt", "-days", "3650",
             "-extfile", "apiserver.ext", cwd=d)  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def write_kubeconfig(path: Path, server: str, ca_file: Path, token: str, user: str) -> None:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "local", "user": user}}],
        "current-context": user,
    }
    # JSON is valid YAML; kubeconfig readers accept it.
    path.write_text(json.dumps(cfg, indent=2))
    path.chmod(0o600)


@dataclass
class ControlPlane:
    state_dir: Path
    server: str = ""
    admin_token: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    # Each component's command line, so that one can be started again as it was.
    _argv: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "pki" / "ca.crt"

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "audit.log"

    def audit_events(self) -> Iterator[dict[str, object]]:
        """Every audit event written so far (JSON lines)."""
        if not self.audit_log.exists():
            return
        with self.audit_log.open() as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)

    # --- lifecycle -----------------------------------------------------------
    @classmethod
    def start(cls, state_dir: Path, bin_dir: Path | None = None) -> ControlPlane:
        bin_dir = bin_dir or build_binaries()
        state_dir = state_dir.resolve()
        state_dir.mkdir(parents=True, exist_ok=True)
        cp = cls(state_dir=state_dir)
        try:
            cp._start(bin_dir)
        except BaseException:
            cp.stop()
            raise
        return cp

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.state_dir / f"{name}.log", "ab")  # noqa: SIM115 (owned by the child)
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.state_dir,
            env={**os.environ, **env} if env else None,
            # A new session: Ctrl-C in a terminal or pytest's signals don't reach them;
            # stop() ends them by pid.
            start_new_session=True,
        )
        log.close()
        self._argv[name] = argv
        self.pids[name] = proc.pid
        self._procs.append(proc)  # lets start() notice an early exit
        (self.state_dir / "pids.json").write_text(json.dumps(self.pids))

    def _start(self, bin_dir: Path) -> None:
        d = self.state_dir
        pki = d / "pki"
        _make_pki(pki)
        self.admin_token = secrets.token_hex(24)
        (d / "tokens.csv").write_text(f'{self.admin_token},admin,admin,"system:masters"\n')
        (d / "audit-policy.yaml").write_text(AUDIT_POLICY)

        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn("etcd", [
            str(bin_dir / "etcd"),
            f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ])  # fmt: skip
        self._wait_tcp(etcd_port, "etcd")

        self.server = f"https://127.0.0.1:{api_port}"
        self._spawn("kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # The endpoint reconciler refuses a loopback address; nothing here needs
            # the in-cluster `kubernetes` Service endpoints.
            "--endpoint-reconciler-type=none",
            f"--secure-port={api_port}",
            f"--cert-dir={d / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={d / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--audit-policy-file={d / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--audit-log-maxsize=0",
            "--enable-priority-and-fairness=false",
            "--v=0",
        ])  # fmt: skip
        write_kubeconfig(self.kubeconfig, self.server, self.ca_file, self.admin_token, "admin")
        self._wait_ready(timeout=120)

        self._spawn("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--controllers=*",
            "--use-service-account-credentials=false",
            "--v=0",
        ])  # fmt: skip
        self._spawn("kube-scheduler", [
            str(bin_dir / "kube-scheduler"),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--v=0",
        ])  # fmt: skip
        # kwok serves nothing unless --server-address or --node-port is given, so
        # parallel control planes cannot collide on a port. KWOK_WORKDIR keeps it
        # from reading ~/.kwok/kwok.yaml or writing under the home directory.
        self._spawn("kwok", [
            str(bin_dir / "kwok"),
            f"--kubeconfig={self.kubeconfig}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector={}={}".format(*FAKE_NODE_ANNOTATION),
            f"--cidr={POD_CIDR}",
            f"--node-ip={NODE_IP}",
            # kwok's node-heartbeat-with-lease Stage writes the Node's status only
            # every 10 minutes and relies on a Lease: without this kwok keeps none,
            # and kube-controller-manager marks the Node NotReady after its 40 s
            # grace period (its Pods then report Ready=False).
            "--node-lease-duration-seconds=40",
            f"--config={bin_dir.parent / 'kwok-stages.yaml'}",
            f"--config={TEST_POD_STAGES}",
        ], env={"KWOK_WORKDIR": str(d / "kwok")})  # fmt: skip
        self._create_node(NODE_NAME)
        self._wait_node_ready(NODE_NAME, timeout=60)
        (d / "server").write_text(self.server)
        (d / "admin-token").write_text(self.admin_token)

    # --- the fake Node ---------------------------------------------------------
    def _api(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        """One request as admin; the decoded JSON answer."""
        req = urllib.request.Request(
            f"{self.server}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.admin_token}",
                "Content-Type": "application/json",
            },
        )
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def _create_node(self, name: str) -> None:
        """A Node for kwok: no taint (ordinary Pods schedule on it) and room for
        110 Pods. kwok writes its conditions, addresses and Lease, as a kubelet would."""
        key, value = FAKE_NODE_ANNOTATION
        resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
        self._api("POST", "/api/v1/nodes", {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            # A Node's status may be set on create: kwok keeps this allocatable.
            "status": {"allocatable": resources, "capacity": resources},
        })  # fmt: skip

    def _wait_node_ready(self, name: str, timeout: float) -> None:
        """Until kwok has made the Node Ready and kube-controller-manager has lifted
        the not-ready taint it puts on a new Node: then Pods schedule at once."""
        end = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < end:
            self._check_alive(f"waiting for Node {name} to be Ready")
            node = self._api("GET", f"/api/v1/nodes/{name}")
            conditions = node.get("status", {}).get("conditions") or []
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            taints = node.get("spec", {}).get("taints") or []
            if ready and not taints:
                return
            last = {"ready": ready, "taints": taints}
            time.sleep(0.1)
        raise TimeoutError(f"Node {name} not Ready and untainted within {timeout}s: {last}")

    # --- faults (tests/e2e/test_faults.py) -----------------------------------
    def stop_apiserver(self, grace: float = 15) -> None:
        """Stop kube-apiserver alone (SIGTERM, by pid; SIGKILL after `grace` seconds:
        it stops listening at once but may take long to exit); etcd and its data
        stay, and kube-controller-manager, kube-scheduler and kwok keep running and retrying."""
        pid = self.pids.pop("kube-apiserver", None)
        if pid:
            _stop_pid(pid, "kube-apiserver", self._procs, grace)
        # A stopped component is no early exit for _check_alive to report.
        self._procs = [p for p in self._procs if p.pid != pid]
        (self.state_dir / "pids.json").write_text(json.dumps(self.pids))

    def start_apiserver(self, timeout: float = 120) -> None:
        """Start kube-apiserver again with the command line it had: the same port,
        certificates, tokens, etcd and audit log; returns once /readyz answers."""
        if "kube-apiserver" in self.pids:
            raise RuntimeError("kube-apiserver is already running")
        self._spawn("kube-apiserver", self._argv["kube-apiserver"])
        self._wait_ready(timeout)

    def _check_alive(self, what: str) -> None:
        for p in self._procs:
            if p.poll() is not None:
                name = next(n for n, pid in self.pids.items() if pid == p.pid)
                tail = (self.state_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {p.returncode} while {what}:\n{tail}")

    def _wait_tcp(self, port: int, what: str, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self._check_alive(f"waiting for {what}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{what} did not listen on {port} within {timeout}s")

    def _wait_ready(self, timeout: float) -> None:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        end = time.monotonic() + timeout
        last = ""
        while time.monotonic() < end:
            self._check_alive("waiting for /readyz")
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
                    if r.status == 200:
                        return
            except Exception as e:  # not up yet: connection refused, 500 while hooks run
                last = str(e)
            time.sleep(0.25)
        raise TimeoutError(f"kube-apiserver not ready within {timeout}s: {last}")

    def stop(self) -> None:
        """Stop exactly the processes this control plane started, newest first."""
        pids = self.pids or _read_pids(self.state_dir)
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            pid = pids.get(name)
            if pid:
                _stop_pid(pid, name, self._procs)
        self.pids = {}
        (self.state_dir / "pids.json").unlink(missing_ok=True)


def _read_pids(state_dir: Path) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in json.loads((state_dir / "pids.json").read_text()).items()}
    except (OSError, ValueError):
        return {}


def _is_ours(pid: int, name: str) -> bool:
    """Guard against a recycled pid: the process must still be the binary we started."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return Path(argv0).name == name


def _stop_pid(pid: int, name: str, procs: list[subprocess.Popen[bytes]], grace: float = 15) -> None:
    proc = next((p for p in procs if p.pid == pid), None)
    if proc is None and not _is_ours(pid, name):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not _is_ours(pid, name) or _is_zombie(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(10)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="controlplane")
    ap.add_argument("action", choices=["build", "up", "down"])
    ap.add_argument("--dir", default=os.environ.get("GITFERRY_CLUSTER_DIR", ".cluster"))
    args = ap.parse_args(argv)
    state = Path(args.dir).resolve()
    if args.action == "build":
        print(build_binaries())
        return 0
    if args.action == "down":
        ControlPlane(state_dir=state).stop()
        print(f"control plane in {state} stopped")
        return 0
    if _read_pids(state):
        print(
            f"a control plane already runs from {state}; `make cluster-down` first", file=sys.stderr
        )
        return 1
    cp = ControlPlane.start(state)
    print(f"control plane up: {cp.server} (logs and audit log in {state})", file=sys.stderr)
    print(f"export KUBECONFIG={cp.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
