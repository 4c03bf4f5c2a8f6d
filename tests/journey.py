"""The seed report's journey, on the control plane whose pods really run
(`scripts/cluster.sh up --real-pods`): `helm install` of the operator's
chart with Helm's own command, its two pods running as processes under
their ServiceAccount's token with leader election; the seed's two apps side
by side; visits through each NodePort at the node's address; each pod's
`/data/visits.json` read from its volume.

Asserts: every answered visit is counted (`status.visits.total` equals the
answered requests, so the kubelet's probes never count); a config change
rolls every pod and every per-pod count survives; `kubectl delete pod` brings
the pod back with its count; `kill -9` of a pod's process under load loses no
answered visit; deleting the leading operator pod hands over to the other
within the lease duration and reconciling goes on; `helm uninstall` leaves
the apps, their claims and their counts. Before the seed's apps, the
report's two Helm releases are moved over with their counts
(`journey_helm`).

Usage (scripts/test.sh runs it): with the control plane up,
`eval "$(scripts/cluster.sh env --real-pods)"; python tests/journey.py`.
"""

import json
import os
import pathlib
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import journey_gateway
import journey_helm
import node
from checks import Checks

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts/visitcounter-operator"
RELEASE, OPERATOR_NS = "visitcounter-operator", "visitcounter-system"
APPS = ("app-python", "app-go")
# The apps' namespace: a new one each run, so no claim of an earlier run is reused.
NS = f"journey-{os.getpid()}"
NODE = "visitcounter-node"


