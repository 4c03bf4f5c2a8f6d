//! Volumes on the real server: growth in place, a class that does not
//! expand, deletion keeping claims, and a refused StatefulSet leaving no
//! child behind.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::PersistentVolumeClaim, storage::v1::StorageClass};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;
use visitcounter::resource::VisitCounterApp;

use crate::env::{AuditLog, Env, eventually};

/// A larger volume grows every claim in place (the test cluster's default
/// StorageClass allows expansion) and re-creates the StatefulSet around the
/// same pods and claims.
pub async fn storage_growth(env: &Env) {
    let spec = |size: &str| json!({"replicas": 2, "storage": {"size": size}});
    env.apply_app("grow", spec("1Gi")).await;
    eventually("grow is Ready with 2 pods", || env.ready_with_pods("grow", 2)).await;
    let claims_before = env.claim_uids("grow").await;
    let pods_before = env.pod_uids("grow").await;
    env.apply_app("grow", spec("2Gi")).await;
    let claims = env.api::<PersistentVolumeClaim>();
    eventually("every claim has grown to 2Gi", || async {
        let Ok(list) = claims
            .list(&ListParams::default().labels("app.kubernetes.io/instance=grow"))
            .await
        else {
            return false;
        };
        list.items.len() == 2
            && list.items.iter().all(|c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.capacity.as_ref()?.get("storage").cloned())
                    .is_some_and(|q| q.0 == "2Gi")
            })
    })
    .await;
    let stateful_sets = env.api::<StatefulSet>();
    eventually("the StatefulSet asks for 2Gi and grow is Ready", || async {
        stateful_sets.get("grow").await.is_ok_and(|s| {
            let template = &s.spec.unwrap_or_default().volume_claim_templates.unwrap_or_default()[0];
            template
                .spec
                .as_ref()
                .and_then(|t| t.resources.as_ref()?.requests.as_ref()?.get("storage").cloned())
                .is_some_and(|q| q.0 == "2Gi")
        }) && env.ready_with_pods("grow", 2).await
    })
    .await;
    assert_eq!(env.claim_uids("grow").await, claims_before, "a claim was replaced");
    assert_eq!(env.pod_uids("grow").await, pods_before, "a pod was replaced");
}

/// A larger volume on a StorageClass that does not allow expansion changes
/// nothing: the app is Degraded and Stalled with the reason, and no claim and
/// no StatefulSet is written.
pub async fn class_without_expansion(env: &Env) {
    let classes: Api<StorageClass> = Api::all(env.client.clone());
    let default = classes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|c| {
            c.metadata.annotations.as_ref().is_some_and(|a| {
                a.get("storageclass.kubernetes.io/is-default-class").map(String::as_str) == Some("true")
            })
        })
        .expect("the cluster has a default StorageClass");
    let class = format!("{}-fixed", env.ns);
    classes
        .patch(
            &class,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(json!({
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": class},
                "provisioner": default.provisioner,
                "allowVolumeExpansion": false,
            })),
        )
        .await
        .expect("the StorageClass is created");
    let spec = |size: &str| json!({"replicas": 2, "storage": {"size": size, "storageClassName": class}});
    env.apply_app("fixed", spec("1Gi")).await;
    eventually("fixed is Ready with 2 pods", || env.ready_with_pods("fixed", 2)).await;
    let statefulset_uid = || async { env.api::<StatefulSet>().get("fixed").await.unwrap().metadata.uid };
    let uid_before = statefulset_uid().await;
    let claims_before = env.claim_uids("fixed").await;
    let audit = AuditLog::from_env();

    env.apply_app("fixed", spec("2Gi")).await;
    eventually("fixed is Degraded: the class does not expand", || async {
        env.condition("fixed", "Degraded")
            .await
            .is_some_and(|c| c.0 == "True" && c.1 == "VolumeExpansionNotAllowed")
    })
    .await;
    let app = env.api::<VisitCounterApp>().get("fixed").await.unwrap();
    let conditions = app.status.unwrap().conditions;
    let degraded = conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert!(
        degraded.message.contains(&format!(
            "claim data-fixed-0 uses StorageClass {class}, which does not allow volume expansion"
        )) && degraded.message.contains("data-fixed-1")
            && degraded.message.contains("no claim was changed"),
        "{}",
        degraded.message
    );
    assert!(
        conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True"),
        "{conditions:?}"
    );
    // A few resyncs (every 2 s here) pass.
    tokio::time::sleep(Duration::from_secs(4)).await;
    if let Some(audit) = &audit {
        let writes = audit.operator_writes(&env.ns);
        let children: Vec<_> = writes
            .iter()
            .filter(|w| w.contains("statefulsets/") || w.contains("persistentvolumeclaims/"))
            .collect();
        assert!(
            children.is_empty(),
            "no claim and no StatefulSet is written: {children:#?}"
        );
    }
    assert_eq!(statefulset_uid().await, uid_before, "the StatefulSet was re-created");
    assert_eq!(env.claim_uids("fixed").await, claims_before);
    let requested = env.kubectl(&[
        "get",
        "pvc",
        "data-fixed-0",
        "-o",
        "jsonpath={.spec.resources.requests.storage}",
    ]);
    assert_eq!(requested, "1Gi");

    env.api::<VisitCounterApp>()
        .delete("fixed", &DeleteParams::default())
        .await
        .unwrap();
    let _ = classes.delete(&class, &DeleteParams::default()).await;
}

