//! Which changes wake an app's reconcile. Every watched change of an app or
//! of a child it owns does, but for the two kinds of object that change
//! often without anything for the reconcile to do: a pod (its readiness,
//! revision, deletion and crash loop matter, not its probes' times or
//! restart count) and the app itself (the visits poller's `status.visits`
//! matters only to a blue/green carry under way).

use std::hash::{Hash, Hasher};

use super::{
    observe::{crash_loops::crashing, pods::ready_condition},
    runtime::slim_pod::SlimPod,
};
use crate::resource::VisitCounterApp;

/// The parts of an app a reconcile acts on: its identity, spec
/// (generation), labels, annotations, deletion and status, but not the
/// visits poller's counts (`status.visits`) unless a blue/green carry is
/// under way, which waits for counts asked after a switch. Otherwise each
/// count the poller writes would cost a reconcile that finds nothing to do.
pub fn app_state(app: &VisitCounterApp) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let meta = &app.metadata;
    (&meta.uid, meta.generation, &meta.labels, &meta.annotations).hash(&mut hasher);
    (meta.deletion_timestamp.is_some(), &meta.finalizers).hash(&mut hasher);
    let mut status = app.status.clone();
    if let Some(status) = status.as_mut().filter(|s| !carrying(s)) {
        status.visits = None;
    }
    serde_json::to_string(&status).unwrap_or_default().hash(&mut hasher);
    Some(hasher.finish())
}

/// Whether a blue/green carry between two StatefulSets is under way.
fn carrying(status: &crate::resource::VisitCounterAppStatus) -> bool {
    status
        .rollout
        .as_ref()
        .and_then(|r| r.blue_green.as_ref())
        .is_some_and(|b| b.carry.is_some())
}

/// The parts of a pod that can change a rollout's state or the app's
/// conditions: its readiness, its revision, whether it is going away, and
/// whether it crashes and restarts, with what exit code and last words (not
/// its restart count: one reconcile per crash loop, not per restart).
pub fn pod_rollout_state(pod: &SlimPod) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ready_condition(pod).map(|c| &c.status).hash(&mut hasher);
    pod.revision().hash(&mut hasher);
    pod.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    for crash in crashing([pod]) {
        (crash.exit_code, crash.words).hash(&mut hasher);
    }
    Some(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(generation: i64, visits: i64, carry: bool) -> VisitCounterApp {
        let mut blue_green = serde_json::json!({"serving": "web", "previewService": "web-preview"});
        if carry {
            blue_green["carry"] = serde_json::json!({"from": "web", "to": "web-green", "key": "k1"});
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "visitcounter.dev/v1alpha1", "kind": "VisitCounterApp",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "generation": generation},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "replicas": 2, "rollout": {"heldReplicas": 0, "blueGreen": blue_green},
                       "visits": {"total": visits, "complete": true, "pods": []}},
        }))
        .unwrap()
    }

    #[test]
    fn a_new_count_wakes_an_app_only_while_a_blue_green_carry_is_under_way() {
        assert_eq!(app_state(&app(1, 3, false)), app_state(&app(1, 4, false)));
        assert_ne!(app_state(&app(1, 3, true)), app_state(&app(1, 4, true)));
    }

    #[test]
    fn a_new_spec_or_status_wakes_the_app() {
        assert_ne!(app_state(&app(1, 3, false)), app_state(&app(2, 3, false)), "spec");
        let mut written = app(1, 3, false);
        written.status.as_mut().unwrap().ready_replicas = 2;
        assert_ne!(app_state(&app(1, 3, false)), app_state(&written), "status");
    }

    fn pod(restarts: i32, last_exit: i32) -> SlimPod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "labels": {"controller-revision-hash": "web-1"}},
            "status": {
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "app", "image": "x", "imageID": "", "ready": false,
                    "restartCount": restarts,
                    "lastState": {"terminated": {"exitCode": last_exit, "message": "cannot write /data"}}}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_crash_loop_is_worth_one_reconcile_not_one_per_restart() {
        let (first_crash, looping, later) = (pod(1, 1), pod(2, 1), pod(5, 1));
        assert_ne!(
            pod_rollout_state(&first_crash),
            pod_rollout_state(&looping),
            "entering a loop"
        );
        assert_eq!(
            pod_rollout_state(&looping),
            pod_rollout_state(&later),
            "a further restart"
        );
        assert_ne!(
            pod_rollout_state(&later),
            pod_rollout_state(&pod(5, 2)),
            "another exit code"
        );
    }
}