def run(*args, input=None, check=True):
    result = subprocess.run(args, input=input, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def kubectl(*args, **kw):
    # A later -n (the operator's namespace) wins over this one.
    return run("kubectl", "-n", NS, *args, **kw)


def get(*args):
    return json.loads(kubectl("get", *args, "-o", "json"))


def wait_until(what, check, seconds=120):
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except (RuntimeError, KeyError, ValueError, TypeError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {seconds}s waiting until {what}")
        time.sleep(1)


def condition(app, type_):
    for c in get("vca", app).get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c["status"], c["reason"]
    return None


def ready(app):
    return condition(app, "Ready") == ("True", "AllReplicasReady")


def pods(app):
    return sorted(get("pods", "-l", f"app.kubernetes.io/instance={app}")["items"], key=lambda p: p["metadata"]["name"])


def all_ready_on_one_revision(app, replicas):
    items = pods(app)
    revisions = {p["metadata"]["labels"].get("controller-revision-hash") for p in items}
    update = get("sts", app)["status"].get("updateRevision")
    return (len(items) == replicas and revisions == {update} and ready(app)
            and all(c["type"] != "Ready" or c["status"] == "True" for p in items for c in p["status"]["conditions"]))


def node_port(app):
    return get("svc", app)["spec"]["ports"][0]["nodePort"]


def visit(port):
    """One visit through the NodePort: the pod that answered, or None."""
    try:
        with urllib.request.urlopen(node.url(port), timeout=5) as response:
            body = response.read().decode()
            return body.split("<code>")[1].split("</code>")[0] if response.status == 200 else None
    except (urllib.error.URLError, ConnectionError, OSError, IndexError):
        return None


def visits_on_disk(app):
    """Each pod's /data/visits.json, read from its claim's volume: {claim: count}."""
    counts = {}
    for claim in get("pvc", "-l", f"app.kubernetes.io/instance={app}")["items"]:
        volume = get("pv", claim["spec"]["volumeName"])
        path = pathlib.Path(volume["spec"]["hostPath"]["path"]) / "visits.json"
        counts[claim["metadata"]["name"]] = json.loads(path.read_text())["visits"] if path.exists() else 0
    return counts


def total(app):
    visits = get("vca", app).get("status", {}).get("visits") or {}
    return visits.get("total"), visits.get("complete")


def served_config(pod):
    """What the pod's process serves as its config.json, and its MODE variable:
    asked from inside the node's network namespace, read from /proc."""
    ip = get("pod", pod)["status"]["podIP"]
    port = get("pod", pod)["spec"]["containers"][0]["ports"][0]["containerPort"]
    config = json.loads(run("ip", "netns", "exec", f"vcn-{NODE}-node", sys.executable, "-c",
                            f"import urllib.request;print(urllib.request.urlopen('http://{ip}:{port}/config',"
                            f" timeout=5).read().decode())"))
    pid = node.container_pid(get("pod", pod))
    environ = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    mode = next((v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"MODE=")), None)
    return config.get("color"), mode


def config_maps(app):
    return sorted(c["metadata"]["name"] for c in get("configmaps", "-l", f"app.kubernetes.io/instance={app}")["items"])


def leader_log():
    """The leading operator pod's log, as `kubectl logs` gives it."""
    return kubectl("logs", "-n", OPERATOR_NS, leader())


def canary(checks):
    """A config change under a canary (issue 16): held pods keep serving the
    old config.json and environment, even re-created; reverting brings the
    canary back; promoting moves every pod; an old ConfigMap no revision
    needs goes; the operator's log tells each step."""
    app = "canary"

    def spec(color, mode, canary_replicas=None):
        spec = {"replicas": 3, "revisionHistoryLimit": 1, "podManagementPolicy": "Parallel",
                "probes": {"readiness": {"periodSeconds": 1}},
                "config": {"json": {"color": color}, "env": [{"name": "MODE", "value": mode}]}}
        if canary_replicas:
            spec["updateStrategy"] = {"rollingUpdate": {"canaryReplicas": canary_replicas}}
        return {"apiVersion": "visitcounter.dev/v1alpha1", "kind": "VisitCounterApp",
                "metadata": {"name": app}, "spec": spec}

    def apply(obj):
        kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=journey", "-f", "-",
                input=json.dumps(obj))

    def served():
        return [served_config(f"{app}-{i}") for i in range(3)]

    def held():
        return condition(app, "Progressing") == ("False", "RolloutHeld") and all(
            c["status"] == "True" for p in pods(app) for c in p["status"]["conditions"] if c["type"] == "Ready")

    apply(spec("red", "a"))
    wait_until("canary is Ready", lambda: all_ready_on_one_revision(app, 3))
    red = config_maps(app)
    checks.check(served() == [("red", "a")] * 3, f"canary: every pod serves the first config: {served()}")

    apply(spec("blue", "b", 1))
    wait_until("the canary holds", held)
    checks.check(served() == [("red", "a"), ("red", "a"), ("blue", "b")],
                 f"canary: the canary pod serves the new config, the held ones the old: {served()}")
    uid = get("pod", f"{app}-0")["metadata"]["uid"]
    kubectl("delete", "pod", f"{app}-0")
    wait_until("the deleted held pod is back", lambda: get("pod", f"{app}-0")["metadata"]["uid"] != uid and held())
    checks.check(served()[0] == ("red", "a"),
                 f"canary: a held pod deleted comes back serving the old config and environment: {served()}")

    apply(spec("red", "a"))
    wait_until("reverted", lambda: all_ready_on_one_revision(app, 3) and served() == [("red", "a")] * 3
               and condition(app, "Progressing") == ("False", "RolloutComplete"))
    checks.check(True, "canary: reverting the config and removing the canary brings the canary pod back")

    apply(spec("green", "c", 1))
    wait_until("the second canary holds", held)
    apply(spec("green", "c"))
    wait_until("promoted", lambda: all_ready_on_one_revision(app, 3) and served() == [("green", "c")] * 3)
    checks.check(True, "canary: promoting moves every pod to the new config")
    green = [c for c in config_maps(app) if c not in red]
    wait_until("the ConfigMap no revision needs is deleted", lambda: config_maps(app) == sorted(red + green[-1:]))
    checks.check(len(config_maps(app)) == 2, f"canary: old ConfigMaps gone once no revision needs them: {config_maps(app)}")

    log = [line for line in leader_log().splitlines() if f"{NS}/{app}" in line]
    for words in ("created ConfigMap", "updated StatefulSet canary (", "held: 1 of 3 pods", "promoted:", "deleted ConfigMap"):
        checks.check(any(words in line for line in log), f"canary: the operator's log says {words!r}")
    kubectl("delete", "vca", app, "--wait=false")


