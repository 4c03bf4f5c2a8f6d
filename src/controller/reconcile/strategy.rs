//! The update strategy's part of a reconcile: `rollout::decide` before the
//! StatefulSet is planned, and the pods it deletes once it is written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{ResourceExt, runtime::events::EventType};

use super::{
    Context,
    apply::{delete_pod, record},
};
use crate::{
    children::{Children, INSTANCE_LABEL},
    controller::{
        Error,
        rollout::{Decision, PodView, decide},
    },
    resource::{UpdateStrategyType, VisitCounterApp},
};

/// Decides for the app's strategy from the caches, changing the
/// StatefulSet in `children` as it needs.
pub fn decide_from_caches(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    children: &mut Children,
    now: &Time,
) -> Decision {
    if app.spec.update_strategy.type_ != UpdateStrategyType::Recreate {
        return decide(app, &mut children.stateful_set, None, &[], now);
    }
    let name = app.name_any();
    let live = ctx.caches.get("StatefulSet", namespace, &name);
    let pods: Vec<PodView> = ctx
        .caches
        .pods
        .state()
        .iter()
        .filter(|p| p.0.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| p.0.labels().get(INSTANCE_LABEL) == Some(&name))
        .map(|p| PodView::of(&p.0))
        .collect();
    decide(app, &mut children.stateful_set, live.as_ref(), &pods, now)
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
        // The cache may still hold a pod we just deleted.
        let key = format!("Pod/{namespace}/{}", pod.name);
        if ctx.recently_applied(&key, &pod.uid) {
            continue;
        }
        delete_pod(&ctx.client, namespace, &pod.name, &pod.uid, &ctx.metrics)
            .await
            .map_err(|source| Error::DeletePod {
                pod: pod.name.clone(),
                source: Box::new(source),
            })?;
        ctx.remember_apply(key, pod.uid.clone());
        deleted.push(pod.name.as_str());
    }
    if !deleted.is_empty() {
        let message = format!(
            "deleted {} at once (updateStrategy.type: Recreate); the pods of the new template start once every old one is gone, on the same volume claims",
            deleted.join(", ")
        );
        record(
            &ctx.recorder,
            app,
            EventType::Normal,
            "RecreatingPods",
            message,
            None,
            &ctx.metrics,
        )
        .await;
    }
    Ok(())
}
