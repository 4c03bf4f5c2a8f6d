//! Leader election on real Leases, the binary's health endpoints and its
//! stop on SIGTERM, and the CRD check against the CRD the server stores.

use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::StatefulSet, coordination::v1::Lease};
use kube::{Client, api::DeleteParams};
use serde_json::json;
use tokio::sync::oneshot;
use visitcounter::{
    controller::{ControllerSettings, Metrics},
    crd,
    operator::{Health, LeaseSettings, Operator, OperatorError, OperatorSettings, Phase, lease_hold::Lapse},
    resource::VisitCounterApp,
};

use crate::{
    env::{Env, eventually, install_crd, service_account_kubeconfig},
    fault_proxy::FaultProxy,
    support::{self, free_port},
};

/// An operator run in-process as one replica of several, with its own Lease
/// identity.
struct Replica {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), OperatorError>>,
}

impl Replica {
    /// Starts a replica, talking to the API server through `proxy` if given.
    async fn start(env: &Env, identity: &str, proxy: Option<&FaultProxy>) -> Self {
        let settings = OperatorSettings {
            controller: ControllerSettings {
                namespace: Some(env.ns.clone()),
                instance: Some(identity.into()),
                resync: Duration::from_secs(2),
                visits_interval: None,
                ..ControllerSettings::default()
            },
            admin_address: None,
            lease: Some(LeaseSettings {
                name: LEASE.into(),
                namespace: env.ns.clone(),
                identity: identity.into(),
                duration: LEASE_DURATION,
                grace: Duration::from_secs(2),
            }),
        };
        let client = match proxy {
            Some(proxy) => Client::try_from(proxy.config(&env.ns)).unwrap(),
            None => visitcounter::operator::client().await.unwrap(),
        };
        let operator = Operator::new(client, settings);
        let (metrics, health) = (operator.metrics(), operator.health());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(operator.run(async move {
            let _ = stopped.await;
        }));
        Self {
            metrics,
            health,
            stop,
            task,
        }
    }

