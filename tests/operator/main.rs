//! The real controller, through an unmodified `kube::Client`, against the
//! in-process stand-in for the API server. Each test asserts on the state the
//! stand-in holds and the requests it answered.

mod day2;
mod harness;
mod leadership;
mod rollouts;
mod storage;
#[path = "../support/mod.rs"]
mod support;
mod visits;

use std::time::Duration;

use harness::{Cluster, NS, WAIT, settings, wait_until};
use serde_json::{Value, json};

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
    let config = cluster.config_map("web").expect("the ConfigMap the StatefulSet names");
    assert!(config["data"]["config.json"].as_str().unwrap().contains("greeting"));
    let config_name = config["metadata"]["name"].as_str().unwrap().to_owned();

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
        format!(
            "created Service web; created Service web-headless; created ConfigMap {config_name}; created StatefulSet web"
        )
    );
    assert_eq!(operator.health.phase(), visitcounter::operator::Phase::Reconciling);
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
    for (plural, name) in [("services", "bad"), ("services", "bad-headless")] {
        assert!(cluster.get("", plural, name).is_none(), "{plural}/{name} was created");
    }
    assert_eq!(
        cluster.config_maps("bad"),
        Vec::<Value>::new(),
        "a ConfigMap was created"
    );
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
    let children = || {
        (
            cluster.config_maps("second"),
            cluster.get("", "services", "second"),
            cluster.sts("second"),
        )
    };
    let before = children();
    assert_eq!(before.0.len(), 1, "{:?}", before.0);

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
    let after = children();
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
