//! The update strategies the operator drives itself, each seen by a watch
//! on the app's pods from before the change until the rollout is done.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    api::{DeleteParams, ListParams},
    runtime::watcher::{self, Event},
};
use serde_json::json;
use visitcounter::resource::VisitCounterApp;

use crate::env::{AuditLog, Env, NEVER_READY_IMAGE, eventually, image};

/// What a watch on an app's pods saw: at each moment, the revisions of the
/// pods that existed (terminating ones included).
#[derive(Default)]
struct PodHistory {
    live: BTreeMap<String, String>,
    /// The most revisions present at one moment.
    most_revisions_at_once: usize,
    /// Every revision seen.
    seen: BTreeSet<String>,
}

impl PodHistory {
    fn saw(&mut self, pod: &Pod, present: bool) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let revision = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("controller-revision-hash"))
            .cloned()
            .unwrap_or_default();
        if present {
            self.seen.insert(revision.clone());
            self.live.insert(name, revision);
        } else {
            self.live.remove(&name);
        }
        let at_once: BTreeSet<&String> = self.live.values().collect();
        self.most_revisions_at_once = self.most_revisions_at_once.max(at_once.len());
    }
}

/// Watches the pods of `app` until the task is aborted.
fn watch_pods(env: &Env, app: &str) -> (Arc<Mutex<PodHistory>>, tokio::task::JoinHandle<()>) {
    let history = Arc::new(Mutex::new(PodHistory::default()));
    let config = watcher::Config::default().labels(&format!("app.kubernetes.io/instance={app}"));
    let stream = watcher::watcher(env.api::<Pod>(), config);
    let task = {
        let history = history.clone();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let mut history = history.lock().unwrap();
                match event {
                    Ok(Event::Apply(pod) | Event::InitApply(pod)) => history.saw(&pod, true),
                    Ok(Event::Delete(pod)) => history.saw(&pod, false),
                    _ => {}
                }
            }
        })
    };
    (history, task)
}

/// Whether the app reports an update revision other than `old`, and its
/// `replicas` pods all run it and are Ready.
async fn rolled_past(env: &Env, app: &str, old: &str, replicas: usize) -> bool {
    let status = env.api::<VisitCounterApp>().get(app).await.ok().and_then(|a| a.status);
    let Some(new) = status.and_then(|s| s.update_revision).filter(|r| r != old) else {
        return false;
    };
    let selector = format!("app.kubernetes.io/instance={app}");
    let pods = env
        .api::<Pod>()
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    let on_new = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("controller-revision-hash"))
            == Some(&new)
    };
    pods.items.iter().all(on_new) && env.ready_with_pods(app, replicas).await
}

