//! One reconcile of one app, and what happens when it fails.

use std::{collections::BTreeSet, sync::Arc, time::Duration, time::Instant};

use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Service},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType},
};
use serde_json::{Value, json};

use super::{
    Context, Error,
    apply::{apply_child, delete_child, delete_pod, delete_statefulset_orphaning, record, write_status},
    error::is_refusal,
    old_configs::{candidates, remove_old_config_maps},
    plan::{DesiredChild, Step, changed_fields, dropped_by_server, dry_runs, plan},
    pod_creation::{GRACE, PODS_NOT_CREATED, pods_missing, pods_not_created, why_pods_are_missing, worth_a_look},
    rollout::{REVISION_LABEL, Stuck, check_rollout, is_ready, promotion},
    status::{
        Failure, Observed, PAUSED, UNSUPPORTED_SPEC, desired_status, dropped_message, newly_held, only_progress,
        same_status,
    },
    storage::expand_claims,
};
use crate::{
    build::{Children, INSTANCE_LABEL, desired_children},
    resource::{API_VERSION, KIND, PAUSED_ANNOTATION, StuckPod, VisitCounterApp},
};

const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Status writes that only report progress come at most this often per app
/// (at most the cache-lag window, within which the last write is known).
const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_secs(5);
/// Every this many reconciles, what is kept for deleted apps is dropped.
const FORGET_EVERY: u64 = 512;
/// How long a re-create waits for its orphaning delete to finish.
const ORPHANING_WAIT: Duration = Duration::from_secs(30);
/// How long after writing a StatefulSet the app's status waits for the
/// StatefulSet controller to see it (see `reconcile_app`).
pub(super) const STATEFULSET_SEEN_WAIT: Duration = Duration::from_secs(1);

fn app_key(app: &VisitCounterApp) -> String {
    format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any())
}

/// The key of a child in the operator's memory of its own writes
/// (`Context::remember_apply`, `applied_ago`, `statefulset_written`).
fn child_key(child: &DesiredChild, namespace: &str) -> String {
    format!("{}/{namespace}/{}", child.kind, child.name)
}

pub async fn reconcile(app: Arc<VisitCounterApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.caches.ready().await;
    ctx.metrics.apps.set(ctx.apps.len() as i64);
    if ctx.metrics.reconciles().is_multiple_of(FORGET_EVERY) {
        ctx.forget_deleted_apps();
    }
    let started = Instant::now();
    let result = reconcile_app(&app, &ctx).await;
    ctx.metrics
        .reconciled(started.elapsed(), result.as_ref().err().map(Error::reason));
    match &result {
        Ok(_) => ctx.succeeded(&app_key(&app)),
        Err(error) => report_failure(&app, error, &ctx).await,
    }
    result
}

/// Waits for a change when only a new spec can help; otherwise retries
/// with exponential backoff, 1 s doubling up to 5 minutes.
pub fn error_policy(app: Arc<VisitCounterApp>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.needs_spec_change() {
        return Action::await_change();
    }
    let failures = ctx.failed(&app_key(&app));
    let delay = Duration::from_secs(1u64 << failures.saturating_sub(1).min(9)).min(MAX_BACKOFF);
    Action::requeue(delay)
}

/// The CRD's rules, for an object that was stored without them.
fn validate(app: &VisitCounterApp, ctx: &Context) -> Result<(), Error> {
    let object = json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": app.name_any()},
        "spec": app.spec,
    });
    ctx.admission.admit(&object).map(|_| ()).map_err(Error::InvalidSpec)
}

