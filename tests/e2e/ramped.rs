//! A rollout in steps (`rollingUpdate.steps`) on the real StatefulSet
//! controller: the pace is held, step by step, and a step whose pods never
//! get Ready aborts the rollout and rolls its pods back.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};
use kube::api::{DeleteParams, ListParams};
use serde_json::{Value, json};
use visitcounter::resource::VisitCounterApp;

use crate::env::{Env, NEVER_READY_IMAGE, eventually, image, pod_ready};

/// One look at the app: its step, and each pod's revision and readiness.
struct Sample {
    at: Instant,
    step: String,
    pods: BTreeMap<String, (String, bool)>,
}

impl Sample {
    /// The pods first, then the step the StatefulSet carries (written with
    /// its partition): steps only go forward, so the pods seen never had a
    /// later step than the one read after them.
    async fn take(env: &Env, app: &str) -> Self {
        let selector = format!("app.kubernetes.io/instance={app}");
        let listed = env
            .api::<Pod>()
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap();
        let pods = listed
            .items
            .iter()
            .map(|p| {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                let revision = labels.get("controller-revision-hash").cloned().unwrap_or_default();
                (p.metadata.name.clone().unwrap_or_default(), (revision, pod_ready(p)))
            })
            .collect();
        let sts = env.api::<StatefulSet>().get(app).await.unwrap();
        let annotations = sts.metadata.annotations.unwrap_or_default();
        let step = annotations
            .get("visitcounter.dev/rollout-step")
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .and_then(|s| s["step"].as_u64())
            .map(|s| {
                if s >= 3 {
                    "done".to_owned()
                } else {
                    format!("{} of 3", s + 1)
                }
            })
            .unwrap_or_default();
        Self {
            at: Instant::now(),
            step,
            pods,
        }
    }

    fn on(&self, revision: &str) -> usize {
        self.pods.values().filter(|(r, _)| r == revision).count()
    }
}

fn spec(color: &str, image: &str, abort: &str) -> Value {
    json!({"replicas": 3, "image": image, "config": {"json": {"color": color}}, "progressDeadlineSeconds": 8,
           "updateStrategy": {"rollingUpdate": {"abortAction": abort,
               "steps": [{"replicas": 1}, {"pauseSeconds": 4}, {"replicas": 2}]}}})
}

async fn revisions(env: &Env, app: &str) -> (String, String) {
    let status = env.api::<StatefulSet>().get(app).await.unwrap().status.unwrap();
    (status.current_revision.unwrap(), status.update_revision.unwrap())
}

