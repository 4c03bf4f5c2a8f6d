//! One pod's life on this node, as a kubelet lives it: its network and
//! volumes, its container started (or, for an image this node cannot run,
//! left in ImagePullBackOff), its probes run, restarts after an exit or a
//! failed liveness probe, and on deletion SIGTERM, the grace period,
//! SIGKILL, and only then the pod's removal from the API server.

use std::{path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
};
use serde_json::{Value, json};
use tokio::{process::Child, sync::watch, time::Instant};

use crate::{
    Error,
    container::launch,
    net::{Network, netns_path},
    probe::HttpCheck,
    spawn::spawn,
    status::{Seen, State, pod_status},
    volumes,
};

/// What the node shares with every pod it runs.
pub struct Node {
    pub client: Client,
    pub network: Network,
    pub name: String,
    pub state_dir: PathBuf,
    /// The binary that is the image's entrypoint.
    pub binary: PathBuf,
    /// The image repository this node runs (`visitcounter/visitcounter`).
    pub image: String,
}

/// How a pod is told to stop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    Running,
    /// Deleted gracefully: this many seconds between SIGTERM and SIGKILL.
    Graceful(i64),
    /// Gone from the API server already: stop now.
    Gone,
}

fn now() -> String {
    format!("{:.0}", Timestamp::now())
}

/// Whether `image` is of `repository` (any tag or digest).
pub fn runs_image(repository: &str, image: &str) -> bool {
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rsplit_once(':') {
        Some((n, tag)) if !tag.contains('/') => n,
        _ => name,
    };
    name == repository || name.strip_suffix(repository).is_some_and(|p| p.ends_with('/'))
}

struct Reporter {
    api: Api<Pod>,
    name: String,
    sent: Value,
}

impl Reporter {
    async fn report(&mut self, seen: &Seen) {
        let status = pod_status(seen, &self.sent, &now());
        if status == self.sent {
            return;
        }
        let patch = json!({"status": status});
        match self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.sent = status,
            Err(error) => tracing::warn!(pod = %self.name, %error, "cannot report the pod's status"),
        }
    }
}

