//! Chaos on the local control plane (`scripts/cluster.sh up`): rounds that
//! each start a change to an app (a new app, a config roll, a canary, a
//! config roll under Recreate, in steps or blue/green, a scale, a storage
//! growth, a policy re-create), inject one fault at a
//! random moment inside it, let the app converge, and check every invariant:
//!
//! - the children match the spec: the StatefulSet's replicas, policy, claim
//!   size and config, every pod Ready on the update revision (a canary's
//!   held pods aside);
//! - no claim ever seen is gone;
//! - `observedGeneration` is the app's generation and the conditions say
//!   Ready, not Degraded;
//! - under load, on a node whose pods run: no visit a client had answered is
//!   lost from the answering pod's claim or from `status.visits` (whose
//!   total holds at least every visit answered, across blue/green switches
//!   too), and no claim's count goes down.
//!
//! The faults ([`faults::Fault`]): kill -9 of the operator (the binary,
//! started again at once, as its Deployment would); kube-apiserver stopped
//! as an upgrade stops it and started again (`scripts/cluster.sh restart
//! kube-apiserver`); etcd stopped (SIGSTOP) for 10 s; the operator's
//! connections to the API server cut at the TCP level, new ones refused for
//! 5 s (it talks through a [`cut::CutProxy`]); a pod deleted with no grace;
//! and, where pods run, kill -9 of a pod's process.
//!
//! Two tests, each on the control plane it needs:
//! - `chaos_rounds_break_no_invariant`: three apps, 50 rounds, on kwok
//!   (`scripts/cluster.sh up`);
//! - `chaos_under_load_loses_no_visit`: one app visited all along, 20
//!   rounds, on the node whose pods run (`scripts/cluster.sh up --real-pods`).
//!   The operator runs in the node's network namespace, where it reaches the
//!   pods to ask for their visits, and each round checks `status.visits`.
//!
//! `cargo test --test chaos -- --ignored --exact NAME` after `eval
//! "$(scripts/cluster.sh env [--real-pods])"`; `VISITCOUNTER_CHAOS_SEED=N`
//! replays a run, `VISITCOUNTER_CHAOS_ROUNDS` sets the number of rounds. Each
//! round prints a line; the run prints the faults by kind, the rounds and the
//! invariants broken, and fails on the first broken one with the seed and
//! the round.

mod cut;
#[path = "../e2e/env.rs"]
#[allow(dead_code)]
mod env;
mod faults;
mod load;
mod rounds;
#[path = "../support/mod.rs"]
mod support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use visitcounter::crd;

use crate::{
    cut::CutProxy,
    env::{Env, install_crd},
    faults::{Fault, Launch, Operator},
    load::Load,
    rounds::{Change, Wanted},
};

/// A run's rounds may take this long; past it no round starts.
const TIME_ALLOWED: Duration = Duration::from_secs(900);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane: scripts/test.sh starts one and runs this"]
async fn chaos_rounds_break_no_invariant() {
    let mut chaos = Chaos::start(Place::Simulated, 50).await;
    for round in 1..=chaos.rounds {
        let app = ["alpha", "beta", "gamma"][chaos.rng.usize(..3)];
        if !chaos.play(round, app, None).await {
            break;
        }
    }
    chaos.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane whose pods run: scripts/test.sh starts one and runs this"]
async fn chaos_under_load_loses_no_visit() {
    assert!(
        std::env::var_os("VISITCOUNTER_NODE_ADDRESS").is_some(),
        "this test needs pods that run: eval \"$(scripts/cluster.sh env --real-pods)\""
    );
    let mut chaos = Chaos::start(Place::RealPods, 20).await;
    // The first round makes the app; the load starts once it is there.
    assert!(chaos.play(1, "counted", None).await, "the app was made in time");
    let mut load = Some(Load::start(&chaos.env, "counted").await);
    let mut counts = BTreeMap::new();
    for round in 2..=chaos.rounds {
        if !chaos
            .play(round, "counted", load.as_ref().map(|l| (l, &mut counts)))
            .await
        {
            break;
        }
    }
    let answered = load.take().map(|l| l.stop());
    if let Some(answered) = answered {
        println!("visits answered under chaos: {}", answered.await);
    }
    chaos.finish().await;
}

/// Where a run plays.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// kwok's nodes: pods turn Ready without running. The operator runs on
    /// the host and does not ask for visits.
    Simulated,
    /// The real node (kubelet, containerd, runc): pods run. The operator
    /// runs in the node's network namespace, where it reaches the pods to
    /// count their visits.
    RealPods,
}

/// The node's network namespace (tests/cluster/node/node.sh).
const NODE_NETNS: &str = "vcn-visitcounter-node-node";

