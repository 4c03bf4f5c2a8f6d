//! `-- --many N`: N apps (issue 29 asks for 10,000) on one operator, on a
//! control plane without nodes. It times the operator's part, every app's
//! status written for its spec (every child applied), and counts the
//! requests it took; then it waits for every app's first pod (Pending, and
//! reported in the app's status), and reads the operator's resident memory
//! a minute later and at its peak.
//!
//! The apps' Services are of type ClusterIP: the default NodePort range
//! holds 2,768 ports, and each further NodePort app is refused (its
//! `ApplyFailed` condition says `failed to allocate a nodePort: range is
//! full`).
//!
//! The StatefulSet controller creates each app's first pod and claim at its
//! client's requests a second: at the default 20, about 4 pods a second,
//! 40 minutes for 10,000 apps. Its controllers get `CONTROLLER_QPS` here.

use std::time::{Duration, Instant};

use crate::{
    ControlPlane, Goal, app_spec,
    audit::{ConvergedAt, PerApp, Requests},
    for_each_app, memory_kib, prepare, stop, wait_converged, watch_apps, with_cluster_ip,
};
use crate::{idle, peer::Peer};

/// What one run measured.
pub struct Many {
    pub count: usize,
    pub written: Duration,
    pub first_pods: Duration,
    pub requests: Requests,
    pub per_app: PerApp,
    pub empty_kib: u64,
    pub after_kib: u64,
    pub peak_kib: u64,
}

/// How long after the last first pod the memory is read.
const SETTLE: Duration = Duration::from_secs(60);

/// kube-controller-manager's requests a second, per controller.
const CONTROLLER_QPS: u32 = 100;

pub async fn run(count: usize) -> Many {
    let plane = ControlPlane::up_with(
        &format!("bench-many-{count}"),
        false,
        Peer::Visitcounter,
        CONTROLLER_QPS,
    );
    let client = plane.client().await;
    prepare(&client).await;
    let build = &idle::Build::all(&[])[0];
    let empty_kib = idle::empty_rss(&plane, build).await;
    for_each_app(&client, count, |name| with_cluster_ip(app_spec(2, name, None))).await;
    let (apps, watch) = watch_apps(&client).await;
    let audit = plane.audit();
    let started = Instant::now();
    let (mut operator, _) = idle::start(&plane, build);
    let pid = operator.id();
    let mut converged_at = ConvergedAt::new();
    let written = wait_converged(&apps, count, 2, Goal::StatusWritten, started, &mut converged_at).await;
    let so_far = audit.so_far();
    let first_pods = wait_converged(&apps, count, 2, Goal::FirstPod, started, &mut ConvergedAt::new()).await;
    // Read after the wait for the first pods, which its time would hold.
    let requests = so_far.operator_requests();
    let per_app = audit.writes_per_app_until(&audit.status_written_at(&converged_at));
    tokio::time::sleep(SETTLE).await;
    let many = Many {
        count,
        written,
        first_pods,
        requests,
        per_app,
        empty_kib,
        after_kib: memory_kib(pid, "VmRSS:").unwrap_or(0),
        peak_kib: memory_kib(pid, "VmHWM:").unwrap_or(0),
    };
    watch.abort();
    stop(&mut operator);
    many
}

pub fn print(figures: &[Many]) {
    println!(
        "many apps on one operator, a real Kubernetes v1.36.3 control plane without nodes (pods stay Pending), \
         apps of 2 replicas over {} namespaces",
        crate::NAMESPACES
    );
    let header: Vec<String> = figures.iter().map(|f| format!("{} apps", f.count)).collect();
    println!("| measure | {} | target |", header.join(" | "));
    println!("| --- |{} --- |", " --- |".repeat(figures.len()));
    let row = |measure: &str, cell: &dyn Fn(&Many) -> String, target: &str| {
        let cells: Vec<String> = figures.iter().map(cell).collect();
        println!("| {measure} | {} | {target} |", cells.join(" | "));
    };
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let per_app = |f: &Many, x: usize| x as f64 / f.count as f64;
    row(
        "seconds until every app's status is written",
        &|f| format!("{:.1}", f.written.as_secs_f64()),
        "",
    );
    row(
        "requests per app until then: reads / writes / dry runs",
        &|f| {
            format!(
                "{:.2} / {:.2} / {:.2}",
                per_app(f, f.requests.reads),
                per_app(f, f.requests.writes),
                per_app(f, f.requests.dry_runs)
            )
        },
        "",
    );
    row(
        "writes to each app until its own status was written: mean / most",
        &|f| {
            format!(
                "{:.2} / {} ({} writes to no app)",
                f.per_app.mean, f.per_app.max, f.per_app.unattributed
            )
        },
        "6",
    );
    row(
        &format!(
            "seconds until every first pod is reported (kube-controller-manager at {CONTROLLER_QPS} requests a second per controller)"
        ),
        &|f| format!("{:.1}", f.first_pods.as_secs_f64()),
        "",
    );
    row("RSS with no app", &|f| mib(f.empty_kib), "");
    row(
        &format!("RSS {} s after the last first pod (peak)", SETTLE.as_secs()),
        &|f| format!("{} ({})", mib(f.after_kib), mib(f.peak_kib)),
        "< 150 MiB at 10,000",
    );
    row(
        "bytes per app: (RSS after - RSS with no app) / apps",
        &|f| {
            format!(
                "{:.0}",
                (f.after_kib.saturating_sub(f.empty_kib) * 1024) as f64 / f.count as f64
            )
        },
        "",
    );
    println!();
    for f in figures {
        println!(
            "{} apps, requests per app until every status was written: {}",
            f.count,
            f.requests.breakdown(f.count)
        );
    }
}
