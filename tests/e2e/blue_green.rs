//! `updateStrategy.type: BlueGreen`: a second StatefulSet of the new
//! template, the user-facing Service switched to it in one write once its
//! pods are Ready, the previous one kept for the delay and then deleted,
//! and a revert within the delay switched back at once. Seen by one watch
//! on the Service and the app's pods, ordered by resourceVersion.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Service},
};
use kube::{
    api::DeleteParams,
    runtime::watcher::{self, Event},
};
use serde_json::json;
use visitcounter::resource::VisitCounterApp;

use crate::{
    env::{AuditLog, Env, OperatorProcess, eventually, image, pod_ready},
    shadow::mode,
};

const REVISION: &str = "controller-revision-hash";

/// A pod's revision and readiness, `None` once deleted.
type PodState = Option<(String, bool)>;

/// What one watch saw, each change at its resourceVersion (this cluster's
/// etcd orders them; a test may read them as numbers).
#[derive(Default)]
struct Seen {
    /// Per pod: (resourceVersion, revision, ready) at each change; `None`
    /// once deleted.
    pods: BTreeMap<String, Vec<(u64, PodState)>>,
    /// The Service's selected revision at each change of it.
    switches: Vec<(u64, Option<String>)>,
}

impl Seen {
    fn pod(&mut self, pod: &Pod, present: bool) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let state = present.then(|| {
            let revision = pod.metadata.labels.as_ref().and_then(|l| l.get(REVISION)).cloned();
            (revision.unwrap_or_default(), pod_ready(pod))
        });
        self.pods
            .entry(name)
            .or_default()
            .push((rv(&pod.metadata.resource_version), state));
    }

    fn service(&mut self, service: &Service) {
        let selected = service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.get(REVISION))
            .cloned();
        if self.switches.last().map(|(_, r)| r) != Some(&selected) {
            self.switches.push((rv(&service.metadata.resource_version), selected));
        }
    }

    /// The pods of `revision` as they were just before `at`, and how many
    /// of them were Ready.
    fn pods_of_at(&self, revision: &str, at: u64) -> (usize, usize) {
        let states = self
            .pods
            .values()
            .filter_map(|changes| changes.iter().rev().find(|(rv, _)| *rv < at)?.1.clone());
        states
            .filter(|(r, _)| r == revision)
            .fold((0, 0), |(all, ready), (_, is_ready)| {
                (all + 1, ready + usize::from(is_ready))
            })
    }
}

fn rv(version: &Option<String>) -> u64 {
    version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Watches the Service `app` and the app's pods until the task is aborted.
fn watch(env: &Env, app: &str) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let pods = watcher::watcher(
        env.api::<Pod>(),
        watcher::Config::default().labels(&format!("app.kubernetes.io/instance={app}")),
    )
    .map(|e| match e {
        Ok(Event::Apply(pod) | Event::InitApply(pod)) => Some((Either::Pod(Box::new(pod)), true)),
        Ok(Event::Delete(pod)) => Some((Either::Pod(Box::new(pod)), false)),
        _ => None,
    });
    let services = watcher::watcher(
        env.api::<Service>(),
        watcher::Config::default().fields(&format!("metadata.name={app}")),
    )
    .map(|e| match e {
        Ok(Event::Apply(service) | Event::InitApply(service)) => Some((Either::Service(Box::new(service)), true)),
        _ => None,
    });
    let task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let stream = futures::stream::select(pods, services);
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let mut seen = seen.lock().unwrap();
                match event {
                    Some((Either::Pod(pod), present)) => seen.pod(&pod, present),
                    Some((Either::Service(service), _)) => seen.service(&service),
                    None => {}
                }
            }
        })
    };
    (seen, task)
}

enum Either {
    Pod(Box<Pod>),
    Service(Box<Service>),
}

async fn selected(env: &Env, app: &str) -> Option<String> {
    let service = env.api::<Service>().get(app).await.ok()?;
    service.spec?.selector?.get(REVISION).cloned()
}

async fn serving(env: &Env, app: &str) -> Option<String> {
    let status = env.api::<VisitCounterApp>().get(app).await.ok()?.status?;
    Some(status.rollout?.blue_green?.serving)
}

async fn exists(env: &Env, statefulset: &str) -> bool {
    env.api::<StatefulSet>().get_opt(statefulset).await.unwrap().is_some()
}

