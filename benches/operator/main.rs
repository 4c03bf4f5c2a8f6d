//! The operator (the release binary, as its own process) against a real
//! Kubernetes control plane: a fresh one from `scripts/cluster.sh` for each
//! run (its own state folder), apps of 2 replicas over 10 namespaces, pods on
//! kwok's simulated nodes. Every request is counted from the API server's
//! audit log by the operator's User-Agent.
//!
//! `cargo bench --bench operator` runs 200 and 1,000 apps side by side;
//! `-- --apps N [--apps M]` for other counts. It prints: seconds until every
//! app is Ready; requests per app to converge, split into reads, writes and
//! dry runs; writes, reconciles and CPU seconds in a quiet window of six
//! resync periods (target 0 for each);
//! replicas 2 -> 3 on every app (seconds, writes per app); peak RSS; and
//! where the requests went, by verb and resource.
//!
//! `-- --no-nodes` starts the control plane without nodes, as the
//! comparison with a kopf operator in issue 15 was measured: pods stay
//! Pending. It times two points: every app's status written for its spec
//! (the operator's part, what a kopf operator's convergence is), and every
//! status reporting the StatefulSet's first pod (which waits on the
//! controller manager's StatefulSet controller and its client rate too).
//!
//! `-- --idle` brings the apps to rest in three states and measures what
//! the operator does while nothing happens (see `idle`); with `--baseline
//! PATH`, another build of the operator beside this one; `--state ready`
//! (or `unschedulable`, `failing`, repeated) for some of the states only.
//!
//! `-- --many --apps 10000` puts many apps on one operator without nodes,
//! until every status is written, and reads its memory (see `many`).
//!
//! `-- --no-nodes --peer kopf` also runs issue 15's peer, a kopf operator
//! (`benches/operator/kopf_peer/peer.py`, installed into `target/kopf-peer` on first
//! use), on a control plane of its own, in the column beside each count.

mod answering;
mod audit;
mod cpu;
mod idle;
mod latency;
mod many;
mod peer;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::Namespace, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    jiff::Timestamp,
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde_json::{Value, json};
use visitcounter::{
    controller::observe::visits::NOT_ASKED,
    crd,
    resource::{API_VERSION, KIND, VisitCounterApp},
};

use audit::{AuditLog, ConvergedAt, PerApp, Requests};
use latency::Latencies;
use peer::{Peer, install_kopf};

const NAMESPACES: usize = 10;
const RESYNC_SECONDS: u64 = 10;
const QUIET_WINDOW: Duration = Duration::from_secs(6 * RESYNC_SECONDS);

/// kube-controller-manager's default requests a second, per controller.
const DEFAULT_CONTROLLER_QPS: u32 = 20;

/// A control plane of `scripts/cluster.sh`, stopped when dropped.
struct ControlPlane {
    dir: PathBuf,
    peer: Peer,
}

impl ControlPlane {
    fn up(name: &str, nodes: bool, peer: Peer) -> Self {
        Self::up_with(name, nodes, peer, DEFAULT_CONTROLLER_QPS)
    }

    /// `up`, with kube-controller-manager's controllers at
    /// `controller_qps` requests a second each.
    fn up_with(name: &str, nodes: bool, peer: Peer, controller_qps: u32) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("target").join(name);
        let status = Command::new(root.join("scripts/cluster.sh"))
            .arg("up")
            .env("VISITCOUNTER_CLUSTER_DIR", &dir)
            .env("VISITCOUNTER_CLUSTER_NODES", if nodes { "3" } else { "0" })
            .env("VISITCOUNTER_CONTROLLER_QPS", controller_qps.to_string())
            .status()
            .expect("scripts/cluster.sh runs");
        assert!(status.success(), "the control plane did not start");
        Self { dir, peer }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig()).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    }

    fn audit(&self) -> AuditLog {
        let path = self.dir.join("audit.log");
        let offset = std::fs::metadata(&path).map_or(0, |m| m.len());
        AuditLog {
            path,
            offset,
            end: None,
            peer: self.peer,
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh"))
            .arg("down")
            .env("VISITCOUNTER_CLUSTER_DIR", &self.dir)
            .status();
    }
}

