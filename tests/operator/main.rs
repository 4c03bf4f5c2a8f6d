//! The real controller, through an unmodified `kube::Client`, against the
//! in-process stand-in for the API server. Each test asserts on the state the
//! stand-in holds and the requests it answered.

mod day2;
mod harness;
mod leadership;
mod rbac;
mod rollouts;
mod storage;
#[path = "../support/mod.rs"]
mod support;
mod visits;

use std::time::Duration;

use harness::{Cluster, NS, WAIT, operator_calls, settings, wait_until};
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::ConfigMap};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;

#[tokio::test]
async fn a_new_app_gets_its_children_and_a_ready_status() {
    let cluster = Cluster::start().await;
    let operator = cluster.start_operator(settings());
    cluster
        .apply_app("web", json!({"replicas": 3, "config": {"json": {"greeting": "hi"}}}))
        .await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;

    let sts = cluster.sts("web").expect("the StatefulSet exists");
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["serviceName"], "web-headless");
    assert_eq!(sts["metadata"]["ownerReferences"][0]["kind"], "VisitCounterApp");
    let headless = cluster
        .get("", "services", "web-headless")
        .expect("the headless Service");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let service = cluster.get("", "services", "web").expect("the NodePort Service");
    let node_port = service["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .expect("a node port is allocated");
    let config = cluster.get("", "configmaps", "web-config").expect("the ConfigMap");
    assert!(config["data"]["config.json"].as_str().unwrap().contains("greeting"));

    let status = &cluster.app("web")["status"];
    assert_eq!(status["readyReplicas"], 3);
    assert_eq!(status["replicas"], 3);
    assert_eq!(status["nodePort"], node_port);
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(
        status["selector"],
        "app.kubernetes.io/instance=web,app.kubernetes.io/name=visitcounter"
    );
    assert!(status["updateRevision"].as_str().is_some_and(|r| r.starts_with("web-")));
    assert_eq!(cluster.condition("web", "Degraded").unwrap().0, "False");
    assert_eq!(cluster.condition("web", "Progressing").unwrap().0, "False");
    let created: Vec<_> = cluster.events("web").into_iter().filter(|e| e.1 == "Created").collect();
    assert_eq!(
        created.len(),
        1,
        "one Event for the reconcile that created the children"
    );
    assert_eq!(
        created[0].2,
        "created ConfigMap web-config; created Service web-headless; created Service web; created StatefulSet web"
    );
    assert_eq!(operator.health.phase(), visitcounter::operator::Phase::Reconciling);
    operator.stop().await.unwrap();
}

#[tokio::test]
async fn scale_image_and_config_changes_reach_the_children() {
    let cluster = Cluster::start().await;
    let operator = cluster.start_operator(settings());
    cluster.apply_app("web", json!({"replicas": 2})).await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;
    let first_revision = cluster.app("web")["status"]["updateRevision"].clone();

    cluster.patch_spec("web", json!({"replicas": 4})).await;
    wait_until("web has 4 ready pods", WAIT, || {
        cluster.is_ready("web") && cluster.app("web")["status"]["readyReplicas"] == 4
    })
    .await;
    assert_eq!(cluster.sts("web").unwrap()["spec"]["replicas"], 4);
    assert!(cluster.get("", "pods", "web-3").is_some());

    cluster
        .patch_spec("web", json!({"image": "registry.example/counter:2"}))
        .await;
    wait_until("the StatefulSet runs the new image", WAIT, || {
        cluster.sts("web").unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
            == "registry.example/counter:2"
            && cluster.is_ready("web")
    })
    .await;
    assert_ne!(cluster.app("web")["status"]["updateRevision"], first_revision);

    cluster
        .patch_spec("web", json!({"config": {"json": {"color": "teal"}}}))
        .await;
    wait_until("the ConfigMap holds the new config", WAIT, || {
        cluster.get("", "configmaps", "web-config").unwrap()["data"]["config.json"]
            .as_str()
            .is_some_and(|c| c.contains("teal"))
    })
    .await;
    operator.stop().await.unwrap();
}

#[tokio::test]
async fn children_deleted_or_edited_by_hand_are_put_back() {
    let cluster = Cluster::start().await;
    let operator = cluster.start_operator(settings());
    cluster.apply_app("web", json!({"replicas": 3})).await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;

    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), NS);
    let old_uid = cluster.get("", "configmaps", "web-config").unwrap()["metadata"]["uid"].clone();
    config_maps
        .delete("web-config", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("the ConfigMap is back", WAIT, || {
        cluster
            .get("", "configmaps", "web-config")
            .is_some_and(|c| c["metadata"]["uid"] != old_uid)
    })
    .await;

    let stateful_sets: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), NS);
    stateful_sets
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1, "minReadySeconds": 30}})),
        )
        .await
        .unwrap();
    config_maps
        .patch(
            "web-config",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"config.json": "{\"edited\": true}"}})),
        )
        .await
        .unwrap();
    wait_until("the hand edits are undone", WAIT, || {
        let sts = cluster.sts("web").unwrap();
        let config = cluster.get("", "configmaps", "web-config").unwrap();
        sts["spec"]["replicas"] == 3 && sts["spec"]["minReadySeconds"] == 0 && config["data"]["config.json"] == "{}\n"
    })
    .await;
    // The Event follows the write; wait for it rather than race it.
    wait_until("a DriftRestored Event names the edited field", WAIT, || {
        cluster
            .events("web")
            .iter()
            .any(|e| e.1 == "DriftRestored" && e.2.contains("restored StatefulSet web (spec."))
    })
    .await;
    operator.stop().await.unwrap();
}

