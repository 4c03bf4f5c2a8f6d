//! The update strategy's part of a reconcile: what the cluster does with
//! the fields a strategy uses, `rollout::decide` before the StatefulSet is
//! planned, and the pods it deletes once the StatefulSet is written.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, ResourceExt, api::ListParams, runtime::events::EventType};

use super::{
    Context,
    apply::{apply_child, delete_child},
    desired,
    plan::DesiredChild,
    write::refused_or_failed,
};
use crate::{
    children::{Children, green_statefulset_name, selector_string, shadow_name},
    controller::{
        Error,
        rollout::{
            Cluster, Decision, PodView, blue_green, decide, shadow, stand_in, traffic, uses_max_unavailable, uses_steps,
        },
    },
    resource::{TrafficStatus, UpdateStrategyType, VisitCounterApp},
};

/// The JSON pointer of the field a cluster may drop.
const MAX_UNAVAILABLE: &str = "/spec/updateStrategy/rollingUpdate/maxUnavailable";

/// Decides for the app's strategy from the caches, changing the
/// StatefulSet in `children` as it needs, then where its route sends
/// requests.
pub async fn decide_from_caches(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    children: &mut Children,
    now: &Time,
) -> Result<Decision, Error> {
    let mut decision = decide_strategy(app, ctx, namespace, children, now).await?;
    decision.traffic = traffic_from_caches(app, ctx, namespace, children);
    Ok(decision)
}

/// `spec.traffic`'s weights (`rollout::traffic`), from the serving
/// StatefulSet and the app's pods as the caches hold them.
fn traffic_from_caches(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    children: &mut Children,
) -> Option<TrafficStatus> {
    children.traffic.as_ref()?;
    let serving = children.stateful_set.metadata.name.clone().unwrap_or_default();
    let live = ctx.caches.get("StatefulSet", namespace, &serving);
    traffic::decide(app, children, live.as_ref(), &pod_views(app, ctx, namespace))
}

async fn decide_strategy(
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
    let slots = blue_green_slots(app, ctx, namespace, children, now).await?;
    // After blue/green named the serving StatefulSet.
    let shadow = shadow_decision(app, ctx, namespace, children, now).await?;
    match app.spec.update_strategy.type_ {
        UpdateStrategyType::BlueGreen => return Ok(slots.or_delete(shadow)),
        UpdateStrategyType::Shadow => return Ok(shadow.with_slots(slots)),
        _ => {}
    }
    // A shadow left behind by a change of strategy goes.
    let slots = slots.or_delete(shadow);
    let operator_driven = app.spec.update_strategy.type_ == UpdateStrategyType::Recreate
        || uses_steps(app)
        || (uses_max_unavailable(app) && !cluster.keeps_max_unavailable);
    if !operator_driven {
        let decision = decide(app, &mut children.stateful_set, None, &[], now, cluster);
        return Ok(decision.with_slots(slots));
    }
    let name = app.name_any();
    let sts_name = children.stateful_set.metadata.name.clone().unwrap_or_default();
    let live = ctx.caches.get("StatefulSet", namespace, &sts_name);
    let pods: Vec<PodView> = ctx
        .caches
        .pods_of_app(namespace, &name)
        .iter()
        .map(|p| {
            let mut pod = PodView::of(p);
            // Deleted by us moments ago, the cache may not show it yet: it
            // is unavailable all the same.
            pod.terminating |= ctx.pod_deleted_lately(namespace, &pod.name, &pod.uid);
            pod
        })
        .collect();
    let decision = decide(app, &mut children.stateful_set, live.as_ref(), &pods, now, cluster);
    Ok(decision.with_slots(slots))
}

/// Blue/green's decision (`rollout::blue_green`), for a blue/green app or
/// one whose second StatefulSet is still there; it names the StatefulSet
/// that serves. Otherwise nothing.
async fn blue_green_slots(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    children: &mut Children,
    now: &Time,
) -> Result<Decision, Error> {
    let name = app.name_any();
    let green_name = green_statefulset_name(&name);
    let mut blue = ctx.caches.get("StatefulSet", namespace, &name);
    let mut green = own_statefulset(app, ctx, namespace, &green_name);
    let service = ctx.caches.get("Service", namespace, &name);
    if blue.is_none() && green.is_none() {
        // A re-create of the second slot cut short, whatever the strategy
        // now: its pods are left, and it served.
        let pods: Vec<PodView> = ctx
            .caches
            .pods_of_both_slots(namespace, &name, app.spec.replicas)
            .iter()
            .map(|p| PodView::of(p))
            .collect();
        if stand_in::only_second_slot_pods(&name, &green_name, &pods) {
            green = stand_in(app, ctx, namespace, &green_name, &pods).await?;
        }
    }
    let live = blue_green::Live {
        blue: blue.as_ref(),
        green: green.as_ref(),
        service: service.as_ref(),
    };
    if !blue_green::applies(app, &live) {
        return Ok(Decision::default());
    }
    let serving = blue_green::slots(&name, &live).serving;
    let missing = if serving == name { &mut blue } else { &mut green };
    if missing.is_none() {
        *missing = stand_in(app, ctx, namespace, &serving, &slot_pods(app, ctx, namespace, &serving)).await?;
    }
    let live = blue_green::Live {
        blue: blue.as_ref(),
        green: green.as_ref(),
        service: service.as_ref(),
    };
    let visits = app.status.as_ref().and_then(|s| s.visits.as_ref());
    Ok(blue_green::decide(app, children, live, visits, now))
}

