"""What 100 syncs of one repository ask of the git server, and push → applied
through a signed GitHub webhook.

The repository is served over smart HTTP by the test harness's git server
(`git http-backend`), which logs every request with its protocol-v2 command
(`ls-refs`: what the branch points at; `fetch`: objects). 100 syncs, one per
directory (4 objects each), first at a 30 s interval: the requests over three
intervals, nothing pushed. Then the interval becomes 1h, and 10 commits each
change one sync's directory, each pushed and announced by a GitHub-style push
webhook signed with the receiver's secret: the time from just before the push
to the sync's status showing the commit applied (a GET every 20 ms).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from tests.harness import forges
from tests.harness.forges import Commit
from tests.harness.gitrepo import make_repo, served_root
from tests.harness.gitserver import HttpGitServer
from tests.harness.syncs import put_secret

from .common import app_objects, delete_namespace, docs, is_ready, say, sync_manifest, wait_ready
from .fleet import Bench, app_dir
from .process import GitferryProcess, wait_quiet

NAMESPACE = "hooks"
SYNCS = 100
INTERVAL_S = 30
INTERVALS = 3
PUSHES = 10
SECRET_NAMESPACE, SECRET_NAME = "gitferry-system", "gitferry-webhook"
WEBHOOK_SECRET = "bench-" + "Hq4vN8sK2pLx" * 3


@dataclass
class Traffic:
    syncs: int
    interval_s: int
    window_s: float
    ls_refs: int  # protocol-v2 ls-refs requests the server answered in the window
    fetches: int
    http_requests: int  # every request (GET info/refs + POSTs)
    metric: dict[str, float]  # gitferry_git_requests_total's increase, by operation
    reconciles: int
    push_s: list[float] = field(default_factory=list)  # push → applied, each push
    matched: set[int] = field(default_factory=set)  # syncs each webhook matched

    @property
    def per_interval(self) -> float:
        return (self.ls_refs + self.fetches) / (self.window_s / self.interval_s)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(bench: Bench) -> Traffic:
    say(f"git traffic: {SYNCS} syncs of one repository over HTTP, then webhooks …")
    root = bench.work / "git"
    repo = make_repo(root, "hooks")
    files = {f"{app_dir(i)}/app.yaml": docs(app_objects(app_dir(i))) for i in range(SYNCS)}
    sha = repo.commit(files, f"{SYNCS} apps")
    repo.push()
    server = HttpGitServer(served_root(root))
    put_secret(bench.cluster, SECRET_NAMESPACE, {"github": WEBHOOK_SECRET}, name=SECRET_NAME)
    port = _free_port()
    bench.kubectl("create", "namespace", NAMESPACE)
    proc = GitferryProcess(
        bench.cluster, bench.work / "operator-hooks", NAMESPACE,
        GITFERRY_WEBHOOK_SECRET=f"{SECRET_NAMESPACE}/{SECRET_NAME}",
        GITFERRY_WEBHOOK_ADDR=f"127.0.0.1:{port}",
    )  # fmt: skip
    try:
        server.start()
        proc.start()
        url = server.url_for(repo.bare)
        names = [app_dir(i) for i in range(SYNCS)]
        bench.create([sync_manifest(n, NAMESPACE, url, n, f"{INTERVAL_S}s") for n in names])
        wait_ready(bench.api, NAMESPACE, sha, SYNCS, timeout=300)
        wait_quiet(proc)

        server.log.clear()
        git0 = proc.git_requests()
        lines0 = len(proc.reconcile_lines())
        t0 = time.monotonic()
        time.sleep(INTERVAL_S * INTERVALS)
        window = time.monotonic() - t0
        git1 = proc.git_requests()
        out = Traffic(
            syncs=SYNCS,
            interval_s=INTERVAL_S,
            window_s=window,
            ls_refs=server.log.count("ls-refs"),
            fetches=server.log.count("fetch"),
            http_requests=len(server.log),
            metric={k: v - git0.get(k, 0) for k, v in git1.items()},
            reconciles=len(proc.reconcile_lines()) - lines0,
        )
        say(f"  {out.ls_refs} ls-refs, {out.fetches} fetches, {out.http_requests} HTTP requests"
            f" in {window:.0f} s ({out.reconciles} reconciles); metric {out.metric}")  # fmt: skip

        bench.api.patch_syncs(NAMESPACE, names, {"spec": {"interval": "1h"}})
        time.sleep(1)
        wait_ready(bench.api, NAMESPACE, sha, SYNCS, timeout=300)
        wait_quiet(proc)
        base = f"http://127.0.0.1:{port}"
        target = names[0]
        for n in range(PUSHES):
            path = f"{target}/app.yaml"
            t0 = time.monotonic()
            new = repo.commit({path: docs(app_objects(target, revision=str(n + 2)))}, f"push {n}")
            repo.push()
            hook = forges.github_push(
                url, "refs/heads/main", new, [Commit(id=new, modified=[path])],
                secret=WEBHOOK_SECRET,
            )  # fmt: skip
            status, answer = forges.post(base, hook)
            if status != 202:
                raise RuntimeError(f"the webhook was answered {status} {answer}")
            out.matched.add(int(answer.get("matched", -1)))
            while not is_ready(bench.api.sync(NAMESPACE, target), new):
                if time.monotonic() - t0 > 30:
                    raise RuntimeError(f"push {n} not applied within 30 s")
                time.sleep(0.02)
            out.push_s.append(time.monotonic() - t0)
            time.sleep(0.5)
        say(f"  push → applied: {', '.join(f'{s:.2f}' for s in out.push_s)} s;"
            f" matched {sorted(out.matched)}")  # fmt: skip
        proc.alive()
        return out
    finally:
        proc.stop()
        server.stop()
        delete_namespace(bench.api, bench.kubeconfig, NAMESPACE)