/// A run: the test namespace, the operator, the faults' targets, and what
/// each app should be.
struct Chaos {
    env: Env,
    client: Client,
    seed: u64,
    rounds: usize,
    rng: fastrand::Rng,
    faults_allowed: &'static [Fault],
    operator: Operator,
    proxy: CutProxy,
    etcd: i32,
    wanted: BTreeMap<String, Wanted>,
    claims_seen: BTreeMap<String, String>,
    /// Each fault: how often it was injected, and how often it hit
    /// something (a pod to delete, a process to kill).
    injected: BTreeMap<Fault, (usize, usize)>,
    started: Instant,
    played: usize,
    _dir: tempfile::TempDir,
}

impl Chaos {
    async fn start(place: Place, default_rounds: usize) -> Self {
        let seed: u64 = std::env::var("VISITCOUNTER_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        let rounds: usize = std::env::var("VISITCOUNTER_CHAOS_ROUNDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default_rounds);
        println!("chaos: seed {seed} (VISITCOUNTER_CHAOS_SEED={seed} replays it), {rounds} rounds");
        let client = Client::try_default().await.expect("a cluster from KUBECONFIG");
        install_crd(&client, crd::definition()).await;
        let ns = format!("chaos-{}", fastrand::u32(..100_000));
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .expect("the namespace is created");
        let api_server = faults::api_server_address();
        let (proxy, netns) = match place {
            Place::Simulated => (CutProxy::start(api_server).await, None),
            Place::RealPods => {
                let node_ip = node_ip(&client).await;
                let proxy = CutProxy::start_in(NODE_NETNS, node_ip, api_server).await;
                (proxy, Some(NODE_NETNS.to_owned()))
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let operator = Operator::start(Launch {
            ns: ns.clone(),
            kubeconfig: faults::kubeconfig_through(&proxy, dir.path()),
            visits_seconds: if netns.is_some() { 1 } else { 0 },
            netns,
        });
        let faults_allowed: &'static [Fault] = match place {
            Place::Simulated => &Fault::SIMULATED,
            Place::RealPods => &Fault::REAL,
        };
        Self {
            env: Env {
                client: client.clone(),
                ns,
                metrics: None,
            },
            client,
            seed,
            rounds,
            rng: fastrand::Rng::with_seed(seed),
            faults_allowed,
            operator,
            proxy,
            etcd: faults::etcd_pid(),
            wanted: BTreeMap::new(),
            claims_seen: BTreeMap::new(),
            injected: BTreeMap::new(),
            started: Instant::now(),
            played: 0,
            _dir: dir,
        }
    }

    /// Plays round `round` on `app`: a change, a fault at a random moment
    /// inside it, and the invariants once the app converged; under `load`,
    /// the visits too (`counts` holds each claim's count at the last check).
    /// False when the time allowed is over and the round was not played.
    async fn play(&mut self, round: usize, app: &str, load: Option<(&Load, &mut BTreeMap<String, u64>)>) -> bool {
        if self.started.elapsed() > TIME_ALLOWED {
            return false;
        }
        let (change, next) = Change::pick(&mut self.rng, self.wanted.get(app));
        let fault = self.faults_allowed[self.rng.usize(..self.faults_allowed.len())];
        let at = Duration::from_millis(self.rng.u64(..1500));
        faults::mark_operator_log(&format!("round {round}: {change:?} of {app}, {fault:?} after {at:?}"));
        rounds::apply(&self.env, app, next.spec()).await;
        self.wanted.insert(app.to_owned(), next.clone());
        tokio::time::sleep(at).await;
        let hit = self.inject(fault, app).await;
        let counts = self.injected.entry(fault).or_default();
        counts.0 += 1;
        counts.1 += usize::from(hit);
        let context = format!(
            "round {round} (seed {}): {change:?} of {app}, {fault:?} after {at:?}",
            self.seed
        );
        let converging = Instant::now();
        rounds::converged(&self.env, app, &next, &context).await;
        rounds::no_claim_lost(&self.env, &mut self.claims_seen, &context).await;
        let visits = match load {
            Some((load, counts)) => format!("; {}", no_visit_lost(&self.env, app, load, counts, &context).await),
            None => String::new(),
        };
        println!(
            "round {round}: {change:?} of {app}, {fault:?}{} after {at:?}; converged {:.1} s after the fault{visits}",
            if hit { "" } else { " (nothing to hit)" },
            converging.elapsed().as_secs_f64()
        );
        self.played = round;
        true
    }

    /// Injects `fault`; whether it hit something.
    async fn inject(&mut self, fault: Fault, app: &str) -> bool {
        match fault {
            Fault::KillOperator => self.operator.kill_and_restart(),
            Fault::RestartApiServer => tokio::task::spawn_blocking(faults::restart_api_server).await.unwrap(),
            Fault::CutConnection => {
                self.proxy.cut(Duration::from_secs(5));
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Fault::PauseEtcd => {
                faults::signal(self.etcd, libc::SIGSTOP);
                tokio::time::sleep(Duration::from_secs(10)).await;
                faults::signal(self.etcd, libc::SIGCONT);
            }
            Fault::DeletePod => return faults::delete_a_pod(&self.env, app, &mut self.rng).await,
            Fault::KillPodProcess => return faults::kill_a_pod_process(&self.env, app, &mut self.rng).await,
        }
        true
    }

    /// Prints the table, checks every round was played and every fault
    /// injected hit something at least once, and deletes the
    /// namespace, waiting until it is gone: the next test's operator may
    /// watch every namespace.
    async fn finish(self) {
        println!("| fault | injected | hit something |\n| --- | --- | --- |");
        for (fault, (injected, hit)) in &self.injected {
            println!("| {fault:?} | {injected} | {hit} |");
        }
        println!(
            "rounds: {}, invariants broken: 0, in {:.0} s",
            self.played,
            self.started.elapsed().as_secs_f64()
        );
        assert_eq!(
            self.played, self.rounds,
            "only {} of {} rounds in the {TIME_ALLOWED:?} allowed",
            self.played, self.rounds
        );
        for (fault, (injected, hit)) in &self.injected {
            assert!(
                *hit > 0,
                "{fault:?} was injected {injected} times and never hit anything"
            );
        }
        drop(self.operator);
        let namespaces = Api::<Namespace>::all(self.client);
        let _ = namespaces.delete(&self.env.ns, &DeleteParams::default()).await;
        let deadline = Instant::now() + Duration::from_secs(180);
        while namespaces.get_opt(&self.env.ns).await.ok().flatten().is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The node's address, where pods reach the API server (and the operator,
/// run in the node's namespace, reaches the cut proxy).
async fn node_ip(client: &Client) -> std::net::Ipv4Addr {
    let node = Api::<Node>::all(client.clone())
        .get("visitcounter-node")
        .await
        .expect("the test node");
    let addresses = node.status.and_then(|s| s.addresses).unwrap_or_default();
    addresses
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())
        .expect("the node has an InternalIP")
}

/// The visits invariant: each pod's claim holds at least every visit the
/// client had that pod answer (a visit is answered only once it is durable,
/// and the files are read after the answers are counted, so a shortfall is a
/// lost visit); no claim's count went down since the last check; and
/// `status.visits`, once every pod answered it, counts for each pod at least
/// the visits it had answered before the check began.
async fn no_visit_lost(env: &Env, app: &str, load: &Load, counts: &mut BTreeMap<String, u64>, context: &str) -> String {
    let answered = load.answered();
    let on_disk = load::visits_on_disk(env, app)
        .await
        .unwrap_or_else(|e| panic!("invariant broken at {context}: {e}"));
    for (pod, visits) in &answered {
        let claim = format!("data-{pod}");
        let held = on_disk.get(&claim).copied().unwrap_or(0);
        assert!(
            held >= *visits,
            "invariant broken at {context}: {pod} answered {visits} visits, its claim {claim} holds {held}: {on_disk:?}"
        );
    }
    for (claim, before) in counts.iter() {
        let now = on_disk.get(claim).copied().unwrap_or(0);
        assert!(
            now >= *before,
            "invariant broken at {context}: claim {claim}'s count went from {before} to {now}"
        );
    }
    *counts = on_disk.clone();
    let status = status_counts_the_answers(env, app, &answered, context).await;
    format!(
        "{} visits answered, {} on the pods' volumes, {status}",
        answered.values().sum::<u64>(),
        on_disk.values().sum::<u64>()
    )
}

/// Waits until `status.visits` is complete and counts, for each pod it
/// asked, at least the visits that pod had answered, and in its total at
/// least every visit answered; what it then says.
async fn status_counts_the_answers(env: &Env, app: &str, answered: &load::Answered, context: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no status.visits");
    while Instant::now() < deadline {
        let visits = env
            .api::<visitcounter::resource::VisitCounterApp>()
            .get(app)
            .await
            .ok()
            .and_then(|a| a.status?.visits);
        if let Some(visits) = visits {
            let short: Vec<String> = visits
                .pods
                .iter()
                // A retained count is as the pod last answered before it was
                // scaled away: visits it answered while it stopped may come
                // after (its claim has them; the files are checked above).
                .filter(|p| !p.retained)
                .filter_map(|p| {
                    let wanted = answered.get(&p.name).copied().unwrap_or(0) as i64;
                    let counted = p.visits.unwrap_or(-1);
                    (counted < wanted).then(|| format!("{}: {counted} counted, {wanted} answered", p.name))
                })
                .collect();
            // Every visit answered, by whichever pod of whichever
            // StatefulSet, is in the total: a blue/green switch carried the
            // old pods' counts into the new ones.
            let all_answered = answered.values().sum::<u64>() as i64;
            if visits.complete && short.is_empty() && visits.total >= all_answered {
                return format!("status.visits.total {} over {} pods", visits.total, visits.pods.len());
            }
            let listed: Vec<String> = visits
                .pods
                .iter()
                .map(|p| format!("{} {:?}{}", p.name, p.visits, if p.retained { " retained" } else { "" }))
                .collect();
            last = format!(
                "complete: {}, short: {short:?}, total {} for {all_answered} answered; listed {listed:?}; answered by {answered:?}",
                visits.complete, visits.total
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("invariant broken at {context}: status.visits never counted every answered visit: {last}");
}