/// `type: Recreate`: a new config deletes every pod at once, and no pod of
/// the new template exists while one of the old does; the claims stay, and
/// the status and an Event say how long no pod was ready.
pub async fn recreate(env: &Env) {
    let spec = |mode: &str| {
        json!({"replicas": 3, "image": image(), "updateStrategy": {"type": "Recreate"},
               "config": {"env": [{"name": "MODE", "value": mode}]}})
    };
    env.apply_app("recreate", spec("a")).await;
    eventually("recreate is Ready with 3 pods", || env.ready_with_pods("recreate", 3)).await;
    let claims = env.claim_uids("recreate").await;
    let sts = env.kubectl(&[
        "get",
        "statefulset",
        "recreate",
        "-o",
        "jsonpath={.spec.updateStrategy.type}",
    ]);
    assert_eq!(sts, "OnDelete", "the StatefulSet replaces no pod by itself");

    let (history, watching) = watch_pods(env, "recreate");
    eventually("the watch lists the 3 pods", || async {
        history.lock().unwrap().live.len() == 3
    })
    .await;
    let before = env.api::<VisitCounterApp>().get("recreate").await.unwrap();
    let old_revision = before.status.and_then(|s| s.update_revision).unwrap();

    env.apply_app("recreate", spec("b")).await;
    eventually("every pod runs the new revision and is Ready", || {
        rolled_past(env, "recreate", &old_revision, 3)
    })
    .await;
    watching.abort();
    {
        let history = history.lock().unwrap();
        assert!(
            history.seen.len() >= 2,
            "the watch saw both revisions: {:?}",
            history.seen
        );
        assert_eq!(
            history.most_revisions_at_once, 1,
            "pods of two revisions existed at once under Recreate"
        );
    }
    env.wait_for_event(
        "reason=RecreatingPods,involvedObject.name=recreate",
        "one Event names every old pod deleted at once",
        |m| ["recreate-0", "recreate-1", "recreate-2"].iter().all(|p| m.contains(p)),
    )
    .await;
    assert_eq!(env.claim_uids("recreate").await, claims, "the claims are kept");

    let app = env.api::<VisitCounterApp>().get("recreate").await.unwrap();
    let status = app.status.clone().unwrap_or_default();
    assert_eq!(
        status.current_revision, status.update_revision,
        "every pod runs the update revision, whatever the OnDelete StatefulSet says"
    );
    let downtime = serde_json::to_value(app.status.and_then(|s| s.rollout).and_then(|r| r.downtime)).unwrap();
    assert!(
        downtime["until"].is_string() && downtime["seconds"].as_f64().is_some_and(|s| s >= 0.0),
        "the status measures the downtime: {downtime}"
    );
    env.wait_for_event(
        "reason=RecreateComplete,involvedObject.name=recreate",
        "a RecreateComplete Event says how long",
        |m| m.contains("no ready pod for"),
    )
    .await;
    // Done, the app costs nothing more: resyncs (every 2 s here) write no
    // status, Event or child of it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    if let Some(window) = AuditLog::from_env() {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let writes: Vec<String> = window
            .operator_writes(&env.ns)
            .into_iter()
            .filter(|w| w.rsplit(' ').next().is_some_and(|name| name.starts_with("recreate")))
            .collect();
        assert!(writes.is_empty(), "writes after the recreate was done: {writes:#?}");
    }
    env.api::<VisitCounterApp>()
        .delete("recreate", &DeleteParams::default())
        .await
        .unwrap();
}