/// The serving StatefulSet `serving`, missing from the caches, as it was
/// (`rollout::stand_in`): at rest on the revision its pods run, with the
/// template read from that ControllerRevision. One read, only while it is
/// missing and pods of it are left.
async fn stand_in(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    serving: &str,
    pods: &[PodView],
) -> Result<Option<serde_json::Value>, Error> {
    let Some(revision) = stand_in::pods_revision(serving, pods) else {
        return Ok(None);
    };
    let params = ListParams::default()
        .labels(&selector_string(&app.name_any()))
        .fields(&format!("metadata.name={revision}"));
    let found = Api::<ControllerRevision>::namespaced(ctx.client.clone(), namespace)
        .list(&params)
        .await
        .map_err(|source| Error::Read {
            kind: "ControllerRevision",
            name: revision.clone(),
            source: Box::new(source),
        })?;
    let controller_revision = found.items.first().and_then(|r| serde_json::to_value(r).ok());
    Ok(Some(stand_in::at_rest(
        serving,
        &revision,
        controller_revision.as_ref(),
    )))
}

/// The pods of the app's StatefulSet `slot` (its ordinals up to the
/// spec's replicas), each looked up by name in the cache: the few reads a
/// missing StatefulSet needs, with no scan of every cached pod.
fn slot_pods(app: &VisitCounterApp, ctx: &Context, namespace: &str, slot: &str) -> Vec<PodView> {
    ctx.caches
        .pods_of(namespace, slot, app.spec.replicas)
        .iter()
        .map(|p| PodView::of(p))
        .collect()
}

/// The app's pods as the cache holds them.
fn pod_views(app: &VisitCounterApp, ctx: &Context, namespace: &str) -> Vec<PodView> {
    ctx.caches
        .pods_of_app(namespace, &app.name_any())
        .iter()
        .map(|p| PodView::of(p))
        .collect()
}

/// The app's second StatefulSet of this name (`<name>-green`, `<name>-shadow`)
/// as cached, if the app controls it: another app may have that name.
fn own_statefulset(app: &VisitCounterApp, ctx: &Context, namespace: &str, name: &str) -> Option<serde_json::Value> {
    ctx.caches
        .get("StatefulSet", namespace, name)
        .filter(|live| desired::controlled_by(live, app))
}

/// The shadow's decision (`rollout::shadow`), for a shadow app or one whose
/// shadow StatefulSet is still there. Otherwise nothing.
async fn shadow_decision(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    children: &mut Children,
    now: &Time,
) -> Result<Decision, Error> {
    let name = app.name_any();
    let serving_name = children.stateful_set.metadata.name.clone().unwrap_or_default();
    let shadow = own_statefulset(app, ctx, namespace, &shadow_name(&name));
    if !shadow::applies(app, shadow.as_ref()) {
        return Ok(Decision::default());
    }
    let serving = match ctx.caches.get("StatefulSet", namespace, &serving_name) {
        Some(live) => Some(live),
        None => {
            stand_in(
                app,
                ctx,
                namespace,
                &serving_name,
                &slot_pods(app, ctx, namespace, &serving_name),
            )
            .await?
        }
    };
    Ok(shadow::decide(app, children, serving.as_ref(), shadow.as_ref(), now))
}

/// Deletes the StatefulSet the strategy decided to (blue/green's previous
/// one, past its delay; a shadow no longer wanted), by its uid, with an
/// Event.
async fn delete_statefulset(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    decision: &Decision,
) -> Result<(), Error> {
    let Some((name, uid)) = &decision.delete_statefulset else {
        return Ok(());
    };
    delete_child(&ctx.client, namespace, "StatefulSet", name, uid, &ctx.metrics)
        .await
        .map_err(|source| Error::DeleteStatefulSet {
            name: name.clone(),
            source: Box::new(source),
        })?;
    let (reason, message) = decision.deleted_because.clone().unwrap_or_else(|| {
        let delay = app.spec.update_strategy.blue_green_settings().scale_down_delay_seconds;
        ("PreviousDeleted", format!(
            "deleted StatefulSet {name}, which served before the last switch: {delay} s have passed (scaleDownDelaySeconds) and the new pods hold its pods' counts; its claims follow the retention policy"
        ))
    });
    ctx.event(app, EventType::Normal, reason, message).await;
    Ok(())
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

/// Deletes what the strategy decided to: pods, and blue/green's previous
/// StatefulSet.
pub async fn delete(app: &VisitCounterApp, ctx: &Context, namespace: &str, decision: &Decision) -> Result<(), Error> {
    delete_pods(app, ctx, namespace, decision).await?;
    delete_statefulset(app, ctx, namespace, decision).await
}

/// Deletes the pods the strategy decided to, each by its uid (a pod already
/// gone or replaced is left alone), with one Event naming them.
async fn delete_pods(app: &VisitCounterApp, ctx: &Context, namespace: &str, decision: &Decision) -> Result<(), Error> {
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
