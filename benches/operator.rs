//! The operator (the release binary, as its own process) against the
//! in-process stand-in API server with 1,000 apps: time until all are
//! converged, API requests per app, write requests over a full resync of
//! converged apps, and the operator's peak RSS; with the visits poller on
//! and off, side by side.
//!
//! `cargo bench --bench operator` (`-- --apps N` for another count).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use visitcounter::{
    controller::visits::VISITS_FIELD_MANAGER,
    resource::{API_VERSION, KIND, VisitCounterApp},
};

#[allow(dead_code)] // the bench uses the stand-in cluster, not the test helpers
#[path = "../tests/operator/harness.rs"]
mod harness;

const NAMESPACE: &str = "bench";
const RESYNC_SECONDS: u64 = 10;

fn converged(app: &Value) -> bool {
    let ready = app["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    ready && app["status"]["observedGeneration"] == app["metadata"]["generation"]
}

/// A memory figure of `/proc/PID/status` in KiB: `VmHWM` (peak), `VmRSS`,
/// or its parts `RssAnon` and `RssFile`.
fn memory_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(port: u16) -> String {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://127.0.0.1:{port}/metrics").parse().unwrap();
    match client.get(uri).await {
        Ok(response) => String::from_utf8_lossy(&response.into_body().collect().await.unwrap().to_bytes()).into_owned(),
        Err(_) => String::new(),
    }
}

/// What one run measured.
struct Figures {
    converge: Duration,
    requests_per_app: f64,
    writes_per_app: f64,
    /// Writes over the resync window by the controller, and by the visits
    /// poller (its own field manager), of how many requests.
    resync_writes: usize,
    visits_writes: usize,
    resync_requests: usize,
    peak_kib: u64,
    now_kib: u64,
    /// Of `now_kib`: anonymous memory (heap, stacks) and mapped files (code).
    anon_kib: u64,
    file_kib: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let apps: usize = args
        .iter()
        .position(|a| a == "--apps")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    // The same run with the visits poller on (the default) and off, side by
    // side: the poller's pod watch and status writes are its cost.
    let on = run(apps, &[]).await;
    let off = run(apps, &["--visits-interval-seconds", "0"]).await;

    let concurrency = std::env::var("VISITCOUNTER_CONCURRENCY").unwrap_or_else(|_| "4 (default)".into());
    println!("operator against the stand-in API server: {apps} apps, 2 replicas each, concurrency {concurrency}");
    println!("| measure | visits poller on (default) | visits poller off | target |");
    println!("| --- | --- | --- | --- |");
    let row = |measure: &str, f: &dyn Fn(&Figures) -> String, target: &str| {
        println!("| {measure} | {} | {} | {target} |", f(&on), f(&off));
    };
    row(
        "time until all apps are Ready",
        &|f| format!("{:.2} s", f.converge.as_secs_f64()),
        "",
    );
    row(
        "API requests per app to converge",
        &|f| format!("{:.2} ({:.2} writes)", f.requests_per_app, f.writes_per_app),
        "",
    );
    row(
        "controller writes over one full resync of converged apps",
        &|f| format!("{} (of {} requests)", f.resync_writes, f.resync_requests),
        "0",
    );
    row(
        "status.visits writes in the same window",
        &|f| f.visits_writes.to_string(),
        "at most 1 per app (a count changed)",
    );
    row(
        "operator peak RSS",
        &|f| format!("{:.1} MiB", f.peak_kib as f64 / 1024.0),
        "< 64 MiB",
    );
    row(
        "operator RSS once converged",
        &|f| format!("{:.1} MiB", f.now_kib as f64 / 1024.0),
        "",
    );
    row(
        "of which anonymous / mapped files",
        &|f| {
            format!(
                "{:.1} / {:.1} MiB",
                f.anon_kib as f64 / 1024.0,
                f.file_kib as f64 / 1024.0
            )
        },
        "",
    );
    for f in [&on, &off] {
        assert_eq!(f.resync_writes, 0, "a converged app was written on a resync");
        assert!(
            f.visits_writes <= apps,
            "status.visits was written more than once per app"
        );
    }
}

async fn run(apps: usize, extra_args: &[&str]) -> Figures {
    let cluster = harness::Cluster::start().await;
    let standin = &cluster.standin;
    let client = cluster.client.clone();
    let api: Api<VisitCounterApp> = Api::namespaced(client, NAMESPACE);
    futures::stream::iter(0..apps)
        .for_each_concurrent(16, |i| {
            let api = api.clone();
            async move {
                let name = format!("app-{i:04}");
                let app = json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name},
                    "spec": {"replicas": 2, "config": {"json": {"index": i}}}});
                api.patch(&name, &PatchParams::apply("bench"), &Patch::Apply(&app))
                    .await
                    .unwrap();
            }
        })
        .await;

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    standin.write_kubeconfig(&kubeconfig).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let before = standin.requests().len();
    let started = Instant::now();
    let mut operator = Command::new(env!("CARGO_BIN_EXE_visitcounter"))
        .args(["operator", "--leader-election=false", "--admin-address"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--resync-seconds", &RESYNC_SECONDS.to_string()])
        .args(extra_args)
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = operator.id();

    loop {
        let done = standin
            .list("visitcounter.dev", "visitcounterapps")
            .iter()
            .filter(|a| converged(a))
            .count();
        if done == apps {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{done} of {apps} converged after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let converge = started.elapsed();
    let to_converge = standin.requests()[before..].to_vec();
    let writes_to_converge = to_converge.iter().filter(|r| r.is_write()).count();

    // Let the last status writes land, then watch one full resync (every app
    // reconciled again) and a compaction that makes every watch list again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = standin.requests().len();
    let reconciles = metric(&scrape(port).await, "visitcounter_operator_reconciles_total");
    standin.compact();
    let resync_started = Instant::now();
    loop {
        let now = metric(&scrape(port).await, "visitcounter_operator_reconciles_total");
        if now >= reconciles + apps as f64 {
            break;
        }
        assert!(resync_started.elapsed() < Duration::from_secs(120), "no full resync");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resync = standin.requests()[settled..].to_vec();
    let by_visits = |r: &&apiserver_standin::RecordedRequest| r.query.contains(VISITS_FIELD_MANAGER);
    let visits_writes = resync.iter().filter(|r| r.is_write()).filter(by_visits).count();
    let resync_writes = resync.iter().filter(|r| r.is_write()).count() - visits_writes;
    let peak_kib = memory_kib(pid, "VmHWM:").unwrap_or(0);
    let now_kib = memory_kib(pid, "VmRSS:").unwrap_or(0);
    let anon_kib = memory_kib(pid, "RssAnon:").unwrap_or(0);
    let file_kib = memory_kib(pid, "RssFile:").unwrap_or(0);

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let stopped = operator.wait().unwrap();
    assert!(stopped.success(), "the operator exits cleanly after SIGTERM: {stopped}");
    Figures {
        converge,
        requests_per_app: to_converge.len() as f64 / apps as f64,
        writes_per_app: writes_to_converge as f64 / apps as f64,
        resync_writes,
        visits_writes,
        resync_requests: resync.len(),
        peak_kib,
        now_kib,
        anon_kib,
        file_kib,
    }
}