fn spec(mode: &str, auto_promote: bool, delay: i32) -> serde_json::Value {
    json!({"replicas": 2, "image": image(), "podManagementPolicy": "Parallel",
           "updateStrategy": {"type": "BlueGreen",
                              "blueGreen": {"autoPromote": auto_promote, "scaleDownDelaySeconds": delay}},
           "config": {"env": [{"name": "MODE", "value": mode}]}})
}

/// A config change under blue/green: the new pods start in `bg-green`
/// while the Service keeps selecting the old ones; it switches in one write
/// once both new pods are Ready; `bg` stays for the delay; a revert within
/// it switches back at once; the unused StatefulSet then goes, and no claim
/// is deleted.
pub async fn switches_in_one_write_and_rolls_back(env: &Env) {
    env.apply_app("bg", spec("a", true, 20)).await;
    eventually("bg is Ready with 2 pods", || env.ready_with_pods("bg", 2)).await;
    eventually("the Service selects bg's revision", || async {
        selected(env, "bg")
            .await
            .is_some_and(|r| r.starts_with("bg-") && !r.starts_with("bg-green-"))
    })
    .await;
    let blue = selected(env, "bg").await.unwrap();
    let preview = env.api::<Service>().get("bg-preview").await.unwrap();
    assert_eq!(
        preview.spec.unwrap().selector.unwrap().get(REVISION),
        Some(&blue),
        "at rest the preview Service reaches the serving pods"
    );
    let claims = env.claim_uids("bg").await;
    let (seen, watching) = watch(env, "bg");
    let audit = AuditLog::from_env();

    env.apply_app("bg", spec("b", true, 20)).await;
    eventually("the Service switches to bg-green", || async {
        selected(env, "bg").await.is_some_and(|r| r.starts_with("bg-green-"))
    })
    .await;
    let green = selected(env, "bg").await.unwrap();
    // The status is written after the Service, in the same reconcile.
    eventually("the status names bg-green as serving", || async {
        serving(env, "bg").await.as_deref() == Some("bg-green")
    })
    .await;
    assert!(exists(env, "bg").await, "bg stays for scaleDownDelaySeconds");

    env.apply_app("bg", spec("a", true, 20)).await;
    eventually("a revert within the delay switches back to bg", || async {
        selected(env, "bg").await.as_ref() == Some(&blue)
    })
    .await;
    eventually("bg-green goes once the delay has passed", || async {
        !exists(env, "bg-green").await && serving(env, "bg").await.as_deref() == Some("bg")
    })
    .await;
    watching.abort();
    {
        let seen = seen.lock().unwrap();
        let switches: Vec<&Option<String>> = seen.switches.iter().map(|(_, r)| r).collect();
        assert_eq!(
            switches,
            [&Some(blue.clone()), &Some(green.clone()), &Some(blue.clone())],
            "the Service's selected revision, change by change"
        );
        for (at, revision) in &seen.switches[1..] {
            let revision = revision.as_deref().unwrap();
            let (pods, ready) = seen.pods_of_at(revision, *at);
            assert_eq!(
                (pods, ready),
                (2, 2),
                "when the Service switched to {revision}, its pods (all, Ready) were"
            );
        }
    }
    if let Some(audit) = audit {
        let writes: Vec<String> = audit
            .operator_writes(&env.ns)
            .into_iter()
            .filter(|w| w == "patch services/ bg")
            .collect();
        assert_eq!(writes.len(), 2, "one write per switch, and none else: {writes:?}");
    }
    env.wait_for_event(
        "reason=PreviousDeleted,involvedObject.name=bg",
        "an Event says the unused StatefulSet went",
        |m| m.contains("deleted StatefulSet bg-green"),
    )
    .await;
    let after = env.claim_uids("bg").await;
    assert!(
        claims.iter().all(|(name, uid)| after.get(name) == Some(uid)),
        "bg's claims are kept: {claims:?} -> {after:?}"
    );
    assert!(
        after.keys().any(|name| name.ends_with("bg-green-0")),
        "bg-green had claims of its own, kept by the retention policy: {after:?}"
    );
    let mut rolling = spec("a", true, 20);
    rolling["updateStrategy"] = json!({"type": "RollingUpdate"});
    env.apply_app("bg", rolling).await;
    eventually("bg-preview goes once bg is no longer blue/green", || async {
        env.api::<Service>().get_opt("bg-preview").await.unwrap().is_none()
    })
    .await;
    env.wait_for_event(
        "reason=LeftoverDeleted,involvedObject.name=bg",
        "an Event says the preview Service went",
        |m| m.contains("deleted Service bg-preview"),
    )
    .await;
    env.api::<VisitCounterApp>()
        .delete("bg", &DeleteParams::default())
        .await
        .unwrap();
}