fn desired(children: Children) -> Result<Vec<DesiredChild>, Error> {
    fn child(kind: &'static str, object: impl serde::Serialize) -> Result<DesiredChild, Error> {
        let value = serde_json::to_value(object).map_err(|e| Error::Serialize(kind, e))?;
        Ok(DesiredChild::new(kind, value))
    }
    // In the order they are written (see `plan::dry_runs`): the Services
    // first, what the pods use next, the StatefulSet last.
    let mut desired = Vec::with_capacity(5);
    desired.push(child("Service", children.service)?);
    desired.push(child("Service", children.headless_service)?);
    if let Some(account) = children.service_account {
        desired.push(child("ServiceAccount", account)?);
    }
    desired.push(child("ConfigMap", children.config_map)?);
    desired.push(child("StatefulSet", children.stateful_set)?);
    Ok(desired)
}

/// The controller of `live`, when it is not `app`.
fn foreign_controller(live: &Value, app: &VisitCounterApp) -> Option<String> {
    let owner = live["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)?;
    (owner["uid"].as_str() != app.metadata.uid.as_deref()).then(|| {
        format!(
            "{} {}",
            owner["kind"].as_str().unwrap_or("?"),
            owner["name"].as_str().unwrap_or("?")
        )
    })
}

async fn reconcile_app(app: &VisitCounterApp, ctx: &Context) -> Result<Action, Error> {
    if app.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children.
        return Ok(Action::await_change());
    }
    let was_paused = app
        .status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == PAUSED && c.status == "True"));
    if app.is_paused() {
        if !was_paused {
            record(
                &ctx.recorder,
                app,
                EventType::Normal,
                "Paused",
                format!("{PAUSED_ANNOTATION} is \"true\": the operator changes nothing until it is removed"),
                None,
                &ctx.metrics,
            )
            .await;
        }
        update_status(app, status_from_caches(app, ctx, None, true), ctx).await?;
        return Ok(Action::await_change());
    }
    if was_paused {
        record(
            &ctx.recorder,
            app,
            EventType::Normal,
            "Resumed",
            format!("{PAUSED_ANNOTATION} was removed: reconciling again"),
            None,
            &ctx.metrics,
        )
        .await;
    }
    let namespace = app.namespace().unwrap_or_default();
    validate(app, ctx)?;
    let children = desired(desired_children(app, &ctx.settings.build).map_err(Error::Build)?)?;
    let live: Vec<Option<Value>> = children
        .iter()
        .map(|c| ctx.caches.get(c.kind, &namespace, &c.name))
        .collect();
    for (child, live) in children.iter().zip(&live) {
        if let Some(owner) = live.as_ref().and_then(|l| foreign_controller(l, app)) {
            return Err(Error::NotOwned {
                kind: child.kind,
                name: child.name.clone(),
                owner,
            });
        }
    }

    let mut recheck_soon = false;
    let steps: Vec<Step> = children
        .iter()
        .zip(&live)
        .map(|(child, live)| {
            let step = plan(child, live.as_ref());
            let key = child_key(child, &namespace);
            // Our own write may not have reached the cache yet: do not send it
            // twice, look again once the cache has had time to catch up.
            if matches!(step, Step::Create | Step::Update | Step::Recreate { .. })
                && ctx.recently_applied(&key, &child.hash)
            {
                recheck_soon = true;
                return Step::UpToDate;
            }
            step
        })
        .collect();

    let mut observed: Vec<Option<Value>> = live.clone();
    if steps.iter().any(Step::writes) {
        // An update of the StatefulSet after one of a Service is tried
        // first, so a spec the API server refuses changes neither.
        let kinds: Vec<(&str, &Step)> = children.iter().map(|c| c.kind).zip(&steps).collect();
        for (child, dry_run) in children.iter().zip(dry_runs(&kinds)) {
            if dry_run {
                apply_child(&ctx.client, &namespace, child, true, &ctx.metrics)
                    .await
                    .map_err(|source| refused_or_failed(child, source))?;
            }
        }
        // A new claim template: the existing claims grow first (all or none),
        // so the re-created StatefulSet's pods find volumes of the new size.
        if let Some(Step::Recreate { fields }) = steps.last()
            && fields.contains(&"volumeClaimTemplates")
        {
            grow_volumes(app, ctx, &namespace).await?;
        }
        let mut changes: Vec<String> = Vec::new();
        let mut reasons: Vec<&'static str> = Vec::new();
        let mut failure = None;
        let mut promoted = None;
        // Children this reconcile created: (index, uid), deleted again when
        // a later write is refused.
        let mut created: Vec<(usize, String)> = Vec::new();
        for (i, (child, step)) in children.iter().zip(&steps).enumerate() {
            if !step.writes() {
                continue;
            }
            match write_child(app, ctx, &namespace, child, step, live[i].as_ref()).await {
                Ok(applied) => {
                    if *step == Step::Create {
                        let uid = applied["metadata"]["uid"].as_str().unwrap_or_default();
                        created.push((i, uid.to_owned()));
                    }
                    if let (Some(before), "StatefulSet") = (&live[i], child.kind) {
                        promoted = promotion(&child.name, before, &applied);
                    }
                    observed[i] = Some(applied);
                    let (reason, what) = match step {
                        Step::Create => ("Created", format!("created {} {}", child.kind, child.name)),
                        Step::Update => ("Updated", updated(child, live[i].as_ref())),
                        Step::RestoreDrift { path } => (
                            "DriftRestored",
                            format!("restored {} {} ({path} had been changed)", child.kind, child.name),
                        ),
                        _ => (
                            "Recreated",
                            format!(
                                "re-created {} {}, which adopts the existing pods and claims",
                                child.kind, child.name
                            ),
                        ),
                    };
                    reasons.push(reason);
                    changes.push(what);
                }
                Err(error) => {
                    if matches!(error, Error::ChildRejected { .. }) && !created.is_empty() {
                        let removed = remove_created(ctx, &namespace, &children, &created).await;
                        changes = vec![format!(
                            "removed {removed}, created by this reconcile, since {} {} was refused",
                            child.kind, child.name
                        )];
                        reasons = vec!["RolledBack"];
                    }
                    failure = Some(error);
                    break;
                }
            }
        }
        // One Event per reconcile that changed something, naming each change.
        if !changes.is_empty() {
            let reason = if reasons.iter().all(|r| *r == reasons[0]) {
                reasons[0]
            } else {
                "Applied"
            };
            record(
                &ctx.recorder,
                app,
                EventType::Normal,
                reason,
                changes.join("; "),
                None,
                &ctx.metrics,
            )
            .await;
        }
        if let Some(message) = promoted {
            record(
                &ctx.recorder,
                app,
                EventType::Normal,
                "Promoted",
                message,
                None,
                &ctx.metrics,
            )
            .await;
        }
        if let Some(error) = failure {
            return Err(error);
        }
    }

    // The StatefulSet is the last child and the user-facing Service the one
    // before it, with or without a ServiceAccount first.
    let observed_at = |back: usize| observed.iter().rev().nth(back).cloned().flatten();
    let stateful_set: Option<StatefulSet> = observed_at(0).and_then(|v| serde_json::from_value(v).ok());
    let service: Option<Service> = children
        .iter()
        .position(|c| c.kind == "Service" && c.name == app.name_any())
        .and_then(|i| observed[i].clone())
        .and_then(|v| serde_json::from_value(v).ok());
    if let (Some(sts), Some(config_map)) = (&stateful_set, children.iter().find(|c| c.kind == "ConfigMap")) {
        remove_old_configs(app, ctx, &namespace, &config_map.name, sts).await;
    }
    let now = Time(Timestamp::now());
    let check = stateful_set
        .as_ref()
        .map(|sts| {
            let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let pods = ctx.caches.pods_of(&namespace, &app.name_any(), replicas);
            check_rollout(app, sts, pods.iter().map(|p| &p.0), &now, ctx.settings.stuck_after)
        })
        .unwrap_or_default();
    let stuck = match &check.stuck {
        Some(stuck) => handle_stuck_pod(app, ctx, &namespace, stuck).await?,
        None => None,
    };
    // Pods missing, pod creation standing still: the StatefulSet's Events may
    // say why. Nothing else wakes this app while the StatefulSet stays as it is.
    let mut look_again_in = check.look_again_in;
    let mut failure = None;
    let key = app_key(app);
    let missing_for = ctx.pod_creation_stalled_for(
        &key,
        stateful_set.as_ref().is_some_and(pods_missing),
        stateful_set
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .map_or(0, |s| s.replicas),
    );
    let next_look_in = ctx.pod_creation_next_look_in(&key);
    if let Some(missing_for) = missing_for {
        // At the end of the grace period; then, while pods stay missing, when
        // the next look is due (a new pod wakes the app through its
        // StatefulSet).
        let next = match GRACE.checked_sub(missing_for) {
            Some(left) if !left.is_zero() => left,
            _ => next_look_in.max(Duration::from_secs(1)),
        };
        look_again_in = Some(look_again_in.map_or(next, |d| d.min(next)));
    }
    if let (Some(sts), Some(missing_for)) = (&stateful_set, missing_for)
        && worth_a_look(app, sts, existing_pods_ready(ctx, &namespace, app, sts), missing_for)
    {
        if next_look_in.is_zero() {
            ctx.pod_creation_looked(&key);
            failure = why_pods_are_missing(&ctx.client, sts).await.map(|message| Failure {
                reason: PODS_NOT_CREATED,
                message: format!("the StatefulSet controller cannot create pods: {message}"),
                stalled: true,
            });
        } else if let Some(said) = pods_not_created(app) {
            // Between looks, what the last look found still stands.
            failure = Some(said);
        }
    }
    let dropped = match (children.last(), observed_at(0)) {
        (Some(desired), Some(live)) => dropped_by_server(&desired.object, &live),
        _ => Vec::new(),
    };
    let newly_dropped = !dropped.is_empty()
        && !app
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == UNSUPPORTED_SPEC));
    if newly_dropped {
        record(
            &ctx.recorder,
            app,
            EventType::Warning,
            "FieldDropped",
            dropped_message(&dropped),
            None,
            &ctx.metrics,
        )
        .await;
    }
    let status = desired_status(
        app,
        &Observed {
            stateful_set: stateful_set.as_ref(),
            service: service.as_ref(),
            failure,
            paused: false,
            stuck,
            dropped,
        },
        now,
    );
    let held = newly_held(app.status.as_ref(), &status);
    // Just written, the StatefulSet is not yet seen by its controller, whose
    // status update usually comes within moments and wakes this app again:
    // the status is written then, once, rather than now and again then. It
    // is waited for no longer than `STATEFULSET_SEEN_WAIT`, and not at all
    // while the controller is behind (another StatefulSet has waited longer
    // than that): the status then says the StatefulSet is pending.
    let sts_key = children
        .last()
        .map(|sts| child_key(sts, &namespace))
        .unwrap_or_default();
    let sts_unseen = stateful_set
        .as_ref()
        .is_some_and(|s| s.status.as_ref().and_then(|st| st.observed_generation) < s.metadata.generation);
    if !sts_unseen {
        ctx.statefulset_seen(&sts_key);
    } else if steps.last().is_some_and(Step::writes) {
        ctx.statefulset_written(&sts_key);
    }
    let sts_wait_left = (sts_unseen && !ctx.statefulset_controller_behind())
        .then(|| ctx.applied_ago(&sts_key))
        .flatten()
        .and_then(|ago| STATEFULSET_SEEN_WAIT.checked_sub(ago))
        .filter(|left| !left.is_zero());
    let sts_just_written = sts_wait_left.is_some();
    match if sts_just_written {
        StatusWrite::Unchanged
    } else {
        update_status(app, status, ctx).await?
    } {
        StatusWrite::Deferred(left) => look_again_in = Some(look_again_in.map_or(left, |d| d.min(left))),
        StatusWrite::Written => {
            if let Some(message) = held {
                record(
                    &ctx.recorder,
                    app,
                    EventType::Normal,
                    "RolloutHeld",
                    message,
                    None,
                    &ctx.metrics,
                )
                .await;
            }
        }
        StatusWrite::Unchanged => {}
    }
    let mut requeue = ctx.settings.resync;
    if recheck_soon {
        requeue = super::CACHE_LAG_WINDOW;
    }
    if let Some(later) = look_again_in {
        requeue = requeue.min(later + Duration::from_secs(1));
    }
    if let Some(left) = sts_wait_left {
        requeue = requeue.min(left);
    }
    Ok(Action::requeue(requeue))
}