def recreate(checks):
    """updateStrategy.type: Recreate on app-go: switching to it restarts nothing; a
    config change then takes every old pod away before a new one starts, and
    every pod's count continues on its claim."""
    app = "app-go"
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(app)}
    kubectl("patch", "vca", app, "--type=merge", "-p", json.dumps(
        {"spec": {"updateStrategy": {"type": "Recreate", "rollingUpdate": None}}}))
    wait_until("app-go's StatefulSet is OnDelete", lambda: get("sts", app)["spec"]["updateStrategy"]["type"] == "OnDelete")
    time.sleep(3)
    checks.check({p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(app)} == uids,
                 f"{app}: switching to Recreate restarts no pod")
    port, answered = node_port(app), total(app)[0]
    before = visits_on_disk(app)
    seen = {"most": 0, "revisions": set(), "stop": False}

    def watch():
        while not seen["stop"]:
            revisions = {p["metadata"]["labels"].get("controller-revision-hash") for p in pods(app)}
            seen["most"] = max(seen["most"], len(revisions))
            seen["revisions"] |= revisions
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    old_revision = get("sts", app)["status"]["updateRevision"]
    kubectl("patch", "vca", app, "--type=merge", "-p", json.dumps(
        {"spec": {"config": {"json": {"app": "app-go", "greeting": "Hello, recreated"}}}}))
    wait_until("Recreate brings every pod back on the new revision",
               lambda: get("sts", app)["status"]["updateRevision"] != old_revision
               and all_ready_on_one_revision(app, 3), seconds=180)
    seen["stop"] = True
    watcher.join()
    checks.check(len(seen["revisions"]) >= 2 and seen["most"] == 1,
                 f"{app}: Recreate never had pods of two revisions at once ({len(seen['revisions'])} seen, "
                 f"at most {seen['most']} at once)")
    checks.check(visits_on_disk(app) == before, f"{app}: Recreate keeps every count: {before} -> {visits_on_disk(app)}")
    for _ in range(9):
        checks.check(visit(port) is not None, f"{app}: a visit after the Recreate is answered")
    wait_until(f"{app}'s count goes on from where it was", lambda: total(app) == (answered + 9, True), seconds=60)
    checks.check(sum(visits_on_disk(app).values()) == answered + 9,
                 f"{app}: visits before and after the Recreate, none lost: {answered} + 9 = {visits_on_disk(app)}")
    downtime = get("vca", app)["status"].get("rollout", {}).get("downtime", {})
    checks.check(downtime.get("seconds") is not None, f"{app}: the status measures the downtime: {downtime}")
    print(f"{app}: Recreate with pods that run: no ready pod for {downtime.get('seconds')} s; "
          f"counts per claim {visits_on_disk(app)}")


def visit_numbered(port):
    """One visit through the NodePort: (the pod that answered, the number it
    gave), or None."""
    try:
        with urllib.request.urlopen(node.url(port), timeout=5) as response:
            body = response.read().decode()
            if response.status != 200:
                return None
            return body.split("<code>")[1].split("</code>")[0], int(body.split("<h1>Visits: ")[1].split("<")[0])
    except (urllib.error.URLError, ConnectionError, OSError, IndexError, ValueError):
        return None


def selected_revision(app):
    return get("svc", app)["spec"]["selector"].get("controller-revision-hash")


