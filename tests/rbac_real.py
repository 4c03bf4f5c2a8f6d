"""The operator under the Helm chart's own RBAC, on the real API server.

Renders the chart with Helm's SDK (default values: a ClusterRole), applies its
ServiceAccount, roles and bindings to the test control plane, runs
`visitcounter operator` as that ServiceAccount (a TokenRequest token) with the
Deployment's own arguments, and drives every code path with kubectl: create
with a ServiceAccount, scale, a policy change (the orphaning re-create),
an HTTPRoute (spec.traffic) created and deleted,
storage growth, a stuck pod replaced, pods that cannot be created,
maxUnavailable (the dry run that asks whether the API server keeps it), a StatefulSet an admission policy refuses (the children
created before it deleted again), an old config's ConfigMap deleted, the Lease
taken and released. The audit log is the
judge: no request of that ServiceAccount may be refused (403), and the
accesses it made must be exactly those the rules grant.

Usage, with the control plane up (`eval "$(scripts/cluster.sh env)"`):
python tests/rbac_real.py target/debug/visitcounter
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import yaml

from chart import CLUSTER_SCOPED, granted, render
from checks import Checks

ROOT = pathlib.Path(__file__).resolve().parent.parent
RELEASE_NAMESPACE = "visitcounter-system"
APPS = "rbac-apps"
NEVER_READY_IMAGE = "example.invalid/never-ready:v1"


def kubectl(*args, input=None, check=True):
    result = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


def apply(objects):
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(objects))


def wait_until(what, check, seconds=90):
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting until {what}")
        time.sleep(0.5)


def condition(app, type_):
    out = kubectl("-n", APPS, "get", "vca", app, "-o", "json", check=False)
    if not out:
        return None
    for c in json.loads(out).get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c["status"], c["reason"]
    return None


def ready(app):
    return condition(app, "Ready") == ("True", "AllReplicasReady")


def app(name, spec):
    return {"apiVersion": "visitcounter.dev/v1alpha1", "kind": "VisitCounterApp",
            "metadata": {"name": name, "namespace": APPS}, "spec": spec}


def refuse_seven_replicas(namespace):
    """A ValidatingAdmissionPolicy that refuses StatefulSets of 7 replicas in
    `namespace`: how a cluster's policy refuses a child the CRD admitted."""
    name = "refuse-seven-replicas"
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": name},
         "spec": {"failurePolicy": "Fail",
                  "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                                          "operations": ["CREATE", "UPDATE"],
                                                          "resources": ["statefulsets"]}]},
                  "validations": [{"expression": "object.spec.replicas != 7",
                                   "message": "this cluster allows no StatefulSet of 7 replicas"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": name},
         "spec": {"policyName": name, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {
                      "matchLabels": {"kubernetes.io/metadata.name": namespace}}}}},
    ]


