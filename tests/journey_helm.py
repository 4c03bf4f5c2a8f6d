"""The report's two Helm releases moved over to the operator, with pods that
really run: `tests/charts/report-app` installed with Helm's own command as
`app-python` (8080, claims `python-counter-data-app-python-0..2`) and
`app-go` (8081, `go-counter-data-app-go-0..2`), 62Mi, class `standard`,
`Parallel`, on volumes that hold the report's counts: 790, 777 and 784, and
the Go app's "513", "501" and "505" (the number as a string). Then the
README's steps: `visitcounter adopt --from-statefulset`, Helm made to forget
the release, `kubectl apply`. After them every claim is the same object with
its count, the node ports are the same, one visit to `app-go-0` gives 514
(and to `app-python-0` 791), and `status.visits.total` is the sum.

Run by tests/journey.py, once the operator is installed.
"""

import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request

import node

ROOT = pathlib.Path(__file__).resolve().parent.parent
NS = f"journey-helm-{os.getpid()}"
RELEASES = {
    "app-python": {"port": 8080, "claims": "python-counter-data", "language": "python",
                   "counts": [790, 777, 784]},
    "app-go": {"port": 8081, "claims": "go-counter-data", "language": "go",
               "counts": ["513", "501", "505"]},
}


def run(*args, input=None):
    result = subprocess.run(args, input=input, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def kubectl(*args, input=None):
    return run("kubectl", "-n", NS, *args, input=input)


def get(*args):
    return json.loads(kubectl("get", *args, "-o", "json"))


def wait_until(what, check, seconds=180):
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except (RuntimeError, KeyError, IndexError, TypeError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting until {what}")
        time.sleep(0.5)


def claims_of(release):
    """{claim: uid} of the release's claims, by their names."""
    prefix = f"{RELEASES[release]['claims']}-{release}-"
    return {c["metadata"]["name"]: c["metadata"]["uid"] for c in get("pvc")["items"]
            if c["metadata"]["name"].startswith(prefix)}


def volume_file(claim):
    volume = get("pv", get("pvc", claim)["spec"]["volumeName"])
    return pathlib.Path(volume["spec"]["hostPath"]["path"]) / "visits.json"


def counts_on_disk(release):
    return {claim: json.loads(volume_file(claim).read_text())["visits"] for claim in sorted(claims_of(release))}


def seed_claims(release):
    """The release's claims, made before Helm's StatefulSet (which then uses
    them by name), holding the report's counts in the report's forms."""
    spec = RELEASES[release]
    for ordinal, count in enumerate(spec["counts"]):
        claim = f"{spec['claims']}-{release}-{ordinal}"
        kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                     "resources": {"requests": {"storage": "62Mi"}}}}))
        wait_until(f"{claim} is bound", lambda: get("pvc", claim)["status"]["phase"] == "Bound")
        path = volume_file(claim)
        path.write_text(json.dumps({"visits": count}, separators=(",", ":")))
        os.chown(path, 65532, 65532)


def ready_pods(release, managed_by):
    pods = [p for p in get("pods")["items"] if p["metadata"]["name"].rsplit("-", 1)[0] == release]
    ours = [p for p in pods if p["metadata"]["labels"].get("app.kubernetes.io/managed-by") == managed_by]
    return len(ours) == 3 and len(pods) == 3 and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        for p in ours)