#[tokio::test]
async fn an_invalid_stored_spec_is_degraded_with_an_event_and_builds_nothing() {
    let cluster = Cluster::start().await;
    let operator = cluster.start_operator(settings());
    // Stored past admission, as with an older CRD: partition above replicas.
    cluster
        .standin
        .insert_unchecked(
            "visitcounter.dev",
            "visitcounterapps",
            json!({
                "apiVersion": "visitcounter.dev/v1alpha1", "kind": "VisitCounterApp",
                "metadata": {"name": "bad", "namespace": NS},
                "spec": {"replicas": 1, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 5}}},
            }),
        )
        .unwrap();
    wait_until("bad is Degraded", WAIT, || {
        cluster.condition("bad", "Degraded").is_some_and(|c| c.0 == "True")
    })
    .await;
    let (_, reason, message) = cluster.condition("bad", "Degraded").unwrap();
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("partition"), "the message names the field: {message}");
    assert_eq!(cluster.condition("bad", "Ready").unwrap().0, "False");
    assert!(
        cluster
            .events("bad")
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "InvalidSpec")
    );
    for (plural, name) in [
        ("configmaps", "bad-config"),
        ("services", "bad"),
        ("services", "bad-headless"),
    ] {
        assert!(cluster.get("", plural, name).is_none(), "{plural}/{name} was created");
    }
    assert!(cluster.sts("bad").is_none());
    operator.stop().await.unwrap();
}

#[tokio::test]
async fn a_change_the_api_server_refuses_leaves_every_child_as_it_was() {
    let cluster = Cluster::start().await;
    let operator = cluster.start_operator(settings());
    cluster
        .apply_app("first", json!({"service": {"nodePort": 30080}}))
        .await;
    cluster.apply_app("second", json!({"replicas": 1})).await;
    wait_until("both apps are ready", WAIT, || {
        cluster.is_ready("first") && cluster.is_ready("second")
    })
    .await;
    let before: Vec<_> = ["second-config", "second"]
        .iter()
        .map(|n| {
            (
                cluster.get("", "configmaps", n),
                cluster.get("", "services", n),
                cluster.sts(n),
            )
        })
        .collect();

    // One edit that changes the config and asks for a node port already taken.
    cluster
        .patch_spec(
            "second",
            json!({"config": {"json": {"new": 1}}, "service": {"nodePort": 30080}}),
        )
        .await;
    wait_until("second is Degraded", WAIT, || {
        cluster.condition("second", "Degraded").is_some_and(|c| c.0 == "True")
    })
    .await;
    let (_, reason, message) = cluster.condition("second", "Degraded").unwrap();
    assert_eq!(reason, "ChildRejected");
    assert!(
        message.contains("30080") && message.contains("already allocated"),
        "{message}"
    );
    let after: Vec<_> = ["second-config", "second"]
        .iter()
        .map(|n| {
            (
                cluster.get("", "configmaps", n),
                cluster.get("", "services", n),
                cluster.sts(n),
            )
        })
        .collect();
    assert_eq!(before, after, "no child of second changed");
    assert!(
        cluster
            .events("second")
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "ChildRejected")
    );

    // Freeing the port lets the retry through.
    cluster
        .patch_spec("first", json!({"service": {"nodePort": 30090}}))
        .await;
    wait_until("second recovers", Duration::from_secs(30), || {
        cluster.condition("second", "Degraded").is_some_and(|c| c.0 == "False") && cluster.is_ready("second")
    })
    .await;
    assert_eq!(
        cluster.get("", "services", "second").unwrap()["spec"]["ports"][0]["nodePort"],
        30080
    );
    operator.stop().await.unwrap();
}

#[tokio::test]
async fn server_errors_and_throttling_are_retried() {
    let cluster = Cluster::start().await;
    let operator = cluster.start_operator(settings());
    cluster
        .standin
        .fail(Some(axum::http::Method::PATCH), "/statefulsets/web", 500, 2);
    cluster
        .standin
        .fail(Some(axum::http::Method::PATCH), "/configmaps/web-config", 429, 2);
    cluster.apply_app("web", json!({"replicas": 2})).await;
    wait_until("web is ready despite the failures", Duration::from_secs(30), || {
        cluster.is_ready("web")
    })
    .await;
    assert_eq!(cluster.standin.pending_faults(), 0, "every injected failure was hit");
    assert!(
        cluster
            .events("web")
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "ApplyFailed"),
        "{:?}",
        cluster.events("web")
    );
    assert_eq!(cluster.condition("web", "Degraded").unwrap().0, "False");
    operator.stop().await.unwrap();
}

