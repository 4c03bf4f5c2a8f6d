//! A pod's status as a kubelet reports it, from what the agent knows of its
//! one container. Pure.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// The container's state.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// Not started: `reason` (ImagePullBackOff, CreateContainerConfigError,
    /// CrashLoopBackOff, ContainerCreating) and a message.
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: String,
    },
}

/// What the agent knows of a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub container: String,
    pub image: String,
    pub state: State,
    pub ready: bool,
    pub restarts: i32,
    /// The last termination: exit code, reason and when.
    pub last_exit: Option<(i32, String, String)>,
    /// Its termination message (`terminationMessagePolicy`).
    pub last_words: Option<String>,
    pub pod_ip: Option<Ipv4Addr>,
    pub host_ip: Ipv4Addr,
    pub start_time: String,
}

/// A failed run's termination message under `FallbackToLogsOnError`, as
/// a kubelet takes it from the run's log: its last 80 lines, at most its
/// last 2,048 bytes (cut at a character boundary).
pub fn log_tail(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let start = tail.len().saturating_sub(2048);
    let start = (start..=tail.len())
        .find(|i| tail.is_char_boundary(*i))
        .unwrap_or(tail.len());
    Some(tail[start..].to_owned()).filter(|t| !t.trim().is_empty())
}

fn condition(type_: &str, status: bool, at: &str) -> Value {
    json!({"type": type_, "status": if status { "True" } else { "False" }, "lastTransitionTime": at})
}

/// The pod's `status`, for a merge patch of the status subresource.
/// Transition times are `at` for conditions that changed from `previous`.
pub fn pod_status(seen: &Seen, previous: &Value, at: &str) -> Value {
    let running = matches!(seen.state, State::Running { .. });
    let since = |type_: &str, status: bool| {
        let old = previous["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned());
        match old {
            Some(old) if old["status"] == if status { "True" } else { "False" } => old,
            _ => condition(type_, status, at),
        }
    };
    let state = match &seen.state {
        State::Waiting { reason, message } => json!({"waiting": {"reason": reason, "message": message}}),
        State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
    };
    let mut container = json!({
        "name": seen.container,
        "image": seen.image,
        "imageID": "",
        "ready": seen.ready,
        "started": running,
        "restartCount": seen.restarts,
        "state": state,
    });
    if running {
        container["containerID"] = json!(format!("visitcounter-node://{}-{}", seen.container, seen.restarts));
    }
    if let Some((code, reason, finished)) = &seen.last_exit {
        container["lastState"] = json!({"terminated": {"exitCode": code, "reason": reason, "finishedAt": finished}});
        if let Some(words) = &seen.last_words {
            container["lastState"]["terminated"]["message"] = json!(words);
        }
    }
    let mut status = json!({
        "phase": if running || seen.restarts > 0 { "Running" } else { "Pending" },
        "hostIP": seen.host_ip.to_string(),
        "hostIPs": [{"ip": seen.host_ip.to_string()}],
        "startTime": seen.start_time,
        "conditions": [
            since("PodReadyToStartContainers", seen.pod_ip.is_some()),
            since("Initialized", true),
            since("ContainersReady", seen.ready),
            since("Ready", seen.ready),
            since("PodScheduled", true),
        ],
        "containerStatuses": [container],
    });
    if let Some(ip) = seen.pod_ip {
        status["podIP"] = json!(ip.to_string());
        status["podIPs"] = json!([{"ip": ip.to_string()}]);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(state: State, ready: bool) -> Seen {
        Seen {
            container: "web".into(),
            image: "visitcounter/visitcounter:0.1.0".into(),
            state,
            ready,
            restarts: 0,
            last_exit: None,
            last_words: None,
            pod_ip: Some(Ipv4Addr::new(10, 244, 0, 2)),
            host_ip: Ipv4Addr::new(10, 244, 0, 1),
            start_time: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn the_termination_message_is_the_end_of_the_log() {
        let log: String = (1..=100).map(|n| format!("line {n}\n")).collect();
        let tail = log_tail(&log).unwrap();
        assert!(tail.starts_with("line 21\n") && tail.ends_with("line 100"), "{tail}");
        let long = format!("{}\nerror: the end", "é".repeat(3000));
        let tail = log_tail(&long).unwrap();
        assert!(tail.len() <= 2048 && tail.ends_with("error: the end"));
        assert_eq!(log_tail("\n \n"), None);
        let mut crashed = seen(
            State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: "back-off".into(),
            },
            false,
        );
        crashed.last_exit = Some((1, "Error".into(), "t".into()));
        crashed.last_words = Some("error: the end".into());
        let status = pod_status(&crashed, &Value::Null, "t1");
        assert_eq!(
            status["containerStatuses"][0]["lastState"]["terminated"]["message"],
            "error: the end"
        );
    }

    #[test]
    fn a_ready_running_pod_says_so_everywhere() {
        let running = State::Running {
            started_at: "2026-01-01T00:00:01Z".into(),
        };
        let status = pod_status(&seen(running, true), &Value::Null, "t1");
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "10.244.0.2");
        let ready = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(
            (ready["status"].as_str(), ready["lastTransitionTime"].as_str()),
            (Some("True"), Some("t1"))
        );
        assert_eq!(status["containerStatuses"][0]["ready"], true);
        // Unchanged conditions keep their transition time.
        let again = pod_status(&seen(State::Running { started_at: "x".into() }, true), &status, "t2");
        let ready = again["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["lastTransitionTime"], "t1");
    }

    #[test]
    fn an_image_it_cannot_run_waits_pending() {
        let waiting = State::Waiting {
            reason: "ImagePullBackOff".into(),
            message: "Back-off pulling image".into(),
        };
        let status = pod_status(&seen(waiting, false), &Value::Null, "t1");
        assert_eq!(status["phase"], "Pending");
        assert_eq!(
            status["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ImagePullBackOff"
        );
    }
}
