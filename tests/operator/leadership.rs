//! Leader election, the CRD check at start, and stopping on SIGTERM.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::coordination::v1::Lease, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use visitcounter::{
    crd,
    operator::{CrdProblem, OperatorError, Phase},
};

use crate::{
    harness::{Cluster, WAIT, lease, settings, wait_until},
    support::{self, free_port},
};

fn holder(cluster: &Cluster) -> Option<String> {
    cluster
        .standin
        .get("coordination.k8s.io", "leases", "default", "visitcounter-operator")?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn two_operators_and_one_lease_give_one_reconciler_and_a_takeover() {
    let cluster = Cluster::start().await;
    let mut first_settings = settings();
    first_settings.lease = Some(lease("first"));
    let first = cluster.start_operator(first_settings);
    wait_until("first holds the lease", WAIT, || {
        holder(&cluster).as_deref() == Some("first")
    })
    .await;
    let mut second_settings = settings();
    second_settings.lease = Some(lease("second"));
    let second = cluster.start_operator(second_settings);

    cluster.apply_app("web", json!({"replicas": 1})).await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;
    // Several renewals pass; the second must stay out all along.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(holder(&cluster).as_deref(), Some("first"));
    assert!(first.metrics.reconciles() > 0);
    assert_eq!(second.metrics.reconciles(), 0, "the standby reconciled");
    assert_eq!(second.health.phase(), Phase::Standby);

    first.stop().await.unwrap();
    wait_until("second takes over", WAIT, || {
        holder(&cluster).as_deref() == Some("second")
    })
    .await;
    cluster.patch_spec("web", json!({"replicas": 2})).await;
    wait_until("second reconciles the change", WAIT, || {
        cluster.is_ready("web") && cluster.app("web")["status"]["readyReplicas"] == 2
    })
    .await;
    assert!(second.metrics.reconciles() > 0);
    second.stop().await.unwrap();
}

#[tokio::test]
async fn a_replica_that_loses_the_lease_stops_reconciling_at_once() {
    let cluster = Cluster::start().await;
    let mut with_lease = settings();
    with_lease.lease = Some(lease("first"));
    let operator = cluster.start_operator(with_lease);
    cluster.apply_app("web", json!({"replicas": 1})).await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;

    // Another holder takes the lease for an hour (as after a network partition).
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), "default");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    leases
        .patch(
            "visitcounter-operator",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "spec": {"holderIdentity": "intruder", "renewTime": now, "acquireTime": now, "leaseDurationSeconds": 3600},
            })),
        )
        .await
        .unwrap();
    wait_until("the operator steps down", WAIT, || {
        operator.health.phase() == Phase::Standby
    })
    .await;
    let writes = cluster.child_writes();
    cluster.patch_spec("web", json!({"replicas": 3})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        cluster.sts("web").unwrap()["spec"]["replicas"],
        1,
        "a replica without the lease reconciled"
    );
    assert_eq!(
        cluster.child_writes(),
        writes + 1,
        "only the test's own patch was written"
    );
    operator.stop().await.unwrap();
}

#[tokio::test]
async fn a_missing_or_older_crd_stops_the_start_with_what_to_run() {
    let cluster = Cluster::without_crd().await;
    let error = cluster.start_operator(settings()).task.await.unwrap().unwrap_err();
    assert!(
        matches!(error, OperatorError::Crd(CrdProblem::Missing { .. })),
        "{error}"
    );
    assert!(error.to_string().contains("visitcounter crd | kubectl apply"));

    let mut old = crd::definition();
    crd::spec_fields_mut(&mut old).unwrap().remove("podManagementPolicy");
    Api::<CustomResourceDefinition>::all(cluster.client.clone())
        .create(&PostParams::default(), &old)
        .await
        .unwrap();
    let error = cluster.start_operator(settings()).task.await.unwrap().unwrap_err();
    assert!(
        matches!(&error, OperatorError::Crd(CrdProblem::Outdated { path, .. }) if path.contains("podManagementPolicy")),
        "{error}"
    );
}

#[tokio::test]
async fn the_binary_is_ready_after_its_watches_list_and_stops_on_sigterm() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.standin.write_kubeconfig(&kubeconfig).unwrap();
    cluster.apply_app("web", json!({"replicas": 1})).await;
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_visitcounter"))
        .args(["operator", "--admin-address", &format!("127.0.0.1:{port}")])
        .args([
            "--identity",
            "binary",
            "--lease-duration-seconds",
            "4",
            "--lease-grace-seconds",
            "1",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let http = support::client();

    let started = Instant::now();
    while support::get(&http, port, "/readyz").await.map(|r| r.0) != Ok(200) {
        if started.elapsed() > WAIT {
            let _ = child.kill();
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            let last = support::get(&http, port, "/readyz").await;

            panic!("the operator never became ready ({last:?}):\n{stderr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;
    assert_eq!(support::get(&http, port, "/healthz").await.unwrap().0, 200);
    let metrics = support::get(&http, port, "/metrics").await.unwrap().1;
    for name in [
        "visitcounter_operator_reconciles_total",
        "visitcounter_operator_reconcile_duration_seconds_bucket",
        "visitcounter_operator_apps 1",
        "visitcounter_operator_leader 1",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }

    let started = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    assert_eq!(holder(&cluster), None, "the lease was released on the way out");
}