#[tokio::test]
async fn a_converged_app_costs_no_write_over_a_resync() {
    let cluster = Cluster::start().await;
    let mut settings = settings();
    settings.controller.resync = Duration::from_millis(200);
    let operator = cluster.start_operator(settings);
    for name in ["a", "b", "c"] {
        cluster.apply_app(name, json!({"replicas": 2})).await;
    }
    wait_until("all are ready", WAIT, || {
        ["a", "b", "c"].iter().all(|n| cluster.is_ready(n))
    })
    .await;
    // Let writes in flight land, then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = cluster.child_writes();
    let reconciles = operator.metrics.reconciles();
    let requests = cluster.standin.requests().len();

    // Periodic resyncs, and a compaction that makes every watch list again.
    cluster.standin.compact();
    wait_until("the four watches listed again", WAIT, || {
        cluster.standin.requests()[requests..]
            .iter()
            .filter(|r| r.method == "GET" && !r.query.contains("watch"))
            .count()
            >= 4
    })
    .await;
    let reconciles_after_relist = operator.metrics.reconciles();
    wait_until("every app was reconciled three more times", WAIT, || {
        operator.metrics.reconciles() >= reconciles_after_relist.max(reconciles) + 9
    })
    .await;
    assert_eq!(cluster.child_writes(), writes, "a converged app was written again");
    let since: Vec<_> = cluster.standin.requests()[requests..].to_vec();
    assert!(
        since.iter().all(|r| r.method == "GET"),
        "only lists and watches: {:?}",
        since.iter().filter(|r| r.method != "GET").collect::<Vec<_>>()
    );
    operator.stop().await.unwrap();
}

#[tokio::test]
async fn a_policy_change_recreates_the_statefulset_and_keeps_pods_and_claims() {
    let cluster = Cluster::start().await;
    let operator = cluster.start_operator(settings());
    cluster
        .apply_app("web", json!({"replicas": 2, "podManagementPolicy": "OrderedReady"}))
        .await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;
    let old_sts_uid = cluster.sts("web").unwrap()["metadata"]["uid"].clone();
    let pod_uids: Vec<_> = ["web-0", "web-1"]
        .iter()
        .map(|p| cluster.get("", "pods", p).unwrap()["metadata"]["uid"].clone())
        .collect();
    let claim_uids: Vec<_> = ["data-web-0", "data-web-1"]
        .iter()
        .map(|c| cluster.get("", "persistentvolumeclaims", c).unwrap()["metadata"]["uid"].clone())
        .collect();

    let from = cluster.standin.requests().len();
    cluster
        .patch_spec("web", json!({"podManagementPolicy": "Parallel"}))
        .await;
    wait_until("a new StatefulSet has the new policy", WAIT, || {
        cluster
            .sts("web")
            .is_some_and(|s| s["metadata"]["uid"] != old_sts_uid && s["spec"]["podManagementPolicy"] == "Parallel")
            && cluster.is_ready("web")
    })
    .await;
    let new_uid = cluster.sts("web").unwrap()["metadata"]["uid"].clone();
    for (pod, uid) in ["web-0", "web-1"].iter().zip(&pod_uids) {
        let pod = cluster.get("", "pods", pod).expect("the pod was not deleted");
        assert_eq!(&pod["metadata"]["uid"], uid, "the same pod, not a new one");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], new_uid, "adopted");
    }
    for (claim, uid) in ["data-web-0", "data-web-1"].iter().zip(&claim_uids) {
        assert_eq!(
            &cluster
                .get("", "persistentvolumeclaims", claim)
                .expect("the claim was kept")["metadata"]["uid"],
            uid
        );
    }
    assert!(cluster.events("web").iter().any(|e| e.1 == "Recreating"));
    // The orphaning delete, then the create; no claim is touched, nothing
    // else is deleted.
    let calls = operator_calls(&cluster, from);
    assert_eq!(
        &calls[..2.min(calls.len())],
        [
            "DELETE /apis/apps/v1/statefulsets/web",
            "PATCH /apis/apps/v1/statefulsets/web"
        ],
        "{calls:#?}"
    );
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("DELETE")).count(),
        1,
        "{calls:#?}"
    );
    assert!(
        !calls.iter().any(|c| c.contains("persistentvolumeclaims")),
        "{calls:#?}"
    );
    operator.stop().await.unwrap();
}

#[tokio::test]
async fn deleting_the_app_collects_its_children_but_not_its_claims() {
    let cluster = Cluster::start().await;
    let operator = cluster.start_operator(settings());
    cluster.apply_app("web", json!({"replicas": 1})).await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;
    cluster.apps(NS).delete("web", &DeleteParams::default()).await.unwrap();
    wait_until("the children are gone", WAIT, || {
        cluster.sts("web").is_none() && cluster.get("", "configmaps", "web-config").is_none()
    })
    .await;
    assert!(cluster.get("", "persistentvolumeclaims", "data-web-0").is_some());
    operator.stop().await.unwrap();
}
