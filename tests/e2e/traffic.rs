//! `spec.traffic` on a real API server: the app's HTTPRoute, checked by the
//! Gateway API's own CRDs (`scripts/gateway-api.sh` names them, from the
//! Go module proxy). No gateway runs here: the API server judges the route,
//! and the test checks what it says.

use std::process::Command;

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use kube::api::DeleteParams;
use serde_json::{Value, json};
use visitcounter::resource::VisitCounterApp;

use crate::env::{Env, eventually, image};

const REVISION: &str = "controller-revision-hash";

/// The Gateway API's standard CRDs installed, or removed.
pub fn gateway_api(env: &Env, installed: bool) {
    let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/gateway-api.sh"))
        .output()
        .expect("scripts/gateway-api.sh runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let dir = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    if installed {
        env.kubectl(&["apply", "--server-side", "-f", &dir]);
        env.kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/httproutes.gateway.networking.k8s.io",
        ]);
    } else {
        env.kubectl(&["delete", "--ignore-not-found", "--wait", "-f", &dir]);
    }
}

fn spec(traffic: Option<Value>, mode: &str, partition: i32) -> Value {
    let mut spec = json!({"replicas": 3, "image": image(), "podManagementPolicy": "Parallel",
                          "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
                          "config": {"env": [{"name": "MODE", "value": mode}]}});
    if let Some(traffic) = traffic {
        spec["traffic"] = traffic;
    }
    spec
}

fn weighted() -> Value {
    json!({"parentRef": {"name": "edge", "namespace": "gateways"}, "hostnames": ["shop.example.com"],
           "path": "/", "canaryWeight": 20})
}

/// The app's route as the API server holds it, if any.
pub fn route(env: &Env, name: &str) -> Option<Value> {
    let out = env.kubectl(&["get", "httproute", name, "--ignore-not-found", "-o", "json"]);
    (!out.trim().is_empty()).then(|| serde_json::from_str(&out).unwrap())
}

/// The route's backends: (Service, weight).
fn backends(route: &Value) -> Vec<(String, i64)> {
    route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].as_str().unwrap().to_owned(), b["weight"].as_i64().unwrap()))
        .collect()
}

async fn selected(env: &Env, service: &str) -> Option<String> {
    let service = env.api::<Service>().get_opt(service).await.unwrap()?;
    service.spec?.selector?.get(REVISION).cloned()
}