/// Runs `pod` until `stop` says otherwise.
pub async fn supervise(node: Arc<Node>, pod: Pod, mut stop: watch::Receiver<Stop>) {
    let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let container = spec.containers.first().cloned().unwrap_or_default();
    let image = container.image.clone().unwrap_or_default();
    let mut reporter = Reporter {
        api: Api::namespaced(node.client.clone(), &namespace),
        name: name.clone(),
        sent: serde_json::to_value(&pod.status).unwrap_or_default(),
    };
    let mut seen = Seen {
        container: container.name.clone(),
        image: image.clone(),
        state: State::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        },
        ready: false,
        restarts: 0,
        last_exit: None,
        last_words: None,
        pod_ip: None,
        host_ip: node.network.node_ip(),
        start_time: pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or_else(now, |t| format!("{:.0}", t.0)),
    };
    tracing::info!(pod = %format!("{namespace}/{name}"), %image, "starting");

    if !runs_image(&node.image, &image) || spec.containers.len() != 1 {
        seen.state = State::Waiting {
            reason: "ImagePullBackOff".into(),
            message: format!(
                "Back-off pulling image \"{image}\": this node runs only {} in pods of one container",
                node.image
            ),
        };
        reporter.report(&seen).await;
        let end = wait_for_stop(&mut stop).await;
        finish(&node, &reporter.api, &name, &uid, end).await;
        return;
    }

    let net = loop {
        match node.network.add_pod() {
            Ok(net) => break net,
            Err(error) => {
                tracing::warn!(pod = %name, %error, "cannot make the pod's network; trying again");
                if sleep_or_stop(&mut stop, Duration::from_secs(2)).await {
                    finish(&node, &reporter.api, &name, &uid, current(&stop)).await;
                    return;
                }
            }
        }
    };
    seen.pod_ip = Some(net.ip);
    let pod_dir = node.state_dir.join("pods").join(&uid);
    let netns = netns_path(&net.namespace);
    let ports: Vec<(String, u16)> = container
        .ports
        .iter()
        .flatten()
        .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
        .collect();
    let readiness = container
        .readiness_probe
        .as_ref()
        .and_then(|p| HttpCheck::from_probe(p, &ports));
    let liveness = container
        .liveness_probe
        .as_ref()
        .and_then(|p| HttpCheck::from_probe(p, &ports));
    let grace = spec.termination_grace_period_seconds.unwrap_or(30);

    let mut end = Stop::Running;
    let mut backoff = Duration::from_secs(1);
    while end == Stop::Running {
        // Volumes and environment, made again for each start, as a kubelet
        // does for a restarted container.
        let prepared = async {
            let volumes = volumes::prepare(&node.client, &pod, &pod_dir.join("volumes")).await?;
            launch(&node.client, &pod, &container, &volumes, net.ip, node.network.node_ip()).await
        }
        .await;
        let launch = match prepared {
            Ok(launch) => launch,
            Err(error) => {
                let message = error.to_string();
                let waited = Duration::from_secs(2);
                end = wait(
                    &mut seen,
                    &mut reporter,
                    &mut stop,
                    "CreateContainerConfigError",
                    message,
                    waited,
                )
                .await;
                continue;
            }
        };
        let root = pod_dir.join("root").join(seen.restarts.to_string());
        let log = pod_dir.join(format!("{}.log", container.name));
        let run_starts_at = std::fs::metadata(&log).map_or(0, |m| m.len());
        let child = match spawn(&launch, &netns, &root, &node.binary, &log) {
            Ok(child) => child,
            Err(error) => {
                let message = error.to_string();
                end = wait(
                    &mut seen,
                    &mut reporter,
                    &mut stop,
                    "RunContainerError",
                    message,
                    backoff,
                )
                .await;
                continue;
            }
        };
        seen.state = State::Running { started_at: now() };
        seen.ready = readiness.is_none();
        reporter.report(&seen).await;
        let (outcome, ran_for) = run(
            child,
            &mut stop,
            &net.namespace,
            net.ip,
            &readiness,
            &liveness,
            grace,
            &mut seen,
            &mut reporter,
        )
        .await;
        seen.ready = false;
        match outcome {
            Outcome::Stopped(how) => end = how,
            Outcome::Exited(code) => {
                let reason = if code == 0 { "Completed" } else { "Error" };
                tracing::info!(pod = %name, code, "the container exited; restarting");
                seen.last_exit = Some((code, reason.into(), now()));
                seen.last_words = (code != 0 && falls_back_to_logs(&container))
                    .then(|| run_log(&log, run_starts_at))
                    .flatten();
                seen.restarts += 1;
                // A container that ran a while restarts at once; one that
                // keeps failing waits longer each time, up to 10 s.
                backoff = if ran_for > Duration::from_secs(10) {
                    Duration::from_secs(1)
                } else {
                    (backoff * 2).min(Duration::from_secs(10))
                };
                let message = format!("back-off {}s restarting failed container", backoff.as_secs());
                end = wait(
                    &mut seen,
                    &mut reporter,
                    &mut stop,
                    "CrashLoopBackOff",
                    message,
                    backoff,
                )
                .await;
            }
        }
    }
    node.network.remove_pod(&net);
    let _ = std::fs::remove_dir_all(&pod_dir);
    finish(&node, &reporter.api, &name, &uid, end).await;
}

/// Whether a failed run's termination message comes from its log.
fn falls_back_to_logs(container: &k8s_openapi::api::core::v1::Container) -> bool {
    container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
}

/// The end of the log of the run that started at byte `from`.
fn run_log(log: &std::path::Path, from: u64) -> Option<String> {
    let bytes = std::fs::read(log).ok()?;
    let from = usize::try_from(from).unwrap_or(0).min(bytes.len());
    crate::status::log_tail(&String::from_utf8_lossy(&bytes[from..]))
}

enum Outcome {
    Exited(i32),
    Stopped(Stop),
}