/// What the operator did over the quiet window, with nothing to do.
struct Idle {
    ran: cpu::Ran,
    /// From its own `visitcounter_operator_reconciles_total` (the kopf
    /// peer serves no such count).
    reconciles: Option<u64>,
}

/// The operator's `visitcounter_operator_reconciles_total`, from its
/// metrics at `address`.
fn reconciles(address: Option<&str>) -> Option<u64> {
    counter(address, "visitcounter_operator_reconciles_total")
}

/// The value of one of the operator's counters, from its `/metrics`; `None`
/// when it serves none or lacks this one (an older build).
fn counter(address: Option<&str>, name: &str) -> Option<u64> {
    sample(scrape(address).as_deref(), name)
}

/// The operator's `/metrics`, once. Encoding them costs the operator CPU
/// (a gauge per app), so a window scrapes them outside its CPU readings.
fn scrape(address: Option<&str>) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address?).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: operator\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The counter `name` in a scrape; `None` when it lacks it.
fn sample(scraped: Option<&str>, name: &str) -> Option<u64> {
    scraped?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// A memory figure of `/proc/PID/status` in KiB (`VmHWM` is the peak).
fn memory_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What an app must show to count as converged for its current generation.
#[derive(Clone, Copy, PartialEq)]
enum Goal {
    /// Ready, with all its pods ready (with nodes).
    Ready,
    /// The operator has done its part: the status is written for this
    /// generation, so every child was applied.
    StatusWritten,
    /// Without nodes, pods stay Pending: the status also reports the
    /// StatefulSet its controller has seen (`updateRevision`) and its first
    /// pod. This waits on the controller manager too.
    FirstPod,
    /// The visits poller has asked every pod of the app once (with pods
    /// Ready, it asks them once a round, 30 s apart, and each pod's first
    /// answer changes the count).
    EveryPodAsked,
    /// Every pod of the app has answered the visits poller with a count.
    EveryPodAnswered,
}

/// How many apps of `replicas` have reached `goal`, by a watch cache of the
/// apps: polling with lists of 1,000 apps would load the API server more
/// than the operator does.
fn converged(apps: &Store<VisitCounterApp>, replicas: i32, goal: Goal) -> Vec<String> {
    apps.state()
        .iter()
        .filter(|app| {
            let Some(status) = &app.status else { return false };
            let reached = match goal {
                Goal::Ready => {
                    status.ready_replicas == replicas
                        && status
                            .conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                }
                Goal::StatusWritten => true,
                // OrderedReady: the first pod exists, Pending, and no other comes.
                Goal::FirstPod => status.update_revision.is_some() && status.replicas >= 1,
                Goal::EveryPodAsked => status.visits.as_ref().is_some_and(|visits| {
                    visits.pods.len() == replicas as usize
                        && visits.pods.iter().all(|pod| pod.error.as_deref() != Some(NOT_ASKED))
                }),
                Goal::EveryPodAnswered => status.visits.as_ref().is_some_and(|visits| {
                    visits.pods.len() == replicas as usize && visits.pods.iter().all(|pod| pod.visits.is_some())
                }),
            };
            status.observed_generation == app.metadata.generation && app.spec.replicas == replicas && reached
        })
        .map(|app| format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any()))
        .collect()
}

/// Waits until all `count` apps reached `goal`; notes in `converged_at`
/// when each was first seen there.
async fn wait_converged(
    apps: &Store<VisitCounterApp>,
    count: usize,
    replicas: i32,
    goal: Goal,
    started: Instant,
    converged_at: &mut ConvergedAt,
) -> Duration {
    loop {
        let now = Timestamp::now();
        let reached = converged(apps, replicas, goal);
        let done = reached.len();
        for app in reached {
            converged_at.entry(app).or_insert(now);
        }
        if done == count {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(2700),
            "{done} of {count} apps converged after 45 minutes"
        );
        // Every 50 ms per thousand apps: each look walks every app, and at
        // 10,000 apps looking more often took the CPU the API server needs.
        tokio::time::sleep(Duration::from_millis(50 * (count as u64 / 1000).max(1))).await;
    }
}

