# The node whose pods really run, sourced by scripts/cluster.sh for
# --real-pods: kubelet and kube-proxy (built from k8s.io/kubernetes with the
# control plane), containerd and runc (built from their Go modules here, runc
# with seccomp), the CNI plugins bridge, host-local, loopback and portmap
# (from their Go module), and this project's image, assembled from the built
# binary by image.py with the Dockerfile's user, entrypoint and command.
#
# The node is a network namespace, vcn-visitcounter-node-node, as a machine of
# its own: eth0 at 10.244.1.2 (its InternalIP), joined by a veth pair to this
# machine at 10.244.1.1, and cni0, the pods' bridge, at 10.244.0.1/24. Every
# node process runs in it (nsenter joins only its network namespace, so
# kubelet's volume mounts are the ones containerd sees). The API server
# listens on 127.0.0.1 only: socat carries 10.244.1.2:443 in the node to it
# through a unix socket, as a node's local API load balancer would, and the
# `kubernetes` Service's endpoint is that address. NodePorts answer on the
# node's address, as they do on a minikube node's; the API server reaches the
# kubelet there, for `kubectl logs`.
#
# Four settings make a node of this machine, whose processes lack
# CAP_SYS_RESOURCE and whose cgroups are v1: containerd's
# restrict_oom_score_adj, kubelet's failCgroupV1: false and cgroupsPerQOS:
# false, and a local pause image (cmd/pause) for the pods' sandboxes.

node_name=visitcounter-node
node_netns="vcn-$node_name-node"
node_ip=10.244.1.2
node_host_ip=10.244.1.1
node_host_link=vcn-node
pod_gateway=10.244.0.1
app_image="docker.io/visitcounter/visitcounter:$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
pause_image=visitcounter.dev/pause:1

