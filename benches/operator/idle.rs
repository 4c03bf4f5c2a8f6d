//! `-- --idle`: what the operator does while nothing happens. The same apps
//! are brought to rest in four states, each on a control plane of its own:
//! pods Ready that do not answer (kwok's nodes: nothing listens at a pod's
//! address, so the visits poller keeps asking them, ever less often), pods
//! Ready that answer (kwok's nodes and the app's server at each pod's
//! address, see `answering`: Ready as on a real node), pods that cannot be
//! scheduled (no nodes), and pods that cannot start (kwok's nodes, an image
//! that is never pulled). The operator runs with a resync far beyond the
//! window, so every reconcile in it is one nothing asked for; a timer that
//! must fire (a stuck rollout, a progress deadline) fires once at its time.
//!
//! Per state it prints reconciles, the pods the visits poller asked and the
//! pods it follows (the operator's own counts), CPU seconds (its CPU clock)
//! and the times its threads ran (their `schedstat`, see `cpu`), requests over a
//! window of 60 s, and the operator's resident memory: with no app, at rest
//! with every app, and the bytes each app adds.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{
    ControlPlane, Goal, NODE_PORTS, QUIET_WINDOW, app_spec, audit::Requests, cpu, for_each_app, memory_kib, prepare,
    sample, scrape, stop, wait_converged, watch_apps,
};
use crate::{answering::AnsweringPods, audit::ConvergedAt, peer::Peer, with_cluster_ip};

/// Far beyond the window: no resync falls in it.
const RESYNC: &str = "3600";
/// The operator's count of reconciles.
const RECONCILES: &str = "visitcounter_operator_reconciles_total";
/// The operator's count of pods its visits poller asked.
const ASKS: &str = "visitcounter_operator_visits_asks_total";
/// The operator's count of apps whose visits its poller's rounds built.
const POLLED: &str = "visitcounter_operator_visits_apps_polled_total";
/// The operator's count of visits rounds left out whole.
const RESTED: &str = "visitcounter_operator_visits_rounds_at_rest_total";
/// The operator's gauge of pods whose counts come on a stream.
const FOLLOWED: &str = "visitcounter_operator_visits_followed_pods";
/// The longest wait for the visits rounds to build no app.
const AT_REST_WITHIN: Duration = Duration::from_secs(100);
/// The port the apps' pods serve on: the spec's default.
const APP_PORT: u16 = 8080;
/// The image kwok's pod stages never pull (`tests/cluster/kwok-pod-stages.yaml`).
const NEVER_PULLED: &str = "example.invalid/never-ready:v1";

#[derive(Clone, Copy)]
pub enum State {
    Ready,
    Answering,
    Unschedulable,
    Failing,
}

impl State {
    pub const ALL: [State; 4] = [State::Ready, State::Answering, State::Unschedulable, State::Failing];

    pub fn name(self) -> &'static str {
        match self {
            State::Ready => "pods Ready, not answering",
            State::Answering => "pods Ready and answering",
            State::Unschedulable => "pods unschedulable (no nodes)",
            State::Failing => "pods failing (image never pulled)",
        }
    }

    /// The states `--state NAME` names, or all of them.
    pub fn chosen(args: &[String]) -> Vec<State> {
        let named: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "--state")
            .map(|w| w[1].as_str())
            .collect();
        let chosen: Vec<State> = State::ALL
            .into_iter()
            .filter(|s| named.is_empty() || named.contains(&s.slug()))
            .collect();
        assert!(
            named.len() <= chosen.len(),
            "--state takes ready, answering, unschedulable or failing: {named:?}"
        );
        chosen
    }

    fn slug(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Answering => "answering",
            State::Unschedulable => "unschedulable",
            State::Failing => "failing",
        }
    }

    fn nodes(self) -> bool {
        !matches!(self, State::Unschedulable)
    }

    fn image(self) -> Option<&'static str> {
        matches!(self, State::Failing).then_some(NEVER_PULLED)
    }

    /// When the apps are at rest: all Ready, or each with its first pod
    /// (`OrderedReady` makes no other while it is not Ready).
    fn goal(self) -> Goal {
        match self {
            State::Ready | State::Answering => Goal::Ready,
            State::Unschedulable | State::Failing => Goal::FirstPod,
        }
    }

    /// With pods Ready, the poller's first ask (or answer) of every pod is
    /// part of coming to rest: a window that caught some measured when the
    /// last pods turned Ready.
    fn first_asks(self) -> Option<Goal> {
        match self {
            State::Ready => Some(Goal::EveryPodAsked),
            State::Answering => Some(Goal::EveryPodAnswered),
            State::Unschedulable | State::Failing => None,
        }
    }
}