/// Applies `object(name)` to each of `count` apps, 16 at a time.
async fn for_each_app(client: &Client, count: usize, object: impl Fn(&str) -> Value) {
    let object = &object;
    futures::stream::iter(0..count)
        .for_each_concurrent(16, |i| {
            let api: Api<VisitCounterApp> = Api::namespaced(client.clone(), &format!("bench-{}", i % NAMESPACES));
            async move {
                let name = format!("app-{i:04}");
                api.patch(&name, &PatchParams::apply("bench"), &Patch::Apply(object(&name)))
                    .await
                    .unwrap();
            }
        })
        .await;
}

/// What one run measured.
struct Figures {
    peer: Peer,
    /// Without nodes: until the operator's part is done (`Goal::StatusWritten`).
    written: Option<(Duration, Requests, PerApp)>,
    converge: Duration,
    to_converge: Requests,
    /// Each app's writes until it converged (see `PerApp`).
    converge_per_app: PerApp,
    quiet: Requests,
    /// The operator's CPU and reconciles over the quiet window.
    idle: Idle,
    scale: Duration,
    to_scale: Requests,
    scale_per_app: PerApp,
    peak_kib: u64,
    /// One more app, from its apply to its status (`one_new_app`).
    new_app: Duration,
    /// Change to first write, by default (no debounce) and with the 500 ms
    /// debounce that was the default before (visitcounter only).
    latency: Option<(Latencies, Latencies)>,
}

/// The CRD installed and Established, and the bench's namespaces made.
async fn prepare(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "visitcounterapps.visitcounter.dev",
        &PatchParams::apply("bench").force(),
        &Patch::Apply(crd::definition()),
    )
    .await
    .unwrap();
    let established = Instant::now();
    while !crds.get("visitcounterapps.visitcounter.dev").await.is_ok_and(|c| {
        c.status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    }) {
        assert!(
            established.elapsed() < Duration::from_secs(30),
            "the CRD is not Established"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for n in 0..NAMESPACES {
        let namespace = serde_json::from_value(json!({"metadata": {"name": format!("bench-{n}")}})).unwrap();
        namespaces.create(&PostParams::default(), &namespace).await.unwrap();
    }
}

/// A cache of every app, by a watch, ready.
async fn watch_apps(client: &Client) -> (Store<VisitCounterApp>, tokio::task::JoinHandle<()>) {
    let (all, writer) = reflector::store();
    let watch = tokio::spawn(
        reflector::reflector(
            writer,
            watcher(Api::<VisitCounterApp>::all(client.clone()), watcher::Config::default()),
        )
        .default_backoff()
        .for_each(|_| futures::future::ready(())),
    );
    all.wait_until_ready().await.unwrap();
    (all, watch)
}

/// An app of `replicas` named `name`, with `image` when given.
fn app_spec(replicas: i32, name: &str, image: Option<&str>) -> Value {
    let mut app = json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name},
                         "spec": {"replicas": replicas, "config": {"json": {"app": name}}}});
    if let Some(image) = image {
        app["spec"]["image"] = json!(image);
    }
    app
}

/// How many NodePort Services the default range (30000-32767) holds; each
/// further NodePort app is refused (`ApplyFailed: failed to allocate a
/// nodePort: range is full`).
const NODE_PORTS: usize = 2768;

/// `app` with a ClusterIP Service, for more apps than `NODE_PORTS`.
fn with_cluster_ip(mut app: Value) -> Value {
    app["spec"]["service"] = json!({"type": "ClusterIP"});
    app
}