/// Deletes the app's old ConfigMaps that no kept revision and no pod needs
/// any more (see `old_configs`). Looks only when the candidates or the
/// StatefulSet's revisions changed, or a resync period passed. A failure is
/// logged and tried again later: it leaves an unused ConfigMap, no worse.
async fn remove_old_configs(app: &VisitCounterApp, ctx: &Context, namespace: &str, current: &str, sts: &StatefulSet) {
    use std::hash::{Hash, Hasher};
    let (name, key) = (app.name_any(), app_key(app));
    let Some(uid) = app.metadata.uid.as_deref() else {
        return;
    };
    let cached = ctx.caches.config_maps.state();
    let found = candidates(cached.iter().map(|c| c.as_ref()), namespace, &name, uid, current);
    if found.is_empty() {
        return;
    }
    let pod_revisions: BTreeSet<String> = ctx
        .caches
        .pods
        .state()
        .iter()
        .filter(|p| p.0.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| p.0.labels().get(INSTANCE_LABEL) == Some(&name))
        .filter_map(|p| p.0.labels().get(REVISION_LABEL).cloned())
        .collect();
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    (&found, &pod_revisions).hash(&mut digest);
    sts.status
        .as_ref()
        .map(|s| (&s.current_revision, &s.update_revision, s.observed_generation))
        .hash(&mut digest);
    if !ctx.old_configs_worth_a_look(&key, digest.finish()) {
        return;
    }
    match remove_old_config_maps(&ctx.client, namespace, &name, &found, &pod_revisions, &ctx.metrics).await {
        Ok(deleted) if !deleted.is_empty() => {
            record(
                &ctx.recorder,
                app,
                EventType::Normal,
                "OldConfigRemoved",
                format!(
                    "deleted ConfigMap {}: no pod and no revision in StatefulSet {name}'s history refers to it",
                    deleted.join(", ")
                ),
                None,
                &ctx.metrics,
            )
            .await;
        }
        Ok(_) => {}
        Err(error) => {
            ctx.old_configs_checked
                .lock()
                .expect("old configs checked")
                .remove(&key);
            tracing::warn!(app = %key, %error, "cannot remove old ConfigMaps; trying again later");
        }
    }
}

