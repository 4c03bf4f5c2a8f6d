#!/usr/bin/env bash
# Builds Traefik, the tests' Gateway API implementation, from its Go module
# as the module proxy serves it:
#
#   tests/cluster/gateway/build.sh VERSION OUTPUT WORKDIR
#
# Traefik's own go.mod builds it, in a copy of the module in WORKDIR, with
# three things the proxy cannot give stood in for (each commented below);
# none is on the path of a request the tests send. Nothing of Traefik is kept
# in this repository.
set -euo pipefail
version=$1 out=$2 work=$3
mod() { GOFLAGS=-mod=mod go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'; }
rm -rf "$work" && mkdir -p "$work"
cp -r "$(mod github.com/traefik/traefik/v3@$version)" "$work/traefik"
chmod -R u+w "$work/traefik"
cd "$work/traefik"
lego=$(go mod edit -json | python3 -c 'import json,sys; print(next(r["Version"] for r in json.load(sys.stdin)["Require"] if r["Path"]=="github.com/go-acme/lego/v5"))')
cp -r "$(mod github.com/go-acme/lego/v5@$lego)" "$work/lego"
chmod -R u+w "$work/lego"
# lego's DNS-challenge providers pull in cloud SDKs the proxy refuses; the
# tests' gateway does no ACME, so the one function Traefik calls refuses.
rm "$work/lego/providers/dns/"*.go
cat > "$work/lego/providers/dns/stub.go" <<'GO'
// Package dns stands in for lego's DNS-challenge providers, whose SDKs
// the module proxy does not all serve; the tests' gateway uses no ACME.
package dns

import (
	"fmt"

	"github.com/go-acme/lego/v5/challenge"
)

// NewDNSChallengeProviderByName refuses every provider.
func NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {
	return nil, fmt.Errorf("DNS challenge provider %q is not built into this gateway", name)
}
GO
# The nested module dynamic/ext is left out of Traefik's module zip; its
# two types extend the dynamic configuration and are empty in the open build.
mkdir -p pkg/config/dynamic/ext
printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24\n' > pkg/config/dynamic/ext/go.mod
printf '// Package ext holds extension points of the dynamic configuration.\npackage ext\n\n// HTTP extends the HTTP configuration.\ntype HTTP struct{}\n\n// Router extends a router.\ntype Router struct{}\n' > pkg/config/dynamic/ext/ext.go
# Traefik's fork of go-http-auth is not served; upstream v0.4.0 is, and
# lacks two functions of the fork. The tests' gateway authenticates nobody:
# the stand-ins refuse every password and answer a stale nonce like a
# missing one.
cp -r "$(mod github.com/abbot/go-http-auth@v0.4.0)" "$work/go-http-auth"
chmod -R u+w "$work/go-http-auth"
printf 'module github.com/abbot/go-http-auth\n\ngo 1.16\n' > "$work/go-http-auth/go.mod"
cat > "$work/go-http-auth/standin.go" <<'GO'
package auth

import "net/http"

// CheckSecret refuses every password: no basic auth in this build.
func CheckSecret(password, secret string) bool { return false }

// RequireAuthStale asks for credentials again.
func (da *DigestAuth) RequireAuthStale(w http.ResponseWriter, r *http.Request) { da.RequireAuth(w, r) }
GO
go mod edit -replace "github.com/go-acme/lego/v5=$work/lego" \
  -replace "github.com/abbot/go-http-auth=$work/go-http-auth"
GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out" ./cmd/traefik