async fn run(count: usize, nodes: bool, peer: Peer) -> Figures {
    let plane = ControlPlane::up(&format!("bench-cluster-{count}"), nodes, peer);
    let client = plane.client().await;
    prepare(&client).await;
    let spec = |replicas: i32, name: &str| app_spec(replicas, name, None);
    for_each_app(&client, count, |name| spec(2, name)).await;
    let (all, watch) = watch_apps(&client).await;
    let audit = plane.audit();
    let started = Instant::now();
    let (mut operator, metrics) = peer.start(&plane.kubeconfig());
    let pid = operator.id();
    let written = if nodes {
        None
    } else {
        let mut converged_at = ConvergedAt::new();
        let at = wait_converged(&all, count, 2, Goal::StatusWritten, started, &mut converged_at).await;
        Some((at, audit.so_far(), converged_at))
    };
    // The peer reports neither pods nor readiness: its goal is its status.
    let goal = match (peer, nodes) {
        (Peer::Kopf, _) => Goal::StatusWritten,
        (Peer::Visitcounter, true) => Goal::Ready,
        (Peer::Visitcounter, false) => Goal::FirstPod,
    };
    let mut converged_at = ConvergedAt::new();
    let converge = wait_converged(&all, count, 2, goal, started, &mut converged_at).await;
    let to_converge = audit.operator_requests();
    let converge_per_app = audit.writes_per_app_until(&converged_at);
    // Read after the wait to converge, which its time would hold.
    let written = written.map(|(at, so_far, seen)| {
        let per_app = audit.writes_per_app_until(&audit.status_written_at(&seen));
        (at, so_far.operator_requests(), per_app)
    });

    // Let the last status writes land, then a minute (six resync periods)
    // of nothing: long enough for the timers an app at rest may set (the
    // look at pods that are not created comes after 30 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quiet_window = plane.audit();
    // The scrapes fall outside the CPU readings.
    let reconciles_before = reconciles(metrics.as_deref());
    let threads = cpu::Threads::of(pid);
    tokio::time::sleep(QUIET_WINDOW).await;
    let ran = cpu::Threads::of(pid).since(&threads);
    let quiet = quiet_window.operator_requests();
    let idle = Idle {
        ran,
        reconciles: reconciles(metrics.as_deref())
            .zip(reconciles_before)
            .map(|(a, b)| a - b),
    };

    let audit = plane.audit();
    let started = Instant::now();
    for_each_app(&client, count, |name| spec(3, name)).await;
    let mut converged_at = ConvergedAt::new();
    let scale = wait_converged(&all, count, 3, goal, started, &mut converged_at).await;
    let scale_per_app = audit.writes_per_app_until(&converged_at);
    // Whatever the operator writes as the controller manager catches up.
    tokio::time::sleep(Duration::from_secs(RESYNC_SECONDS)).await;
    let to_scale = audit.operator_requests();
    let peak_kib = memory_kib(pid, "VmHWM:").unwrap_or(0);
    let new_app = one_new_app(&client, &all).await;

    let latency = match peer {
        Peer::Visitcounter => {
            let by_default = latency::change_to_first_write(&client, || plane.audit(), count, 4).await;
            stop(&mut operator);
            let (again, metrics) = peer.start_with(&plane.kubeconfig(), &["--debounce-millis", "500"]);
            operator = again;
            settled(metrics.as_deref(), count).await;
            let debounced = latency::change_to_first_write(&client, || plane.audit(), count, 5).await;
            Some((by_default, debounced))
        }
        Peer::Kopf => None,
    };
    watch.abort();
    stop(&mut operator);
    Figures {
        peer,
        written,
        converge,
        to_converge,
        converge_per_app,
        quiet,
        idle,
        scale,
        to_scale,
        scale_per_app,
        peak_kib,
        new_app,
        latency,
    }
}

/// From the apply of one more app, among all the converged ones, until the
/// bench's watch sees its status written for its spec: the operator's part,
/// every child applied (`Goal::StatusWritten`).
async fn one_new_app(client: &Client, apps: &Store<VisitCounterApp>) -> Duration {
    let (namespace, name) = ("bench-0", "app-new");
    let api: Api<VisitCounterApp> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    api.patch(
        name,
        &PatchParams::apply("bench"),
        &Patch::Apply(app_spec(2, name, None)),
    )
    .await
    .unwrap();
    let key = format!("{namespace}/{name}");
    while !converged(apps, 2, Goal::StatusWritten).contains(&key) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the new app's status was not written in a minute"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// Stops the operator with SIGTERM, and checks it exits cleanly.
fn stop(operator: &mut std::process::Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(operator.id() as i32, libc::SIGTERM) };
    let stopped = operator.wait().unwrap();
    assert!(stopped.success(), "the operator exits cleanly after SIGTERM: {stopped}");
}

