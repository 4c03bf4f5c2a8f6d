//! Day-2 operations as spec changes: pausing, and a partition another tool
//! drives. (Config rollouts are shown on the real control plane: tests/e2e.rs.)

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::harness::{Cluster, NS, WAIT, settings, wait_until};

#[tokio::test]
async fn a_paused_app_is_left_alone_until_the_annotation_goes() {
    let cluster = Cluster::start().await;
    let operator = cluster.start_operator(settings());
    cluster.apply_app("web", json!({"replicas": 2})).await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;

    let pause = |value: Value| {
        let apps = cluster.apps(NS);
        async move {
            apps.patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"visitcounter.dev/paused": value}}})),
            )
            .await
            .unwrap();
        }
    };
    pause(json!("true")).await;
    wait_until("the status says paused", WAIT, || {
        cluster.condition("web", "Paused").is_some_and(|c| c.0 == "True")
    })
    .await;
    let writes = cluster.standin.writes_to("statefulsets").len();
    cluster.patch_spec("web", json!({"replicas": 4})).await;
    // Give the operator time to (wrongly) act on the change.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        cluster.sts("web").unwrap()["spec"]["replicas"],
        2,
        "a paused app is not scaled"
    );
    assert_eq!(cluster.standin.writes_to("statefulsets").len(), writes);
    assert!(cluster.events("web").iter().any(|e| e.1 == "Paused"));
    let (status, _, message) = cluster.condition("web", "Paused").unwrap();
    assert_eq!(status, "True");
    assert!(message.contains("visitcounter.dev/paused"), "{message}");

    pause(Value::Null).await;
    wait_until("the scale goes through once resumed", WAIT, || {
        cluster.sts("web").unwrap()["spec"]["replicas"] == 4 && cluster.is_ready("web")
    })
    .await;
    assert!(
        cluster.condition("web", "Paused").is_none(),
        "the Paused condition is gone"
    );
    assert!(cluster.events("web").iter().any(|e| e.1 == "Resumed"));
    operator.stop().await.unwrap();
}

#[tokio::test]
async fn a_partition_set_by_another_tool_is_not_fought_over() {
    let cluster = Cluster::start().await;
    let mut settings = settings();
    settings.controller.resync = Duration::from_millis(200);
    let operator = cluster.start_operator(settings);
    cluster.apply_app("web", json!({"replicas": 3})).await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;

    // A rollout tool takes the partition with its own server-side apply.
    let stateful_sets: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), NS);
    let tool = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
        "spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}
    });
    stateful_sets
        .patch("web", &PatchParams::apply("kruise-rollout"), &Patch::Apply(&tool))
        .await
        .unwrap();
    let writes = cluster.standin.writes_to("statefulsets").len();
    let reconciles = operator.metrics.reconciles();
    wait_until("a few resyncs", WAIT, || {
        operator.metrics.reconciles() >= reconciles + 5
    })
    .await;
    assert_eq!(
        cluster.standin.writes_to("statefulsets").len(),
        writes,
        "the operator did not write the StatefulSet back"
    );

    // A change of the operator's own fields keeps the tool's partition.
    cluster
        .patch_spec("web", json!({"image": "registry.example/counter:2"}))
        .await;
    wait_until("the new image is applied", WAIT, || {
        cluster.sts("web").unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
            == "registry.example/counter:2"
    })
    .await;
    assert_eq!(
        cluster.sts("web").unwrap()["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
        2
    );
    operator.stop().await.unwrap();
}