def scenarios():
    """Every path of the operator that talks to the API server."""
    apply([app("web", {"replicas": 2, "createServiceAccount": True})])
    wait_until("web is Ready", lambda: ready("web"))
    kubectl("-n", APPS, "scale", "vca/web", "--replicas=3")
    wait_until("web is scaled", lambda: ready("web") and "3" == kubectl(
        "-n", APPS, "get", "sts", "web", "-o", "jsonpath={.status.readyReplicas}", check=False))
    apply([app("web", {"replicas": 3, "createServiceAccount": True, "podManagementPolicy": "Parallel"})])
    wait_until("web is re-created", lambda: ready("web") and "Parallel" == kubectl(
        "-n", APPS, "get", "sts", "web", "-o", "jsonpath={.spec.podManagementPolicy}", check=False))
    grown = {"replicas": 3, "createServiceAccount": True, "podManagementPolicy": "Parallel",
             "storage": {"size": "2Gi"}}
    apply([app("web", grown)])
    wait_until("web's claims grew", lambda: ready("web") and "2Gi" == kubectl(
        "-n", APPS, "get", "pvc", "data-web-0", "-o", "jsonpath={.status.capacity.storage}"))
    stuck = {"replicas": 2, "updateStrategy": {"rollingUpdate": {"replaceStuckPods": True}}}
    apply([app("stuck", stuck)])
    wait_until("stuck is Ready", lambda: ready("stuck"))
    apply([app("stuck", {**stuck, "image": NEVER_READY_IMAGE})])
    wait_until("the stuck rollout is reported", lambda: condition("stuck", "Progressing") == ("False", "RolloutStuck"))
    apply([app("stuck", stuck)])
    wait_until("the stuck pod was replaced", lambda: ready("stuck") and "StuckPodReplaced" in kubectl(
        "-n", APPS, "get", "events", "-o", "jsonpath={.items[*].reason}"))
    apply([app("lonely", {"serviceAccountName": "nobody"})])
    wait_until("lonely's pods cannot be created", lambda: condition("lonely", "Degraded") == ("True", "PodsNotCreated"))
    apply([app("gated", {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}})])
    wait_until("gated says who keeps maxUnavailable", lambda: "maxUnavailableBy" in json.dumps(
        json.loads(kubectl("-n", APPS, "get", "vca", "gated", "-o", "json")).get("status", {}).get("rollout", {})))
    # A StatefulSet an admission policy refuses: the Services, ServiceAccount
    # and ConfigMap created before it are deleted again.
    apply(refuse_seven_replicas(APPS))
    time.sleep(2)  # the policy takes effect once the API server has loaded it
    apply([app("refused", {"replicas": 7, "createServiceAccount": True})])
    wait_until("refused is rolled back", lambda: condition("refused", "Degraded") == ("True", "ChildRejected")
               and not kubectl("-n", APPS, "get", "svc,sa,cm", "-l", "app.kubernetes.io/instance=refused", "-o", "name"))
    kubectl("delete", "validatingadmissionpolicy,validatingadmissionpolicybinding", "refuse-seven-replicas")
    # A release nothing controls, taken over (visitcounter.dev/adopt): its
    # StatefulSet and Service read past the caches, its leftover pods read
    # and deleted.
    chart = {"app.kubernetes.io/instance": "chart", "app.kubernetes.io/managed-by": "Helm"}
    apply([
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "chart", "namespace": APPS},
         "spec": {"replicas": 1, "serviceName": "chart", "selector": {"matchLabels": chart},
                  "template": {"metadata": {"labels": chart},
                               "spec": {"containers": [{"name": "app", "image": "visitcounter/visitcounter:0.1.0"}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "chart", "namespace": APPS},
         "spec": {"selector": chart, "ports": [{"port": 8080}]}},
    ])
    wait_until("the chart's pod runs", lambda: "1" == kubectl(
        "-n", APPS, "get", "sts", "chart", "-o", "jsonpath={.status.readyReplicas}", check=False))
    adopting = app("chart", {})
    adopting["metadata"]["annotations"] = {"visitcounter.dev/adopt": "true"}
    apply([adopting])
    wait_until("chart is taken over", lambda: ready("chart") and "LeftoverPodsReplaced" in kubectl(
        "-n", APPS, "get", "events", "-o", "jsonpath={.items[*].reason}"))
    # A new config with no revision history kept: the old config's
    # ConfigMap goes once no revision refers to it.
    apply([app("configs", {"revisionHistoryLimit": 0, "config": {"json": {"color": "red"}}})])
    wait_until("configs is Ready", lambda: ready("configs"))
    apply([app("configs", {"revisionHistoryLimit": 0, "config": {"json": {"color": "blue"}}})])
    wait_until("only the new config's ConfigMap is left", lambda: ready("configs") and ["blue"] == [
        json.loads(c["data"]["config.json"])["color"] for c in json.loads(kubectl(
            "-n", APPS, "get", "configmaps", "-l", "app.kubernetes.io/instance=configs", "-o", "json"))["items"]])
    # spec.traffic, with the Gateway API's CRDs: the route read, created
    # and, once traffic is unset, deleted.
    crds = subprocess.run([str(ROOT / "scripts" / "gateway-api.sh")], check=True, capture_output=True,
                          text=True).stdout.strip()
    kubectl("apply", "--server-side", "-f", crds)
    kubectl("wait", "--for=condition=Established", "crd/httproutes.gateway.networking.k8s.io")
    routed = {"traffic": {"parentRef": {"name": "edge"}, "canaryWeight": 10}}
    apply([app("routed", routed)])
    wait_until("routed has its route", lambda: ready("routed") and kubectl(
        "-n", APPS, "get", "httproute", "routed", "--ignore-not-found", "-o", "name"))
    apply([app("routed", {})])
    wait_until("routed's route is deleted", lambda: not kubectl(
        "-n", APPS, "get", "httproute", "routed", "--ignore-not-found", "-o", "name"))
    kubectl("delete", "--ignore-not-found", "-f", crds)


def accesses(audit_path, offset, user):
    """(group, resource, verb) of every request `user` made, and the refused ones."""
    used, refused = set(), []
    with open(audit_path) as log:
        log.seek(offset)
        for line in log:
            event = json.loads(line)
            # A watch is logged when it starts; everything else once done.
            stage = "ResponseStarted" if event["verb"] == "watch" else "ResponseComplete"
            if event.get("stage") != stage or event["user"]["username"] != user:
                continue
            ref = event.get("objectRef", {})
            resource = ref.get("resource", "")
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            access = (ref.get("apiGroup", ""), resource, event["verb"])
            code = event.get("responseStatus", {}).get("code")
            # A namespace being deleted (one an earlier test left) refuses new
            # content with a 403 too; that is no RBAC rule missing.
            terminating = "is being terminated" in event.get("responseStatus", {}).get("message", "")
            if code == 403 and not terminating:
                refused.append((access, event["requestURI"]))
                continue
            used.add(access)
            # A server-side apply that creates is authorized as create too.
            if event["verb"] == "patch" and code == 201:
                used.add((access[0], access[1], "create"))
    return used, refused


def main():
    binary = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "target/debug/visitcounter").resolve()
    audit_path = os.environ.get("VISITCOUNTER_AUDIT_LOG")
    if not audit_path or not os.environ.get("KUBECONFIG"):
        print("rbac_real: needs the test control plane: eval \"$(scripts/cluster.sh env)\"")
        return 1
    checks = Checks()
    documents, _ = render({})
    rbac_kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    rbac = [d for d in documents if d["kind"] in rbac_kinds]
    account = next(d for d in rbac if d["kind"] == "ServiceAccount")
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]

    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds/visitcounterapp.yaml"))
    # Nothing left from an earlier run: the Lease must be created, the apps new.
    lease = next(a.split("=", 1)[1] for a in args if a.startswith("--lease-name="))
    kubectl("-n", RELEASE_NAMESPACE, "delete", "lease", lease, "--ignore-not-found", check=False)
    kubectl("delete", "namespace", APPS, "--ignore-not-found", "--wait=true")
    for namespace in (RELEASE_NAMESPACE, APPS):
        kubectl("create", "namespace", namespace, check=False)
    apply(rbac)
    token = kubectl("-n", RELEASE_NAMESPACE, "create", "token", account["metadata"]["name"]).strip()
    config = json.loads(kubectl("config", "view", "--minify", "--raw", "-o", "json"))
    config["users"] = [{"name": "operator", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "operator"
    user = f"system:serviceaccount:{RELEASE_NAMESPACE}:{account['metadata']['name']}"

    offset = os.path.getsize(audit_path)
    with tempfile.TemporaryDirectory() as directory:
        kubeconfig = pathlib.Path(directory) / "kubeconfig"
        kubeconfig.write_text(json.dumps(config))
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "VISITCOUNTER_POD_NAME": "operator-0",
               "VISITCOUNTER_LEASE_NAMESPACE": RELEASE_NAMESPACE}
        # The Deployment's arguments, on loopback, with stuck pods found fast.
        overrides = ["--admin-address=127.0.0.1:0", "--stuck-pod-seconds=3", "--resync-seconds=5"]
        overridden = tuple(o.split("=")[0] for o in overrides)
        operator_args = [a for a in args if not a.startswith(overridden)] + overrides
        log = open(pathlib.Path(directory) / "operator.log", "w+")
        operator = subprocess.Popen([str(binary), *operator_args], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            scenarios()
        except Exception as error:
            checks.check(False, f"scenario: {error}")
        finally:
            operator.send_signal(signal.SIGTERM)
            exited = operator.wait(timeout=30)
            checks.check(exited == 0, f"the operator exits 0 on SIGTERM, not {exited}")
            log.seek(0)
            output = log.read()
            if checks.failed:
                print(output[-4000:])
        time.sleep(1)
        used, refused = accesses(audit_path, offset, user)

    checks.check(not refused, f"requests the API server refused (403): {refused}")
    rules = [r for d in rbac if d["kind"] in ("ClusterRole", "Role") for r in d.get("rules", [])]
    grants = granted(rules)
    # Reads of the operator's own discovery and health are not RBAC rules.
    used = {a for a in used if a[1]}
    checks.check(used <= grants, f"used but not granted: {sorted(used - grants)}")
    checks.check(grants <= used, f"granted but never used by these scenarios: {sorted(grants - used)}")
    checks.check(any(r == "leases" for _, r, _ in used), "the Lease was used (leader election)")
    # tests/chart.py checks every configuration's rules against these.
    if os.environ.get("VISITCOUNTER_RBAC_USED"):
        pathlib.Path(os.environ["VISITCOUNTER_RBAC_USED"]).write_text(json.dumps(
            [{"apiGroup": g, "resource": r, "verb": v} for g, r, v in sorted(used)], indent=2))
    kubectl("delete", "namespace", APPS, "--wait=false", check=False)
    return checks.report("rbac on the real API server")


if __name__ == "__main__":
    sys.exit(main())
