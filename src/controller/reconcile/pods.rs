//! What a reconcile does about the app's pods once its children are
//! written: the pod that blocks a rollout (replaced when the app allows it,
//! else reported), pods the StatefulSet controller cannot create (the
//! StatefulSet's Events say why), and pods that crash and restart. The
//! decisions are in `observe`; this is the I/O around them.

use std::time::Duration;

use k8s_openapi::{api::apps::v1::StatefulSet, apimachinery::pkg::apis::meta::v1::Time};
use kube::{ResourceExt, runtime::events::EventType};

use super::{Context, app_key};
use crate::{
    controller::{
        Error,
        observe::{
            crash_loops::{PODS_CRASH_LOOPING, crashing, message},
            pod_creation::{
                held_back_by_a_pod, next_look, pods_missing, pods_not_created, why_pods_are_missing, worth_a_look,
            },
            pods::is_ready,
            stuck_pods::{Stuck, check_rollout},
        },
        status::{Failure, PODS_NOT_CREATED},
    },
    resource::{StuckPod, VisitCounterApp},
};

/// What the pods tell the status, and when to look at them again.
#[derive(Default)]
pub struct PodFindings {
    pub stuck: Option<StuckPod>,
    pub failure: Option<Failure>,
    pub look_again_in: Option<Duration>,
}

/// Looks at the pods of the app's StatefulSet.
pub async fn look_at_pods(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    sts: Option<&StatefulSet>,
    now: &Time,
) -> Result<PodFindings, Error> {
    let check = sts
        .map(|sts| {
            let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let pods = ctx.caches.pods_of(namespace, &sts.name_any(), replicas);
            check_rollout(app, sts, pods.iter().map(|p| p.as_ref()), now, ctx.settings.stuck_after)
        })
        .unwrap_or_default();
    let stuck = match &check.stuck {
        Some(stuck) => handle_stuck_pod(app, ctx, namespace, stuck).await?,
        None => None,
    };
    let (failure, look) = pods_not_created_now(app, ctx, namespace, sts).await;
    let failure = failure.or_else(|| crash_loop(app, ctx, namespace, sts));
    Ok(PodFindings {
        stuck,
        failure,
        look_again_in: earliest(check.look_again_in, look),
    })
}

/// Pods of the app (either slot of blue/green) that crash and restart,
/// as `Degraded` says it. Their own changes wake the app: no timer. Each
/// pod is looked up by name, not found by a scan of every cached pod.
fn crash_loop(app: &VisitCounterApp, ctx: &Context, namespace: &str, sts: Option<&StatefulSet>) -> Option<Failure> {
    let name = app.name_any();
    let live = sts.and_then(|s| s.spec.as_ref()?.replicas).unwrap_or(0);
    let replicas = app.spec.replicas.max(live);
    let pods = ctx.caches.pods_of_both_slots(namespace, &name, replicas);
    let found = crashing(pods.iter().map(|p| p.as_ref()));
    message(&found, app.spec.replicas).map(|message| Failure {
        reason: PODS_CRASH_LOOPING,
        message,
        stalled: false,
    })
}

/// The earlier of two times to look again.
pub fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Pods missing, pod creation standing still: the StatefulSet's Events may
/// say why. Nothing else wakes this app while the StatefulSet stays as it
/// is, so it also says when to look again.
async fn pods_not_created_now(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    sts: Option<&StatefulSet>,
) -> (Option<Failure>, Option<Duration>) {
    let key = app_key(app);
    let existing = sts.and_then(|s| s.status.as_ref()).map_or(0, |s| s.replicas);
    let missing_for = ctx
        .pod_creation
        .stalled_for(&key, sts.is_some_and(pods_missing), existing);
    let (Some(sts), Some(missing_for)) = (sts, missing_for) else {
        return (None, None);
    };
    let next_look_in = ctx.pod_creation.next_look_in(&key);
    let look_again_in = Some(next_look(missing_for, next_look_in));
    let all_ready = existing_pods_ready(ctx, namespace, sts);
    if !worth_a_look(app, sts, all_ready, missing_for) {
        // Held back by a pod, the app waits for that pod's change instead.
        return (None, look_again_in.filter(|_| !held_back_by_a_pod(sts, all_ready)));
    }
    if !next_look_in.is_zero() {
        // Between looks, what the last look found still stands.
        return (pods_not_created(app), look_again_in);
    }
    ctx.pod_creation.looked(&key);
    let failure = why_pods_are_missing(&ctx.client, sts).await.map(|message| Failure {
        reason: PODS_NOT_CREATED,
        message: format!("the StatefulSet controller cannot create pods: {message}"),
        stalled: true,
    });
    (failure, look_again_in)
}

/// Whether every pod the StatefulSet has (by its status) is in the cache and
/// ready.
fn existing_pods_ready(ctx: &Context, namespace: &str, sts: &StatefulSet) -> bool {
    let existing = sts.status.as_ref().map_or(0, |s| s.replicas);
    let pods = ctx.caches.pods_of(namespace, &sts.name_any(), existing);
    pods.len() == existing as usize && pods.iter().all(|p| is_ready(p))
}

/// Replaces a pod that blocks the rollout when the app allows it and the pod
/// runs another revision than the update revision; otherwise reports it (an
/// Event the first time). Returns what the status should say.
async fn handle_stuck_pod(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    stuck: &Stuck,
) -> Result<Option<StuckPod>, Error> {
    if stuck.abandoned && app.spec.update_strategy.replaces_stuck_pods() {
        let deleted = ctx
            .delete_pod_once(namespace, &stuck.pod, &stuck.uid)
            .await
            .map_err(|source| Error::ReplaceStuckPod {
                pod: stuck.pod.clone(),
                source: Box::new(source),
            })?;
        if deleted {
            let message = stuck.status(app, true).message;
            ctx.event(app, EventType::Normal, "StuckPodReplaced", message).await;
        }
        return Ok(None);
    }
    let status = stuck.status(app, false);
    let reported = app
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .and_then(|r| r.stuck_pod.as_ref())
        .is_some_and(|s| s.name == status.name && s.revision == status.revision);
    if !reported {
        let message = status.message.clone();
        ctx.event(app, EventType::Warning, "RolloutStuck", message).await;
    }
    Ok(Some(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earlier_look_wins() {
        let s = Duration::from_secs;
        assert_eq!(earliest(None, None), None);
        assert_eq!(earliest(Some(s(3)), None), Some(s(3)));
        assert_eq!(earliest(None, Some(s(4))), Some(s(4)));
        assert_eq!(earliest(Some(s(5)), Some(s(2))), Some(s(2)));
    }
}