/// A rollout whose new pods never become ready turns `Stalled` once
/// `progressDeadlineSeconds` pass without progress, under the StatefulSet's
/// own rolling update, under `Recreate` and under `BlueGreen`; a revert
/// brings it back.
pub async fn progress_deadline(env: &Env) {
    for (name, strategy) in [
        ("deadline-rolling", "RollingUpdate"),
        ("deadline-recreate", "Recreate"),
        ("deadline-bluegreen", "BlueGreen"),
    ] {
        let spec = |image: &str| {
            json!({"replicas": 2, "image": image, "podManagementPolicy": "Parallel",
                   "progressDeadlineSeconds": 5, "updateStrategy": {"type": strategy}})
        };
        env.apply_app(name, spec(&image())).await;
        eventually(&format!("{name} is Ready"), || env.ready_with_pods(name, 2)).await;
        let applied = std::time::Instant::now();
        env.apply_app(name, spec(NEVER_READY_IMAGE)).await;
        eventually(&format!("{name} passes its progress deadline"), || async {
            env.condition(name, "Progressing").await == Some(("False".into(), "ProgressDeadlineExceeded".into()))
        })
        .await;
        // The status keeps times in whole seconds, so against this test's
        // clock the deadline may pass up to a second early; on the status's
        // own clock it passes no sooner than 5 s after the last progress.
        let took = applied.elapsed();
        assert!(
            took.as_secs_f64() >= 4.0,
            "{name}: Stalled after {took:?}, more than a second before its deadline of 5 s"
        );
        let status = env.api::<VisitCounterApp>().get(name).await.unwrap().status.unwrap();
        let last_progress = status
            .rollout
            .and_then(|r| r.last_progress)
            .expect("rollout.lastProgress");
        let stalled_at = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .map(|c| c.last_transition_time.0)
            .unwrap();
        let waited = stalled_at.as_second() - last_progress.0.as_second();
        assert!(
            waited >= 5,
            "{name}: Stalled {waited} s after its last progress ({}), before its deadline of 5 s",
            last_progress.0
        );
        assert_eq!(
            env.condition(name, "Stalled").await,
            Some(("True".into(), "ProgressDeadlineExceeded".into())),
            "{name}: kstatus reads the rollout as failed"
        );
        assert_eq!(
            env.condition(name, "Reconciling").await.map(|c| c.0),
            Some("False".into()),
            "{name}"
        );
        env.wait_for_event(
            &format!("reason=ProgressDeadlineExceeded,involvedObject.name={name}"),
            &format!("{name}: a Warning Event says so"),
            |m| m.contains("no progress for 5 s"),
        )
        .await;
        env.apply_app(name, spec(&image())).await;
        eventually(&format!("{name} is Ready again after the revert"), || {
            env.ready_with_pods(name, 2)
        })
        .await;
        eventually(&format!("{name} is no longer Stalled"), || async {
            env.condition(name, "Stalled").await.is_some_and(|c| c.0 == "False")
        })
        .await;
        env.api::<VisitCounterApp>()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// `rollingUpdate.maxUnavailable: 2` on 4 pods: at most 2 unavailable at
/// any moment of a config roll, and 2 at some moment, whether the API
/// server keeps the field or the operator keeps to it.
pub async fn max_unavailable(env: &Env) {
    let spec = |mode: &str| {
        json!({"replicas": 4, "image": image(), "podManagementPolicy": "Parallel",
               "updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}},
               "config": {"env": [{"name": "MODE", "value": mode}]}})
    };
    env.apply_app("maxun", spec("a")).await;
    eventually("maxun is Ready with 4 pods", || env.ready_with_pods("maxun", 4)).await;
    let unavailable = Arc::new(Mutex::new((
        0usize,
        BTreeMap::<String, bool>::new(),
        Vec::<String>::new(),
    )));
    let config = watcher::Config::default().labels("app.kubernetes.io/instance=maxun");
    let stream = watcher::watcher(env.api::<Pod>(), config);
    let watching = {
        let unavailable = unavailable.clone();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let mut seen = unavailable.lock().unwrap();
                match event {
                    Ok(Event::Apply(pod) | Event::InitApply(pod)) => {
                        let available = pod.metadata.deletion_timestamp.is_none() && crate::env::pod_ready(&pod);
                        let name = pod.metadata.name.unwrap_or_default();
                        seen.2.push(format!("{name} available={available}"));
                        seen.1.insert(name, available);
                    }
                    Ok(Event::Delete(pod)) => {
                        let name = pod.metadata.name.unwrap_or_default();
                        seen.2.push(format!("{name} deleted"));
                        seen.1.remove(&name);
                    }
                    _ => continue,
                }
                let down = 4 - seen.1.values().filter(|a| **a).count();
                seen.2.push(format!("  {down} unavailable"));
                seen.0 = seen.0.max(down);
            }
        })
    };
    eventually("the watch sees 4 available pods", || async {
        unavailable.lock().unwrap().1.values().filter(|a| **a).count() == 4
    })
    .await;
    {
        // The pods as first listed, one by one, are no rollout.
        let mut seen = unavailable.lock().unwrap();
        seen.0 = 0;
        seen.2.clear();
    }
    let before = env.api::<VisitCounterApp>().get("maxun").await.unwrap();
    let old_revision = before.status.and_then(|s| s.update_revision).unwrap();
    env.apply_app("maxun", spec("b")).await;
    eventually("every pod runs the new revision and is Ready", || {
        rolled_past(env, "maxun", &old_revision, 4)
    })
    .await;
    watching.abort();
    let (peak, timeline) = {
        let seen = unavailable.lock().unwrap();
        (seen.0, seen.2.join("\n"))
    };
    assert!(
        peak <= 2,
        "{peak} pods were unavailable at once, over maxUnavailable 2:\n{timeline}"
    );
    assert!(
        peak == 2,
        "at most {peak} pod unavailable at once: maxUnavailable 2 had no effect:\n{timeline}"
    );
    env.api::<VisitCounterApp>()
        .delete("maxun", &DeleteParams::default())
        .await
        .unwrap();
}
