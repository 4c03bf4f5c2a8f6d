//! `updateStrategy.type: Shadow`: a changed template runs in the StatefulSet
//! `<app>-shadow`, whose pods and claims are labelled apart from the app's,
//! and the app's HTTPRoute mirrors every request to it (`RequestMirror`,
//! which the Gateway API's CRD takes on both versions); the serving
//! StatefulSet's template is not touched. Promoted by the annotation, the
//! app's StatefulSet rolls to the template and the shadow goes; a revert
//! drops it.

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, PersistentVolumeClaim, Service},
};
use kube::api::{DeleteParams, ListParams};
use serde_json::{Value, json};
use visitcounter::resource::VisitCounterApp;

use crate::{
    env::{Env, eventually, image},
    traffic::{gateway_api, route},
};

fn spec(mode: &str) -> Value {
    json!({"replicas": 2, "image": image(), "podManagementPolicy": "Parallel",
           "updateStrategy": {"type": "Shadow"},
           "traffic": {"parentRef": {"name": "edge", "namespace": "gateways"}},
           "config": {"env": [{"name": "MODE", "value": mode}]}})
}

/// The MODE the StatefulSet's pods get, if it exists: the key of the
/// ConfigMap its template names.
pub async fn mode(env: &Env, name: &str) -> Option<String> {
    let sts = env.api::<StatefulSet>().get_opt(name).await.unwrap()?;
    let volumes = sts.spec?.template.spec?.volumes?;
    let config = volumes.into_iter().find_map(|v| v.config_map)?.name;
    let map = env.api::<ConfigMap>().get(&config).await.unwrap();
    map.data?.get("MODE").cloned()
}

fn mirrors(route: &Value) -> Option<String> {
    route["spec"]["rules"][0]["filters"][0]["requestMirror"]["backendRef"]["name"]
        .as_str()
        .map(str::to_owned)
}

async fn shadow_ready(env: &Env) -> bool {
    let Some(sts) = env.api::<StatefulSet>().get_opt("sh-shadow").await.unwrap() else {
        return false;
    };
    sts.status.and_then(|s| s.available_replicas) == Some(2)
}

pub async fn mirrors_to_a_shadow_until_promoted(env: &Env) {
    gateway_api(env, true);
    env.apply_app("sh", spec("a")).await;
    eventually("sh is Ready with 2 pods", || env.ready_with_pods("sh", 2)).await;
    assert_eq!(route(env, "sh").and_then(|r| mirrors(&r)), None, "no shadow, no mirror");

    env.apply_app("sh", spec("b")).await;
    eventually("the shadow runs and the route mirrors to it", || async {
        shadow_ready(env).await && route(env, "sh").and_then(|r| mirrors(&r)).as_deref() == Some("sh-shadow")
    })
    .await;
    assert_eq!(
        mode(env, "sh").await.as_deref(),
        Some("a"),
        "the serving template is untouched"
    );
    assert_eq!(mode(env, "sh-shadow").await.as_deref(), Some("b"));
    let selector = env
        .api::<Service>()
        .get("sh")
        .await
        .unwrap()
        .spec
        .unwrap()
        .selector
        .unwrap();
    assert_eq!(
        selector["app.kubernetes.io/instance"], "sh",
        "users never reach the shadow"
    );
    let claims = env
        .claims(&ListParams::default().labels("app.kubernetes.io/instance=sh-shadow"))
        .await;
    assert_eq!(claims.len(), 2, "the shadow's own claims: {claims:?}");
    let route_now = route(env, "sh").unwrap();
    assert_eq!(route_now["spec"]["rules"][0]["backendRefs"][0]["name"], "sh");
    eventually("Progressing says how to promote", || async {
        env.condition("sh", "Progressing")
            .await
            .is_some_and(|c| c.1 == "ShadowRunning")
    })
    .await;

    // Promoted: the app rolls to the template, the shadow goes, claims kept.
    let revision = env
        .api::<StatefulSet>()
        .get("sh-shadow")
        .await
        .unwrap()
        .status
        .unwrap()
        .update_revision
        .unwrap();
    env.kubectl(&[
        "annotate",
        "vca",
        "sh",
        &format!("visitcounter.dev/promote={revision}"),
        "--overwrite",
    ]);
    eventually("the app runs the promoted template and the shadow is gone", || async {
        env.api::<StatefulSet>().get_opt("sh-shadow").await.unwrap().is_none()
            && mode(env, "sh").await.as_deref() == Some("b")
            && env.ready_with_pods("sh", 2).await
            && route(env, "sh").is_some_and(|r| mirrors(&r).is_none())
    })
    .await;
    env.wait_for_event(
        "reason=ShadowPromoted,involvedObject.name=sh",
        "the Event says the shadow was promoted",
        |m| m.contains("was promoted"),
    )
    .await;
    let kept = env
        .api::<PersistentVolumeClaim>()
        .get_opt("data-sh-shadow-0")
        .await
        .unwrap();
    assert!(kept.is_some(), "the shadow's claims follow whenDeleted: Retain");

    // A new template, then reverted: the shadow goes again.
    env.apply_app("sh", spec("c")).await;
    eventually("a second shadow runs", || shadow_ready(env)).await;
    env.apply_app("sh", spec("b")).await;
    eventually("reverted, the shadow is gone", || async {
        env.api::<StatefulSet>().get_opt("sh-shadow").await.unwrap().is_none()
    })
    .await;
    assert_eq!(mode(env, "sh").await.as_deref(), Some("b"));
    // The Event follows the delete.
    env.wait_for_event(
        "reason=ShadowDropped,involvedObject.name=sh",
        "the Event says the shadow was dropped",
        |m| m.contains("no longer differs"),
    )
    .await;
    env.api::<VisitCounterApp>()
        .delete("sh", &DeleteParams::default())
        .await
        .unwrap();
    gateway_api(env, false);
}
