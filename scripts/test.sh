#!/usr/bin/env bash
# The project's one test command, for a new user and for CI alike.
# 1. cargo test: unit, snapshot and CLI tests, the CRD drift check, the
#    controller against the stand-in API server (tests/e2e.rs skips itself
#    unless VISITCOUNTER_E2E=1).
# 2. With Python tools installed into .venv on first use (tests/requirements.txt):
#    the rendered examples and the CRD against Kubernetes' own schemas; the Helm
#    chart (lint, render, schemas, bad values, checkov, RBAC against what the
#    operator really calls); the GitOps examples and the Argo CD health check;
#    the Dockerfile through hadolint.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked

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
"$venv/bin/python" tests/chart.py
"$venv/bin/python" tests/gitops.py
"$venv/bin/hadolint" Dockerfile
echo "hadolint: Dockerfile passes"