/// Which operator binary a column measures.
pub struct Build {
    pub name: String,
    pub binary: PathBuf,
}

impl Build {
    /// This build's, and `--baseline PATH`'s when given.
    pub fn all(args: &[String]) -> Vec<Build> {
        let mut builds = vec![Build {
            name: "this build".into(),
            binary: PathBuf::from(env!("CARGO_BIN_EXE_visitcounter")),
        }];
        if let Some(w) = args.windows(2).find(|w| w[0] == "--baseline") {
            builds.push(Build {
                name: format!("baseline {}", w[1]),
                binary: PathBuf::from(&w[1]),
            });
        }
        builds
    }
}

/// What one state measured.
pub struct Idle {
    pub state: State,
    pub build: String,
    pub converge: Duration,
    pub reconciles: Option<u64>,
    /// Pods the visits poller asked (`None` from a build without the count).
    pub asks: Option<u64>,
    /// Apps whose counts the poller's rounds built (`None` from a build
    /// that builds every app's each round).
    pub polled: Option<u64>,
    /// Visits rounds left out whole, nothing having changed (`None` from a
    /// build that leaves none out).
    pub rested: Option<u64>,
    /// Pods whose counts came on a stream at the window's end (`None` from
    /// a build that does not follow).
    pub followed: Option<u64>,
    pub ran: cpu::Ran,
    pub requests: Requests,
    /// Resident memory with no app, and at rest with every app (KiB).
    pub empty_kib: u64,
    pub rest_kib: u64,
    pub peak_kib: u64,
}

/// The operator started with a resync beyond the window.
pub fn start(plane: &ControlPlane, build: &Build) -> (std::process::Child, Option<String>) {
    Peer::Visitcounter.start_binary(&build.binary, &plane.kubeconfig(), &["--resync-seconds", RESYNC])
}

/// Resident memory of the operator once it has listed its (empty) watches.
pub async fn empty_rss(plane: &ControlPlane, build: &Build) -> u64 {
    let (mut operator, metrics) = start(plane, build);
    let started = Instant::now();
    while crate::reconciles(metrics.as_deref()).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the operator never served its metrics"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kib = memory_kib(operator.id(), "VmRSS:").unwrap_or(0);
    stop(&mut operator);
    kib
}

pub async fn run(count: usize, state: State, build: &Build) -> Idle {
    let plane = ControlPlane::up(
        &format!("bench-idle-{}", state.slug()),
        state.nodes(),
        Peer::Visitcounter,
    );
    let client = plane.client().await;
    prepare(&client).await;
    let empty_kib = empty_rss(&plane, build).await;
    for_each_app(&client, count, |name| {
        let app = app_spec(2, name, state.image());
        if count > NODE_PORTS { with_cluster_ip(app) } else { app }
    })
    .await;
    let (apps, watch) = watch_apps(&client).await;
    let answering = matches!(state, State::Answering).then(|| AnsweringPods::start(&client, APP_PORT));
    let started = Instant::now();
    let (mut operator, metrics) = start(&plane, build);
    let pid = operator.id();
    let converge = wait_converged(&apps, count, 2, state.goal(), started, &mut ConvergedAt::new()).await;
    if let Some(goal) = state.first_asks() {
        wait_converged(&apps, count, 2, goal, started, &mut ConvergedAt::new()).await;
    }
    // The last status writes land, and the StatefulSet controller's last
    // changes reach the caches.
    tokio::time::sleep(Duration::from_secs(10)).await;
    rounds_build_nothing(metrics.as_deref()).await;
    let audit = plane.audit();
    // One scrape each side, outside the CPU readings: encoding the metrics
    // (two gauges per app) is work the bench asks for, not rest.
    let before = scrape(metrics.as_deref());
    let threads = cpu::Threads::of(pid);
    tokio::time::sleep(QUIET_WINDOW).await;
    let ran = cpu::Threads::of(pid).since(&threads);
    let after = scrape(metrics.as_deref());
    let (before, after) = (before.as_deref(), after.as_deref());
    let change = |name| sample(after, name).zip(sample(before, name)).map(|(a, b)| a - b);
    let idle = Idle {
        state,
        build: build.name.clone(),
        converge,
        reconciles: change(RECONCILES),
        asks: change(ASKS),
        polled: change(POLLED),
        rested: change(RESTED),
        followed: sample(after, FOLLOWED),
        ran,
        requests: audit.operator_requests(),
        empty_kib,
        rest_kib: memory_kib(pid, "VmRSS:").unwrap_or(0),
        peak_kib: memory_kib(pid, "VmHWM:").unwrap_or(0),
    };
    watch.abort();
    stop(&mut operator);
    drop(answering);
    idle
}

