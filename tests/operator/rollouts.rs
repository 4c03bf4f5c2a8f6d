//! Rollouts of a changed pod template: a canary held on the highest ordinals
//! and promoted, and a rollout stuck on a pod that never becomes ready.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Cluster, OPERATOR_USER, WAIT, settings, wait_until};

/// Each pod's revision, by ordinal.
fn pod_revisions(cluster: &Cluster, replicas: usize) -> Vec<String> {
    (0..replicas)
        .map(|i| {
            cluster
                .get("", "pods", &format!("web-{i}"))
                .map(|p| {
                    p["metadata"]["labels"]["controller-revision-hash"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned()
                })
                .unwrap_or_default()
        })
        .collect()
}

fn status(cluster: &Cluster) -> Value {
    cluster.app("web")["status"].clone()
}

#[tokio::test]
async fn a_canary_goes_to_the_highest_ordinals_holds_and_is_promoted() {
    let cluster = Cluster::start().await;
    let operator = cluster.start_operator(settings());
    let spec = |image: &str, canary: Value| json!({"replicas": 3, "image": image, "updateStrategy": {"rollingUpdate": {"canaryReplicas": canary}}});
    cluster.apply_app("web", spec("app:1", json!(1))).await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;
    let old = status(&cluster)["updateRevision"].as_str().unwrap().to_owned();
    assert_eq!(pod_revisions(&cluster, 3), [old.clone(), old.clone(), old.clone()]);
    assert_eq!(
        cluster.sts("web").unwrap()["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
        2
    );

    // A new image reaches web-2 only, and the rollout holds there.
    cluster.apply_app("web", spec("app:2", json!(1))).await;
    wait_until("the canary is held", WAIT, || {
        cluster
            .condition("web", "Progressing")
            .is_some_and(|c| c.1 == "RolloutHeld")
    })
    .await;
    let new = status(&cluster)["updateRevision"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(pod_revisions(&cluster, 3), [old.clone(), old.clone(), new.clone()]);
    let held = status(&cluster);
    assert_eq!(
        held["updatedReplicas"], 1,
        "the status says how many pods run the new revision"
    );
    assert_eq!(held["rollout"]["heldReplicas"], 2);
    let (progressing, _, message) = cluster.condition("web", "Progressing").unwrap();
    assert_eq!(progressing, "False");
    assert!(message.contains("canaryReplicas: 1"), "{message}");
    assert!(cluster.is_ready("web"), "a held canary is a settled app");

    // Two canaries, then promotion by removing the field.
    cluster.apply_app("web", spec("app:2", json!(2))).await;
    wait_until("two pods run the new revision", WAIT, || {
        pod_revisions(&cluster, 3) == [old.clone(), new.clone(), new.clone()]
            && status(&cluster)["rollout"]["heldReplicas"] == 1
    })
    .await;
    cluster.apply_app("web", json!({"replicas": 3, "image": "app:2"})).await;
    wait_until("every pod runs the new revision", WAIT, || {
        pod_revisions(&cluster, 3) == [new.clone(), new.clone(), new.clone()]
            && cluster
                .condition("web", "Progressing")
                .is_some_and(|c| c.1 == "RolloutComplete")
    })
    .await;
    let promoted = status(&cluster);
    assert_eq!(promoted["updatedReplicas"], 3);
    assert_eq!(promoted["currentRevision"], json!(new));
    assert!(promoted.get("rollout").is_none(), "{promoted}");
    // The operator no longer sends a partition: the StatefulSet's is the default.
    assert_eq!(
        cluster.sts("web").unwrap()["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
        0
    );
    operator.stop().await.unwrap();
}

#[tokio::test]
async fn on_delete_and_plain_rolling_updates_work_as_before() {
    let cluster = Cluster::start().await;
    let operator = cluster.start_operator(settings());
    cluster
        .apply_app(
            "web",
            json!({"replicas": 2, "image": "app:1", "updateStrategy": {"type": "OnDelete"}}),
        )
        .await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;
    let old = pod_revisions(&cluster, 2);
    cluster
        .apply_app(
            "web",
            json!({"replicas": 2, "image": "app:2", "updateStrategy": {"type": "OnDelete"}}),
        )
        .await;
    wait_until("the StatefulSet has the new template", WAIT, || {
        cluster.app("web")["status"]["updateRevision"] != json!(old[0]) && cluster.is_ready("web")
    })
    .await;
    assert_eq!(pod_revisions(&cluster, 2), old, "OnDelete replaces no pod by itself");

    cluster.apply_app("web", json!({"replicas": 2, "image": "app:3"})).await;
    wait_until("a plain rolling update replaces every pod", WAIT, || {
        let new = cluster.app("web")["status"]["updateRevision"].clone();
        pod_revisions(&cluster, 2).iter().all(|r| json!(r) == new) && cluster.is_ready("web")
    })
    .await;
    operator.stop().await.unwrap();
}

#[tokio::test]
async fn a_stuck_rollout_is_reported_and_its_pod_replaced_once_the_template_is_reverted() {
    let cluster = Cluster::start().await;
    let mut settings = settings();
    settings.controller.stuck_after = Duration::from_millis(300);
    let operator = cluster.start_operator(settings);
    cluster.standin.break_image("app:broken");
    let spec = |image: &str, replace: bool| json!({"replicas": 3, "image": image, "updateStrategy": {"rollingUpdate": {"replaceStuckPods": replace}}});
    cluster.apply_app("web", spec("app:1", false)).await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;
    let good = status(&cluster)["updateRevision"].as_str().unwrap().to_owned();

    // The broken template reaches web-2, which never becomes ready.
    cluster.apply_app("web", spec("app:broken", false)).await;
    wait_until("the stuck pod is reported", WAIT, || {
        status(&cluster)["rollout"]["stuckPod"]["name"] == "web-2"
    })
    .await;
    let bad = status(&cluster)["updateRevision"].as_str().unwrap().to_owned();
    assert_eq!(status(&cluster)["rollout"]["stuckPod"]["revision"], json!(bad));
    let (stalled, reason, message) = cluster.condition("web", "Stalled").unwrap();
    assert_eq!((stalled.as_str(), reason.as_str()), ("True", "RolloutStuck"));
    assert!(
        message.contains(&format!("pod web-2 of the new revision {bad}")),
        "{message}"
    );
    assert!(
        cluster
            .events("web")
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "RolloutStuck" && e.2.contains("web-2")),
        "{:?}",
        cluster.events("web")
    );

    // Reverting does not help by itself (kubernetes#67250): web-2 stays on
    // the broken revision and the StatefulSet waits for it.
    cluster.apply_app("web", spec("app:1", false)).await;
    wait_until("the abandoned pod is reported", WAIT, || {
        cluster
            .condition("web", "Stalled")
            .is_some_and(|c| c.2.contains("kubernetes#67250"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pod_revisions(&cluster, 3),
        [good.clone(), good.clone(), bad.clone()],
        "the StatefulSet alone stays stuck"
    );
    let uid = cluster.get("", "pods", "web-2").unwrap()["metadata"]["uid"].clone();
    assert!(
        !cluster
            .standin
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.path.contains("/pods/")),
        "no pod is deleted without replaceStuckPods"
    );

    // With replaceStuckPods the operator deletes it, and the rollout resumes.
    cluster.apply_app("web", spec("app:1", true)).await;
    wait_until("every pod runs the good revision and is ready", WAIT, || {
        pod_revisions(&cluster, 3) == [good.clone(), good.clone(), good.clone()] && cluster.is_ready("web")
    })
    .await;
    let deletes: Vec<_> = cluster
        .standin
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.user.as_deref() == Some(OPERATOR_USER))
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(deletes[0].path.ends_with("/pods/web-2"), "{}", deletes[0].path);
    assert_ne!(
        cluster.get("", "pods", "web-2").unwrap()["metadata"]["uid"],
        uid,
        "a new pod"
    );
    assert!(
        cluster.get("", "persistentvolumeclaims", "data-web-2").is_some(),
        "its claim stays"
    );
    assert!(cluster.events("web").iter().any(|e| e.1 == "StuckPodReplaced"));
    assert!(status(&cluster).get("rollout").is_none());
    assert_eq!(cluster.condition("web", "Stalled").unwrap().0, "False");
    operator.stop().await.unwrap();
}
