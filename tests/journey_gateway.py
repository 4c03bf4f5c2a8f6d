"""The journey's requests through a real gateway: Traefik, built from its Go
module and serving the Gateway `gateway/edge` from the node
(`scripts/cluster.sh up --real-pods`), routes by the HTTPRoute the operator
keeps for an app with `spec.traffic`.

Asserts, each through the gateway: a canary weight of 10 sends 10% ± 3% of
1,000 requests to the canary pods, whatever their number; under an A/B test
only B answers requests with the header and only A those without; every
answered request is counted once (`status.visits.total`, and per revision
`status.visits.byRevision`), through the test and after it is promoted.
"""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request

NS = f"journey-gateway-{os.getpid()}"
GATEWAY = {"name": "edge", "namespace": "gateway", "sectionName": "web"}


def run(*args, input=None):
    result = subprocess.run(args, input=input, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def get(*args):
    return json.loads(run("kubectl", "-n", NS, "get", *args, "-o", "json"))


def apply(obj):
    run("kubectl", "-n", NS, "apply", "--server-side", "--force-conflicts", "--field-manager=journey", "-f", "-",
        input=json.dumps(obj))


def wait_until(what, check, seconds=120):
    deadline = time.monotonic() + seconds
    while not _holds(check):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {seconds}s waiting until {what}")
        time.sleep(1)


def _holds(check):
    try:
        return check()
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError):
        return False


def visit(host, headers=None):
    """One request through the gateway: the pod that answered, or None."""
    request = urllib.request.Request(os.environ["VISITCOUNTER_GATEWAY_URL"] + "/",
                                     headers={"Host": host, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read().decode()
            return body.split("<code>")[1].split("</code>")[0] if response.status == 200 else None
    except (urllib.error.URLError, ConnectionError, OSError, IndexError):
        return None


def app(name, host, traffic, canary_replicas, color):
    spec = {"replicas": 3, "podManagementPolicy": "Parallel", "probes": {"readiness": {"periodSeconds": 1}},
            "config": {"json": {"color": color}},
            "traffic": {"parentRef": GATEWAY, "hostnames": [host], **traffic}}
    if canary_replicas:
        spec["updateStrategy"] = {"rollingUpdate": {"canaryReplicas": canary_replicas}}
    return {"apiVersion": "visitcounter.dev/v1alpha1", "kind": "VisitCounterApp", "metadata": {"name": name},
            "spec": spec}


def revisions(name):
    """{pod: revision} of the app's pods, and the StatefulSet's update revision."""
    pods = get("pods", "-l", f"app.kubernetes.io/instance={name}")["items"]
    of = {p["metadata"]["name"]: p["metadata"]["labels"].get("controller-revision-hash") for p in pods}
    return of, get("sts", name)["status"].get("updateRevision")


def ready_pods(name):
    pods = get("pods", "-l", f"app.kubernetes.io/instance={name}")["items"]
    return [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])]


def routed(name, services):
    """The app's status names these backends, and the gateway has taken the
    route at its generation."""
    app_status = get("vca", name).get("status", {})
    backends = [b["service"] for b in (app_status.get("traffic") or {}).get("backends", [])]
    route = get("httproute", name)
    taken = any(c["type"] == "Accepted" and c["status"] == "True"
                and c.get("observedGeneration") == route["metadata"]["generation"]
                for parent in route.get("status", {}).get("parents", []) for c in parent["conditions"])
    return sorted(backends) == sorted(services) and taken


def counted(name, answered):
    visits = get("vca", name).get("status", {}).get("visits") or {}
    return visits.get("total") == answered and visits.get("complete") is True


def held(name):
    of, update = revisions(name)
    return len(set(of.values())) == 2 and update in of.values() and len(ready_pods(name)) == 3


def weighted(checks):
    """A canary weight of 10 through the gateway, with two canary pods of three."""
    name, host = "weighted", "weighted.journey.test"
    apply(app(name, host, {"canaryWeight": 10}, None, "red"))
    wait_until(f"{name} is Ready and routed", lambda: len(ready_pods(name)) == 3 and routed(name, [name]), 180)
    apply(app(name, host, {"canaryWeight": 10}, 2, "blue"))
    wait_until(f"{name} holds a canary and the route splits",
               lambda: held(name) and routed(name, [f"{name}-stable", f"{name}-canary"]), 180)
    time.sleep(2)  # the gateway's configuration reload after the route's status
    of, update = revisions(name)
    answers = [visit(host) for _ in range(1000)]
    answered = [a for a in answers if a]
    on_canary = sum(1 for a in answered if of.get(a) == update)
    share = on_canary / max(len(answered), 1)
    checks.check(len(answered) == 1000, f"gateway: every one of 1,000 requests answered ({len(answered)})")
    checks.check(0.07 <= share <= 0.13,
                 f"gateway: canaryWeight 10 sends 10% ± 3% to the canary, two pods of three: {share:.1%}")
    wait_until(f"{name} counts every answered request", lambda: counted(name, len(answered)), 60)
    checks.check(counted(name, len(answered)), f"gateway: status.visits.total is the {len(answered)} answered")
    print(f"gateway: canaryWeight 10: {on_canary} of {len(answered)} requests on the canary ({share:.1%})")
    run("kubectl", "-n", NS, "delete", "vca", name, "--wait=false")


