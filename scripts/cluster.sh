#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, built from the Kubernetes Go
# modules (tests/cluster/go.mod pins the version), for the tests, the benchmark
# and the demo.
#
#   scripts/cluster.sh up     build what is missing, start, wait until ready
#   scripts/cluster.sh env    print the exports that point a shell at it
#   scripts/cluster.sh down   stop exactly what `up` started
#   scripts/cluster.sh build  only build the binaries (and helm, for the chart)
#   scripts/cluster.sh restart kube-apiserver   stop one component and start it
#                             again as it was (the chaos test's restart fault)
#
# With --kubernetes=1.34 (or VISITCOUNTER_KUBERNETES=1.34), on every verb: the
# same control plane with kube-apiserver, kube-controller-manager and
# kube-scheduler of Kubernetes 1.34 (tests/cluster/k8s-1.34/go.mod pins it),
# state in target/cluster-1.34: the oldest release the e2e suite runs against.
#
# With --real-pods (or VISITCOUNTER_REAL_PODS=1), on every verb: a second
# control plane (state in target/cluster-real) with one real node,
# visitcounter-node: kubelet, kube-proxy, containerd, runc and the CNI
# plugins, built from their Go modules, run as root in a network namespace
# of their own (tests/cluster/node/node.sh says how), with this project's
# image assembled from target/debug/visitcounter. Pods of any other image
# stay in ImagePullBackOff: the node reaches no registry. NodePorts answer on
# the node's address, 10.244.1.2, reached from this machine through a veth
# pair; `env` prints it as VISITCOUNTER_NODE_ADDRESS. Needs iproute2, socat,
# iptables and, to build runc, libseccomp-dev.
#
# `up` starts etcd, kube-apiserver (RBAC, a JSON audit log of every request at
# Metadata level), kube-controller-manager, kube-scheduler, kwok with three
# simulated nodes (pods turn Running and Ready without containers; the image
# example.invalid/never-ready:v1 never does) and tests/cluster/sim/cmd/volumes (a
# provisioner and resizer for the default StorageClass "standard", which allows
# expansion). Everything listens on 127.0.0.1 only; pod IPs are loopback
# addresses too, so nothing is ever sent to an address outside this machine.
# A second `up` while one runs reuses it. VISITCOUNTER_CLUSTER_NODES=0 starts
# it without nodes (pods stay Pending; the benchmark's --no-nodes).
# VISITCOUNTER_CONTROLLER_QPS sets each of kube-controller-manager's
# controllers' requests a second (20 by default, bursts of 1.5 times it): at
# 20, the StatefulSet controller creates about 4 pods a second, each with its
# claim, and 10,000 apps' first pods take 40 minutes (the benchmark's --many).
#
# State (certificates, etcd's data, logs, pid files, kubeconfigs) lives in
# $VISITCOUNTER_CLUSTER_DIR, target/cluster by default.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
module="$root/tests/cluster"
bin="$module/bin"
real_pods=${VISITCOUNTER_REAL_PODS:-}
kubernetes=${VISITCOUNTER_KUBERNETES:-}
args=()
for arg in "$@"; do
  case $arg in
    --real-pods) real_pods=1 ;;
    --kubernetes=*) kubernetes=${arg#--kubernetes=} ;;
    *) args+=("$arg") ;;
  esac
done
set -- "${args[@]}"
# kube-apiserver, kube-controller-manager and kube-scheduler come from here.
kube_module=$module
case $kubernetes in
  "" | 1.36) kubernetes="" ;;
  1.34) kube_module="$module/k8s-$kubernetes" ;;
  *) echo "cluster: --kubernetes=$kubernetes: only 1.36 (the default) and 1.34 are built here" >&2 && exit 1 ;;
esac
kube_bin="$kube_module/bin"
if [ -n "$kubernetes" ] && [ -n "$real_pods" ]; then
  echo "cluster: --kubernetes and --real-pods do not go together yet" >&2
  exit 1
elif [ -n "$kubernetes" ]; then
  state="${VISITCOUNTER_CLUSTER_DIR:-$root/target/cluster-$kubernetes}"
  components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok volumes)
