//! What a round changes in an app, and the invariants checked once the app
//! converged: the children match the spec, and no claim is gone.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};
use kube::api::ListParams;
use serde_json::{Value, json};
use visitcounter::resource::VisitCounterApp;

use crate::env::{Env, image, pod_ready};

#[derive(Clone, Copy, Debug)]
pub enum Change {
    NewApp,
    ConfigRoll,
    Canary,
    /// A config roll under `type: Recreate`.
    Recreate,
    /// A config roll in `rollingUpdate.steps`, with a pause.
    Steps,
    /// A config roll under `type: BlueGreen`: the Service switches to the
    /// other StatefulSet, and the previous one goes 2 s after.
    BlueGreen,
    Scale,
    StorageGrowth,
    PolicyRecreate,
}

impl Change {
    const ANY: [Change; 8] = [
        Change::ConfigRoll,
        Change::Canary,
        Change::Recreate,
        Change::Steps,
        Change::BlueGreen,
        Change::Scale,
        Change::StorageGrowth,
        Change::PolicyRecreate,
    ];

    /// A change at random for an app that exists, a new app otherwise, and
    /// the app it asks for.
    pub fn pick(rng: &mut fastrand::Rng, now: Option<&Wanted>) -> (Self, Wanted) {
        let Some(now) = now else {
            return (Change::NewApp, Wanted::first());
        };
        let change = Self::ANY[rng.usize(..Self::ANY.len())];
        let mut next = now.clone();
        match change {
            Change::NewApp => {}
            Change::ConfigRoll => {
                next.color += 1;
                next.rollout = Rollout::Rolling;
            }
            Change::Canary => {
                next.color += 1;
                next.rollout = match next.rollout {
                    Rollout::Canary(_) => Rollout::Rolling,
                    _ => Rollout::Canary(1),
                };
            }
            Change::Recreate => {
                next.color += 1;
                next.rollout = Rollout::Recreate;
            }
            Change::Steps => {
                next.color += 1;
                next.rollout = Rollout::Steps;
            }
            Change::BlueGreen => {
                next.color += 1;
                next.rollout = Rollout::BlueGreen;
            }
            Change::Scale => next.replicas = rng.i64(1..4),
            Change::StorageGrowth => next.size_gi += 1,
            Change::PolicyRecreate => next.parallel = !next.parallel,
        }
        (change, next)
    }
}

/// How a new template reaches the pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollout {
    Rolling,
    /// `canaryReplicas`: the lowest ordinals stay at the old revision.
    Canary(i64),
    Recreate,
    /// `steps: [{replicas: 1}, {pauseSeconds: 1}]`, the rest after.
    Steps,
    /// `type: BlueGreen`, the previous StatefulSet kept 2 s.
    BlueGreen,
}

/// What each app should be: its spec, as the rounds change it.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub replicas: i64,
    pub color: u32,
    pub size_gi: i64,
    pub parallel: bool,
    pub rollout: Rollout,
}

impl Wanted {
    fn first() -> Self {
        Self {
            replicas: 2,
            color: 0,
            size_gi: 1,
            parallel: false,
            rollout: Rollout::Rolling,
        }
    }

