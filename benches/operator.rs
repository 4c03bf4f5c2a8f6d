//! The operator (the release binary, as its own process) against a real
//! Kubernetes control plane: a fresh one from `scripts/cluster.sh` for each
//! run (its own state folder), apps of 2 replicas over 10 namespaces, pods on
//! kwok's simulated nodes. Every request is counted from the API server's
//! audit log by the operator's User-Agent.
//!
//! `cargo bench --bench operator` runs 200 and 1,000 apps side by side;
//! `-- --apps N [--apps M]` for other counts. It prints: seconds until every
//! app is Ready; requests per app to converge, split into reads, writes and
//! dry runs; writes in a quiet window of two resync periods (target 0);
//! replicas 2 -> 3 on every app (seconds, writes per app); peak RSS; and
//! where the requests went, by verb and resource.
//!
//! `-- --no-nodes` starts the control plane without nodes, as the
//! comparison with a kopf operator in issue 15 was measured: pods stay
//! Pending. It times two points: every app's status written for its spec
//! (the operator's part, what a kopf operator's convergence is), and every
//! status reporting the StatefulSet's first pod (which waits on the
//! controller manager's StatefulSet controller and its client rate too).

use std::{
    io::{BufRead, Seek},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::Namespace, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
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
    controller::visits::VISITS_FIELD_MANAGER,
    crd,
    operator::USER_AGENT,
    resource::{API_VERSION, KIND, VisitCounterApp},
};

const NAMESPACES: usize = 10;
const RESYNC_SECONDS: u64 = 10;

/// A control plane of `scripts/cluster.sh`, stopped when dropped.
struct ControlPlane {
    dir: PathBuf,
}