elif [ -n "$real_pods" ]; then
  state="${VISITCOUNTER_CLUSTER_DIR:-$root/target/cluster-real}"
  # The node is stopped first (last here), then what it left (node_leftovers).
  components=(etcd kube-apiserver kube-controller-manager kube-scheduler volumes api-relay node-api-relay
    containerd kubelet kube-proxy gateway)
else
  state="${VISITCOUNTER_CLUSTER_DIR:-$root/target/cluster}"
  components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok volumes)
fi
# The real node: its build, network, configuration and start.
# shellcheck source=tests/cluster/node/node.sh
source "$module/node/node.sh"

log() { printf 'cluster: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

# The binaries are rebuilt when go.mod, go.sum or our Go sources change; Go's
# build cache makes a rebuild after a small change take seconds.
build() {
  command -v go >/dev/null || die "Go is needed to build the control plane (go.dev/doc/install)"
  local stamp want
  if [ "$kube_module" != "$module" ]; then
    build_older
  fi
  want=$(cd "$module" && cat go.mod go.sum sim/go.mod sim/go.sum helm/go.mod helm/go.sum $(find . -name '*.go' -not -path './node/*' | sort) |
    sha256sum | cut -d' ' -f1)
  stamp="$bin/.built"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$bin/kube-apiserver" ]; then
    return 0
  fi
  log "building Kubernetes, etcd, kwok, the volume controller and helm (the first build takes many minutes)"
  mkdir -p "$bin"
  (
    # errexit does not hold inside a subshell tested by ||: each step is chained.
    cd "$module" &&
      go_build_kubernetes "$bin" k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kubelet \
        k8s.io/kubernetes/cmd/kube-proxy ./cmd/etcd &&
      cd sim &&
      GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$bin/" sigs.k8s.io/kwok/cmd/kwok ./cmd/volumes &&
      cd ../helm &&
      GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$bin/" helm.sh/helm/v4/cmd/helm
  ) || die "building the control plane failed (output above)"
  echo "$want" >"$stamp"
}

# The tests' Gateway API implementation, Traefik, built from its Go module
# (tests/cluster/gateway/build.sh) for the cluster whose pods run.
traefik_version=v3.7.13
build_gateway() {
  local want stamp="$bin/.traefik-built"
  want="$traefik_version $(sha256sum "$module/gateway/build.sh" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$bin/traefik" ]; then
    return 0
  fi
  log "building Traefik $traefik_version, the gateway (the first build takes a few minutes)"
  mkdir -p "$bin"
  "$module/gateway/build.sh" "$traefik_version" "$bin/traefik" "$root/target/traefik-build" ||
    die "building Traefik failed (output above)"
  echo "$want" >"$stamp"
}