/// Whether every pod the StatefulSet has (by its status) is in the cache and
/// ready.
fn existing_pods_ready(ctx: &Context, namespace: &str, app: &VisitCounterApp, sts: &StatefulSet) -> bool {
    let existing = sts.status.as_ref().map_or(0, |s| s.replicas);
    let pods = ctx.caches.pods_of(namespace, &app.name_any(), existing);
    pods.len() == existing as usize && pods.iter().all(|p| is_ready(&p.0))
}

/// Grows the app's claims to `storage.size` before its StatefulSet is
/// re-created with the new claim template.
async fn grow_volumes(app: &VisitCounterApp, ctx: &Context, namespace: &str) -> Result<(), Error> {
    let size = &app.spec.storage.size.0;
    let grown = expand_claims(&ctx.client, namespace, &app.name_any(), size, &ctx.metrics).await?;
    if !grown.is_empty() {
        record(
            &ctx.recorder,
            app,
            EventType::Normal,
            "ExpandingVolumes",
            format!(
                "asked for {size} on {}; the storage driver grows each volume in place",
                grown.join(", ")
            ),
            None,
            &ctx.metrics,
        )
        .await;
    }
    Ok(())
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
        // The cache may still hold the pod we just deleted.
        let key = format!("Pod/{namespace}/{}", stuck.pod);
        if ctx.recently_applied(&key, &stuck.uid) {
            return Ok(None);
        }
        delete_pod(&ctx.client, namespace, &stuck.pod, &stuck.uid, &ctx.metrics)
            .await
            .map_err(|source| Error::ReplaceStuckPod {
                pod: stuck.pod.clone(),
                source: Box::new(source),
            })?;
        ctx.remember_apply(key, stuck.uid.clone());
        record(
            &ctx.recorder,
            app,
            EventType::Normal,
            "StuckPodReplaced",
            stuck.status(app, true).message,
            None,
            &ctx.metrics,
        )
        .await;
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
        record(
            &ctx.recorder,
            app,
            EventType::Warning,
            "RolloutStuck",
            status.message.clone(),
            None,
            &ctx.metrics,
        )
        .await;
    }
    Ok(Some(status))
}

