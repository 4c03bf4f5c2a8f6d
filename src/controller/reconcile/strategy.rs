//! The update strategy's part of a reconcile: what the cluster does with
//! the fields a strategy uses, `rollout::decide` before the StatefulSet is
//! planned, and the pods it deletes once the StatefulSet is written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{ResourceExt, runtime::events::EventType};

use super::{Context, apply::apply_child, plan::DesiredChild, write::refused_or_failed};
use crate::{
    children::Children,
    controller::{
        Error,
        rollout::{Cluster, Decision, PodView, decide, uses_max_unavailable, uses_steps},
    },
    resource::{UpdateStrategyType, VisitCounterApp},
};

/// The JSON pointer of the field a cluster may drop.
const MAX_UNAVAILABLE: &str = "/spec/updateStrategy/rollingUpdate/maxUnavailable";

/// Decides for the app's strategy from the caches, changing the
/// StatefulSet in `children` as it needs.
pub async fn decide_from_caches(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    children: &mut Children,
    now: &Time,
) -> Result<Decision, Error> {
    let cluster = if uses_max_unavailable(app) {
        Cluster {
            keeps_max_unavailable: keeps_max_unavailable(ctx, namespace, children).await?,
        }
    } else {
        Cluster::default()
    };
    let operator_driven = app.spec.update_strategy.type_ == UpdateStrategyType::Recreate
        || uses_steps(app)
        || (uses_max_unavailable(app) && !cluster.keeps_max_unavailable);
    if !operator_driven {
        return Ok(decide(app, &mut children.stateful_set, None, &[], now, cluster));
    }
    let name = app.name_any();
    let live = ctx.caches.get("StatefulSet", namespace, &name);
    let pods: Vec<PodView> = ctx
        .caches
        .pods_of_app(namespace, &name)
        .iter()
        .map(|p| {
            let mut pod = PodView::of(&p.0);
            // Deleted by us moments ago, the cache may not show it yet: it
            // is unavailable all the same.
            pod.terminating |= ctx.pod_deleted_lately(namespace, &pod.name, &pod.uid);
            pod
        })
        .collect();
    Ok(decide(
        app,
        &mut children.stateful_set,
        live.as_ref(),
        &pods,
        now,
        cluster,
    ))
}

/// Whether the API server keeps `maxUnavailable` on a StatefulSet: asked
/// once per operator process (the feature gate is the API server's), by a
/// server-side-apply dry run that creates the app's StatefulSet as built
/// under a name of its own, and stores nothing. Not the app's own name: a
/// change to a field the API server will not change in place would be
/// refused, and the app never get to its re-create.
async fn keeps_max_unavailable(ctx: &Context, namespace: &str, children: &Children) -> Result<bool, Error> {
    let ask = || async {
        let mut probe = children.stateful_set.clone();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        probe.metadata.name = Some(format!("visitcounter-probe-{nanos:08x}"));
        let object = serde_json::to_value(&probe).map_err(|e| Error::Serialize("StatefulSet", e))?;
        let child = DesiredChild::new("StatefulSet", object);
        let answer = apply_child(&ctx.client, namespace, &child, true, &ctx.metrics)
            .await
            .map_err(|source| refused_or_failed(&child, source))?;
        let keeps = answer.pointer(MAX_UNAVAILABLE).is_some_and(|v| !v.is_null());
        tracing::info!(
            keeps,
            "asked the API server whether it keeps a StatefulSet's rollingUpdate.maxUnavailable"
        );
        Ok::<bool, Error>(keeps)
    };
    ctx.cluster_keeps_max_unavailable.get_or_try_init(ask).await.copied()
}

/// Deletes the pods the strategy decided to, each by its uid (a pod already
/// gone or replaced is left alone), with one Event naming them.
pub async fn delete_pods(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    decision: &Decision,
) -> Result<(), Error> {
    let mut deleted = Vec::new();
    for pod in &decision.delete {
        let done = ctx
            .delete_pod_once(namespace, &pod.name, &pod.uid)
            .await
            .map_err(|source| Error::DeletePod {
                pod: pod.name.clone(),
                source: Box::new(source),
            })?;
        if done {
            deleted.push(pod.name.as_str());
        }
    }
    if let Some(message) = deleted_message(app, &deleted, decision.aborted.is_some()) {
        let reason = match app.spec.update_strategy.type_ {
            UpdateStrategyType::Recreate => "RecreatingPods",
            _ if decision.aborted.is_some() => "RollingBack",
            _ => "ReplacingPods",
        };
        ctx.event(app, EventType::Normal, reason, message).await;
    }
    Ok(())
}

/// What the Event of a strategy's deletes says.
fn deleted_message(app: &VisitCounterApp, deleted: &[&str], rollback: bool) -> Option<String> {
    if deleted.is_empty() {
        return None;
    }
    let pods = deleted.join(", ");
    if rollback {
        return Some(format!(
            "deleted {pods} so the StatefulSet re-creates them from the stable template (the rollout in steps was aborted, abortAction: Rollback), on the same volume claims"
        ));
    }
    Some(match app.spec.update_strategy.type_ {
        UpdateStrategyType::Recreate => format!(
            "deleted {pods} at once (updateStrategy.type: Recreate); the pods of the new template start once every old one is gone, on the same volume claims"
        ),
        _ => format!(
            "deleted {pods} so the StatefulSet re-creates them from the new template, within rollingUpdate.maxUnavailable (kept by the operator: this cluster's API server drops the field)"
        ),
    })
}
