//! Pods whose container crashes and restarts: a volume the app cannot
//! write (a StorageClass whose volumes ignore `fsGroup`, such as hostPath
//! and local volumes), a config it refuses, a bug. The StatefulSet's status
//! only counts them as not ready; the app says which pod crashes and the
//! container's last words (its termination message, which
//! `terminationMessagePolicy: FallbackToLogsOnError` fills from the end of
//! its log).
//!
//! A pod counts while it is not Ready, its container has restarted at
//! least twice (one crash, a `kill -9` or an OOM kill, is not a loop) and
//! its last run ended in failure: through each back-off and restart, until
//! a run gets Ready. So the words stay put across the crash loop, and the
//! status is written once, not at each restart.
//!
//! Pure: the pods come in as arguments.

use k8s_openapi::api::core::v1::ContainerStatus;
use kube::ResourceExt;

use super::pods::is_ready;
use crate::controller::{runtime::slim_pod::SlimPod, text::cut};

/// The `Degraded` reason while pods crash and restart.
pub const PODS_CRASH_LOOPING: &str = "PodsCrashLooping";

/// Most of a container's last words the status repeats.
pub const WORDS_KEPT: usize = 1024;

/// A pod that crashes and restarts.
#[derive(Clone, Debug, PartialEq)]
pub struct Crashing {
    pub pod: String,
    pub exit_code: i32,
    /// Its termination message, or the end of its log.
    pub words: Option<String>,
}

/// The app's pods that crash and restart, by name.
pub fn crashing<'a>(pods: impl IntoIterator<Item = &'a SlimPod>) -> Vec<Crashing> {
    let mut found: Vec<Crashing> = pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !is_ready(p))
        .filter_map(|p| p.failed_runs.iter().find_map(|s| crash_of(&p.name_any(), s)))
        .collect();
    found.sort_by(|a, b| a.pod.cmp(&b.pod));
    found
}

/// Restarts before a pod whose last run failed counts as crash-looping.
const RESTARTS_OF_A_LOOP: i32 = 2;

fn crash_of(pod: &str, status: &ContainerStatus) -> Option<Crashing> {
    let last = status.last_state.as_ref()?.terminated.as_ref()?;
    (last.exit_code != 0 && status.restart_count >= RESTARTS_OF_A_LOOP).then(|| Crashing {
        pod: pod.to_owned(),
        exit_code: last.exit_code,
        words: last
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned),
    })
}

/// `Degraded`'s words: how many pods crash, the first one's exit code and
/// last words. No restart count, so the words do not change at each
/// restart.
pub fn message(crashing: &[Crashing], wanted: i32) -> Option<String> {
    let first = crashing.first()?;
    let words = match &first.words {
        Some(words) => format!("its last words: {}", last_line_first(words)),
        None => "it left no termination message".to_owned(),
    };
    Some(format!(
        "{} of {wanted} pods crash and restart; {} exited with code {}, {words}",
        crashing.len(),
        first.pod,
        first.exit_code,
    ))
}

/// The words, the last line (where a program says why it stops) first,
/// cut to [`WORDS_KEPT`] bytes at a character boundary.
fn last_line_first(words: &str) -> String {
    let mut lines: Vec<&str> = words.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    let last = lines.pop().unwrap_or_default();
    let before = lines.join(" / ");
    let joined = if before.is_empty() {
        last.to_owned()
    } else {
        format!("{last} (before it: {before})")
    };
    cut(&joined, WORDS_KEPT)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, ready: bool, state: serde_json::Value, last: serde_json::Value) -> SlimPod {
        restarted(name, ready, state, last, 2)
    }

    fn restarted(name: &str, ready: bool, state: serde_json::Value, last: serde_json::Value, restarts: i32) -> SlimPod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "containerStatuses": [{"name": "app", "image": "i", "imageID": "", "ready": ready,
                                       "restartCount": restarts, "state": state, "lastState": last}],
            },
        }))
        .unwrap()
    }

    fn crashed(code: i32, message: &str) -> serde_json::Value {
        json!({"terminated": {"exitCode": code, "reason": "Error", "message": message}})
    }

    const BACK_OFF: &str = "back-off 20s restarting failed container";

    #[test]
    fn a_pod_not_ready_whose_last_run_failed_crashes() {
        let unwritable = "error: data directory /data is not writable: Permission denied (os error 13)\n";
        let waiting = json!({"waiting": {"reason": "CrashLoopBackOff", "message": BACK_OFF}});
        let running = json!({"running": {"startedAt": "2026-12-06T07:00:00Z"}});
        let pods = [
            pod("web-1", false, running.clone(), crashed(1, unwritable)),
            pod("web-0", false, waiting, crashed(1, unwritable)),
            pod("web-2", true, running.clone(), crashed(1, "once")),
            pod("web-3", false, running.clone(), crashed(0, "done")),
            pod("web-4", false, running.clone(), json!({})),
            restarted("web-5", false, running, crashed(137, "killed"), 1),
        ];
        let found = crashing(&pods);
        let names: Vec<&str> = found.iter().map(|c| c.pod.as_str()).collect();
        assert_eq!(
            names,
            ["web-0", "web-1"],
            "Ready, exit 0, never crashed and crashed once are not"
        );
        assert_eq!(
            message(&found, 3).unwrap(),
            "2 of 3 pods crash and restart; web-0 exited with code 1, its last words: \
             error: data directory /data is not writable: Permission denied (os error 13)"
        );
    }

    #[test]
    fn the_last_line_goes_first_and_long_words_are_cut() {
        let found = [Crashing {
            pod: "web-0".into(),
            exit_code: 2,
            words: Some("starting\nlistening\npanicked: boom".into()),
        }];
        assert!(
            message(&found, 1)
                .unwrap()
                .ends_with("its last words: panicked: boom (before it: starting / listening)")
        );
        let silent = [Crashing {
            words: None,
            ..found[0].clone()
        }];
        assert!(message(&silent, 1).unwrap().ends_with("it left no termination message"));
        assert_eq!(message(&[], 1), None);
        let long = "é".repeat(WORDS_KEPT);
        let cut = cut(&long, WORDS_KEPT);
        assert!(cut.len() <= WORDS_KEPT + "…".len() && cut.ends_with('…'));
    }
}
