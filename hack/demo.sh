#!/usr/bin/env bash
# make demo       local control plane + gitferry, syncing examples/sample-repo
# make demo-down  stop it all and remove .demo/
#
# Everything lives under .demo/ in the repository (gitignored):
#   cluster/             the control plane's state, logs and audit log
#   git/sample.git       the bare repository gitferry syncs (served as file://)
#   work/                a clone of it: commit and push there to see a change applied
#   operator.kubeconfig  the gitferry ServiceAccount's token (the install's RBAC, not admin)
#   operator.log, operator.pid, cache/
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

demo="$root/.demo"
cluster_dir="$demo/cluster"
admin_kubeconfig="$cluster_dir/admin.kubeconfig"
operator_kubeconfig="$demo/operator.kubeconfig"
pid_file="$demo/operator.pid"
log_file="$demo/operator.log"
bare="$demo/git/sample.git"
work="$demo/work"
repo_url="file://$bare"

if [[ -x "$root/.venv/bin/python" ]]; then
  py="$root/.venv/bin/python"
  kubectl="$root/.venv/bin/kubectl"
else
  py="${PYTHON:-python3}"
  kubectl="kubectl"
fi

say() { printf '==> %s\n' "$*" >&2; }
k() { KUBECONFIG="$admin_kubeconfig" "$kubectl" "$@"; }
# git that ignores the user's global and system config (signing, hooks, templates).
g() { GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 git "$@"; }

# True when pid runs `python -m gitferry` (a recycled pid is left alone).
is_operator() {
  local cmdline
  cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline")" || return 1
  [[ "$cmdline" == *"-m gitferry run"* ]]
}

stop_operator() {
  [[ -f "$pid_file" ]] || return 0
  local pid
  pid="$(cat "$pid_file")"
  if [[ -n "$pid" ]] && is_operator "$pid"; then
    say "stopping gitferry (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      is_operator "$pid" || break
      sleep 0.2
    done
    if is_operator "$pid"; then
      say "gitferry did not stop within 20s; killing pid $pid"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pid_file"
}

control_plane_running() {
  [[ -f "$cluster_dir/pids.json" && -f "$admin_kubeconfig" ]] || return 1
  k get --raw /readyz >/dev/null 2>&1
}

down() {
  stop_operator
  if [[ -d "$cluster_dir" ]]; then
    say "stopping the control plane"
    "$py" -m tests.harness.controlplane down --dir "$cluster_dir"
  fi
  rm -rf "$demo"
  say "demo removed"
}

if [[ "${1:-up}" == "down" ]]; then
  down
  exit 0
elif [[ "${1:-up}" != "up" ]]; then
  echo "usage: $0 [up|down]" >&2
  exit 2
fi

mkdir -p "$demo"

# --- 1. the control plane ---------------------------------------------------
if control_plane_running; then
  say "reusing the control plane in $cluster_dir"
else
  if [[ -d "$cluster_dir" ]]; then
    say "a previous control plane in $cluster_dir is not answering; replacing it"
    "$py" -m tests.harness.controlplane down --dir "$cluster_dir" >/dev/null
    rm -rf "$cluster_dir"
  fi
  say "starting a local control plane (etcd, kube-apiserver, kube-controller-manager,"
  say "kube-scheduler on 127.0.0.1; kwok plays the kubelet of one fake Node)"
  say "(the binaries are built from source on first use: ~10 minutes, kwok 3 more; progress below)"
  "$py" -m tests.harness.controlplane up --dir "$cluster_dir" >/dev/null
fi

# --- 2. install gitferry -------------------------------------------------------
say "installing gitferry: kubectl apply -k manifests/"
k apply -k manifests/ >/dev/null
k wait --for=condition=Established --timeout=60s crd/gitrepositorysyncs.gitferry.dev >/dev/null
# The local control plane's Node is kwok's: its Pods only pretend to run, so the
# in-cluster Deployment could never really run gitferry. The operator runs below
# as a local process instead, under the same ServiceAccount and RBAC as the
# Deployment; scaling the Deployment to 0 keeps a second one from even pretending.
k scale -n gitferry-system deployment/gitferry --replicas=0 >/dev/null
# A new CRD answers 429 "storage is (re)initializing" for a moment; let that pass
# before the operator starts listing it.
for _ in $(seq 1 100); do
  k get grs -A >/dev/null 2>&1 && break
  sleep 0.2
done

# --- 3. the git repository -------------------------------------------------
if [[ -d "$bare" && -d "$work/.git" ]]; then
  say "reusing the git repository $bare"
