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


def blue_green_weighted(checks):
    """A blue/green rollout whose preview gets 20% of the requests before
    the switch: every answered request counted once, across the switch and
    the previous StatefulSet's delete."""
    name, host = "bgw", "bgw.journey.test"

    def spec(color):
        return {"apiVersion": "visitcounter.dev/v1alpha1", "kind": "VisitCounterApp", "metadata": {"name": name},
                "spec": {"replicas": 2, "podManagementPolicy": "Parallel",
                         "probes": {"readiness": {"periodSeconds": 1}}, "config": {"json": {"color": color}},
                         "updateStrategy": {"type": "BlueGreen",
                                            "blueGreen": {"autoPromote": False, "scaleDownDelaySeconds": 5}},
                         "traffic": {"parentRef": GATEWAY, "hostnames": [host], "canaryWeight": 20}}}

    apply(spec("red"))
    wait_until(f"{name} is Ready and routed", lambda: len(ready_pods(name)) == 2 and routed(name, [name]), 180)
    time.sleep(2)  # the gateway's configuration reload after the route's status
    before = [visit(host) for _ in range(20)]
    checks.check(all(before), f"gateway: {name} answers through the gateway: {before.count(None)} of 20 not")
    answered = len(before)
    apply(spec("blue"))
    wait_until("the preview takes its share once its pods hold the counts",
               lambda: routed(name, [name, f"{name}-preview"]), 180)
    time.sleep(2)  # the gateway's configuration reload after the route's status
    answers = [visit(host) for _ in range(500)]
    on_preview = sum(1 for a in answers if a and a.startswith(f"{name}-green-"))
    answered += len([a for a in answers if a])
    share = on_preview / 500
    checks.check(all(answers), f"gateway: under blue/green every request answered ({answers.count(None)} not)")
    checks.check(0.15 <= share <= 0.25,
                 f"gateway: canaryWeight 20 sends 20% ± 5% to the blue/green preview before the switch: {share:.1%}")
    revision = get("sts", f"{name}-green")["status"]["updateRevision"]
    run("kubectl", "-n", NS, "annotate", "vca", name, f"visitcounter.dev/promote={revision}", "--overwrite")
    wait_until("the Service switches and the route sends everything to it",
               lambda: get("svc", name)["spec"]["selector"].get("controller-revision-hash") == revision
               and routed(name, [name]), 120)
    # The gateway follows the Service's EndpointSlices, which follow its
    # selector: within seconds only the new pods answer.
    after, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline:
        batch = [visit(host) for _ in range(10)]
        after += batch
        if all(a and a.startswith(f"{name}-green-") for a in batch):
            break
        time.sleep(1)
    answered += len([a for a in after if a])
    checks.check(all(a and a.startswith(f"{name}-green-") for a in after[-10:]),
                 f"gateway: after the switch only the new pods answer, within 60 s: {sorted(set(after), key=str)}")
    wait_until("the previous StatefulSet is deleted",
               lambda: not run("kubectl", "-n", NS, "get", "sts", name, "--ignore-not-found").strip(), 120)
    wait_until(f"{name} counts every answered request", lambda: counted(name, answered), 60)
    checks.check(counted(name, answered),
                 f"gateway: no visit lost across a weighted blue/green rollout: {answered} answered, all counted")
    print(f"gateway: blue/green at canaryWeight 20: {on_preview} of 500 on the preview ({share:.1%}); "
          f"{answered} answered and counted across the switch")
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