/// Without `autoPromote`, the new pods run and are Ready, reached by the
/// preview Service, and the app says it awaits promotion; the annotation
/// switches it.
pub async fn waits_for_promotion(env: &Env) {
    env.apply_app("bgm", spec("a", false, 0)).await;
    eventually("bgm is Ready with 2 pods", || env.ready_with_pods("bgm", 2)).await;
    env.apply_app("bgm", spec("b", false, 0)).await;
    eventually("bgm awaits promotion", || async {
        env.condition("bgm", "Progressing").await == Some(("True".into(), "AwaitingPromotion".into()))
    })
    .await;
    let green = env.api::<StatefulSet>().get("bgm-green").await.unwrap();
    let revision = green.status.and_then(|s| s.update_revision).unwrap();
    let preview = env.api::<Service>().get("bgm-preview").await.unwrap();
    assert_eq!(
        preview.spec.unwrap().selector.unwrap().get(REVISION),
        Some(&revision),
        "the preview Service reaches the new pods"
    );
    assert!(
        selected(env, "bgm").await.is_some_and(|r| r != revision),
        "the Service still selects the old pods"
    );
    let condition = env
        .api::<VisitCounterApp>()
        .get("bgm")
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions;
    let words = condition
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap()
        .message
        .clone();
    let promote = format!("visitcounter.dev/promote={revision}");
    assert!(words.contains(&promote), "the status says how to promote: {words}");
    env.kubectl(&["annotate", "visitcounterapp", "bgm", &promote]);
    eventually("the annotation switches the Service", || async {
        selected(env, "bgm").await.as_ref() == Some(&revision)
    })
    .await;
    eventually("the old StatefulSet goes (no delay) and bgm is Ready", || async {
        !exists(env, "bgm").await && env.condition("bgm", "Ready").await.is_some_and(|c| c.0 == "True")
    })
    .await;
    env.api::<VisitCounterApp>()
        .delete("bgm", &DeleteParams::default())
        .await
        .unwrap();
}

/// The operator stops between the two writes of a re-create of the serving
/// `bgr-green` (its orphaning delete done, the create not yet). The next
/// operator creates `bgr-green` again, which takes back the same pods and
/// claims; it never creates `bgr`, whose new claims would hold no count.
pub async fn a_recreate_cut_short_keeps_the_serving_slot(env: &Env) {
    let operator = OperatorProcess::start(env);
    served_by_green(env, "bgr").await;
    let log = operator.stop();
    let (pods, claims) = (env.pod_uids("bgr").await, env.claim_uids("bgr").await);
    let green = selected(env, "bgr")
        .await
        .expect("the Service selects bgr-green's pods");
    cut_short_then_started_again(env, "bgr", log).await;
    assert_eq!(env.pod_uids("bgr").await, pods, "the same pods serve");
    assert_eq!(env.claim_uids("bgr").await, claims, "the same claims");
    assert_eq!(
        selected(env, "bgr").await,
        Some(green),
        "the Service selects the same revision"
    );
}

/// The same cut, for an app that left blue/green while `bgl-green`
/// served: no strategy of its own and no Service selector tell which slot
/// served, its orphaned pods do. `bgl-green` is created again with them.
pub async fn a_recreate_cut_short_after_blue_green_keeps_the_serving_slot(env: &Env) {
    let operator = OperatorProcess::start(env);
    served_by_green(env, "bgl").await;
    let mut rolling = spec("b", true, 0);
    rolling["updateStrategy"] = json!({"type": "RollingUpdate"});
    env.apply_app("bgl", rolling).await;
    eventually("the Service selects every pod of bgl", || async {
        selected(env, "bgl").await.is_none()
    })
    .await;
    let log = operator.stop();
    let pods = env.pod_uids("bgl").await;
    cut_short_then_started_again(env, "bgl", log).await;
    assert_eq!(env.pod_uids("bgl").await, pods, "the same pods serve");
}