def blue_green(checks):
    """updateStrategy.type: BlueGreen on app-python, under load: switching to it
    restarts nothing; a config change starts app-python-green beside the
    serving pods, the Service switches to it, the old StatefulSet goes after
    its delay, and every answered visit is in the count, none twice."""
    app = "app-python"
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(app)}
    kubectl("patch", "vca", app, "--type=merge", "-p", json.dumps(
        {"spec": {"updateStrategy": {"type": "BlueGreen", "rollingUpdate": None,
                                     "blueGreen": {"scaleDownDelaySeconds": 10}}}}))
    wait_until(f"{app}'s Service selects its serving revision",
               lambda: selected_revision(app) == get("sts", app)["status"]["updateRevision"])
    time.sleep(3)
    checks.check({p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(app)} == uids,
                 f"{app}: switching to BlueGreen restarts no pod")
    port, start = node_port(app), total(app)[0]
    load = {"answers": [], "totals": [], "stop": False}

    def visits():
        while not load["stop"]:
            answer = visit_numbered(port)
            if answer:
                load["answers"].append(answer)

    def totals():
        while not load["stop"]:
            load["totals"].append(total(app)[0])
            time.sleep(0.5)

    workers = [threading.Thread(target=visits), threading.Thread(target=totals)]
    for worker in workers:
        worker.start()
    time.sleep(2)
    kubectl("patch", "vca", app, "--type=merge", "-p", json.dumps(
        {"spec": {"config": {"json": {"app": "app-python", "greeting": "Hello, blue/green"}}}}))
    wait_until("the Service switches to app-python-green",
               lambda: (selected_revision(app) or "").startswith(f"{app}-green-"), seconds=240)
    switched = time.monotonic()
    wait_until("the old StatefulSet goes after its delay",
               lambda: not kubectl("get", "sts", app, "--ignore-not-found").strip(), seconds=120)
    print(f"{app}: the old StatefulSet went {time.monotonic() - switched:.1f} s after the switch")
    time.sleep(2)
    load["stop"] = True
    for worker in workers:
        worker.join()
    answers = load["answers"]
    served_by = {pod for pod, _ in answers}
    checks.check(any(p.startswith(f"{app}-green-") for p in served_by)
                 and any(not p.startswith(f"{app}-green-") for p in served_by),
                 f"{app}: both versions answered the load, one after the other: {sorted(served_by)}")
    expected = start + len(answers)
    try:
        wait_until(f"{app}'s count holds every answered visit", lambda: total(app) == (expected, True), seconds=60)
    except RuntimeError as timed_out:
        print(timed_out)  # the check below says by how much
    time.sleep(5)  # two more polls: nothing carried twice
    checks.check(total(app) == (expected, True),
                 f"{app}: every visit answered across the switch is counted once: {total(app)} for {expected}")
    sampled = [t for t in load["totals"] if t is not None]
    checks.check(all(a <= b for a, b in zip(sampled, sampled[1:])),
                 f"{app}: status.visits.total never went down during the switch ({len(sampled)} samples)")
    last, backwards = {}, 0
    for pod, number in answers:
        ordinal = pod.rsplit("-", 1)[1]
        backwards += number < last.get(ordinal, 0)
        last[ordinal] = max(number, last.get(ordinal, 0))
    claims = sorted(c["metadata"]["name"] for c in get("pvc", "-l", f"app.kubernetes.io/instance={app}")["items"])
    checks.check(all(f"data-{app}-{i}" in claims and f"data-{app}-green-{i}" in claims for i in range(3)),
                 f"{app}: the claims of both StatefulSets are kept: {claims}")
    print(f"{app}: blue/green under load: {len(answers)} visits answered by {sorted(served_by)}; "
          f"status.visits.total {total(app)[0]} = {start} + {len(answers)}; {backwards} pages showed a number "
          f"below one their ordinal showed before (a new pod's count lags the old pod's until the next carry)")


def leader():
    lease = get("lease", "-n", OPERATOR_NS, RELEASE)
    return lease["spec"].get("holderIdentity")


def main():
    if not os.environ.get("KUBECONFIG"):
        print('journey: needs the control plane with real pods: eval "$(scripts/cluster.sh env --real-pods)"')
        return 1
    checks = Checks()
    helm = ROOT / "tests/cluster/bin/helm"
    # What a failed earlier run left.
    run(str(helm), "uninstall", RELEASE, "--namespace", OPERATOR_NS, "--ignore-not-found", "--wait", check=False)
    try:
        journey(checks, helm)
    finally:
        run(str(helm), "uninstall", RELEASE, "--namespace", OPERATOR_NS, "--ignore-not-found", check=False)
        run("kubectl", "delete", "namespace", NS, "--wait=false", check=False)
    return checks.report("journey")


