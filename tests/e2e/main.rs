//! End to end on a real Kubernetes API server: the control plane that
//! `scripts/cluster.sh up` starts (kube-apiserver, kube-controller-manager,
//! kube-scheduler and etcd from the Kubernetes Go modules, kwok's simulated
//! nodes), or any cluster named by `KUBECONFIG` (kind, k3d).
//!
//! `scripts/test.sh` runs it; by hand, after `eval "$(scripts/cluster.sh env)"`:
//! `cargo test --test e2e -- --ignored`. It is `#[ignore]`d otherwise, so a
//! plain `cargo test` reports it as ignored rather than passed.
//!
//! It installs the CRD, runs the operator in-process (with its own client and
//! User-Agent) for one temporary namespace that enforces the `restricted` Pod
//! Security profile, and deletes the namespace at the end, pass or fail.
//! Writes are counted from the API server's audit log when
//! `VISITCOUNTER_AUDIT_LOG` names it (`scripts/cluster.sh env` does).
//!
//! The faults a real API server does not give on demand (a 500, a 429, a
//! missing CRD, an expired watch) come from `fault_proxy`, a proxy in front
//! of the same server.

mod apps;
mod env;
mod fault_proxy;
mod faults;
mod leadership;
mod rollouts;
mod storage;
mod strategies;
#[path = "../support/mod.rs"]
mod support;
mod visits;
mod web;

use std::{panic::AssertUnwindSafe, process::Command, time::Duration};

use futures::FutureExt;
use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Namespace},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;
use visitcounter::{
    controller::{ControllerSettings, Metrics},
    crd,
    operator::{Operator, OperatorSettings, USER_AGENT},
    resource::VisitCounterApp,
};

use crate::env::{AuditLog, Env, eventually, install_crd};

#[tokio::test]
#[ignore = "needs a cluster: scripts/test.sh starts one and runs this"]
async fn end_to_end_against_a_real_cluster() {
    let client = Client::try_default().await.expect("a cluster from KUBECONFIG");
    install_crd(&client, crd::definition()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    eventually("the CRD is established", || async {
        crds.get("visitcounterapps.visitcounter.dev").await.is_ok_and(|c| {
            c.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
    })
    .await;
    let ns = format!("visitcounter-e2e-{}", fastrand::u32(..));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}}))
            .unwrap(),
        )
        .await
        .expect("the namespace is created");
    let env = Env {
        client: client.clone(),
        ns: ns.clone(),
    };
    let outcome = AssertUnwindSafe(scenarios(&env)).catch_unwind().await;
    if outcome.is_err() {
        for sts in env
            .api::<StatefulSet>()
            .list(&ListParams::default())
            .await
            .into_iter()
            .flat_map(|l| l.items)
        {
            eprintln!("StatefulSet {:?}: {:?}", sts.metadata.name, sts.status);
        }
        for app in env
            .api::<VisitCounterApp>()
            .list(&ListParams::default())
            .await
            .into_iter()
            .flat_map(|l| l.items)
        {
            eprintln!("VisitCounterApp {:?}: {:?}", app.metadata.name, app.status);
        }
        let pods = Command::new("kubectl")
            .args(["--namespace", &ns, "get", "pods,events", "-o", "wide"])
            .output();
        if let Ok(pods) = pods {
            eprintln!("{}", String::from_utf8_lossy(&pods.stdout));
        }
    }
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenarios(env: &Env) {
    let audit = AuditLog::from_env();
    let settings = OperatorSettings {
        controller: ControllerSettings {
            namespace: Some(env.ns.clone()),
            resync: Duration::from_secs(2),
            instance: Some("e2e".into()),
            // Pod IPs are not reachable from outside the cluster, where this
            // test runs; and the resync check below counts every write.
            visits_interval: None,
            stuck_after: Duration::from_secs(3),
            ..ControllerSettings::default()
        },
        admin_address: None,
        lease: None,
    };
    // The operator's own client, as `visitcounter operator` builds it. Its
    // start checks the CRD the API server stores against the built-in one.
    let client = visitcounter::operator::client()
        .await
        .expect("a client from KUBECONFIG");
    let operator = Operator::new(client, settings);
    let metrics: std::sync::Arc<Metrics> = operator.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(operator.run(async move {
        let _ = stopped.await;
    }));

    apps::examples_reach_ready(env).await;
    apps::pods_not_created(env).await;
    web::web(env, &metrics, audit.as_ref()).await;
    rollouts::stuck_rollout(env).await;
    rollouts::on_delete(env).await;
    strategies::recreate(env).await;
    strategies::progress_deadline(env).await;
    strategies::max_unavailable(env).await;
    storage::storage_growth(env).await;
    storage::deletion_keeps_claims(env).await;
    storage::class_without_expansion(env).await;
    apps::invalid_stored_spec(env).await;

    if let Some(audit) = &audit {
        assert!(
            audit.operator_user_agents() > 0,
            "no request in the audit log carries the User-Agent {USER_AGENT}"
        );
    }
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    // Each of these runs its own operator.
    leadership::crd_check_on_the_stored_crd(env).await;
    leadership::leader_election_failure_exits(env).await;
    leadership::a_leader_that_cannot_renew_stops_and_another_takes_over(env).await;
    leadership::stopped_at_start_it_stops(env).await;
    leadership::binary_is_ready_and_stops_on_sigterm(env).await;
    rollouts::config_revisions(env).await;
    visits::summed_and_a_silent_pod_is_not_zero(env).await;
    faults::failures_are_retried(env).await;
    faults::a_missing_crd_stops_the_start(env).await;
}