    pub fn spec(&self) -> Value {
        let mut spec = json!({"replicas": self.replicas, "image": image(),
            "config": {"json": {"color": self.color}},
            "storage": {"size": format!("{}Gi", self.size_gi)},
            "podManagementPolicy": if self.parallel { "Parallel" } else { "OrderedReady" }});
        spec["updateStrategy"] = match self.rollout {
            Rollout::Rolling => json!({}),
            Rollout::Canary(canary) => json!({"rollingUpdate": {"canaryReplicas": canary}}),
            Rollout::Recreate => json!({"type": "Recreate"}),
            Rollout::Steps => json!({"rollingUpdate": {"steps": [{"replicas": 1}, {"pauseSeconds": 1}]}}),
            Rollout::BlueGreen => json!({"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 2}}),
        };
        spec
    }
}

/// Applies the app, again while the API server recovers from a fault of
/// the round before (an apply it refuses for the spec fails at once).
pub async fn apply(env: &Env, app: &str, spec: Value) {
    use kube::api::{Patch, PatchParams};
    let object = json!({"apiVersion": visitcounter::resource::API_VERSION, "kind": visitcounter::resource::KIND,
                        "metadata": {"name": app}, "spec": spec});
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let applied = env
            .api::<VisitCounterApp>()
            .patch(app, &PatchParams::apply("chaos").force(), &Patch::Apply(&object))
            .await;
        match applied {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 422 => panic!("the API server refused {object}: {e}"),
            Err(e) if Instant::now() > deadline => panic!("cannot apply {app}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Waits until the app converges to `wanted`, then checks it did: a
/// timeout is a broken invariant too.
pub async fn converged(env: &Env, app: &str, wanted: &Wanted, context: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while Instant::now() < deadline {
        match broken(env, app, wanted).await {
            None => return,
            Some(why) => last = why,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seen = snapshot(env, app).await;
    let log = crate::faults::operator_log_tail(40);
    panic!("invariant broken at {context}: {last}\n{seen}\nthe operator's log ends:\n{log}");
}

/// The app's StatefulSets and pods as the API server has them, for a
/// broken round's message.
async fn snapshot(env: &Env, app: &str) -> String {
    let selector = format!("app.kubernetes.io/instance={app}");
    let params = ListParams::default().labels(&selector);
    let mut lines = vec![];
    for sts in env
        .api::<StatefulSet>()
        .list(&params)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let status = sts.status.unwrap_or_default();
        lines.push(format!(
            "StatefulSet {}: replicas {} ready {} updated {} current {:?} update {:?} observedGeneration {:?} of {:?}",
            sts.metadata.name.unwrap_or_default(),
            status.replicas,
            status.ready_replicas.unwrap_or(0),
            status.updated_replicas.unwrap_or(0),
            status.current_revision,
            status.update_revision,
            status.observed_generation,
            sts.metadata.generation,
        ));
    }
    for pod in env
        .api::<Pod>()
        .list(&params)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        lines.push(format!(
            "pod {}: phase {:?} ready {} revision {:?} node {:?} deleting {}",
            pod.metadata.name.clone().unwrap_or_default(),
            pod.status.as_ref().and_then(|s| s.phase.clone()),
            pod_ready(&pod),
            labels.get("controller-revision-hash"),
            pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            pod.metadata.deletion_timestamp.is_some(),
        ));
    }
    lines.join("\n")
}

/// What does not hold yet, if anything. A read that fails is not a pass:
/// it is said, and the wait goes on.
async fn broken(env: &Env, app: &str, wanted: &Wanted) -> Option<String> {
    check(env, app, wanted).await.err()
}

async fn check(env: &Env, app: &str, wanted: &Wanted) -> Result<(), String> {
    let object = env
        .api::<VisitCounterApp>()
        .get(app)
        .await
        .map_err(|e| format!("cannot read the app: {e}"))?;
    let status = object.status.clone().unwrap_or_default();
    if status.observed_generation != object.metadata.generation {
        return Err(format!("observedGeneration {:?}", status.observed_generation));
    }
    let says = |type_: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.status.clone())
    };
    if says("Ready").as_deref() != Some("True") || says("Degraded").as_deref() != Some("False") {
        return Err(format!("conditions {:?}", status.conditions));
    }
    // Under blue/green, and after it, the serving StatefulSet may be the
    // app's second one.
    let serving = status
        .rollout
        .as_ref()
        .and_then(|r| r.blue_green.as_ref())
        .map_or(app.to_owned(), |b| b.serving.clone());
    let sts = env
        .api::<StatefulSet>()
        .get(&serving)
        .await
        .map_err(|e| format!("cannot read the StatefulSet {serving}: {e}"))?;
    let spec = sts.spec.clone().ok_or("a StatefulSet without a spec")?;
    if spec.replicas != Some(wanted.replicas as i32) {
        return Err(format!("StatefulSet replicas {:?}", spec.replicas));
    }
    let policy = if wanted.parallel { "Parallel" } else { "OrderedReady" };
    if spec.pod_management_policy.as_deref() != Some(policy) {
        return Err(format!("policy {:?}", spec.pod_management_policy));
    }
    let size = spec
        .volume_claim_templates
        .as_ref()
        .and_then(|t| {
            t.first()?
                .spec
                .as_ref()?
                .resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("storage")
                .cloned()
        })
        .ok_or("no claim template with a storage request")?
        .0;
    if size != format!("{}Gi", wanted.size_gi) {
        return Err(format!("claim template size {size}"));
    }
    let config = env
        .config_map(&serving)
        .await
        .ok_or("cannot read the ConfigMap the StatefulSet names")?;
    let data = config.data.unwrap_or_default();
    let color = data
        .get("config.json")
        .and_then(|j| serde_json::from_str::<Value>(j).ok())
        .and_then(|j| j["color"].as_u64());
    if color != Some(u64::from(wanted.color)) {
        return Err(format!("config {data:?}"));
    }
    let update = sts
        .status
        .as_ref()
        .and_then(|s| s.update_revision.clone())
        .ok_or("a StatefulSet without an update revision")?;
    let pods = env
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={app}")))
        .await
        .map_err(|e| format!("cannot list the pods: {e}"))?
        .items;
    if pods.len() != wanted.replicas as usize || !pods.iter().all(pod_ready) {
        return Err(format!("{} pods, not all Ready", pods.len()));
    }
    let on_update = pods
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("controller-revision-hash"))
                == Some(&update)
        })
        .count() as i64;
    // A canary holds the lowest ordinals at the old revision.
    let least = match wanted.rollout {
        Rollout::Canary(canary) => canary.min(wanted.replicas),
        _ => wanted.replicas,
    };
    if on_update < least {
        return Err(format!("{on_update} pods on the update revision, {least} wanted"));
    }
    Ok(())
}

/// Checks that every claim in `seen` is still there with its uid, then adds
/// the namespace's claims now to `seen`, by name and uid.
pub async fn no_claim_lost(env: &Env, seen: &mut BTreeMap<String, String>, context: &str) {
    let now = env.claims(&ListParams::default()).await;
    for (claim, uid) in seen.iter() {
        assert_eq!(
            now.get(claim),
            Some(uid),
            "invariant broken at {context}: claim {claim} was deleted or replaced"
        );
    }
    seen.extend(now);
}