/// Deleting an app lets the garbage collector take its children, and keeps
/// its claims: the visit counts live on them.
pub async fn deletion_keeps_claims(env: &Env) {
    env.apply_app("kept", json!({"replicas": 2})).await;
    eventually("kept is Ready with 2 pods", || env.ready_with_pods("kept", 2)).await;
    let claims_before = env.claim_uids("kept").await;
    assert_eq!(claims_before.len(), 2, "{claims_before:?}");
    env.api::<VisitCounterApp>()
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the garbage collector removes the StatefulSet and its pods", || async {
        env.api::<StatefulSet>().get_opt("kept").await.ok().flatten().is_none() && env.pod_uids("kept").await.is_empty()
    })
    .await;
    assert_eq!(env.claim_uids("kept").await, claims_before, "a claim was deleted");
}

/// A ValidatingAdmissionPolicy (in-tree CEL admission) refuses StatefulSets
/// of 7 replicas in the test namespace; an app of 7 gets no child at all.
pub async fn refused_statefulset_leaves_nothing(env: &Env) {
    use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
    let name = format!("{}-no-seven", env.ns);
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(env.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(env.client.clone());
    let params = PatchParams::apply("e2e").force();
    policies
        .patch(
            &name,
            &params,
            &Patch::Apply(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {"failurePolicy": "Fail",
                     "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                         "operations": ["CREATE", "UPDATE"], "resources": ["statefulsets"]}]},
                     "validations": [{"expression": "object.spec.replicas != 7",
                                      "message": "this cluster allows no StatefulSet of 7 replicas"}]}})),
        )
        .await
        .expect("the policy is created");
    bindings
        .patch(&name, &params, &Patch::Apply(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"],
                     "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": env.ns}}}}})))
        .await
        .expect("the binding is created");
    // The API server loads a new policy within a second or so.
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.apply_app("seven", json!({"replicas": 7, "createServiceAccount": true}))
        .await;
    eventually("seven is Degraded by the refused StatefulSet", || async {
        env.condition("seven", "Degraded")
            .await
            .is_some_and(|c| c.0 == "True" && c.1 == "ChildRejected")
    })
    .await;
    let app = env.api::<VisitCounterApp>().get("seven").await.unwrap();
    let degraded = app
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert!(degraded.message.contains("7 replicas"), "{}", degraded.message);
    eventually("every child created before the refusal is deleted again", || async {
        let left = env.kubectl(&[
            "get",
            "svc,sa,cm,sts",
            "-l",
            "app.kubernetes.io/instance=seven",
            "-o",
            "name",
        ]);
        left.trim().is_empty()
    })
    .await;
    let rolled_back = env.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=RolledBack",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        rolled_back.contains("since StatefulSet seven was refused"),
        "a RolledBack Event says what was removed: {rolled_back}"
    );
    env.api::<VisitCounterApp>()
        .delete("seven", &DeleteParams::default())
        .await
        .unwrap();
    let _ = bindings.delete(&name, &DeleteParams::default()).await;
    let _ = policies.delete(&name, &DeleteParams::default()).await;
}