def shadow(checks):
    """A shadow through the gateway: every request copied to the shadow,
    counted there once and never in the app's count; promoted, the app runs
    the shadow's template with every count it had.

    Traefik has no `RequestMirror` (its conformance report lists it as
    unsupported, and it answers 500 to a route that uses it), so the copy is
    made its own way, which the test writes: a TraefikService of type
    mirroring, the app's Service with the operator's `<app>-shadow` as its
    mirror, and an HTTPRoute to it."""
    name, host, mirrored = "sh", "shadow.journey.test", "shadow-mirror.journey.test"

    def spec(color):
        return {"apiVersion": "visitcounter.dev/v1alpha1", "kind": "VisitCounterApp", "metadata": {"name": name},
                "spec": {"replicas": 2, "podManagementPolicy": "Parallel",
                         "probes": {"readiness": {"periodSeconds": 1}}, "config": {"json": {"color": color}},
                         "updateStrategy": {"type": "Shadow"},
                         "traffic": {"parentRef": GATEWAY, "hostnames": [host]}}}

    def visits():
        status = get("vca", name).get("status", {}).get("visits") or {}
        shadow_status = status.get("shadow") or {}
        return status.get("total"), status.get("complete"), shadow_status.get("total"), shadow_status.get("complete")

    def shadow_ready():
        sts = get("sts", f"{name}-shadow")
        return sts["status"].get("availableReplicas") == 2 and visits()[3] is True

    apply(spec("red"))
    wait_until(f"{name} is Ready and routed", lambda: len(ready_pods(name)) == 2 and routed(name, [name]), 180)
    apply({"apiVersion": "traefik.io/v1alpha1", "kind": "TraefikService", "metadata": {"name": f"{name}-mirror"},
           "spec": {"mirroring": {"name": name, "port": 8080,
                                  "mirrors": [{"name": f"{name}-shadow", "port": 8080, "percent": 100}]}}})
    apply({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": f"{name}-mirrored"},
           "spec": {"parentRefs": [GATEWAY], "hostnames": [mirrored],
                    "rules": [{"backendRefs": [{"group": "traefik.io", "kind": "TraefikService",
                                                "name": f"{name}-mirror"}]}]}})
    apply(spec("blue"))
    wait_until("the shadow runs and is counted", shadow_ready, 180)
    serving = {p["metadata"]["name"] for p in ready_pods(name)}
    wait_until("the gateway answers through the mirroring route", lambda: visit(mirrored) in serving, 60)
    def settled():
        # Two polls of the pods apart (the journey's operator asks every 2
        # s), the same complete counts: a copy is sent after its answer.
        first = visits()
        time.sleep(5)
        return first[1] is True and first[3] is True and visits() == first

    wait_until("the counts settle", settled, 60)
    app_before, _, shadow_before, _ = visits()
    answers = [visit(mirrored) for _ in range(100)]
    checks.check(all(a in serving for a in answers),
                 f"gateway: under shadow every answer comes from the serving pods {sorted(serving)}: "
                 f"{sorted(set(answers), key=str)}")
    wait_until("the shadow counts every copy", lambda: visits()[2] == shadow_before + 100
               and visits()[0] == app_before + 100, 60)
    app_after, _, shadow_after, _ = visits()
    checks.check(shadow_after == shadow_before + 100,
                 f"gateway: every mirrored request raised the shadow's count by one: {shadow_before} -> {shadow_after}")
    checks.check(app_after == app_before + 100,
                 f"gateway: the app's count holds the answered requests only, none of the shadow's: "
                 f"{app_before} -> {app_after}")

    revision = get("sts", f"{name}-shadow")["status"]["updateRevision"]
    run("kubectl", "-n", NS, "annotate", "vca", name, f"visitcounter.dev/promote={revision}", "--overwrite")
    wait_until(f"{name} runs the promoted template and the shadow is gone",
               lambda: not run("kubectl", "-n", NS, "get", "sts", f"{name}-shadow", "--ignore-not-found").strip()
               and len(set(revisions(name)[0].values())) == 1 and len(ready_pods(name)) == 2
               and revisions(name)[1] in revisions(name)[0].values(), 180)
    wait_until("the counts are asked again", lambda: visits()[1] is True and visits()[2] is None, 60)
    checks.check(visits()[0] == app_after,
                 f"gateway: promoted, the app's count is every answered request: {visits()[0]} for {app_after}")
    print(f"gateway: shadow: 100 requests answered by {sorted(serving)}, the shadow counted "
          f"{shadow_after - shadow_before} copies; the app counts {visits()[0]} after promotion")
    run("kubectl", "-n", NS, "delete", "httproute", f"{name}-mirrored", "--wait=false")
    run("kubectl", "-n", NS, "delete", "vca", name, "--wait=false")


def routes(checks):
    """The scenarios, in a namespace of their own."""
    if not os.environ.get("VISITCOUNTER_GATEWAY_URL"):
        raise RuntimeError('no gateway: eval "$(scripts/cluster.sh env --real-pods)" names it')
    run("kubectl", "create", "namespace", NS)
    try:
        weighted(checks)
        blue_green_weighted(checks)
        ab_test(checks)
        shadow(checks)
    finally:
        run("kubectl", "delete", "namespace", NS, "--wait=false")


if __name__ == "__main__":
    # Alone, with the operator installed (tests/journey.py installs it).
    import sys

    from checks import Checks

    tally = Checks()
    routes(tally)
    sys.exit(tally.report("journey_gateway"))