/// Waits until a visits round builds no app: the operator's count of apps
/// built stands over a whole round (its interval is 30 s). The round after
/// a status write builds that app once more, to find it unchanged. At most
/// `AT_REST_WITHIN`: with pods that never answer, rounds ask them and never
/// come to rest.
async fn rounds_build_nothing(metrics: Option<&str>) {
    let started = Instant::now();
    let polled = || sample(scrape(metrics).as_deref(), POLLED);
    let mut before = polled();
    while started.elapsed() < AT_REST_WITHIN {
        tokio::time::sleep(Duration::from_secs(31)).await;
        let now = polled();
        match (before, now) {
            // A build without the count: nothing to wait for.
            (None, None) => return,
            (Some(b), Some(n)) if b == n => return,
            // Another count, or a scrape that failed: look again.
            _ => before = now.or(before),
        }
    }
}

/// The table of every count and state.
pub fn print(figures: &[(usize, Idle)]) {
    println!(
        "operator at rest against a real Kubernetes v1.36.3 control plane, apps of 2 replicas over {} namespaces, \
         --resync-seconds {RESYNC}; a window of {} s",
        crate::NAMESPACES,
        QUIET_WINDOW.as_secs()
    );
    let header: Vec<String> = figures
        .iter()
        .map(|(n, f)| format!("{n} apps, {}, {}", f.state.name(), f.build))
        .collect();
    println!("| measure | {} | target |", header.join(" | "));
    println!("| --- |{} --- |", " --- |".repeat(figures.len()));
    let row = |measure: &str, cell: &dyn Fn(usize, &Idle) -> String, target: &str| {
        let cells: Vec<String> = figures.iter().map(|(n, f)| cell(*n, f)).collect();
        println!("| {measure} | {} | {target} |", cells.join(" | "));
    };
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    row(
        "seconds until at rest",
        &|_, f| format!("{:.1}", f.converge.as_secs_f64()),
        "",
    );
    row(
        "reconciles in the window",
        &|_, f| f.reconciles.map_or("n/a".to_owned(), |r| r.to_string()),
        "0",
    );
    row(
        "pods asked for their visits in the window",
        &|_, f| f.asks.map_or("n/a".to_owned(), |a| a.to_string()),
        "",
    );
    row(
        "apps whose visits the poller's rounds built in the window",
        &|_, f| f.polled.map_or("n/a".to_owned(), |a| a.to_string()),
        "",
    );
    row(
        "visits rounds left out whole in the window (nothing changed)",
        &|_, f| f.rested.map_or("n/a".to_owned(), |r| r.to_string()),
        "",
    );
    row(
        "pods whose visits came on a stream at the window's end",
        &|_, f| f.followed.map_or("n/a".to_owned(), |a| a.to_string()),
        "",
    );
    row("CPU seconds in the window", &|_, f| f.ran.seconds(), "0.0");
    row(
        "times the operator's threads were put on a CPU in the window",
        &|_, f| f.ran.runs(),
        "",
    );
    row(
        "requests in the window: reads / writes (of them status.visits)",
        &|_, f| {
            format!(
                "{} / {} ({})",
                f.requests.reads, f.requests.writes, f.requests.visits_writes
            )
        },
        "0 writes",
    );
    row("RSS with no app", &|_, f| mib(f.empty_kib), "");
    row(
        "RSS at rest (peak)",
        &|_, f| format!("{} ({})", mib(f.rest_kib), mib(f.peak_kib)),
        "< 48 MiB at 1,000 Ready",
    );
    row(
        "bytes per app at rest: (RSS at rest - RSS with no app) / apps",
        &|n, f| {
            format!(
                "{:.0}",
                (f.rest_kib.saturating_sub(f.empty_kib) * 1024) as f64 / n as f64
            )
        },
        "",
    );
    println!();
    for (n, f) in figures {
        if f.requests.writes + f.requests.reads > 0 {
            println!(
                "{n} apps, {}, {}, requests in the window: {}",
                f.state.name(),
                f.build,
                f.requests.breakdown(1)
            );
        }
    }
}