# Builds, in the current directory's module, kube-apiserver,
# kube-controller-manager, kube-scheduler and the packages given after the
# output folder, stamped with the module's k8s.io/kubernetes version as
# upstream's release builds are.
go_build_kubernetes() {
  local out=$1 version minor
  shift
  version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
  minor=${version#v1.}
  minor=${minor%%.*}
  log "building Kubernetes $version"
  GOFLAGS=-mod=readonly go build -trimpath \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$version" \
    -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler "$@"
}

# The three components of the older release, from their own module.
build_older() {
  local stamp want
  want=$(cd "$kube_module" && cat go.mod go.sum | sha256sum | cut -d' ' -f1)
  stamp="$kube_bin/.built"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$kube_bin/kube-apiserver" ]; then
    return 0
  fi
  log "the older release's components (the first build takes many minutes)"
  mkdir -p "$kube_bin"
  (cd "$kube_module" && go_build_kubernetes "$kube_bin") || die "building the older Kubernetes release failed (output above)"
  echo "$want" >"$stamp"
}

alive() {
  local pid
  pid=$(cat "$state/pids/$1.pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local name=$1
  shift
  mkdir -p "$state/cmd"
  printf '%s\0' "$@" >"$state/cmd/$name"
  "$@" >>"$state/logs/$name.log" 2>&1 &
  echo $! >"$state/pids/$name.pid"
}

# Runs "$@" again whenever it exits, as a kubelet restarts a static pod:
# kube-controller-manager and kube-scheduler exit by design on some errors
# (the scheduler when it finds its cache corrupted, which the chaos test's
# API server restarts can bring about) and count on being started again.
# SIGTERM stops the component and the loop.
supervised() {
  local child
  trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0' TERM INT
  while true; do
    "$@" &
    child=$!
    wait "$child" || true
    echo "cluster: $1 exited; starting it again in 1 s"
    sleep 1
  done
}

# Stops one component as an upgrade would (SIGTERM, then SIGKILL after 5 s)
# and starts it again with the same command line, for the chaos test; for
# kube-apiserver it then waits until the server is ready again.
restart() {
  local name=${1:-} pid cmd=()
  [ -f "$state/cmd/$name" ] || die "restart: no command line kept for '$name' (in $state/cmd; started by an older cluster.sh?)"
  pid=$(cat "$state/pids/$name.pid" 2>/dev/null) || die "restart: $name is not running"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  pkill -KILL -P "$pid" 2>/dev/null || true
  kill -KILL "$pid" 2>/dev/null || true
  while IFS= read -r -d '' arg; do cmd+=("$arg"); done <"$state/cmd/$name"
  start "$name" "${cmd[@]}"
  if [ "$name" = kube-apiserver ]; then
    wait_for "kube-apiserver is ready again" 120 kubectl_ get --raw /readyz
  fi
  log "restarted $name"
}

kubectl_() { "$bin/kubectl" --kubeconfig "$state/admin.kubeconfig" "$@"; }

certificates() {
  local dir="$state/pki"
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=visitcounter-test-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    # name, subject, extensions
    sign() {
      openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
      printf '%s\n' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    }
    sign apiserver "/CN=kube-apiserver" \
      "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:10.244.1.2,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
    sign admin "/O=system:masters/CN=visitcounter-test-admin" "extendedKeyUsage=clientAuth"
    sign controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
    sign scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
    sign kwok "/O=system:masters/CN=kwok" "extendedKeyUsage=clientAuth"
    sign volumes "/O=system:masters/CN=visitcounter-test-volumes" "extendedKeyUsage=clientAuth"
    sign kubelet "/O=system:nodes/CN=system:node:visitcounter-node" "extendedKeyUsage=clientAuth"
    sign kube-proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
    # The API server's own identity towards kubelets (logs, exec).
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
  )
}

kubeconfig() {
  cat >"$state/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: visitcounter-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $state/pki/ca.crt
users:
- name: $1
  user:
    client-certificate: $state/pki/$1.crt
    client-key: $state/pki/$1.key
contexts:
- name: visitcounter-test
  context: {cluster: visitcounter-test, user: $1}
current-context: visitcounter-test
EOF
}

wait_for() {
  local what=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    for c in "${components[@]}"; do
      if [ -f "$state/pids/$c.pid" ] && ! alive "$c"; then
        tail -n 30 "$state/logs/$c.log" >&2 || true
        die "$c exited while waiting until $what (log: $state/logs/$c.log)"
      fi
    done
    [ $SECONDS -lt $deadline ] || die "timed out after ${seconds}s waiting until $what (logs: $state/logs)"
    sleep 0.5
  done
}

# Room for the benchmark's 1,000 apps at 3 replicas of 100m CPU each.
simulated_nodes() {
  for i in 0 1 2; do cat <<NODE
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  capacity: {cpu: "1000", memory: 4Ti, pods: "3000"}
  allocatable: {cpu: "1000", memory: 4Ti, pods: "3000"}
NODE
  done
}

start_kwok() {
  # kwok's node stages come from its Go module, the pod stages are ours. It
  # renews each node's Lease, without which the node lifecycle controller
  # marks the nodes NotReady after 40 s and every pod with them.
  local kwok_dir
  kwok_dir=$(cd "$module/sim" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  {
    cat "$kwok_dir/kustomize/stage/node/fast/node-initialize.yaml"
    echo "---"
    cat "$kwok_dir/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml"
    echo "---"
    cat "$module/kwok-pod-stages.yaml"
  } >"$state/kwok.yaml"
  start kwok "$bin/kwok" --kubeconfig="$state/kwok.kubeconfig" --config="$state/kwok.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr=127.64.0.0/12 --node-ip=127.0.0.1 --node-lease-duration-seconds=40
}

# Gateway API on the node: the standard CRDs, a GatewayClass for Traefik,
# the Gateway `gateway/edge` (listener `web`, HTTP on port 8000, routes from
# every namespace) and Traefik serving it from the node's network namespace,
# where pod addresses answer, as a gateway on the node's host network would.
# Its port answers as a NodePort at the node's address, through the Service
# `gateway/edge` whose one endpoint is the node's address (kube-proxy's rules).
start_gateway() {
  kubectl_ apply --server-side -f "$("$root/scripts/gateway-api.sh")" >/dev/null
  # Traefik's own CRDs (traefik.io), from its module: a TraefikService of
  # type mirroring is its way to copy requests (it has no RequestMirror).
  local traefik_dir
  traefik_dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/traefik/traefik/v3@$traefik_version" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  kubectl_ apply --server-side -f "$traefik_dir/docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml" >/dev/null
  wait_for "the Gateway API CRDs are established" 60 \
    kubectl_ wait --for=condition=Established crd/gateways.gateway.networking.k8s.io crd/httproutes.gateway.networking.k8s.io \
    crd/traefikservices.traefik.io --timeout=1s
  sed "s#server: .*#server: https://$node_ip:443#" "$state/admin.kubeconfig" >"$state/gateway.kubeconfig"
  kubectl_ apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: gateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: traefik}
spec: {controllerName: traefik.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: gateway}
spec:
  gatewayClassName: traefik
  listeners:
  - {name: web, protocol: HTTP, port: 8000, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: v1
kind: Service
metadata: {name: edge, namespace: gateway}
spec:
  type: NodePort
  ports: [{name: web, port: 8000, targetPort: 8000}]
---
$(node_endpoint_slice gateway edge web 8000)
EOF
  KUBECONFIG="$state/gateway.kubeconfig" start gateway ip netns exec "vcn-$node_name-node" "$bin/traefik" \
    --global.checknewversion=false --global.sendanonymoususage=false \
    --entrypoints.web.address=:8000 --providers.kubernetesgateway=true --providers.kubernetescrd=true \
    --log.level=INFO --log.nocolor=true
  wait_for "the Gateway is programmed" 120 \
    kubectl_ -n gateway wait --for=condition=Programmed gateway/edge --timeout=1s
  kubectl_ -n gateway get service edge -o jsonpath='{.spec.ports[0].nodePort}' >"$state/gateway-port"
}

up() {
  if alive kube-apiserver && kubectl_ get --raw /readyz >/dev/null 2>&1; then
    log "already running (state in $state)"
    return 0
  fi
  build
  if [ -n "$real_pods" ]; then
    node_needs
    build_node
    build_gateway
  fi
  down >/dev/null 2>&1 || true
  rm -rf "$state"
  mkdir -p "$state/pids" "$state/logs" "$state/volumes"
  local etcd_port etcd_peer_port
  etcd_port=$(free_port)
  etcd_peer_port=$(free_port)
  api_port=$(free_port)
  certificates
  for user in admin controller-manager scheduler kwok volumes kubelet kube-proxy; do kubeconfig "$user"; done
  cat >"$state/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
EOF
  start etcd "$bin/etcd" --name=test --data-dir="$state/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="test=http://127.0.0.1:$etcd_peer_port" --unsafe-no-fsync --log-level=warn
  start kube-apiserver "$kube_bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$state/pki/apiserver.crt" --tls-private-key-file="$state/pki/apiserver.key" \
    --client-ca-file="$state/pki/ca.crt" \
    --service-account-key-file="$state/pki/sa.pub" --service-account-signing-key-file="$state/pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range=10.96.0.0/16 \
    --authorization-mode=Node,RBAC \
    --audit-policy-file="$state/audit-policy.yaml" --audit-log-path="$state/audit.log" \
    --audit-log-format=json --audit-log-mode=blocking --audit-log-maxsize=0 \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --kubelet-client-certificate="$state/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$state/pki/apiserver-kubelet-client.key" \
    --profiling=false
  wait_for "kube-apiserver is ready" 120 kubectl_ get --raw /readyz
  local cm_port sched_port
  cm_port=$(free_port)
  sched_port=$(free_port)
  local cm="$state/controller-manager.kubeconfig"
  # A node heard from within 5 minutes counts as alive: kwok resumes its
  # nodes' leases only some tens of seconds after a kube-apiserver restart
  # (the chaos test's fault), and past the default 50 s grace the node
  # controller marks every pod NotReady, which no simulated kubelet undoes.
  start kube-controller-manager supervised "$kube_bin/kube-controller-manager" \
    --node-monitor-grace-period=5m \
    --kubeconfig="$cm" --authentication-kubeconfig="$cm" --authorization-kubeconfig="$cm" \
    --bind-address=127.0.0.1 --secure-port="$cm_port" --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$state/pki/sa.key" --root-ca-file="$state/pki/ca.crt" \
    --cluster-name=visitcounter-test --profiling=false \
    --kube-api-qps="${VISITCOUNTER_CONTROLLER_QPS:-20}" \
    --kube-api-burst="$(( ${VISITCOUNTER_CONTROLLER_QPS:-20} * 3 / 2 ))"
  local sched="$state/scheduler.kubeconfig"
  start kube-scheduler supervised "$kube_bin/kube-scheduler" \
    --kubeconfig="$sched" --authentication-kubeconfig="$sched" --authorization-kubeconfig="$sched" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" --leader-elect=false --profiling=false
  if [ -z "$real_pods" ]; then
    start_kwok
  fi
  start volumes "$bin/volumes" --kubeconfig="$state/volumes.kubeconfig" --root="$state/volumes"
  kubectl_ apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: visitcounter.dev/local-volumes
allowVolumeExpansion: true
reclaimPolicy: Delete
volumeBindingMode: Immediate
$([ -n "$real_pods" ] || [ "${VISITCOUNTER_CLUSTER_NODES:-3}" = 0 ] || simulated_nodes)
EOF
  wait_for "the default ServiceAccount exists" 120 kubectl_ -n default get serviceaccount default
  if [ -n "$real_pods" ]; then
    start_node
    wait_for "the node is Ready" 120 kubectl_ wait --for=condition=Ready "node/$node_name" --timeout=1s
    start_gateway
  elif [ "${VISITCOUNTER_CLUSTER_NODES:-3}" != 0 ]; then
    wait_for "the simulated nodes are Ready" 120 kubectl_ wait --for=condition=Ready node --all --timeout=1s
  fi
  echo "$api_port" >"$state/api-port"
  log "ready: kube-apiserver on https://127.0.0.1:$api_port (state in $state)"
}

down() {
  local stopped=()
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    local c=${components[$i]} pid
    pid=$(cat "$state/pids/$c.pid" 2>/dev/null) || continue
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      pkill -KILL -P "$pid" 2>/dev/null || true
      kill -KILL "$pid" 2>/dev/null || true
      stopped+=("$c")
    fi
    rm -f "$state/pids/$c.pid"
  done
  if [ -n "$real_pods" ]; then
    node_leftovers
  fi
  log "stopped: ${stopped[*]:-nothing was running}"
}

env_() {
  [ -f "$state/admin.kubeconfig" ] && alive kube-apiserver || die "not running: scripts/cluster.sh up"
  echo "export KUBECONFIG=$state/admin.kubeconfig"
  echo "export VISITCOUNTER_AUDIT_LOG=$state/audit.log"
  echo "export PATH=$bin:\$PATH"
  if [ -n "$real_pods" ]; then
    # The node's address, where NodePorts answer, and its containerd, for
    # ctr (the tests find a pod's processes with `ctr task ls`).
    echo "export VISITCOUNTER_NODE_ADDRESS=$node_ip"
    echo "export CONTAINERD_ADDRESS=$state/node/containerd.sock CONTAINERD_NAMESPACE=k8s.io"
    # The Gateway gateway/edge (Traefik), listener web, at a NodePort.
    echo "export VISITCOUNTER_GATEWAY_URL=http://$node_ip:$(cat "$state/gateway-port")"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) env_ ;;
  build) build && if [ -n "$real_pods" ]; then build_node && build_gateway; fi ;;
  restart) restart "${2:-}" ;;
  *) die "usage: scripts/cluster.sh up | env | down | build | restart COMPONENT [--kubernetes=1.34] [--real-pods]" ;;
esac