def journey(checks, helm):
    run(str(helm), "install", RELEASE, str(CHART), "--namespace", OPERATOR_NS, "--create-namespace",
        "--set", "visitsIntervalSeconds=2", "--set", "logFormat=text", "--wait", "--timeout", "3m")
    operators = get("pods", "-n", OPERATOR_NS, "-l", "app.kubernetes.io/name=visitcounter-operator")["items"]
    checks.check(len(operators) == 2 and all(p["status"]["phase"] == "Running" for p in operators),
                 f"helm install: two operator pods run: {[p['metadata']['name'] for p in operators]}")
    wait_until("an operator pod leads", lambda: leader() is not None)

    # The report's Helm releases, moved over with every count (journey_helm).
    journey_helm.moved_over(checks, helm)

    run("kubectl", "create", "namespace", NS)
    for app in APPS:
        kubectl("apply", "-f", str(ROOT / f"examples/{app}.yaml"))
    for app in APPS:
        wait_until(f"{app} is Ready with 3 pods", lambda: all_ready_on_one_revision(app, 3), seconds=180)
    print(kubectl("get", "po,sts,svc,pvc", "-o", "wide"))

    # Visits through each NodePort, side by side: every answered one counted,
    # and nothing else (the probes, every few seconds, never).
    answered = {app: 0 for app in APPS}
    served_by = {app: set() for app in APPS}
    for _ in range(30):
        for app in APPS:
            pod = visit(node_port(app))
            if pod:
                answered[app] += 1
                served_by[app].add(pod)
    for app in APPS:
        checks.check(answered[app] == 30, f"{app}: every visit answered ({answered[app]} of 30)")
        checks.check(len(served_by[app]) > 1, f"{app}: the NodePort spreads visits: {sorted(served_by[app])}")
        wait_until(f"{app}'s status counts the visits", lambda: total(app) == (answered[app], True), seconds=60)
        time.sleep(5)  # two visit polls and several probe periods later
        checks.check(total(app) == (answered[app], True),
                     f"{app}: status.visits.total is the answered visits, probes not counted: {total(app)}")
        checks.check(sum(visits_on_disk(app).values()) == answered[app],
                     f"{app}: the pods' visits.json add up to the answered visits: {visits_on_disk(app)}")
        print(f"{app}: {answered[app]} visits answered by {sorted(served_by[app])}; status.visits.total "
              f"{total(app)[0]}; visits.json per claim {visits_on_disk(app)}")

    # A config change rolls every pod; every pod's count survives.
    app = "app-python"
    before = visits_on_disk(app)
    old_revision = get("sts", app)["status"]["updateRevision"]
    kubectl("patch", "vca", app, "--type=merge", "-p", json.dumps(
        {"spec": {"config": {"json": {"app": "app-python", "greeting": "Hello again"}}}}))
    wait_until("the config change rolls every pod", lambda: get("sts", app)["status"]["updateRevision"] != old_revision
               and all_ready_on_one_revision(app, 3), seconds=180)
    checks.check(visits_on_disk(app) == before, f"{app}: the counts survive the rollout: {before} -> {visits_on_disk(app)}")

    canary(checks)
    journey_gateway.routes(checks)

    # kubectl delete pod: the pod comes back, with its count.
    uid = get("pod", f"{app}-1")["metadata"]["uid"]
    kubectl("delete", "pod", f"{app}-1")
    wait_until("app-python-1 is back and ready", lambda: get("pod", f"{app}-1")["metadata"]["uid"] != uid
               and all_ready_on_one_revision(app, 3))
    checks.check(visits_on_disk(app) == before, f"{app}: a deleted pod comes back with its count: {visits_on_disk(app)}")

    recreate(checks)
    blue_green(checks)

    # kill -9 of a pod's process under load loses no answered visit.
    app = "app-go"
    port, start = node_port(app), total(app)[0]
    under_load = {"answered": 0, "stop": False}

    def load():
        while not under_load["stop"]:
            if visit(port):
                under_load["answered"] += 1

    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(2)
    victim = get("pod", f"{app}-0")
    pid = node.container_pid(victim)
    checks.check(pid is not None, f"{app}-0 has a process to kill")
    run("kill", "-9", str(pid))
    time.sleep(3)
    under_load["stop"] = True
    worker.join()
    wait_until(f"{app}-0 is restarted and ready", lambda: get("pod", f"{app}-0")["status"]["containerStatuses"][0]
               ["restartCount"] >= 1 and all_ready_on_one_revision(app, 3))
    expected = start + under_load["answered"]
    # At least: a visit made durable just before the kill, or after the
    # client gave up waiting for it, is counted though its answer never came.
    wait_until(f"{app}'s count catches up",
               lambda: total(app)[1] is True and total(app)[0] >= expected, seconds=60)
    checks.check(total(app)[0] >= expected,
                 f"{app}: status.visits.total holds every answered visit after kill -9: {total(app)} for {expected}")
    checks.check(sum(visits_on_disk(app).values()) >= expected,
                 f"{app}: no answered visit lost to kill -9: {visits_on_disk(app)} for {expected} answered")
    print(f"{app}: kill -9 of {app}-0 under load: {under_load['answered']} visits answered meanwhile, "
          f"status.visits.total {total(app)[0]} of {expected} answered in all")

    # The leading operator pod deleted: the other takes over within the
    # lease duration, and reconciling goes on.
    first = leader()
    kubectl("delete", "pod", "-n", OPERATOR_NS, first, "--wait=false")
    started = time.monotonic()
    wait_until("another operator pod leads", lambda: leader() not in (None, first), seconds=60)
    took = time.monotonic() - started
    checks.check(took < 20, f"the Lease changed hands in {took:.1f}s (lease duration 15s)")
    print(f"operator: {first} deleted; {leader()} leads {took:.1f}s later")
    kubectl("scale", "vca/app-go", "--replicas=4")
    wait_until("the new leader scales app-go", lambda: all_ready_on_one_revision("app-go", 4), seconds=120)

    # An image this node cannot run waits in ImagePullBackOff, as a broken
    # image does on a real node.
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "visitcounter.dev/v1alpha1", "kind": "VisitCounterApp", "metadata": {"name": "broken"},
        "spec": {"image": "example.invalid/never-ready:v1"}}))
    wait_until("broken's pod waits for its image", lambda: get("pod", "broken-0")["status"]["containerStatuses"][0]
               ["state"]["waiting"]["reason"] == "ImagePullBackOff")
    checks.check(not ready("broken"), "broken: an image the node cannot run never gets Ready")
    crash_loop(checks)

    # helm uninstall: the operator goes; the apps, their StatefulSets, pods,
    # claims and counts stay, the same objects as before.
    counts = {a: visits_on_disk(a) for a in APPS}
    objects = {a: running_objects(a) for a in APPS}
    run(str(helm), "uninstall", RELEASE, "--namespace", OPERATOR_NS, "--wait", "--timeout", "2m")
    for app in APPS:
        after = running_objects(app)
        checks.check(after == objects[app], f"{app}: app, StatefulSet, pods and claims kept by helm uninstall: "
                                            f"{sorted(objects[app].items())} then {sorted(after.items())}")
        pods_after = sorted(k for k in after if k.startswith("pod/"))
        replicas = get("vca", app)["spec"]["replicas"]
        checks.check(len(pods_after) == replicas, f"{app}: its {replicas} pods after helm uninstall: {pods_after}")
        checks.check(len([k for k in after if k.startswith("pvc/")]) >= 3, f"{app}: claims after helm uninstall")
        checks.check(visits_on_disk(app) == counts[app], f"{app}: counts kept after helm uninstall")