/// Waits until an operator just started has reconciled every app once and
/// then nothing for 2 s.
async fn settled(metrics: Option<&str>, count: usize) {
    let started = Instant::now();
    let mut last = (reconciles(metrics), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = reconciles(metrics);
        if now != last.0 {
            last = (now, Instant::now());
        } else if now.is_some_and(|n| n >= count as u64) && last.1.elapsed() > Duration::from_secs(2) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the restarted operator never settled"
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut counts: Vec<usize> = args
        .windows(2)
        .filter(|w| w[0] == "--apps")
        .filter_map(|w| w[1].parse().ok())
        .collect();
    if counts.is_empty() {
        counts = vec![200, 1000];
    }
    if args.iter().any(|a| a == "--many") {
        let mut figures = Vec::new();
        for &count in &counts {
            figures.push(many::run(count).await);
        }
        many::print(&figures);
        return;
    }
    if args.iter().any(|a| a == "--idle") {
        let mut figures = Vec::new();
        let builds = idle::Build::all(&args);
        let states = idle::State::chosen(&args);
        for &count in &counts {
            for &state in &states {
                for build in &builds {
                    figures.push((count, idle::run(count, state, build).await));
                }
            }
        }
        idle::print(&figures);
        for (_, f) in &figures {
            assert_eq!(
                f.requests.writes - f.requests.visits_writes,
                0,
                "a resting app was written in the window"
            );
        }
        return;
    }
    // Without nodes, as the comparison with a kopf operator was measured:
    // pods stay Pending (see `Goal`).
    let nodes = !args.iter().any(|a| a == "--no-nodes");
    // `--peer kopf`: the kopf peer too, on a control plane of its own, in
    // the column beside visitcounter's for each count.
    let mut peers = vec![Peer::Visitcounter];
    if args.windows(2).any(|w| w[0] == "--peer" && w[1] == "kopf") {
        assert!(!nodes, "the kopf peer reports no readiness: run it with --no-nodes");
        // Installed now, so that no run's clock counts the install.
        install_kopf();
        peers.push(Peer::Kopf);
    }
    let mut figures = Vec::new();
    let mut columns = Vec::new();
    for &count in &counts {
        for &peer in &peers {
            figures.push(run(count, nodes, peer).await);
            columns.push(count);
        }
    }
    let counts = columns;

    println!(
        "operator against a real Kubernetes v1.36.3 control plane ({}), apps of 2 replicas over \
         {NAMESPACES} namespaces, resync {RESYNC_SECONDS} s; requests by the operator's User-Agent in the audit log",
        if nodes {
            "kwok nodes"
        } else {
            "no nodes: pods stay Pending"
        }
    );
    let header: Vec<String> = figures
        .iter()
        .zip(&counts)
        .map(|(f, c)| match f.peer {
            Peer::Visitcounter => format!("{c} apps"),
            peer => format!("{c} apps, {}", peer.name()),
        })
        .collect();
    println!("| measure | {} | target |", header.join(" | "));
    println!("| --- |{} --- |", " --- |".repeat(counts.len()));
    let row = |measure: &str, f: &dyn Fn(&Figures, usize) -> String, target: &str| {
        let cells: Vec<String> = figures.iter().zip(&counts).map(|(fig, &n)| f(fig, n)).collect();
        println!("| {measure} | {} | {target} |", cells.join(" | "));
    };
    let per_app = |n: usize, x: usize| x as f64 / n as f64;
    let requests = |r: &Requests, n: usize| {
        format!(
            "{:.2} / {:.2} / {:.2}",
            per_app(n, r.reads),
            per_app(n, r.writes),
            per_app(n, r.dry_runs)
        )
    };
    let each = |p: &PerApp| format!("{:.2} / {} ({} writes to no app)", p.mean, p.max, p.unattributed);
    if nodes {
        row(
            "seconds until every app is Ready",
            &|f, _| format!("{:.1}", f.converge.as_secs_f64()),
            "",
        );
        row(
            "requests per app to converge: reads / writes / dry runs",
            &|f, n| requests(&f.to_converge, n),
            "",
        );
        row(
            "writes to each app until it was Ready: mean / most",
            &|f, _| each(&f.converge_per_app),
            "",
        );
    } else {
        fn written(f: &Figures) -> &(Duration, Requests, PerApp) {
            f.written.as_ref().expect("measured without nodes")
        }
        row(
            "seconds until every app's status is written (the operator's part done)",
            &|f, _| format!("{:.1}", written(f).0.as_secs_f64()),
            "no more than the kopf peer's (issue 15: 5.8 to 8.2 at 200)",
        );
        row(
            "requests per app until then: reads / writes / dry runs",
            &|f, n| requests(&written(f).1, n),
            "",
        );
        row(
            "writes to each app until its own status was written: mean / most",
            &|f, _| each(&written(f).2),
            "at most 6",
        );
        let reports_pods = |f: &Figures, text: String| match f.peer {
            Peer::Visitcounter => text,
            _ => "n/a: no pods in its status".to_owned(),
        };
        row(
            "seconds until every app's status reports its StatefulSet's first pod",
            &|f, _| reports_pods(f, format!("{:.1}", f.converge.as_secs_f64())),
            "",
        );
        row(
            "requests per app until then: reads / writes / dry runs",
            &|f, n| reports_pods(f, requests(&f.to_converge, n)),
            "",
        );
    }
    row(
        "writes (and dry runs) in a quiet window of 60 s (six resyncs)",
        &|f, _| {
            format!(
                "{} ({}), of them status.visits: {}",
                f.quiet.writes, f.quiet.dry_runs, f.quiet.visits_writes
            )
        },
        "0",
    );
    row(
        "reconciles in the quiet window (resyncs due in it), CPU seconds",
        &|f, n| {
            let reconciles = f.idle.reconciles.map_or("n/a".to_owned(), |r| r.to_string());
            let due = n as u64 * QUIET_WINDOW.as_secs() / RESYNC_SECONDS;
            format!("{reconciles} ({due}), {} s", f.idle.ran.seconds())
        },
        "no more than the resyncs due",
    );
    row(
        "replicas 2 -> 3 on every app: seconds, writes (dry runs) per app",
        &|f, n| {
            format!(
                "{:.1} s, {:.2} ({:.2})",
                f.scale.as_secs_f64(),
                per_app(n, f.to_scale.writes),
                per_app(n, f.to_scale.dry_runs)
            )
        },
        "",
    );
    row(
        "writes to each app until it converged at 3 replicas: mean / most",
        &|f, _| each(&f.scale_per_app),
        "",
    );
    let latency = |f: &Figures, which: fn(&(Latencies, Latencies)) -> &Latencies| {
        f.latency.as_ref().map_or("n/a".to_owned(), |l| which(l).text())
    };
    row(
        &format!(
            "one app's replicas patched among all: to the operator's StatefulSet write, p50 / p99 / max of {} apps \
             (each once; all under {0})",
            latency::SAMPLES
        ),
        &|f, _| latency(f, |l| &l.0),
        "p99 < 100 ms",
    );
    row(
        "the same, with --debounce-millis 500 (the default before)",
        &|f, _| latency(f, |l| &l.1),
        "",
    );
    row(
        "one new app among all: from its apply to its status written, seconds",
        &|f, _| format!("{:.2}", f.new_app.as_secs_f64()),
        "< 0.5",
    );
    row(
        "operator peak RSS",
        &|f, _| format!("{:.1} MiB", f.peak_kib as f64 / 1024.0),
        "< 48 MiB at 1,000 apps",
    );
    println!();
    for (f, &n) in figures.iter().zip(&counts) {
        let n_apps = match f.peer {
            Peer::Visitcounter => format!("{n} apps"),
            peer => format!("{n} apps ({})", peer.name()),
        };
        println!(
            "{n_apps}, requests per app until converged: {}",
            f.to_converge.breakdown(n)
        );
        println!("{n_apps}, requests per app for the scale: {}", f.to_scale.breakdown(n));
        if f.quiet.writes + f.quiet.dry_runs > 0 {
            println!("{n_apps}, requests in the quiet window: {}", f.quiet.breakdown(1));
        }
    }
    for f in &figures {
        assert_eq!(
            f.quiet.writes - f.quiet.visits_writes,
            0,
            "a converged app was written in the quiet window"
        );
    }
}