def visit(port):
    try:
        with urllib.request.urlopen(node.url(port), timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def visit_pod(pod):
    """One visit to `pod` itself, from inside the node's network namespace:
    the count its page shows."""
    ip = get("pod", pod)["status"]["podIP"]
    port = get("pod", pod)["spec"]["containers"][0]["ports"][0]["containerPort"]
    page = run("ip", "netns", "exec", "vcn-visitcounter-node-node", sys.executable, "-c",
               f"import urllib.request;print(urllib.request.urlopen('http://{ip}:{port}/', timeout=5).read().decode())")
    return int(page.split("Visits: ")[1].split("<")[0])


def total(release):
    visits = get("vca", release).get("status", {}).get("visits") or {}
    return visits.get("total"), visits.get("complete")


def moved_over(checks, helm):
    run("kubectl", "create", "namespace", NS)
    try:
        for release, spec in RELEASES.items():
            seed_claims(release)
            run(str(helm), "install", release, str(ROOT / "tests/charts/report-app"), "--namespace", NS,
                "--set", f"port={spec['port']}", "--set", f"claimTemplate={spec['claims']}",
                "--set", f"language={spec['language']}")
        for release in RELEASES:
            wait_until(f"Helm's {release} has 3 pods Ready", lambda: ready_pods(release, "Helm"))
        for release in RELEASES:
            move_one(checks, helm, release)
    finally:
        run("kubectl", "delete", "namespace", NS, "--wait=false")


def move_one(checks, helm, release):
    spec = RELEASES[release]
    claims, port = claims_of(release), get("svc", release)["spec"]["ports"][0]["nodePort"]
    before = counts_on_disk(release)
    checks.check(list(before.values()) == spec["counts"], f"{release}: Helm's pods run on the report's counts: {before}")
    printed = run(str(ROOT / "target/debug/visitcounter"), "adopt", "--from-statefulset", release, "-n", NS)
    checks.check(f"claimTemplateName: {spec['claims']}" in printed and f"nodePort: {port}" in printed,
                 f"{release}: visitcounter adopt prints the claim template and the node port")
    # The README's steps: Helm forgets the release, its objects stay; the app applied.
    kubectl("delete", "secret", "-l", f"owner=helm,name={release}")
    checks.check(release not in run(str(helm), "list", "-n", NS, "-q").split(), f"{release}: helm list no longer shows it")
    started = time.monotonic()
    kubectl("apply", "-f", "-", input=printed)
    wait_until(f"{release} runs its own 3 pods, Ready", lambda: ready_pods(release, "visitcounter-operator"))
    print(f"{release}: moved over in {time.monotonic() - started:.1f} s")
    checks.check(claims_of(release) == claims, f"{release}: the same claims, none added: {sorted(claims_of(release))}")
    checks.check(get("svc", release)["spec"]["ports"][0]["nodePort"] == port, f"{release}: the same node port {port}")
    checks.check(counts_on_disk(release) == before, f"{release}: every count kept: {counts_on_disk(release)}")
    first = int(spec["counts"][0])
    shown = visit_pod(f"{release}-0")
    checks.check(shown == first + 1, f"{release}: one visit to {release}-0 gives {first + 1}: {shown}")
    answered = sum(visit(port) for _ in range(12))
    checks.check(answered == 12, f"{release}: 12 visits through node port {port} answered: {answered}")
    start = sum(int(c) for c in spec["counts"])
    wait_until(f"{release}'s status counts {start} + 13",
               lambda: total(release) == (start + 13, True), seconds=60)
    # helm uninstall of the old release now deletes nothing the app owns.
    owned = {kind: get(kind, release)["metadata"]["uid"] for kind in ("sts", "svc")}
    pods_before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in get("pods")["items"]}
    uninstalled = subprocess.run([str(helm), "uninstall", release, "-n", NS], capture_output=True, text=True)
    time.sleep(2)
    checks.check({kind: get(kind, release)["metadata"]["uid"] for kind in ("sts", "svc")} == owned
                 and {p["metadata"]["name"]: p["metadata"]["uid"] for p in get("pods")["items"]} == pods_before
                 and claims_of(release) == claims,
                 f"{release}: helm uninstall afterwards deletes nothing the app owns "
                 f"({uninstalled.stderr.strip() or uninstalled.stdout.strip()})")
    after = counts_on_disk(release)
    grew = all(int(after[c]) >= int(before[c]) for c in before)
    checks.check(sum(int(c) for c in after.values()) == start + 13 and grew,
                 f"{release}: visits go on from the report's counts, none lost: {before} -> {after}")