def ab_test(checks):
    """An A/B test through the gateway: the header sends a user to B."""
    name, host = "ab", "ab.journey.test"
    match = {"abTest": {"match": {"header": {"name": "X-Variant", "value": "b"}}}}
    apply(app(name, host, match, None, "red"))
    wait_until(f"{name} is Ready and routed", lambda: len(ready_pods(name)) == 3 and routed(name, [name]), 180)
    before = [visit(host) for _ in range(20)]
    apply(app(name, host, match, 1, "blue"))
    wait_until(f"{name} runs A and B and the route matches",
               lambda: held(name) and routed(name, [f"{name}-stable", f"{name}-canary"]), 180)
    time.sleep(2)  # the gateway's configuration reload after the route's status
    of, update = revisions(name)
    with_header = [visit(host, {"X-Variant": "b"}) for _ in range(50)]
    without = [visit(host) for _ in range(50)]
    wrong_value = [visit(host, {"X-Variant": "a"}) for _ in range(20)]
    checks.check(all(with_header) and {of.get(p) for p in with_header} == {update},
                 f"gateway: with the A/B header only B answers: {sorted(set(with_header), key=str)}")
    checks.check(all(without) and update not in {of.get(p) for p in without} and len(set(without)) == 2,
                 f"gateway: without it only A's two pods answer: {sorted(set(without), key=str)}")
    checks.check(all(wrong_value) and update not in {of.get(p) for p in wrong_value},
                 f"gateway: another value of the header goes to A: {sorted(set(wrong_value), key=str)}")
    answered = len([a for a in before + with_header + without + wrong_value if a])
    b_answered = len([a for a in with_header if a])

    def by_variant():
        visits = get("vca", name)["status"]["visits"]
        return {r["revision"]: r["visits"] for r in visits.get("byRevision", [])}

    wait_until(f"{name} counts every answered request", lambda: counted(name, answered), 60)
    sums = by_variant()
    checks.check(counted(name, answered), f"gateway: status.visits.total is the {answered} answered under A/B")
    checks.check(sums.get(update, 0) >= b_answered and sum(sums.values()) == answered,
                 f"gateway: status.visits.byRevision tells B's visits ({b_answered} through the header) "
                 f"from A's: {sums}")

    # Promoted: B for everyone, every count kept.
    apply(app(name, host, match, None, "blue"))
    wait_until(f"{name} is promoted and routed to its Service",
               lambda: len(set(revisions(name)[0].values())) == 1 and len(ready_pods(name)) == 3
               and routed(name, [name]), 180)
    time.sleep(2)
    after = [visit(host) for _ in range(20)]
    answered += len([a for a in after if a])
    checks.check(all(after), f"gateway: after promotion every request is answered: {after.count(None)} not")
    wait_until(f"{name} counts every answered request after promotion", lambda: counted(name, answered), 60)
    checks.check(counted(name, answered), f"gateway: no visit lost across the A/B test and its promotion ({answered})")
    print(f"gateway: A/B: {b_answered} requests with the header, all on B; {answered} counted in all")
    run("kubectl", "-n", NS, "delete", "vca", name, "--wait=false")


def routes(checks):
    """Both scenarios, in a namespace of their own."""
    if not os.environ.get("VISITCOUNTER_GATEWAY_URL"):
        raise RuntimeError('no gateway: eval "$(scripts/cluster.sh env --real-pods)" names it')
    run("kubectl", "create", "namespace", NS)
    try:
        weighted(checks)
        ab_test(checks)
    finally:
        run("kubectl", "delete", "namespace", NS, "--wait=false")


if __name__ == "__main__":
    # Alone, with the operator installed (tests/journey.py installs it).
    import sys

    from checks import Checks

    tally = Checks()
    routes(tally)
    sys.exit(tally.report("journey_gateway"))