/// Steps of 1 pod, a pause of 4 s, then 2 pods: the new revision reaches
/// no more pods than the step under way allows, the pause holds for its
/// time, and the rollout ends with every pod updated and the step `done`.
pub async fn the_pace_of_each_step_is_held(env: &Env) {
    env.apply_app("ramped", spec("red", &image(), "Hold")).await;
    eventually("ramped is Ready with 3 pods", || env.ready_with_pods("ramped", 3)).await;
    let (old, _) = revisions(env, "ramped").await;
    env.apply_app("ramped", spec("blue", &image(), "Hold")).await;
    let mut samples: Vec<Sample> = Vec::new();
    let started = Instant::now();
    loop {
        let sample = Sample::take(env, "ramped").await;
        let done = sample.step == "done" && sample.on(&old) == 0 && sample.pods.values().all(|(_, ready)| *ready);
        samples.push(sample);
        if done {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "the rollout did not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let updated = |s: &Sample| s.pods.len() - s.on(&old);
    // A step of pods can be over between two samples (kwok's pods turn
    // Ready at once); the pause of 4 s cannot. Each step seen held its pace.
    assert!(samples.iter().any(|s| s.step == "2 of 3"), "the pause was never seen");
    for (step, most) in [("1 of 3", 1), ("2 of 3", 1), ("3 of 3", 2)] {
        let peak = samples.iter().filter(|s| s.step == step).map(updated).max();
        assert!(
            peak.is_none_or(|peak| peak <= most),
            "at step {step}, {peak:?} pods were updated, at most {most} allowed"
        );
    }
    // Highest ordinal first: the first pod updated is ramped-2.
    let first = samples.iter().find_map(|s| {
        let mut on_new = s.pods.iter().filter(|(_, (r, _))| *r != old);
        on_new.next().map(|(name, _)| name.clone())
    });
    assert_eq!(first.as_deref(), Some("ramped-2"), "the first pod updated");
    // The pause: from its start to the second updated pod, at least 4 s.
    let pause_seen = samples.iter().find(|s| s.step == "2 of 3").unwrap().at;
    let second = samples.iter().find(|s| updated(s) >= 2).unwrap().at;
    assert!(
        second.duration_since(pause_seen) >= Duration::from_millis(3500),
        "the second pod was updated {:?} after the pause began",
        second.duration_since(pause_seen)
    );
    eventually("the status and its printer column say done", || async {
        let columns = env.kubectl(&["get", "vca", "ramped", "--no-headers"]);
        columns.split_whitespace().nth(3) == Some("done")
    })
    .await;
    env.api::<VisitCounterApp>()
        .delete("ramped", &DeleteParams::default())
        .await
        .unwrap();
}

/// A step whose pod never gets Ready aborts the rollout past
/// `progressDeadlineSeconds`: the app says so (Progressing False, Stalled,
/// a Warning Event), and with `abortAction: Rollback` the updated pod comes
/// back on the stable revision, on its claim, while the others are never
/// touched.
pub async fn an_aborted_step_rolls_back(env: &Env) {
    env.apply_app("aborted", spec("red", &image(), "Rollback")).await;
    eventually("aborted is Ready with 3 pods", || env.ready_with_pods("aborted", 3)).await;
    let (stable, _) = revisions(env, "aborted").await;
    let pods_before = env.pod_uids("aborted").await;
    let claims_before = env.claim_uids("aborted").await;
    env.apply_app("aborted", spec("red", NEVER_READY_IMAGE, "Rollback"))
        .await;
    let changed = Instant::now();
    eventually("aborted-2 runs the new revision", || async {
        let (_, update) = revisions(env, "aborted").await;
        update != stable
            && Sample::take(env, "aborted")
                .await
                .pods
                .get("aborted-2")
                .is_some_and(|(r, _)| *r == update)
    })
    .await;
    eventually("the rollout is aborted", || async {
        env.condition("aborted", "Progressing").await == Some(("False".into(), "RolloutAborted".into()))
    })
    .await;
    // The operator counts whole seconds from the step's start.
    let waited = changed.elapsed();
    assert!(
        waited >= Duration::from_secs(7),
        "aborted {waited:?} after the change, before the deadline"
    );
    assert_eq!(
        env.condition("aborted", "Stalled").await,
        Some(("True".into(), "RolloutAborted".into()))
    );
    eventually("the updated pod is back on the stable revision and Ready", || async {
        let sample = Sample::take(env, "aborted").await;
        sample.on(&stable) == 3 && env.ready_with_pods("aborted", 3).await
    })
    .await;
    let pods_after = env.pod_uids("aborted").await;
    assert_ne!(
        pods_after["aborted-2"], pods_before["aborted-2"],
        "aborted-2 was not replaced"
    );
    for pod in ["aborted-0", "aborted-1"] {
        assert_eq!(pods_after[pod], pods_before[pod], "{pod} was touched");
    }
    assert_eq!(env.claim_uids("aborted").await, claims_before, "a claim was replaced");
    let text = env
        .api::<VisitCounterApp>()
        .get("aborted")
        .await
        .unwrap()
        .status
        .unwrap()
        .rollout
        .unwrap()
        .step
        .unwrap()
        .text;
    assert_eq!(text, "aborted at 1 of 3");
    env.wait_for_event(
        "reason=RolloutAborted,type=Warning,involvedObject.name=aborted",
        "a Warning Event names the abort action",
        |m| m.contains("abortAction: Rollback"),
    )
    .await;
    env.wait_for_event("reason=RollingBack", "an Event names the pod rolled back", |m| {
        m.contains("aborted-2")
    })
    .await;
    env.api::<VisitCounterApp>()
        .delete("aborted", &DeleteParams::default())
        .await
        .unwrap();
}
