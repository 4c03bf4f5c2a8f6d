#!/usr/bin/env bash
# The project's one test command, for a new user and for CI alike. It needs
# Rust, Go and Python 3; it builds and installs everything else itself.
# 1. cargo test: unit, snapshot and CLI tests, the CRD drift check, and the
#    app (`visitcounter serve`) through its binary.
# 2. A real Kubernetes control plane (scripts/cluster.sh: kube-apiserver,
#    kube-controller-manager, kube-scheduler and etcd built from the Kubernetes
#    Go modules, kwok's simulated nodes), then tests/e2e/ against it (faults
#    the server does not give on demand come from tests/e2e/fault_proxy.rs,
#    a proxy in front of it). A cluster that cannot be built or started fails
#    the run with its reason. Then tests/chaos on it: 50 rounds, each a
#    fault (kill -9 of the operator, kube-apiserver restarted, etcd stopped
#    10 s, the operator's connections cut, a pod killed) at a random moment
#    of a change, with every invariant checked after.
#    With VISITCOUNTER_E2E_KUBECONFIG set, e2e runs against that cluster
#    instead (kind, k3d, minikube) and no local control plane is started.
#    Then the same e2e suite on Kubernetes 1.34 (scripts/cluster.sh
#    --kubernetes=1.34), the oldest release it is run against.
# 3. With Python tools installed into .venv on first use (tests/requirements.txt):
#    the rendered examples and the CRD against Kubernetes' own schemas; the Helm
#    chart (lint, render, schemas, bad values, checkov, RBAC against what the
#    operator really calls); the GitOps examples and the Argo CD health check;
#    the Dockerfile through hadolint; on the local control plane, the operator
#    under the chart's own RBAC with a ServiceAccount token (tests/rbac_real.py).
# 4. The seed's journey (tests/journey.py) on a control plane whose pods really
#    run on kubelet, containerd and runc (scripts/cluster.sh up --real-pods;
#    needs root, iproute2, socat, iptables and libseccomp-dev): helm
#    install, the report's Helm releases moved over with their counts, both
#    seed apps, visits through the NodePorts, a config canary, kill -9, the
#    operator's leader handover, helm uninstall. Before it, on the same
#    control plane, 20 chaos rounds under load: no answered visit is lost.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked

if [ -n "${VISITCOUNTER_E2E_KUBECONFIG:-}" ]; then
  echo "e2e against the cluster of $VISITCOUNTER_E2E_KUBECONFIG"
  if [ -z "${VISITCOUNTER_AUDIT_LOG:-}" ]; then
    # Said, not silent: the checks that count writes from the audit log
    # print "not checked" (set VISITCOUNTER_AUDIT_LOG to the API server's).
    echo "no VISITCOUNTER_AUDIT_LOG: the e2e checks that read the audit log are not checked"
    export VISITCOUNTER_E2E_NO_AUDIT_LOG=1
  fi
  KUBECONFIG=$VISITCOUNTER_E2E_KUBECONFIG cargo test --locked --test e2e -- --ignored
else
  # A control plane that was already running is reused and left running;
  # one started here is stopped when the tests end, pass or fail.
  started_here=
  if ! scripts/cluster.sh env >/dev/null 2>&1; then
    started_here=1
    trap 'scripts/cluster.sh down' EXIT
  fi
  scripts/cluster.sh up
  eval "$(scripts/cluster.sh env)"
  kubectl version
  cargo test --locked --test e2e -- --ignored
  # Chaos rounds on the same control plane: a fault at a random moment of
  # a change, every invariant checked after (VISITCOUNTER_CHAOS_SEED replays).
  cargo test --locked --test chaos -- --ignored --nocapture --exact chaos_rounds_break_no_invariant
  [ -z "$started_here" ] || echo "e2e and chaos passed; stopping the control plane this run started"
fi

venv=.venv
stamp="$venv/.requirements"
if ! cmp -s tests/requirements.txt "$stamp"; then
  echo "setting up $venv (tests/requirements.txt) ..."
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt "$stamp"
fi
cargo build --locked --quiet
"$venv/bin/python" tests/kubernetes_schemas.py target/debug/visitcounter
if [ -n "${VISITCOUNTER_AUDIT_LOG:-}" ]; then
  # The operator under the chart's RBAC, judged by the local control plane's
  # audit log; what it used is what tests/chart.py holds every rule set to.
  export VISITCOUNTER_RBAC_USED=target/rbac-used.json
  rm -f "$VISITCOUNTER_RBAC_USED"
  "$venv/bin/python" tests/rbac_real.py target/debug/visitcounter
else
  echo "no audit log: the chart's RBAC is not checked against the operator's recorded accesses"
  export VISITCOUNTER_CHART_WITHOUT_RBAC_RECORD=1
fi
"$venv/bin/python" tests/chart.py
"$venv/bin/python" tests/gitops.py
"$venv/bin/hadolint" Dockerfile
echo "hadolint: Dockerfile passes"

if [ -z "${VISITCOUNTER_E2E_KUBECONFIG:-}" ]; then
  if [ -n "$started_here" ]; then
    scripts/cluster.sh down
    trap - EXIT
  fi
  # The e2e suite again, on the oldest Kubernetes release it is run against.
  older_started_here=
  if ! scripts/cluster.sh env --kubernetes=1.34 >/dev/null 2>&1; then
    older_started_here=1
    trap 'scripts/cluster.sh down --kubernetes=1.34' EXIT
  fi
  scripts/cluster.sh up --kubernetes=1.34
  (
    eval "$(scripts/cluster.sh env --kubernetes=1.34)"
    kubectl version
    cargo test --locked --test e2e -- --ignored
  )
  if [ -n "$older_started_here" ]; then
    echo "e2e passed on Kubernetes 1.34; stopping the control plane this run started"
    scripts/cluster.sh down --kubernetes=1.34
    trap - EXIT
  fi

  # The seed's journey with pods that really run: a second control plane with
  # a real node, kubelet, kube-proxy, containerd and runc in a network
  # namespace (root; tests/cluster/node/node.sh).
  real_started_here=
  if ! scripts/cluster.sh env --real-pods >/dev/null 2>&1; then
    real_started_here=1
    trap 'scripts/cluster.sh down --real-pods' EXIT
  fi
  scripts/cluster.sh up --real-pods
  (
    eval "$(scripts/cluster.sh env --real-pods)"
    # Chaos rounds while a client visits the app all along: no answered
    # visit lost, from the pods' own files.
    cargo test --locked --test chaos -- --ignored --nocapture --exact chaos_under_load_loses_no_visit
    "$venv/bin/python" tests/journey.py
  )
  [ -z "$real_started_here" ] || echo "journey passed; stopping the control plane this run started"
fi