    /// Stops the replica; what its run ended with.
    async fn stop(self) -> Result<(), OperatorError> {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

const LEASE: &str = "visitcounter-e2e";
const LEASE_DURATION: Duration = Duration::from_secs(4);

async fn holder(env: &Env, lease: &str) -> Option<String> {
    let lease = env.api::<Lease>().get_opt(lease).await.ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

async fn statefulset_replicas(env: &Env, name: &str) -> Option<i32> {
    env.api::<StatefulSet>().get(name).await.ok()?.spec?.replicas
}

/// Two replicas and one Lease: one reconciles, the other waits. When the
/// leader can no longer renew the Lease (here its Lease requests fail at a
/// proxy; its other requests still get through, so anything it did after
/// losing the Lease would show), it stops reconciling by the time the Lease
/// expires, and the other replica takes over and reconciles what changed.
pub async fn a_leader_that_cannot_renew_stops_and_another_takes_over(env: &Env) {
    let proxy = FaultProxy::start(env.client.clone()).await;
    let first = Replica::start(env, "first", Some(&proxy)).await;
    eventually("first holds the Lease", || async {
        holder(env, LEASE).await.as_deref() == Some("first")
    })
    .await;
    let second = Replica::start(env, "second", None).await;
    env.apply_app("led", json!({"replicas": 1})).await;
    eventually("led is Ready with its pod", || env.ready_with_pods("led", 1)).await;
    // Several renewals pass; the second stays out all along.
    tokio::time::sleep(LEASE_DURATION).await;
    assert_eq!(holder(env, LEASE).await.as_deref(), Some("first"));
    assert!(first.metrics.reconciles() > 0);
    assert_eq!(second.metrics.reconciles(), 0, "the standby reconciled");
    assert_eq!(second.health.phase(), Phase::Standby);

    let cut = Instant::now();
    proxy.fail(None, &[&format!("/leases/{LEASE}")], 503, usize::MAX);
    eventually("first stops leading by itself", || async {
        first.health.phase() == Phase::Stopping
    })
    .await;
    let stepped_down = cut.elapsed();
    let stepped_down_at = k8s_openapi::jiff::Timestamp::now();
    // The Lease still holds first's last renewal: nobody may take it over
    // before it runs out, and first stopped before that, as the README says.
    let lease = env.api::<Lease>().get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(
        lease.holder_identity.as_deref(),
        Some("first"),
        "taken over before first stopped"
    );
    let expires =
        lease.renew_time.unwrap().0 + k8s_openapi::jiff::SignedDuration::from_secs(LEASE_DURATION.as_secs() as i64);
    assert!(
        stepped_down_at < expires,
        "first stopped leading at {stepped_down_at}, after its Lease ran out at {expires}"
    );
    let reconciles = first.metrics.reconciles();
    eventually("second takes over once the Lease runs out", || async {
        holder(env, LEASE).await.as_deref() == Some("second")
    })
    .await;
    let taken_over = cut.elapsed();
    println!("renewals cut: first stepped down after {stepped_down:?}, second took over after {taken_over:?}");
    env.apply_app("led", json!({"replicas": 2})).await;
    eventually("second reconciles the change", || async {
        statefulset_replicas(env, "led").await == Some(2) && env.ready_with_pods("led", 2).await
    })
    .await;
    assert!(second.metrics.reconciles() > 0);
    assert_eq!(
        first.metrics.reconciles(),
        reconciles,
        "first reconciled after it stepped down"
    );
    second.stop().await.expect("second stops cleanly");
    let ended = first
        .stop()
        .await
        .expect_err("first exits, to start again as a standby");
    assert!(
        matches!(
            &ended,
            OperatorError::LeaseLapsed {
                lapse: Lapse::NotRenewed { .. },
                ..
            }
        ),
        "{ended}"
    );
    println!("first: {ended}");
    env.api::<VisitCounterApp>()
        .delete("led", &DeleteParams::default())
        .await
        .unwrap();
}

/// Two replicas started at the same moment, one Lease: exactly one leads
/// and reconciles, the other stands by and reconciles nothing.
pub async fn two_started_at_once_one_leads(env: &Env) {
    let (first, second) = tokio::join!(Replica::start(env, "first", None), Replica::start(env, "second", None));
    env.apply_app("raced", json!({"replicas": 1})).await;
    eventually("raced is Ready with its pod", || env.ready_with_pods("raced", 1)).await;
    tokio::time::sleep(LEASE_DURATION).await;
    let leader = holder(env, LEASE).await.expect("one holds the Lease");
    let (leading, standby) = if leader == "first" {
        (&first, &second)
    } else {
        (&second, &first)
    };
    assert!(
        leading.metrics.reconciles() > 0,
        "the leader {leader} reconciled nothing"
    );
    assert_eq!(standby.metrics.reconciles(), 0, "the standby reconciled too");
    assert_eq!(standby.health.phase(), Phase::Standby);
    assert_eq!(
        holder(env, LEASE).await.as_deref(),
        Some(leader.as_str()),
        "the Lease changed hands"
    );
    first.stop().await.expect("first stops cleanly");
    second.stop().await.expect("second stops cleanly");
}

/// Told to stop before its watches have listed (a SIGTERM at start), the
/// operator stops at once instead of waiting for a list it no longer makes.
pub async fn stopped_at_start_it_stops(env: &Env) {
    let settings = OperatorSettings {
        controller: ControllerSettings {
            namespace: Some(env.ns.clone()),
            instance: Some("e2e-stopped".into()),
            visits_interval: None,
            ..ControllerSettings::default()
        },
        admin_address: None,
        lease: None,
    };
    let operator = Operator::new(visitcounter::operator::client().await.unwrap(), settings);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), operator.run(std::future::ready(())))
        .await
        .expect("the operator stops within 20 s of a stop at start")
        .expect("and stops cleanly");
    println!("stopped at start: ended in {:?}", started.elapsed());
}

/// `visitcounter operator` as its Deployment runs it: ready once its watches
/// have listed and it leads, with its metrics; on SIGTERM (what the kubelet
/// sends) it releases the Lease and exits 0 within seconds.
pub async fn binary_is_ready_and_stops_on_sigterm(env: &Env) {
    ready_then_stopped_by(env, libc::SIGTERM).await;
}

/// The same on SIGINT (Ctrl-C, for an operator run by hand).
pub async fn binary_stops_on_sigint(env: &Env) {
    ready_then_stopped_by(env, libc::SIGINT).await;
}

/// `visitcounter operator` run as a child process, leading the Lease
/// `visitcounter-binary` of the scenario's namespace, with its log in a file.
struct Binary {
    child: std::process::Child,
    log: tempfile::NamedTempFile,
    port: u16,
}

impl Binary {
    /// Starts the binary against the cluster in `kubeconfig` (the test's
    /// own when `None`) and waits until it leads.
    async fn leading(env: &Env, kubeconfig: Option<&std::path::Path>) -> Self {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_visitcounter"));
        if let Some(kubeconfig) = kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let mut child = command
            .args(["operator", "--namespace", &env.ns, "--lease-namespace", &env.ns])
            .args(["--lease-name", "visitcounter-binary", "--identity", "binary"])
            .args(["--lease-duration-seconds", "4", "--lease-grace-seconds", "1"])
            .args([
                "--admin-address",
                &format!("127.0.0.1:{port}"),
                "--visits-interval-seconds",
                "0",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("the visitcounter binary starts");
        let http = support::client();
        let started = Instant::now();
        // A standby is ready too, so wait for the ready answer of a leader.
        let leading = (200, "ready: reconciling".to_string());
        while support::get(&http, port, "/readyz").await.ok() != Some(leading.clone()) {
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let log = std::fs::read_to_string(log.path()).unwrap_or_default();
                panic!("the operator never became ready as the leader:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, log, port }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Its exit status, once it exits within `within`.
    async fn exit_within(&mut self, within: Duration, after: &str) -> std::process::ExitStatus {
        let waiting = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if waiting.elapsed() > within {
                let _ = self.child.kill();
                panic!("still running {within:?} after {after}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ready_then_stopped_by(env: &Env, signal: i32) {
    let mut binary = Binary::leading(env, None).await;
    let port = binary.port;
    let http = support::client();
    assert_eq!(holder(env, "visitcounter-binary").await.as_deref(), Some("binary"));
    assert_eq!(support::get(&http, port, "/healthz").await.unwrap().0, 200);
    let metrics = support::get(&http, port, "/metrics").await.unwrap().1;
    for name in [
        "visitcounter_operator_reconciles_total",
        "visitcounter_operator_reconcile_duration_seconds_bucket",
        "visitcounter_operator_apps ",
        "visitcounter_operator_leader 1",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }

    binary.signal(signal);
    let status = binary
        .exit_within(Duration::from_secs(5), &format!("signal {signal}"))
        .await;
    assert!(status.success(), "exit {status}:\n{}", binary.log());
    assert_eq!(
        holder(env, "visitcounter-binary").await,
        None,
        "the Lease was released on the way out"
    );
}

/// A second signal while the operator stops exits at once, with an error
/// that says so. Here the first stop cannot end: the binary talks to the API
/// server through the fault proxy, which from then on never answers a
/// request on the Lease, so the release it stops with hangs.
pub async fn a_second_signal_while_stopping_exits_at_once(env: &Env) {
    let proxy = FaultProxy::start(env.client.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut binary = Binary::leading(env, Some(&proxy.kubeconfig(dir.path(), &env.ns))).await;
    proxy.hold(None, &["/leases/visitcounter-binary"]);
    binary.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        binary.child.try_wait().unwrap().is_none(),
        "the first signal's stop ended while the Lease could not be released:\n{}",
        binary.log()
    );
    assert!(
        binary.log().contains("stopping; a second signal aborts"),
        "the log does not say a second signal aborts:\n{}",
        binary.log()
    );
    binary.signal(libc::SIGINT);
    let status = binary.exit_within(Duration::from_secs(2), "the second signal").await;
    assert_eq!(status.code(), Some(1), "exit {status}:\n{}", binary.log());
    assert!(
        binary.log().contains("error: a second signal: stopped without waiting"),
        "the exit does not say why:\n{}",
        binary.log()
    );
}

/// Run as a ServiceAccount that may read the CRD but not the Lease,
/// `visitcounter operator` says why in its log and exits non-zero, so its
/// pod restarts and `kubectl logs` tells the story.
pub async fn leader_election_failure_exits(env: &Env) {
    let reader = format!("{}-crd-reader", env.ns);
    env.kubectl(&["create", "serviceaccount", "no-lease"]);
    env.kubectl(&[
        "create",
        "clusterrole",
        &reader,
        "--verb=get",
        "--resource=customresourcedefinitions.apiextensions.k8s.io",
    ]);
    env.kubectl(&[
        "create",
        "clusterrolebinding",
        &reader,
        &format!("--clusterrole={reader}"),
        &format!("--serviceaccount={}:no-lease", env.ns),
    ]);
    let kubeconfig = service_account_kubeconfig(env, "no-lease");
    let started = Instant::now();
    let mut operator = Command::new(env!("CARGO_BIN_EXE_visitcounter"))
        .args(["operator", "--namespace", &env.ns, "--leader-election", "true"])
        .args(["--lease-namespace", &env.ns, "--admin-address", "127.0.0.1:0"])
        .env("KUBECONFIG", kubeconfig.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = operator.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = operator.kill();
            panic!("the operator did not exit by itself when leader election failed");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut operator.stderr.take().unwrap(), &mut log).unwrap();
    let _ = Command::new("kubectl")
        .args(["delete", "clusterrolebinding,clusterrole", &reader])
        .output();
    assert!(!status.success(), "exit status {status:?}\n{log}");
    assert!(
        log.contains("leader election failed") && log.contains("forbidden"),
        "the log says why:\n{log}"
    );
    println!("leader election refused: exited in {:?}", started.elapsed());
}

/// The operator started, so the CRD as the API server stores it passed the
/// check. An older CRD (without a field) and a newer one (with one more) are
/// refused, each with what to do.
pub async fn crd_check_on_the_stored_crd(env: &Env) {
    use visitcounter::operator::{CrdProblem, crd_check::check_installed};
    let with_spec_fields = |change: &dyn Fn(&mut std::collections::BTreeMap<String, _>)| {
        let mut crd = crd::definition();
        change(crd::spec_fields_mut(&mut crd).unwrap());
        crd
    };
    assert_eq!(check_installed(&env.client).await, Ok(()));
    install_crd(
        &env.client,
        with_spec_fields(&|fields| {
            fields.remove("createServiceAccount");
        }),
    )
    .await;
    let older = check_installed(&env.client).await.unwrap_err();
    assert!(
        matches!(&older, CrdProblem::Outdated { path, .. } if path.contains("createServiceAccount")),
        "{older}"
    );
    install_crd(
        &env.client,
        with_spec_fields(&|fields| {
            let copy = fields["createServiceAccount"].clone();
            fields.insert("someFutureField".into(), copy);
        }),
    )
    .await;
    let newer = check_installed(&env.client).await.unwrap_err();
    assert!(
        matches!(&newer, CrdProblem::Newer { path, .. } if path.contains("someFutureField")),
        "{newer}"
    );
    install_crd(&env.client, crd::definition()).await;
    assert_eq!(check_installed(&env.client).await, Ok(()));
}