/// The re-create of `<app>-green` cut short with no operator running (its
/// orphaning delete done), then an operator started: `<app>-green` is
/// created again, owns its pods and the app is Ready, and no StatefulSet
/// `app` was created. `log` is the stopped operator's.
async fn cut_short_then_started_again(env: &Env, app: &str, log: String) {
    let green = format!("{app}-green");
    orphan(env, &green).await;
    let operator = OperatorProcess::start(env);
    eventually(&format!("{green} is created again and owns its pods"), || {
        owns_its_pods(env, &green)
    })
    .await;
    eventually(&format!("{app} is Ready"), || env.ready_with_pods(app, 2)).await;
    let log = format!("{log}{}", operator.stop());
    assert!(!exists(env, app).await, "no StatefulSet {app} was created: {log}");
}

/// Brings `app` to blue/green served by its second slot: created, a new
/// template switched to, the first StatefulSet gone.
async fn served_by_green(env: &Env, app: &str) {
    env.apply_app(app, spec("a", true, 0)).await;
    eventually(&format!("{app} is Ready with 2 pods"), || env.ready_with_pods(app, 2)).await;
    env.apply_app(app, spec("b", true, 0)).await;
    let green = format!("{app}-green");
    eventually(&format!("{green} serves and {app} is gone"), || async {
        serving(env, app).await.as_ref() == Some(&green) && !exists(env, app).await && env.ready_with_pods(app, 2).await
    })
    .await;
}

/// The same cut, with a new template applied while the operator is
/// stopped: `bgt` is created again with the template its pods run (read
/// from their ControllerRevision), not the new one, which goes to the
/// preview and waits for its promotion. The pods users reach are not
/// replaced.
pub async fn a_recreate_cut_short_keeps_the_serving_template(env: &Env) {
    let operator = OperatorProcess::start(env);
    env.apply_app("bgt", spec("a", false, 0)).await;
    eventually("bgt is Ready with 2 pods", || env.ready_with_pods("bgt", 2)).await;
    let log = operator.stop();
    let pods = env.pod_uids("bgt").await;
    let serving = selected(env, "bgt").await.expect("the Service selects bgt's pods");
    orphan(env, "bgt").await;
    env.apply_app("bgt", spec("b", false, 0)).await;

    let operator = OperatorProcess::start(env);
    eventually("bgt is created again and owns its pods", || owns_its_pods(env, "bgt")).await;
    eventually("bgt awaits the promotion of bgt-green", || async {
        env.condition("bgt", "Progressing").await == Some(("True".into(), "AwaitingPromotion".into()))
    })
    .await;
    let log = format!("{log}{}", operator.stop());
    assert_eq!(
        mode(env, "bgt").await.as_deref(),
        Some("a"),
        "bgt keeps its template: {log}"
    );
    assert_eq!(
        mode(env, "bgt-green").await.as_deref(),
        Some("b"),
        "the preview runs the new one"
    );
    let now = env.pod_uids("bgt").await;
    for (name, uid) in &pods {
        assert_eq!(now.get(name), Some(uid), "{name} was not replaced: {log}");
    }
    assert_eq!(
        selected(env, "bgt").await,
        Some(serving),
        "the Service still selects them"
    );
}

/// Deletes the StatefulSet with its pods and claims orphaned, as a
/// re-create's first write does, and waits until it is gone.
async fn orphan(env: &Env, statefulset: &str) {
    env.api::<StatefulSet>()
        .delete(statefulset, &DeleteParams::orphan())
        .await
        .unwrap();
    eventually(&format!("{statefulset} is deleted, its pods orphaned"), || async {
        !exists(env, statefulset).await
    })
    .await;
}

/// Whether the StatefulSet exists and owns every pod of its name.
async fn owns_its_pods(env: &Env, statefulset: &str) -> bool {
    let owner = env.api::<StatefulSet>().get_opt(statefulset).await.unwrap();
    let Some(uid) = owner.and_then(|s| s.metadata.uid) else {
        return false;
    };
    let pods = env.api::<Pod>().list(&Default::default()).await.unwrap().items;
    let prefix = format!("{statefulset}-");
    let own: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.strip_prefix(&prefix).is_some_and(|o| o.parse::<u32>().is_ok()))
        })
        .collect();
    !own.is_empty()
        && own
            .iter()
            .all(|p| p.metadata.owner_references.iter().flatten().any(|o| o.uid == uid))
}