impl ControlPlane {
    fn up(name: &str, nodes: bool) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("target").join(name);
        let status = Command::new(root.join("scripts/cluster.sh"))
            .arg("up")
            .env("VISITCOUNTER_CLUSTER_DIR", &dir)
            .env("VISITCOUNTER_CLUSTER_NODES", if nodes { "3" } else { "0" })
            .status()
            .expect("scripts/cluster.sh runs");
        assert!(status.success(), "the control plane did not start");
        Self { dir }
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
        AuditLog { path, offset }
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

/// The audit log from where it ended when this was made.
struct AuditLog {
    path: PathBuf,
    offset: u64,
}

/// The operator's requests in a stretch of the audit log.
#[derive(Default)]
struct Requests {
    reads: usize,
    writes: usize,
    dry_runs: usize,
    /// Of `writes`: the visits poller's (its own field manager).
    visits_writes: usize,
    /// Every request by verb and resource (`patch statefulsets`,
    /// `patch visitcounterapps/status`, `create events`, ...).
    by_kind: std::collections::BTreeMap<String, usize>,
}

impl Requests {
    /// `by_kind` per app, most first: where the requests go.
    fn breakdown(&self, apps: usize) -> String {
        let mut kinds: Vec<_> = self.by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        kinds
            .iter()
            .map(|(kind, n)| format!("{kind} {:.2}", **n as f64 / apps as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl AuditLog {
    fn operator_requests(&self) -> Requests {
        let mut file = std::fs::File::open(&self.path).unwrap();
        file.seek(std::io::SeekFrom::Start(self.offset)).unwrap();
        let mut counted = Requests::default();
        for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let verb = event["verb"].as_str().unwrap_or_default();
            // A watch is counted when it starts; every other request once done.
            let counted_stage = if verb == "watch" {
                "ResponseStarted"
            } else {
                "ResponseComplete"
            };
            if event["stage"] != counted_stage
                || !event["userAgent"].as_str().is_some_and(|a| a.starts_with(USER_AGENT))
            {
                continue;
            }
            let uri = event["requestURI"].as_str().unwrap_or_default();
            let object = &event["objectRef"];
            let mut kind = format!("{verb} {}", object["resource"].as_str().unwrap_or("?"));
            if let Some(sub) = object["subresource"].as_str() {
                kind = format!("{kind}/{sub}");
            }
            if uri.contains("dryRun=") {
                kind.push_str(" (dry run)");
            }
            *counted.by_kind.entry(kind).or_default() += 1;
            match verb {
                "get" | "list" | "watch" => counted.reads += 1,
                _ if uri.contains("dryRun=") => counted.dry_runs += 1,
                _ => {
                    counted.writes += 1;
                    if uri.contains(VISITS_FIELD_MANAGER) {
                        counted.visits_writes += 1;
                    }
                }
            }
        }
        counted
    }
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
}

/// How many apps of `replicas` have reached `goal`, by a watch cache of the
/// apps: polling with lists of 1,000 apps would load the API server more
/// than the operator does.
fn converged(apps: &Store<VisitCounterApp>, replicas: i32, goal: Goal) -> usize {
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
            };
            status.observed_generation == app.metadata.generation && app.spec.replicas == replicas && reached
        })
        .count()
}

async fn wait_converged(
    apps: &Store<VisitCounterApp>,
    count: usize,
    replicas: i32,
    goal: Goal,
    started: Instant,
) -> Duration {
    loop {
        let done = converged(apps, replicas, goal);
        if done == count {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{done} of {count} apps converged after 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
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
    /// Without nodes: until the operator's part is done (`Goal::StatusWritten`).
    written: Option<(Duration, Requests)>,
    converge: Duration,
    to_converge: Requests,
    quiet: Requests,
    scale: Duration,
    to_scale: Requests,
    peak_kib: u64,
}

async fn run(count: usize, nodes: bool) -> Figures {
    let plane = ControlPlane::up(&format!("bench-cluster-{count}"), nodes);
    let client = plane.client().await;
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
    let spec = |replicas: i32, i: &str| {
        json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": i},
               "spec": {"replicas": replicas, "config": {"json": {"app": i}}}})
    };
    for_each_app(&client, count, |name| spec(2, name)).await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
    let audit = plane.audit();
    let started = Instant::now();
    let mut operator = Command::new(env!("CARGO_BIN_EXE_visitcounter"))
        .args(["operator", "--leader-election=false", "--admin-address"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--resync-seconds", &RESYNC_SECONDS.to_string()])
        .env("KUBECONFIG", plane.kubeconfig())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = operator.id();
    let written = if nodes {
        None
    } else {
        let at = wait_converged(&all, count, 2, Goal::StatusWritten, started).await;
        Some((at, audit.operator_requests()))
    };
    let goal = if nodes { Goal::Ready } else { Goal::FirstPod };
    let converge = wait_converged(&all, count, 2, goal, started).await;
    let to_converge = audit.operator_requests();

    // Let the last status writes land, then two resync periods of nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quiet_window = plane.audit();
    tokio::time::sleep(Duration::from_secs(2 * RESYNC_SECONDS)).await;
    let quiet = quiet_window.operator_requests();

    let audit = plane.audit();
    let started = Instant::now();
    for_each_app(&client, count, |name| spec(3, name)).await;
    let scale = wait_converged(&all, count, 3, goal, started).await;
    // Whatever the operator writes as the controller manager catches up.
    tokio::time::sleep(Duration::from_secs(RESYNC_SECONDS)).await;
    let to_scale = audit.operator_requests();
    let peak_kib = memory_kib(pid, "VmHWM:").unwrap_or(0);

    watch.abort();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let stopped = operator.wait().unwrap();
    assert!(stopped.success(), "the operator exits cleanly after SIGTERM: {stopped}");
    Figures {
        written,
        converge,
        to_converge,
        quiet,
        scale,
        to_scale,
        peak_kib,
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
    // Without nodes, as the comparison with a kopf operator was measured:
    // pods stay Pending (see `Goal`).
    let nodes = !args.iter().any(|a| a == "--no-nodes");
    let mut figures = Vec::new();
    for &count in &counts {
        figures.push(run(count, nodes).await);
    }

    println!(
        "operator against a real Kubernetes v1.36.3 control plane ({}), apps of 2 replicas over \
         {NAMESPACES} namespaces, resync {RESYNC_SECONDS} s; requests by the operator's User-Agent in the audit log",
        if nodes {
            "kwok nodes"
        } else {
            "no nodes: pods stay Pending"
        }
    );
    let header: Vec<String> = counts.iter().map(|c| format!("{c} apps")).collect();
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
    if nodes {
        row(
            "seconds until every app is Ready",
            &|f, _| format!("{:.1}", f.converge.as_secs_f64()),
            "",
        );
        row(
            "requests per app to converge: reads / writes / dry runs",
            &|f, n| requests(&f.to_converge, n),
            "writes + dry runs at most 6",
        );
    } else {
        fn written(f: &Figures) -> &(Duration, Requests) {
            f.written.as_ref().expect("measured without nodes")
        }
        row(
            "seconds until every app's status is written (the operator's part done)",
            &|f, _| format!("{:.1}", written(f).0.as_secs_f64()),
            "kopf: 5.8 to 8.2",
        );
        row(
            "requests per app until then: reads / writes / dry runs",
            &|f, n| requests(&written(f).1, n),
            "writes + dry runs at most 6",
        );
        row(
            "seconds until every app's status reports its StatefulSet's first pod",
            &|f, _| format!("{:.1}", f.converge.as_secs_f64()),
            "",
        );
        row(
            "requests per app until then: reads / writes / dry runs",
            &|f, n| requests(&f.to_converge, n),
            "",
        );
    }
    row(
        "writes (and dry runs) in a quiet window of two resyncs",
        &|f, _| {
            format!(
                "{} ({}), of them status.visits: {}",
                f.quiet.writes, f.quiet.dry_runs, f.quiet.visits_writes
            )
        },
        "0",
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
        "operator peak RSS",
        &|f, _| format!("{:.1} MiB", f.peak_kib as f64 / 1024.0),
        "< 64 MiB",
    );
    println!();
    for (f, &n) in figures.iter().zip(&counts) {
        println!(
            "{n} apps, requests per app until converged: {}",
            f.to_converge.breakdown(n)
        );
        println!("{n} apps, requests per app for the scale: {}", f.to_scale.breakdown(n));
        if f.quiet.writes + f.quiet.dry_runs > 0 {
            println!("{n} apps, requests in the quiet window: {}", f.quiet.breakdown(1));
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