/// Runs the started container: probes every period, until it exits, fails
/// its liveness probe (killed, reported as exited), or is stopped.
#[allow(clippy::too_many_arguments)]
async fn run(
    mut child: Child,
    stop: &mut watch::Receiver<Stop>,
    netns: &str,
    ip: std::net::Ipv4Addr,
    readiness: &Option<HttpCheck>,
    liveness: &Option<HttpCheck>,
    grace: i64,
    seen: &mut Seen,
    reporter: &mut Reporter,
) -> (Outcome, Duration) {
    let started = Instant::now();
    let mut next_ready = readiness.as_ref().map(|c| started + c.initial_delay);
    let mut next_live = liveness.as_ref().map(|c| started + c.initial_delay);
    let (mut successes, mut failures, mut live_failures) = (0u32, 0u32, 0u32);
    loop {
        let wake = [next_ready, next_live].into_iter().flatten().min();
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            exit = child.wait() => {
                let code = exit.ok().and_then(|s| s.code().or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    s.signal().map(|n| 128 + n)
                })).unwrap_or(-1);
                return (Outcome::Exited(code), started.elapsed());
            }
            changed = stop.changed() => {
                let how = if changed.is_err() { Stop::Gone } else { current(stop) };
                if how != Stop::Running {
                    let grace = match how { Stop::Graceful(s) => s, _ => 0 };
                    terminate(&mut child, Duration::from_secs(grace.max(0) as u64)).await;
                    return (Outcome::Stopped(how), started.elapsed());
                }
            }
            () = sleep => {
                let now = Instant::now();
                if let (Some(check), Some(at)) = (readiness, next_ready) && at <= now {
                    next_ready = Some(now + check.period);
                    if check.passes(netns, ip).await {
                        successes += 1;
                        failures = 0;
                    } else {
                        failures += 1;
                        successes = 0;
                    }
                    let ready = if successes >= check.success_threshold {
                        true
                    } else if failures >= check.failure_threshold {
                        false
                    } else {
                        seen.ready
                    };
                    seen.ready = ready;
                    // At every probe, not only at a change: a report the
                    // API server missed (it was restarting) goes again. An
                    // unchanged status sends nothing.
                    reporter.report(seen).await;
                }
                if let (Some(check), Some(at)) = (liveness, next_live) && at <= now {
                    next_live = Some(now + check.period);
                    if check.passes(netns, ip).await {
                        live_failures = 0;
                    } else {
                        live_failures += 1;
                        if live_failures >= check.failure_threshold {
                            tracing::info!(pod = %reporter.name, "liveness probe failed; killing the container");
                            terminate(&mut child, Duration::from_secs(grace.max(0) as u64)).await;
                            return (Outcome::Exited(137), started.elapsed());
                        }
                    }
                }
            }
        }
    }
}

/// SIGTERM, up to `grace` for the process to exit, then SIGKILL.
async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        // SAFETY: a signal to our own child, by its pid while it is ours.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// How the pod is told to stop now (the lock is not held past this call,
/// so never across an await).
fn current(stop: &watch::Receiver<Stop>) -> Stop {
    *stop.borrow()
}

/// Waits for a stop; returns how.
async fn wait_for_stop(stop: &mut watch::Receiver<Stop>) -> Stop {
    loop {
        if stop.changed().await.is_err() {
            return Stop::Gone;
        }
        let how = current(stop);
        if how != Stop::Running {
            return how;
        }
    }
}

/// Reports the container waiting (`reason`, `message`), then sleeps `for_`;
/// returns how the pod was told to stop meanwhile (`Running` if it was not).
async fn wait(
    seen: &mut Seen,
    reporter: &mut Reporter,
    stop: &mut watch::Receiver<Stop>,
    reason: &str,
    message: String,
    for_: Duration,
) -> Stop {
    seen.state = State::Waiting {
        reason: reason.into(),
        message,
    };
    reporter.report(seen).await;
    if sleep_or_stop(stop, for_).await {
        current(stop)
    } else {
        Stop::Running
    }
}

/// Sleeps `for_`; true when told to stop meanwhile.
async fn sleep_or_stop(stop: &mut watch::Receiver<Stop>, for_: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(for_) => current(stop) != Stop::Running,
        _ = wait_for_stop(stop) => true,
    }
}

/// The pod's processes are gone: remove it from the API server, as a kubelet
/// does once a deleted pod has stopped (by uid: never a successor of the
/// same name). Tried again until the API server answers: a pod left
/// terminating holds its StatefulSet's rollout for good (an API server
/// restarted just then refused the one try).
async fn finish(node: &Node, api: &Api<Pod>, name: &str, uid: &str, how: Stop) {
    if how == Stop::Gone {
        return;
    }
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    for attempt in 1..=FINISH_ATTEMPTS {
        match api.delete(name, &params).await {
            Ok(_) => break,
            // Gone already, or a successor of the same name: done.
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => break,
            Err(error) => {
                tracing::warn!(pod = %name, node = %node.name, %error, attempt, "removing the stopped pod; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    tracing::info!(pod = %name, "stopped and removed");
}

/// How many times `finish` tries, a second apart: past an API server's
/// restart.
const FINISH_ATTEMPTS: u32 = 120;

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Error::Io(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::runs_image;

    #[test]
    fn runs_its_repository_at_any_tag_or_digest_and_nothing_else() {
        let repo = "visitcounter/visitcounter";
        assert!(runs_image(repo, "visitcounter/visitcounter:0.1.0"));
        assert!(runs_image(repo, "visitcounter/visitcounter@sha256:abc"));
        assert!(runs_image(repo, "docker.io/visitcounter/visitcounter:latest"));
        assert!(!runs_image(repo, "example.invalid/never-ready:v1"));
        assert!(!runs_image(repo, "other/visitcounter:1"));
        assert!(!runs_image(repo, "localhost:5000/xvisitcounter/visitcounter"));
    }
}
