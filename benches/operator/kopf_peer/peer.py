"""The Python peer of issue 15: a kopf operator for the same VisitCounterApp.

`cargo bench --bench operator -- --peer kopf` runs it in place of visitcounter,
on a control plane of its own, with the same apps, so that the two are
compared side by side in one run. It does what the issue's peer did: on
create and on update it applies the same four children with server-side
apply (two Services, a ConfigMap named for its config's hash, a StatefulSet
with a volume claim template) and writes a status with the observed
generation and three conditions. It posts no Events and repairs no drift.

Run: kopf run --standalone --all-namespaces benches/operator/kopf_peer/peer.py
"""

import datetime
import hashlib
import json

import kopf
import kubernetes

GROUP, VERSION, PLURAL = "visitcounter.dev", "v1alpha1", "visitcounterapps"
MANAGER = "kopf-peer"
IMAGE = "visitcounter/visitcounter:0.1.0"
core, apps = None, None


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, **_):
    global core, apps
    settings.posting.enabled = False
    kubernetes.config.load_kube_config()
    client = kubernetes.client.ApiClient()
    client.user_agent = MANAGER
    core, apps = kubernetes.client.CoreV1Api(client), kubernetes.client.AppsV1Api(client)


def apply(body: dict):
    patch = {
        "Service": core.patch_namespaced_service,
        "ConfigMap": core.patch_namespaced_config_map,
        "StatefulSet": apps.patch_namespaced_stateful_set,
    }[body["kind"]]
    patch(
        body["metadata"]["name"],
        body["metadata"]["namespace"],
        body,
        field_manager=MANAGER,
        force=True,
        _content_type="application/apply-patch+yaml",
    )


def children(name: str, namespace: str, uid: str, spec: dict) -> list[dict]:
    labels = {"app.kubernetes.io/name": "visitcounter", "app.kubernetes.io/instance": name}
    meta = lambda child: {  # noqa: E731
        "name": child,
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "VisitCounterApp",
                "name": name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    config = json.dumps(spec.get("config", {}).get("json", {}), sort_keys=True)
    config_map = f"{name}-config-{hashlib.sha256(config.encode()).hexdigest()[:10]}"
    port = {"name": "http", "port": 80, "targetPort": "http"}
    probe = lambda path: {"httpGet": {"path": path, "port": "http"}, "periodSeconds": 10}  # noqa: E731
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name),
        "spec": {"type": "NodePort", "selector": labels, "ports": [port]},
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(f"{name}-headless"),
        "spec": {"clusterIP": "None", "selector": labels, "ports": [port]},
    }
    config_map_object = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(config_map),
        "data": {"config.json": config},
    }
    container = {
        "name": "visitcounter",
        "image": IMAGE,
        "args": ["serve", "--config", "/config.json", "--data-dir", "/data"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": probe("/readyz"),
        "livenessProbe": probe("/healthz"),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "config", "mountPath": "/config.json", "subPath": "config.json"},
        ],
    }
    stateful_set = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta(name),
        "spec": {
            "replicas": spec.get("replicas", 1),
            "serviceName": f"{name}-headless",
            "selector": {"matchLabels": labels},
            "podManagementPolicy": spec.get("podManagementPolicy", "OrderedReady"),
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "fsGroup": 65532},
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": config_map}}],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }
            ],
        },
    }
    return [service, headless, config_map_object, stateful_set]


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def reconcile(name, namespace, uid, spec, meta, patch, **_):
    for body in children(name, namespace, uid, spec):
        apply(body)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = lambda type_, status, reason: {  # noqa: E731
        "type": type_,
        "status": status,
        "reason": reason,
        "message": "",
        "lastTransitionTime": now,
        "observedGeneration": meta["generation"],
    }
    patch.status["observedGeneration"] = meta["generation"]
    patch.status["conditions"] = [
        condition("Ready", "False", "PodsNotReady"),
        condition("Progressing", "True", "ChildrenApplied"),
        condition("Degraded", "False", "AsExpected"),
    ]