/// Writes one child: a plain server-side apply, or for a re-create the
/// orphaning delete first.
async fn write_child(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    child: &DesiredChild,
    step: &Step,
    live: Option<&Value>,
) -> Result<Value, Error> {
    if let Step::Recreate { fields } = step {
        let uid = live.and_then(|l| l["metadata"]["uid"].as_str()).unwrap_or_default();
        record(
            &ctx.recorder,
            app,
            EventType::Normal,
            "Recreating",
            format!(
                "StatefulSet {} cannot change {} in place: deleting it with its pods and volume claims \
                 orphaned, and creating it again to adopt them",
                child.name,
                fields.join(", ")
            ),
            None,
            &ctx.metrics,
        )
        .await;
        delete_statefulset_orphaning(&ctx.client, namespace, &child.name, uid, &ctx.metrics)
            .await
            .map_err(|source| Error::Recreate {
                name: child.name.clone(),
                source: Box::new(source),
            })?;
        // The API server keeps the object, terminating, until the garbage
        // collector has orphaned its pods and claims, and refuses an apply
        // meanwhile (422, "object is being deleted"). The watch cache says
        // when it is gone; past the wait, the apply says what is wrong.
        let deadline = Instant::now() + ORPHANING_WAIT;
        while Instant::now() < deadline
            && ctx
                .caches
                .get(child.kind, namespace, &child.name)
                .is_some_and(|l| l["metadata"]["uid"].as_str() == Some(uid))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let applied = apply_child(&ctx.client, namespace, child, false, &ctx.metrics)
        .await
        .map_err(|source| match step {
            Step::Recreate { .. } => Error::Recreate {
                name: child.name.clone(),
                source: Box::new(source),
            },
            _ => refused_or_failed(child, source),
        })?;
    ctx.remember_apply(child_key(child, namespace), child.hash.clone());
    Ok(applied)
}

fn refused_or_failed(child: &DesiredChild, source: kube::Error) -> Error {
    if is_refusal(&source) {
        let message = match &source {
            kube::Error::Api(status) => status.message.clone(),
            other => other.to_string(),
        };
        Error::ChildRejected {
            kind: child.kind,
            name: child.name.clone(),
            message,
            source: Box::new(source),
        }
    } else {
        Error::Apply {
            kind: child.kind,
            name: child.name.clone(),
            source: Box::new(source),
        }
    }
}

/// Deletes the children this reconcile created (`created`: index and uid),
/// the last first; names them for the Event.
async fn remove_created(
    ctx: &Context,
    namespace: &str,
    children: &[DesiredChild],
    created: &[(usize, String)],
) -> String {
    let mut removed = Vec::new();
    for (i, uid) in created.iter().rev() {
        let child = &children[*i];
        match delete_child(&ctx.client, namespace, child.kind, &child.name, uid, &ctx.metrics).await {
            Ok(()) => removed.push(format!("{} {}", child.kind, child.name)),
            Err(error) => {
                tracing::warn!(kind = child.kind, name = %child.name, %error, "cannot remove a child created before a refusal")
            }
        }
    }
    removed.join(", ")
}

/// What `update_status` did.
enum StatusWrite {
    /// The app has this status already, or we just wrote it and the cache
    /// has not caught up.
    Unchanged,
    /// Only progress changed, and the last write was too recent: a
    /// reconcile after this long writes it.
    Deferred(Duration),
    Written,
}

/// Writes the status when it changed. Progress alone is written at most
/// once per `PROGRESS_WRITE_INTERVAL`.
async fn update_status(
    app: &VisitCounterApp,
    status: crate::resource::VisitCounterAppStatus,
    ctx: &Context,
) -> Result<StatusWrite, Error> {
    let key = app_key(app);
    let unchanged = app.status.as_ref().is_some_and(|s| same_status(s, &status));
    if unchanged || ctx.recently_written_status(&key, &status) {
        return Ok(StatusWrite::Unchanged);
    }
    if let Some(current) = &app.status
        && only_progress(current, &status)
        && let Some(left) = ctx
            .status_written_ago(&key)
            .and_then(|ago| PROGRESS_WRITE_INTERVAL.checked_sub(ago))
    {
        return Ok(StatusWrite::Deferred(left));
    }
    write_status(&ctx.client, app, &status, &ctx.metrics)
        .await
        .map_err(|e| Error::Status(Box::new(e)))?;
    ctx.remember_status(key, status);
    Ok(StatusWrite::Written)
}

/// What an Update Event says: the child and the fields the update changes.
fn updated(child: &DesiredChild, live: Option<&Value>) -> String {
    const SHOWN: usize = 4;
    let changed = live
        .map(|l| changed_fields(&child.object, l, SHOWN + 1))
        .unwrap_or_default();
    match changed.len() {
        // Only the applied-hash annotation differs: the spec stopped setting
        // a field, which server-side apply removes.
        0 => format!(
            "updated {} {} (removed what the spec no longer sets)",
            child.kind, child.name
        ),
        n => format!(
            "updated {} {} ({}{} changed)",
            child.kind,
            child.name,
            changed[..n.min(SHOWN)].join(", "),
            if n > SHOWN { ", …" } else { "" }
        ),
    }
}

/// The status, from the app's StatefulSet and Service as the watch caches
/// hold them, for a reconcile that applied nothing.
fn status_from_caches(
    app: &VisitCounterApp,
    ctx: &Context,
    failure: Option<Failure>,
    paused: bool,
) -> crate::resource::VisitCounterAppStatus {
    use kube::runtime::reflector::ObjectRef;
    let (namespace, name) = (app.namespace().unwrap_or_default(), app.name_any());
    let stateful_set = ctx
        .caches
        .stateful_sets
        .get(&ObjectRef::new(&name).within(&namespace))
        .and_then(|s| s.typed());
    let service = ctx
        .caches
        .services
        .get(&ObjectRef::new(&name).within(&namespace))
        .and_then(|s| s.typed());
    let observed = Observed {
        stateful_set: stateful_set.as_ref(),
        service: service.as_ref(),
        failure,
        paused,
        stuck: None,
        dropped: Vec::new(),
    };
    desired_status(app, &observed, Time(Timestamp::now()))
}

/// Makes a failure visible: a Warning Event and the `Degraded` condition.
async fn report_failure(app: &VisitCounterApp, error: &Error, ctx: &Context) {
    let message = error.to_string();
    record(
        &ctx.recorder,
        app,
        EventType::Warning,
        error.reason(),
        message.clone(),
        None,
        &ctx.metrics,
    )
    .await;
    let failure = Failure {
        reason: error.reason(),
        message,
        stalled: error.stalls(),
    };
    let status = status_from_caches(app, ctx, Some(failure), false);
    if let Err(error) = update_status(app, status, ctx).await {
        tracing::warn!(app = %app_key(app), %error, "cannot write the Degraded condition");
    }
}
