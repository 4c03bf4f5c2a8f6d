//! Every API access the operator makes, for the chart's RBAC test
//! (`tests/chart.py`): the operator runs through every code path that talks to
//! the API server, and each request it sent is turned into the (API group,
//! resource, verb) that RBAC checks for it.

use std::collections::BTreeSet;

use axum::http::Method;
use serde_json::json;

use crate::harness::{Cluster, OPERATOR_USER, WAIT, lease, settings, wait_until};

/// Where to write the accesses as JSON, when set.
const OUTPUT_ENV: &str = "VISITCOUNTER_RBAC_USED";

#[tokio::test]
async fn every_api_access_of_the_operator() {
    let cluster = Cluster::start().await;
    let mut settings = settings();
    settings.lease = Some(lease("rbac"));
    settings.controller.stuck_after = std::time::Duration::from_millis(200);
    // The claims get this class, which lets them grow.
    cluster
        .standin
        .insert_unchecked(
            "storage.k8s.io",
            "storageclasses",
            json!({"metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                   "provisioner": "csi.example.com", "allowVolumeExpansion": true}),
        )
        .unwrap();
    let operator = cluster.start_operator(settings);

    // Create, with the Lease taken first.
    cluster
        .apply_app(
            "web",
            json!({"replicas": 2, "podManagementPolicy": "OrderedReady", "createServiceAccount": true}),
        )
        .await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;
    // Two failed applies in a row: a Warning Event, then the same Event's
    // series patched.
    cluster.standin.fail(Some(Method::PATCH), "/statefulsets/web", 500, 2);
    cluster.patch_spec("web", json!({"replicas": 3})).await;
    wait_until("web scales despite the failures", WAIT, || {
        cluster.is_ready("web") && cluster.standin.pending_faults() == 0
    })
    .await;
    // An immutable field: the StatefulSet is deleted (orphaning) and re-created.
    cluster
        .patch_spec("web", json!({"podManagementPolicy": "Parallel"}))
        .await;
    wait_until("web is re-created", WAIT, || {
        cluster
            .sts("web")
            .is_some_and(|s| s["spec"]["podManagementPolicy"] == "Parallel")
            && cluster.is_ready("web")
    })
    .await;
    // A bigger size: the claims grow (their StorageClass read first), then
    // the StatefulSet is re-created.
    cluster.patch_spec("web", json!({"storage": {"size": "2Gi"}})).await;
    wait_until("web's claims grew", WAIT, || {
        cluster.get("", "persistentvolumeclaims", "data-web-0").unwrap()["spec"]["resources"]["requests"]["storage"]
            == "2Gi"
            && cluster.is_ready("web")
    })
    .await;
    // A pod of an abandoned, broken revision is replaced.
    cluster.standin.break_image("app:broken");
    cluster
        .patch_spec(
            "web",
            json!({"podManagementPolicy": "OrderedReady", "image": "app:broken",
                   "updateStrategy": {"rollingUpdate": {"replaceStuckPods": true}}}),
        )
        .await;
    wait_until("the broken pod exists", WAIT, || {
        cluster
            .sts("web")
            .is_some_and(|s| s["spec"]["podManagementPolicy"] == "OrderedReady")
            && cluster.app("web")["status"]["updatedReplicas"] == 1
    })
    .await;
    cluster.patch_spec("web", json!({"image": "app:1"})).await;
    wait_until("the stuck pod is replaced", WAIT, || {
        cluster.events("web").iter().any(|e| e.1 == "StuckPodReplaced") && cluster.is_ready("web")
    })
    .await;
    // Pods missing, and a status that says they cannot be created (as an
    // operator finds it after a restart; the stand-in cannot refuse a pod):
    // the operator reads the StatefulSet's Events for why. e2e shows the
    // real case, a ServiceAccount that does not exist.
    cluster
        .apply_app(
            "slow",
            json!({"replicas": 2, "podManagementPolicy": "OrderedReady", "image": "app:broken"}),
        )
        .await;
    wait_until("slow's second pod is missing", WAIT, || {
        cluster.sts("slow").is_some_and(|s| s["status"]["replicas"] == 1)
    })
    .await;
    // The operator's own status writes may replace that condition, so it is
    // set again until the operator has looked.
    let looked = || {
        cluster
            .standin
            .requests()
            .iter()
            .any(|r| r.user.as_deref() == Some(OPERATOR_USER) && r.method == "GET" && r.path.ends_with("/events"))
    };
    let started = std::time::Instant::now();
    while !looked() {
        assert!(started.elapsed() < WAIT, "the operator never looked at slow's Events");
        cluster
            .apps(crate::harness::NS)
            .patch_status(
                "slow",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"status": {"conditions": [{
                    "type": "Progressing", "status": "False", "reason": "PodsNotCreated",
                    "message": "set by the test", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})),
            )
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // Stopping releases the Lease.
    operator.stop().await.unwrap();

    let accesses: BTreeSet<(String, String, String)> = cluster
        .standin
        .requests()
        .iter()
        .filter(|r| r.user.as_deref() == Some(OPERATOR_USER))
        .flat_map(|r| r.accesses())
        .map(|a| (a.group.to_owned(), a.resource, a.verb.to_owned()))
        .collect();
    // The scenario must have reached each code path; otherwise the RBAC test
    // would pass on a partial list.
    for needed in [
        ("apiextensions.k8s.io", "customresourcedefinitions", "get"),
        ("visitcounter.dev", "visitcounterapps", "watch"),
        ("visitcounter.dev", "visitcounterapps/status", "patch"),
        ("apps", "statefulsets", "create"),
        ("apps", "statefulsets", "delete"),
        ("", "pods", "watch"),
        ("", "pods", "delete"),
        ("", "persistentvolumeclaims", "list"),
        ("", "persistentvolumeclaims", "patch"),
        ("storage.k8s.io", "storageclasses", "get"),
        ("events.k8s.io", "events", "create"),
        ("", "events", "list"),
        ("events.k8s.io", "events", "patch"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "patch"),
    ] {
        let needed = (needed.0.to_owned(), needed.1.to_owned(), needed.2.to_owned());
        assert!(
            accesses.contains(&needed),
            "the scenario never made {needed:?}: {accesses:#?}"
        );
    }
    let as_json: Vec<_> = accesses
        .iter()
        .map(|(group, resource, verb)| json!({"apiGroup": group, "resource": resource, "verb": verb}))
        .collect();
    println!("{}", serde_json::to_string_pretty(&as_json).unwrap());
    if let Ok(path) = std::env::var(OUTPUT_ENV) {
        std::fs::write(&path, serde_json::to_string_pretty(&as_json).unwrap()).expect("the output is writable");
    }
}
