#!/usr/bin/env bash
# Prints the folder of the Gateway API's standard-channel CRDs (HTTPRoute,
# Gateway, GatewayClass, ...), from the module sigs.k8s.io/gateway-api that
# the Go module proxy serves; downloads it into Go's module cache first.
# `kubectl apply --server-side -f "$(scripts/gateway-api.sh)"` installs them.
set -euo pipefail
version=${VISITCOUNTER_GATEWAY_API_VERSION:-v1.6.3}
dir=$(GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$version" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
[ -d "$dir/config/crd/standard" ] || { echo "gateway-api.sh: no config/crd/standard in $dir" >&2; exit 1; }
echo "$dir/config/crd/standard"
