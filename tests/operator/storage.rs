//! Growing the volumes: claims patched, then the StatefulSet re-created with
//! the new claim template, and no pod or claim deleted.

use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::harness::{Cluster, NS, WAIT, operator_calls, settings, wait_until};

async fn storage_class(cluster: &Cluster, name: &str, expands: bool) {
    let class = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name}, "provisioner": "csi.example.com", "allowVolumeExpansion": expands,
    });
    cluster
        .standin
        .insert_unchecked("storage.k8s.io", "storageclasses", class)
        .expect("the class is stored");
}

fn uid(cluster: &Cluster, plural: &str, name: &str) -> Value {
    cluster.get("", plural, name).unwrap()["metadata"]["uid"].clone()
}

fn requested(cluster: &Cluster, claim: &str) -> Value {
    cluster.get("", "persistentvolumeclaims", claim).unwrap()["spec"]["resources"]["requests"]["storage"].clone()
}

#[tokio::test]
async fn raising_the_size_grows_every_claim_then_recreates_the_statefulset() {
    let cluster = Cluster::start().await;
    storage_class(&cluster, "fast", true).await;
    let operator = cluster.start_operator(settings());
    let spec = |size: &str, replicas: i32| json!({"replicas": replicas, "storage": {"size": size, "storageClassName": "fast"}});
    cluster.apply_app("web", spec("1Gi", 3)).await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;
    // A claim retained from a scale-down is the app's too, and grows.
    cluster.apply_app("web", spec("1Gi", 2)).await;
    wait_until("web runs 2 pods", WAIT, || {
        cluster.is_ready("web") && cluster.get("", "pods", "web-2").is_none()
    })
    .await;
    let claims = ["data-web-0", "data-web-1", "data-web-2"];
    let pod_uids: Vec<Value> = ["web-0", "web-1"].iter().map(|p| uid(&cluster, "pods", p)).collect();
    let claim_uids: Vec<Value> = claims
        .iter()
        .map(|c| uid(&cluster, "persistentvolumeclaims", c))
        .collect();
    let old_sts = cluster.sts("web").unwrap()["metadata"]["uid"].clone();
    let from = cluster.standin.requests().len();

    cluster.apply_app("web", spec("2Gi", 2)).await;
    wait_until("the new StatefulSet asks for 2Gi", WAIT, || {
        cluster.sts("web").is_some_and(|s| {
            s["metadata"]["uid"] != old_sts
                && s["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
        }) && cluster.is_ready("web")
    })
    .await;
    for claim in claims {
        assert_eq!(requested(&cluster, claim), "2Gi", "{claim} grew");
    }
    let calls = operator_calls(&cluster, from);
    let expected_start = [
        "GET /api/v1/persistentvolumeclaims",
        "GET /apis/storage.k8s.io/v1/storageclasses/fast",
        "PATCH /api/v1/persistentvolumeclaims/data-web-0",
        "PATCH /api/v1/persistentvolumeclaims/data-web-1",
        "PATCH /api/v1/persistentvolumeclaims/data-web-2",
        "DELETE /apis/apps/v1/statefulsets/web",
        "PATCH /apis/apps/v1/statefulsets/web",
    ];
    assert_eq!(
        &calls[..expected_start.len().min(calls.len())],
        expected_start,
        "{calls:#?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("DELETE") && !c.ends_with("/statefulsets/web")),
        "nothing but the StatefulSet is deleted: {calls:#?}"
    );
    for (pod, uid) in ["web-0", "web-1"].iter().zip(&pod_uids) {
        assert_eq!(&self::uid(&cluster, "pods", pod), uid, "{pod} is the same pod");
    }
    for (claim, uid) in claims.iter().zip(&claim_uids) {
        assert_eq!(
            &self::uid(&cluster, "persistentvolumeclaims", claim),
            uid,
            "{claim} is the same claim"
        );
    }
    assert!(
        cluster
            .events("web")
            .iter()
            .any(|e| e.1 == "ExpandingVolumes" && e.2.contains("data-web-0, data-web-1, data-web-2"))
    );

    // The same size again changes nothing.
    let from = cluster.standin.requests().len();
    cluster.apply_app("web", spec("2Gi", 2)).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        operator_calls(&cluster, from)
            .iter()
            .all(|c| !c.contains("persistentvolumeclaims")),
        "{:?}",
        operator_calls(&cluster, from)
    );
    operator.stop().await.unwrap();
}

#[tokio::test]
async fn a_class_without_expansion_changes_nothing_and_says_why() {
    let cluster = Cluster::start().await;
    storage_class(&cluster, "slow", false).await;
    let operator = cluster.start_operator(settings());
    let spec = |size: &str| json!({"replicas": 2, "storage": {"size": size, "storageClassName": "slow"}});
    cluster.apply_app("web", spec("1Gi")).await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;
    let old_sts = cluster.sts("web").unwrap()["metadata"]["uid"].clone();
    let from = cluster.standin.requests().len();

    cluster.apply_app("web", spec("2Gi")).await;
    wait_until("web is Degraded", WAIT, || {
        cluster
            .condition("web", "Degraded")
            .is_some_and(|c| c.1 == "VolumeExpansionNotAllowed")
    })
    .await;
    let (_, _, message) = cluster.condition("web", "Degraded").unwrap();
    assert!(
        message.contains("claim data-web-0 uses StorageClass slow, which does not allow volume expansion")
            && message.contains("data-web-1")
            && message.contains("no claim was changed"),
        "{message}"
    );
    assert_eq!(cluster.condition("web", "Stalled").unwrap().0, "True");
    let calls = operator_calls(&cluster, from);
    assert!(
        calls.iter().all(|c| c.starts_with("GET")),
        "nothing is written, not even the StatefulSet: {calls:#?}"
    );
    assert_eq!(cluster.sts("web").unwrap()["metadata"]["uid"], old_sts);
    assert_eq!(requested(&cluster, "data-web-0"), "1Gi");
    operator.stop().await.unwrap();
}

#[tokio::test]
async fn shrinking_is_refused_with_the_reason() {
    let cluster = Cluster::start().await;
    cluster.apply_app("web", json!({"storage": {"size": "2Gi"}})).await;
    let error = cluster
        .apps(NS)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"storage": {"size": "1Gi"}}})),
        )
        .await
        .expect_err("a smaller size is refused");
    let kube::Error::Api(status) = error else {
        panic!("an API error, not {error}");
    };
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains(
            "storage.size cannot shrink from 2Gi to 1Gi: Kubernetes can grow a volume but never make it smaller"
        ),
        "{}",
        status.message
    );
}