# containerd, its shim, ctr, runc, the CNI plugins and pause, rebuilt when
# the node module changes; needs libseccomp's headers (libseccomp-dev) for
# runc, and iptables and socat at run time.
build_node() {
  local want stamp="$bin/.node-built"
  want=$(cd "$module/node" && cat go.mod go.sum $(find . -name '*.go' | sort) | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$bin/containerd" ]; then
    return 0
  fi
  log "building containerd, runc, the CNI plugins and pause (the first build takes a few minutes)"
  mkdir -p "$bin/cni"
  (
    cd "$module/node" &&
      CGO_ENABLED=1 GOFLAGS=-mod=readonly go build -trimpath -tags "seccomp no_btrfs" -ldflags "-s -w" -o "$bin/" \
        github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
        github.com/containerd/containerd/v2/cmd/ctr github.com/opencontainers/runc &&
      GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$bin/cni/" \
        github.com/containernetworking/plugins/plugins/main/bridge github.com/containernetworking/plugins/plugins/main/loopback \
        github.com/containernetworking/plugins/plugins/ipam/host-local github.com/containernetworking/plugins/plugins/meta/portmap &&
      CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$bin/" ./cmd/pause
  ) || die "building the node failed (output above; runc needs libseccomp-dev)"
  echo "$want" >"$stamp"
}

node_needs() {
  [ "$(id -u)" = 0 ] || die "--real-pods needs root: the node is a network namespace with its own mounts and cgroups"
  local missing=()
  for tool in ip nsenter socat iptables; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [ ${#missing[@]} = 0 ] ||
    die "--real-pods needs ${missing[*]} (Debian: apt-get install iproute2 util-linux socat iptables)"
}

# Runs what follows it in the node's network namespace only.
in_node=(nsenter "--net=/run/netns/$node_netns")

# The node's network namespace, its link to this machine and the pods' bridge.
node_network() {
  ip netns add "$node_netns"
  ip link add "$node_host_link" type veth peer name eth0 netns "$node_netns"
  ip addr add "$node_host_ip/30" dev "$node_host_link"
  ip link set "$node_host_link" up
  ip -n "$node_netns" link set lo up
  ip -n "$node_netns" addr add "$node_ip/30" dev eth0
  ip -n "$node_netns" link set eth0 up
  # No default route: the node reaches this machine's 10.244.1.1 and
  # nothing beyond it (an image pull or a DNS query fails at once).
  ip -n "$node_netns" link add cni0 type bridge
  ip -n "$node_netns" addr add "$pod_gateway/24" dev cni0
  ip -n "$node_netns" link set cni0 up
  "${in_node[@]}" sysctl -qw net.ipv4.ip_forward=1
}

node_config() {
  local dir=$1
  mkdir -p "$dir/cni" "$dir/logs"
  cat >"$dir/cni/10-pods.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "pods",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$dir/cni-ipam",
              "ranges": [[{"subnet": "10.244.0.0/24", "gateway": "$pod_gateway"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat >"$dir/containerd.toml" <<EOF
version = 3
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$dir/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$pause_image"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "$bin/runc"
      Root = "$dir/runc"
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$bin/cni"]
    conf_dir = "$dir/cni"
EOF
  cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $state/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$dir/containerd.sock
podLogsDir: $dir/logs
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failCgroupV1: false
failSwapOn: false
resolvConf: ""
# This machine's disk may be nearly full: no eviction or image collection
# for it, which would take the node's only images.
evictionHard: {memory.available: 100Mi, nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
  cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $state/kube-proxy.node.kubeconfig}
hostnameOverride: $node_name
mode: iptables
clusterCIDR: 10.244.0.0/24
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack: {maxPerCore: 0}
EOF
}

# Imports the project's image and the pause image into containerd's
# Kubernetes namespace: the same inputs give the same image.
node_images() {
  local dir=$1 ctr=("$bin/ctr" --address "$dir/containerd.sock" --namespace k8s.io)
  log "building visitcounter (cargo) and its image"
  (cd "$root" && cargo build --locked --quiet -p visitcounter) || die "cannot build visitcounter"
  python3 "$module/node/image.py" app "$root/Dockerfile" "$root/target/debug/visitcounter" "$app_image" "$dir/app-image.tar"
  python3 "$module/node/image.py" pause "$bin/pause" "$pause_image" "$dir/pause-image.tar"
  # ctr's output (at each start, a warning that cgroup v1 is deprecated) is
  # shown only when an import fails.
  local image out
  for image in app pause; do
    out=$("${ctr[@]}" images import "$dir/$image-image.tar" 2>&1) || die "ctr images import $image-image.tar: $out"
  done
}

# An EndpointSlice whose one endpoint is the node's address, for a Service
# served by the node itself: namespace, Service, port name, port.
node_endpoint_slice() {
  cat <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $2-node
  namespace: $1
  labels: {kubernetes.io/service-name: $2}
addressType: IPv4
ports: [{name: $3, port: $4}]
endpoints: [{addresses: ["$node_ip"], conditions: {ready: true}}]
EOF
}

start_node() {
  node_needs
  local dir="$state/node"
  node_network
  node_config "$dir"
  # The API server, on 127.0.0.1 here, at the node's address there.
  start api-relay socat "UNIX-LISTEN:$dir/api.sock,fork,unlink-early" "TCP:127.0.0.1:$api_port"
  wait_for "the API relay listens" 30 test -S "$dir/api.sock"
  start node-api-relay "${in_node[@]}" socat "TCP-LISTEN:443,bind=$node_ip,fork,reuseaddr" "UNIX-CONNECT:$dir/api.sock"
  for user in kubelet kube-proxy; do
    sed "s#server: .*#server: https://$node_ip:443#" "$state/$user.kubeconfig" >"$state/$user.node.kubeconfig"
  done
  node_endpoint_slice default kubernetes https 443 | kubectl_ apply -f - >/dev/null
  PATH="$bin:$PATH" start containerd "${in_node[@]}" "$bin/containerd" --config "$dir/containerd.toml"
  wait_for "containerd answers" 60 "$bin/ctr" --address "$dir/containerd.sock" version
  node_images "$dir"
  start kubelet "${in_node[@]}" "$bin/kubelet" --config="$dir/kubelet.yaml" --kubeconfig="$state/kubelet.node.kubeconfig" \
    --hostname-override="$node_name" --node-ip="$node_ip" --root-dir="$dir/kubelet" --cert-dir="$dir/kubelet/pki"
  start kube-proxy "${in_node[@]}" "$bin/kube-proxy" --config="$dir/kube-proxy.yaml"
}

# What stopping the node's processes leaves: its pods' containers (their
# shims outlive containerd), mounts under the node's folder, cgroups, and
# the namespace, with the veth pair in it.
node_leftovers() {
  local dir="$state/node" shim
  for shim in $(pgrep -f "containerd-shim-runc-v2 .*-address $dir/containerd.sock" || true); do
    pkill -KILL -P "$shim" 2>/dev/null || true
    kill -KILL "$shim" 2>/dev/null || true
  done
  if [ -d "$dir" ]; then
    findmnt -rn -o TARGET | grep -F "$dir/" | sort -r | while read -r target; do
      umount -l "$target" 2>/dev/null || true
    done
  fi
  # runc's cgroups for the pods (containerd's k8s.io): rmdir takes only
  # those whose processes are all gone.
  find /sys/fs/cgroup/*/k8s.io -depth -type d -exec rmdir {} + 2>/dev/null || true
  if [ -e "/run/netns/$node_netns" ]; then
    ip netns pids "$node_netns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip netns del "$node_netns" 2>/dev/null || true
  fi
}