def crash_loop(checks):
    """Volumes the app's user cannot write (root-owned 0755 directories, as
    hostPath and local volumes are where nothing opens them; a kubelet
    applies no fsGroup to them): the pod crashes and restarts, and the app
    is Degraded with the container's last words."""
    run("kubectl", "apply", "-f", "-", input=json.dumps({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "root-owned"},
        "provisioner": "visitcounter.dev/local-volumes", "parameters": {"mode": "0755"}}))
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "visitcounter.dev/v1alpha1", "kind": "VisitCounterApp", "metadata": {"name": "locked"},
        "spec": {"replicas": 1, "storage": {"storageClassName": "root-owned"}}}))
    wait_until("locked is Degraded: its pod crashes and restarts",
               lambda: condition("locked", "Degraded") == ("True", "PodsCrashLooping"))
    degraded = next(c for c in get("vca", "locked")["status"]["conditions"] if c["type"] == "Degraded")
    checks.check("locked-0 exited with code" in degraded["message"] and "is not writable" in degraded["message"],
                 f"locked: Degraded names the pod and its last words: {degraded['message']}")
    checks.check(condition("locked", "Ready")[0] == "False", "locked: not Ready while its pod crashes")
    print(f"locked: Degraded: {degraded['message']}")
    kubectl("delete", "vca", "locked", "--wait=false")
    run("kubectl", "delete", "storageclass", "root-owned")


def running_objects(app):
    """{kind/name: uid} of the app, its StatefulSet, its pods and its claims."""
    found = {}
    for kind in ("visitcounterapp", "statefulset"):
        item = json.loads(kubectl("get", kind, app, "-o", "json", "--ignore-not-found") or "null")
        if item:
            found[f"{kind}/{app}"] = item["metadata"]["uid"]
    for kind in ("pod", "pvc"):
        for item in get(kind, "-l", f"app.kubernetes.io/instance={app}")["items"]:
            found[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["uid"]
    return found


if __name__ == "__main__":
    sys.exit(main())
