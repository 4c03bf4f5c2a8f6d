//! Faults a real API server does not give on demand, injected by a proxy in
//! front of it (`fault_proxy`): 500 and 429 answers, an expired watch, a CRD
//! that is not there.

use axum::http::Method;
use kube::Client;
use serde_json::json;
use visitcounter::{
    controller::ControllerSettings,
    operator::{CrdProblem, Operator, OperatorError, OperatorSettings},
};

use crate::{
    env::{Env, eventually},
    fault_proxy::FaultProxy,
};

fn settings(env: &Env, instance: &str) -> OperatorSettings {
    OperatorSettings {
        controller: ControllerSettings {
            namespace: Some(env.ns.clone()),
            instance: Some(instance.into()),
            visits_interval: None,
            ..ControllerSettings::default()
        },
        admin_address: None,
        lease: None,
    }
}

/// The operator, talking through the proxy, retries two 500s and two 429s,
/// says so in an Event, and gets the app Ready with nothing left Degraded.
/// Its StatefulSet watch is told its resource version expired (as after an
/// etcd compaction): it lists again and goes on.
pub async fn failures_are_retried(env: &Env) {
    let proxy = FaultProxy::start(env.client.clone()).await;
    proxy.fail(Some(Method::PATCH), &["/statefulsets/faulty"], 500, 2);
    proxy.fail(Some(Method::PATCH), &["/configmaps/faulty-config-"], 429, 2);
    proxy.fail(Some(Method::GET), &["/statefulsets?", "watch=true"], 410, 1);
    let client = Client::try_from(proxy.config(&env.ns)).unwrap();
    let operator = Operator::new(client, settings(env, "e2e-faults"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(operator.run(async move {
        let _ = stopped.await;
    }));
    env.apply_app("faulty", json!({"replicas": 2})).await;
    eventually("faulty is Ready with its pods despite the failures", || {
        env.ready_with_pods("faulty", 2)
    })
    .await;
    assert_eq!(proxy.pending_faults(), 0, "every injected failure was hit");
    let lists = proxy.requests(&Method::GET, &["/statefulsets?"])
        - proxy.requests(&Method::GET, &["/statefulsets?", "watch=true"]);
    assert!(
        lists >= 2,
        "the expired watch was followed by a new list: {lists} lists"
    );
    let failed = env.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=faulty,reason=ApplyFailed,type=Warning",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        failed.contains("500") || failed.contains("injected"),
        "an ApplyFailed Event says why: {failed}"
    );
    assert_eq!(
        env.condition("faulty", "Degraded").await.map(|c| c.0).as_deref(),
        Some("False")
    );
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

/// Where the CRD is not installed, the operator does not start: it says what
/// to run.
pub async fn a_missing_crd_stops_the_start(env: &Env) {
    let proxy = FaultProxy::start(env.client.clone()).await;
    proxy.fail(
        Some(Method::GET),
        &["/customresourcedefinitions/visitcounterapps.visitcounter.dev"],
        404,
        1,
    );
    let client = Client::try_from(proxy.config(&env.ns)).unwrap();
    let operator = Operator::new(client, settings(env, "e2e-no-crd"));
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(30), operator.run(std::future::pending()))
        .await
        .expect("the operator stops by itself");
    let error = outcome.expect_err("the operator does not run without its CRD");
    assert!(
        matches!(error, OperatorError::Crd(CrdProblem::Missing { .. })),
        "{error}"
    );
    assert!(
        error.to_string().contains("visitcounter crd | kubectl apply"),
        "{error}"
    );
    assert_eq!(proxy.pending_faults(), 0);
}
