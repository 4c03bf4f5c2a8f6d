//! The update strategies the operator drives itself, each seen by a watch
//! on the app's pods from before the change until the rollout is done.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    api::DeleteParams,
    runtime::watcher::{self, Event},
};
use serde_json::json;
use visitcounter::resource::VisitCounterApp;

use crate::env::{Env, eventually, image};

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

fn events_with_reason(env: &Env, reason: &str) -> Vec<String> {
    let selector = format!("reason={reason}");
    let out = env.kubectl(&[
        "get",
        "events",
        "--field-selector",
        &selector,
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    out.lines().map(str::to_owned).collect()
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
    eventually("every pod runs the new revision and is Ready", || async {
        let app = env.api::<VisitCounterApp>().get("recreate").await.unwrap();
        let Some(new) = app
            .status
            .and_then(|s| s.update_revision)
            .filter(|r| *r != old_revision)
        else {
            return false;
        };
        let revisions: Vec<String> = history.lock().unwrap().live.values().cloned().collect();
        revisions.len() == 3 && revisions.iter().all(|r| *r == new) && env.ready_with_pods("recreate", 3).await
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
    let deleted = events_with_reason(env, "RecreatingPods");
    assert!(
        deleted
            .iter()
            .any(|m| ["recreate-0", "recreate-1", "recreate-2"].iter().all(|p| m.contains(p))),
        "one Event names every old pod deleted at once: {deleted:?}"
    );
    assert_eq!(env.claim_uids("recreate").await, claims, "the claims are kept");

    let app = env.api::<VisitCounterApp>().get("recreate").await.unwrap();
    let downtime = serde_json::to_value(app.status.and_then(|s| s.rollout).and_then(|r| r.downtime)).unwrap();
    assert!(
        downtime["until"].is_string() && downtime["seconds"].as_f64().is_some_and(|s| s >= 0.0),
        "the status measures the downtime: {downtime}"
    );
    eventually("a RecreateComplete Event says how long", || async {
        events_with_reason(env, "RecreateComplete")
            .iter()
            .any(|m| m.contains("no ready pod for"))
    })
    .await;
    env.api::<VisitCounterApp>()
        .delete("recreate", &DeleteParams::default())
        .await
        .unwrap();
}