/// Without the Gateway API the app is Degraded and nothing of it is
/// written; with it (and no change to the app), the HTTPRoute attaches to
/// the Gateway named and sends every request to the app's Service; a canary
/// held by the partition gets its weight once its pod is Ready, through
/// Services pinned to each revision; traffic unset, the route and those
/// Services go.
pub async fn routes_through_an_httproute(env: &Env) {
    gateway_api(env, false);
    env.apply_app("tr", spec(Some(weighted()), "a", 0)).await;
    eventually("tr is Degraded for want of the Gateway API", || async {
        env.condition("tr", "Degraded").await == Some(("True".into(), "GatewayAPIMissing".into()))
    })
    .await;
    assert!(
        env.api::<StatefulSet>().get_opt("tr").await.unwrap().is_none()
            && env.api::<Service>().get_opt("tr").await.unwrap().is_none(),
        "nothing of tr is written without the Gateway API"
    );

    // Nothing of the app changes: the operator's retries see the CRDs.
    gateway_api(env, true);
    eventually("tr is Ready with 3 pods", || env.ready_with_pods("tr", 3)).await;
    let live = route(env, "tr").expect("the HTTPRoute tr");
    assert_eq!(backends(&live), [("tr".to_owned(), 100)], "at rest, the app's Service");
    assert_eq!(
        live["spec"]["parentRefs"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge", "namespace": "gateways"}])
    );
    assert_eq!(live["spec"]["hostnames"], json!(["shop.example.com"]));
    assert_eq!(live["metadata"]["ownerReferences"][0]["name"], "tr");

    // A canary: one pod of three on the new template.
    env.apply_app("tr", spec(Some(weighted()), "b", 2)).await;
    eventually("the route sends 20% to the canary", || async {
        route(env, "tr").is_some_and(|r| backends(&r) == [("tr-stable".to_owned(), 80), ("tr-canary".to_owned(), 20)])
    })
    .await;
    let sts = env.api::<StatefulSet>().get("tr").await.unwrap().status.unwrap();
    assert_eq!(selected(env, "tr-stable").await, sts.current_revision);
    assert_eq!(selected(env, "tr-canary").await, sts.update_revision);
    assert_ne!(sts.current_revision, sts.update_revision);
    let wanted = json!({"route": "tr", "backends": [
        {"service": "tr-stable", "weight": 80}, {"service": "tr-canary", "weight": 20}]});
    eventually("the status tells the route's weights", || async {
        traffic_status(env, "tr").await == wanted
    })
    .await;

    // Promoted: once every pod runs the new template, every request goes
    // to the app's Service again.
    env.apply_app("tr", spec(Some(weighted()), "b", 0)).await;
    eventually("the route sends everything to tr once the rollout is done", || async {
        env.ready_with_pods("tr", 3).await && route(env, "tr").is_some_and(|r| backends(&r) == [("tr".to_owned(), 100)])
    })
    .await;

    // Traffic unset: the route and the Services per version go.
    env.apply_app("tr", spec(None, "b", 0)).await;
    eventually("the route and the Services per version go", || async {
        route(env, "tr").is_none()
            && env.api::<Service>().get_opt("tr-stable").await.unwrap().is_none()
            && env.api::<Service>().get_opt("tr-canary").await.unwrap().is_none()
    })
    .await;
    env.wait_for_event(
        "reason=LeftoverDeleted,involvedObject.name=tr",
        "an Event says the route went",
        |m| m == "deleted HTTPRoute tr: spec.traffic is not set",
    )
    .await;
    env.api::<VisitCounterApp>()
        .delete("tr", &DeleteParams::default())
        .await
        .unwrap();
    gateway_api(env, false);
}

/// An A/B test by cookie: while a partition holds pods of both templates
/// and each side has a Ready pod, the route has two rules, the cookie's
/// (a regular expression on the `Cookie` header, which the Gateway API's
/// CRD accepts) to the new pods and the rest to the current ones; promoted,
/// one rule to the app's Service again.
pub async fn splits_an_ab_test_by_cookie(env: &Env) {
    gateway_api(env, true);
    let ab = json!({"parentRef": {"name": "edge", "namespace": "gateways"},
                    "abTest": {"match": {"cookie": {"name": "variant", "value": "b"}}}});
    env.apply_app("ab", spec(Some(ab.clone()), "a", 0)).await;
    eventually("ab is Ready with 3 pods", || env.ready_with_pods("ab", 3)).await;
    assert_eq!(rules(&route(env, "ab").expect("the HTTPRoute ab")).len(), 1);

    env.apply_app("ab", spec(Some(ab.clone()), "b", 2)).await;
    eventually("the route sends the cookie to B", || async {
        route(env, "ab").is_some_and(|r| rules(&r).len() == 2)
    })
    .await;
    let live = route(env, "ab").unwrap();
    let split = rules(&live);
    assert_eq!(
        split[0]["matches"][0]["headers"],
        json!([{"type": "RegularExpression", "name": "Cookie", "value": r"^(.*;\s*)?variant=b(\s*;.*)?$"}])
    );
    assert_eq!(split[0]["backendRefs"][0]["name"], "ab-canary");
    assert_eq!(split[1]["matches"][0].get("headers"), None);
    assert_eq!(split[1]["backendRefs"][0]["name"], "ab-stable");
    let sts = env.api::<StatefulSet>().get("ab").await.unwrap().status.unwrap();
    assert_eq!(selected(env, "ab-canary").await, sts.update_revision);
    assert_eq!(selected(env, "ab-stable").await, sts.current_revision);
    let wanted = json!({"route": "ab", "backends": [
        {"service": "ab-canary", "weight": 100, "match": "cookie variant=b"},
        {"service": "ab-stable", "weight": 100}]});
    eventually("the status tells the route's match", || async {
        traffic_status(env, "ab").await == wanted
    })
    .await;

    env.apply_app("ab", spec(Some(ab), "b", 0)).await;
    eventually("promoted, one rule to the app's Service", || async {
        env.ready_with_pods("ab", 3).await
            && route(env, "ab").is_some_and(|r| rules(&r).len() == 1 && backends(&r) == [("ab".to_owned(), 100)])
    })
    .await;
    env.api::<VisitCounterApp>()
        .delete("ab", &DeleteParams::default())
        .await
        .unwrap();
    gateway_api(env, false);
}

fn rules(route: &Value) -> Vec<Value> {
    route["spec"]["rules"].as_array().cloned().unwrap_or_default()
}

/// The app's `status.traffic`. The operator writes it after the route, in
/// the same reconcile, so a test that has just seen the route waits for it.
async fn traffic_status(env: &Env, app: &str) -> serde_json::Value {
    let app = env.api::<VisitCounterApp>().get(app).await.unwrap();
    serde_json::to_value(app.status.and_then(|s| s.traffic)).unwrap()
}
