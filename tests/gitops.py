"""Checks the GitOps examples:

- `examples/kustomization.yaml` lists exactly the example apps (and, when
  kubectl is on the machine, `kubectl kustomize` builds them into its
  namespace);
- the Argo CD health check `examples/argocd/health.lua` gives the expected
  health for each sample in `examples/argocd/health_test.yaml` (Argo CD's own
  test format), run by Lua 5.1 as Argo CD's gopher-lua is; each sample is a
  valid VisitCounterApp by the CRD's schema, and `argocd-cm-patch.yaml` embeds
  the same script byte for byte. A broken script must fail (negative control).

Usage: python tests/gitops.py
"""

import pathlib
import shutil
import subprocess
import sys

import jsonschema
import yaml
from checks import Checks
from lupa import lua51

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ARGOCD = EXAMPLES / "argocd"
HEALTH_KEY = "resource.customizations.health.visitcounter.dev_VisitCounterApp"


def app_examples():
    return sorted(p.name for p in EXAMPLES.glob("*.yaml") if "kind: VisitCounterApp" in p.read_text())


def check_kustomization(checks):
    kustomization = yaml.safe_load((EXAMPLES / "kustomization.yaml").read_text())
    resources = kustomization.get("resources", [])
    checks.check(
        sorted(resources) == app_examples(),
        f"kustomization.yaml lists {sorted(resources)}, the example apps are {app_examples()}",
    )
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print("gitops: kubectl not found, `kubectl kustomize examples/` skipped")
        return
    built = subprocess.run([kubectl, "kustomize", str(EXAMPLES)], capture_output=True, text=True)
    if not checks.check(built.returncode == 0, f"kubectl kustomize examples/: {built.stderr}"):
        return
    apps = [d for d in yaml.safe_load_all(built.stdout) if d]
    checks.check(
        len(apps) == len(resources) and all(a["kind"] == "VisitCounterApp" for a in apps),
        f"kubectl kustomize gives the {len(resources)} apps: {[a['kind'] for a in apps]}",
    )
    checks.check(
        all(a["metadata"].get("namespace") == kustomization["namespace"] for a in apps),
        "kubectl kustomize puts every app in the kustomization's namespace",
    )


def to_lua(lua, value):
    """A Python value as a Lua value; lists become 1-based sequences."""
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def health(script, obj):
    """Runs an Argo CD health script as Argo CD does: `obj` is a global and
    the script returns a table with `status` and `message`."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute(script)
    return {"status": result["status"], "message": result["message"]}


def crd_schema():
    crd = yaml.safe_load((ROOT / "crds" / "visitcounterapp.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def check_argocd(checks):
    script = (ARGOCD / "health.lua").read_text()
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    checks.check(
        patch["data"][HEALTH_KEY] == script,
        "argocd-cm-patch.yaml embeds a different script than health.lua",
    )
    validator = jsonschema.Draft7Validator(crd_schema())
    tests = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]
    statuses = set()
    for test in tests:
        sample = yaml.safe_load((ARGOCD / test["inputPath"]).read_text())
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(sample)]
        checks.check(not errors, f"{test['inputPath']} is not a valid VisitCounterApp: {errors}")
        got = health(script, sample)
        checks.check(got == test["healthStatus"], f"{test['inputPath']}: got {got}, wanted {test['healthStatus']}")
        statuses.add(test["healthStatus"]["status"])
    checks.check(
        {"Healthy", "Progressing", "Degraded"} <= statuses, f"samples cover Healthy, Progressing, Degraded: {statuses}"
    )
    # Negative control: a script that ignores Stalled must fail a sample.
    broken = script.replace('stalled.status == "True"', "false").replace('degraded.status == "True"', "false")
    wrong = [
        t
        for t in tests
        if health(broken, yaml.safe_load((ARGOCD / t["inputPath"]).read_text())) != t["healthStatus"]
    ]
    checks.check(bool(wrong), "negative control: a health check that ignores failures passed every sample")


def main():
    checks = Checks()
    check_kustomization(checks)
    check_argocd(checks)
    return checks.report("gitops")


if __name__ == "__main__":
    sys.exit(main())