else
  say "making a git repository from examples/sample-repo"
  rm -rf "$bare" "$work"
  mkdir -p "$(dirname "$bare")"
  g init -q --bare --initial-branch=main "$bare"
  cp -a examples/sample-repo "$work"
  g -C "$work" init -q --initial-branch=main
  g -C "$work" config user.name "gitferry demo"
  g -C "$work" config user.email "demo@gitferry.invalid"
  g -C "$work" add -A
  GIT_AUTHOR_NAME="gitferry demo" GIT_AUTHOR_EMAIL="demo@gitferry.invalid" \
    GIT_COMMITTER_NAME="gitferry demo" GIT_COMMITTER_EMAIL="demo@gitferry.invalid" \
    GIT_AUTHOR_DATE="2026-01-01T00:00:00Z" GIT_COMMITTER_DATE="2026-01-01T00:00:00Z" \
    g -C "$work" commit -q -m "Sample app: namespace, configmap, deployment, service"
  g -C "$work" remote add origin "$repo_url"
  g -C "$work" push -q -u origin main
fi

# --- 4. the operator ----------------------------------------------------------
stop_operator
say "starting gitferry as ServiceAccount gitferry-system/gitferry (log: $log_file)"
token="$(k create token gitferry -n gitferry-system --duration=24h)"
server="$(cat "$cluster_dir/server")"
# Written by the shell, not passed on a command line: the token never shows in ps.
(
  umask 077
  cat >"$operator_kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: local
    cluster:
      server: $server
      certificate-authority: $cluster_dir/pki/ca.crt
users:
  - name: gitferry
    user:
      token: $token
contexts:
  - name: gitferry
    context: {cluster: local, user: gitferry}
current-context: gitferry
EOF
)
unset token
mkdir -p "$demo/cache"
# Metrics on loopback, on whatever port is free (the start line names it).
KUBECONFIG="$operator_kubeconfig" GITFERRY_ALLOW_FILE_URLS=true GITFERRY_CACHE_DIR="$demo/cache" \
  GITFERRY_METRICS_ADDR=127.0.0.1:0 PYTHONUNBUFFERED=1 nohup "$py" -m gitferry run --all-namespaces >>"$log_file" 2>&1 </dev/null &
echo $! >"$pid_file"
pid="$(cat "$pid_file")"
for _ in $(seq 1 300); do
  grep -q 'action=start' "$log_file" 2>/dev/null && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "gitferry exited at start; its log:" >&2
    tail -n 40 "$log_file" >&2
    exit 1
  fi
  sleep 0.2
done

# --- 5. the sync ----------------------------------------------------------------
say "applying examples/sync.yaml (url: $repo_url) and waiting for Ready (it waits for its Pods: wait: true)"
sed "s|REPO_URL|$repo_url|" examples/sync.yaml | k apply -f - >/dev/null
if ! k wait --for=condition=Ready -n default grs/demo --timeout=120s >/dev/null; then
  echo "grs/demo did not become Ready within 120s. Its status and the operator's log:" >&2
  k get grs demo -n default -o yaml >&2 || true
  tail -n 40 "$log_file" >&2
  echo "(everything is still running; make demo-down stops it)" >&2
  exit 1
fi
say "waiting for the Deployment's Pods to be Ready"
if ! k rollout status -n demo-app deployment/web --timeout=60s >/dev/null; then
  echo "deployment/web did not become ready within 60s:" >&2
  k get deploy,pods -n demo-app -o wide >&2 || true
  echo "(everything is still running; make demo-down stops it)" >&2
  exit 1
fi

echo
echo "\$ kubectl get grs -A"
k get grs -A
echo
echo "\$ kubectl get deploy,pods,svc,cm -n demo-app"
k get deploy,pods,svc,cm -n demo-app
cat <<EOF

gitferry is syncing $repo_url (path deploy, every 30s).
Every object is real and is kept in line with git. The Pods are scheduled onto a
fake Node whose kubelet is kwok: they report Running and Ready, but no container
runs (nginx is never pulled).

  export KUBECONFIG=$admin_kubeconfig
  kubectl get grs -A -o wide

Change the app: edit a file in the work clone, commit and push; the next sync
(within 30s) applies it. To sync at once, annotate the sync:

  cd $work
  sed -i 's/replicas: 2/replicas: 3/' deploy/deployment.yaml
  git commit -qam 'Three replicas' && git push -q
  kubectl annotate grs/demo gitferry.dev/requested-at="\$(date +%s)" --overwrite
  kubectl get deploy web -n demo-app    # 3/3 ready a few seconds later

Metrics: curl -s http://$(grep -o 'metrics_addr=[^ ]*' "$log_file" | tail -n 1 | cut -d= -f2)/metrics | grep gitferry_
Operator log: $log_file
Stop and remove everything: make demo-down
EOF
