//! Load benchmark of `visitcounter serve` over loopback: group commit against
//! the one-fsync-per-visit baseline, side by side in one run, at 1, 16 and 64
//! concurrent clients. Prints durable visits per second, p50 and p99 latency
//! and the server's peak RSS.
//!
//! Run: `cargo bench --bench serve` (VISITCOUNTER_BENCH_SECONDS sets the
//! length of each measurement, default 3).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

const CLIENTS: [usize; 3] = [1, 16, 64];
const MODES: [&str; 2] = ["per-visit", "group"];

struct Figures {
    visits_per_second: f64,
    p50: Duration,
    p99: Duration,
    peak_rss_kib: u64,
}

fn main() {
    let seconds: f64 = std::env::var("VISITCOUNTER_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-bench");
    println!(
        "visitcounter serve, loopback, {seconds} s per row, data on {}",
        scratch.display()
    );
    println!(
        "{:<10} {:>7} {:>12} {:>9} {:>9} {:>10}",
        "commit", "clients", "visits/s", "p50 ms", "p99 ms", "peak RSS"
    );
    let mut results = Vec::new();
    for clients in CLIENTS {
        for mode in MODES {
            let figures = runtime.block_on(measure(&scratch, mode, clients, Duration::from_secs_f64(seconds)));
            println!(
                "{:<10} {:>7} {:>12.0} {:>9.2} {:>9.2} {:>7.1} MiB",
                mode,
                clients,
                figures.visits_per_second,
                figures.p50.as_secs_f64() * 1e3,
                figures.p99.as_secs_f64() * 1e3,
                figures.peak_rss_kib as f64 / 1024.0
            );
            results.push((mode, clients, figures));
        }
    }
    for clients in CLIENTS {
        let rate = |m: &str| {
            results
                .iter()
                .find(|(mode, c, _)| *mode == m && *c == clients)
                .map(|(_, _, f)| f.visits_per_second)
                .unwrap()
        };
        println!(
            "group / per-visit at {clients:>2} clients: {:.1}x",
            rate("group") / rate("per-visit")
        );
    }
}

async fn measure(scratch: &Path, mode: &str, clients: usize, length: Duration) -> Figures {
    let dir = scratch.join(format!("{mode}-{clients}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = scratch.join("config.json");
    std::fs::write(&config, "{}").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_visitcounter"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--commit",
            mode,
        ])
        .arg("--data-dir")
        .arg(&dir)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(port).await;

    let deadline = Instant::now() + length;
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(async move {
                let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
                let uri: hyper::Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let response = client.get(uri.clone()).await.unwrap();
                    assert!(response.status().is_success());
                    response.into_body().collect().await.unwrap();
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    let peak_rss_kib = peak_rss_kib(&server);
    stop(&mut server);

    // Every answered visit is on disk: the figures count durable visits only.
    let on_disk: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("visits.json")).unwrap()).unwrap();
    assert_eq!(on_disk["visits"].as_u64().unwrap(), latencies.len() as u64);

    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        visits_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        peak_rss_kib,
    }
}

async fn wait_ready(port: u16) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://127.0.0.1:{port}/readyz").parse().unwrap();
    for _ in 0..500 {
        if client.get(uri.clone()).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("server on port {port} never became ready");
}

/// VmHWM: the most resident memory the server has had.
fn peak_rss_kib(server: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn stop(server: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let status = server.wait().unwrap();
    assert!(status.success(), "server exit: {status}");
}
