//! The writes of one reconcile: each child whose plan says so, in the
//! order of `desired::desired`, with the dry runs `plan::dry_runs` asks for,
//! the claims grown before a re-create with a larger claim template, and
//! the children this reconcile created deleted again when a later write is
//! refused. One Event names every change.

use std::time::{Duration, Instant};

use kube::runtime::events::EventType;
use serde_json::Value;

use super::{
    Context,
    apply::{apply_child, delete_child, delete_statefulset_orphaning},
    child_key,
    plan::{DesiredChild, Step, changed_fields, dry_runs},
    storage::expand_claims,
};
use crate::{
    children::ROUTE_KIND,
    controller::{Error, runtime::error::is_refusal},
    resource::VisitCounterApp,
};

/// How long a re-create waits for its orphaning delete to finish.
const ORPHANING_WAIT: Duration = Duration::from_secs(30);

/// What the writes did.
pub struct Written {
    /// Each child as the API server returned it, or as the cache held it
    /// when it was not written.
    pub observed: Vec<Option<Value>>,
}

/// Writes every child whose step writes. On a refusal, what this reconcile
/// created is deleted again and the error returned, after the Event.
pub async fn apply_changes(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    children: &[DesiredChild],
    steps: &[Step],
    live: &[Option<Value>],
) -> Result<Written, Error> {
    let mut observed = live.to_vec();
    if !steps.iter().any(Step::writes) {
        return Ok(Written { observed });
    }
    dry_run_first(ctx, namespace, children, steps).await?;
    // A new claim template: the existing claims grow first (all or none),
    // so the re-created StatefulSet's pods find volumes of the new size.
    if let (Some(Step::Recreate { fields }), Some(sts)) = (steps.last(), children.last())
        && fields.contains(&"volumeClaimTemplates")
    {
        grow_volumes(app, ctx, namespace, &sts.name).await?;
    }
    let mut changes: Vec<(&'static str, String)> = Vec::new();
    let mut failure = None;
    let mut promoted = None;
    // Children this reconcile created: (index, uid).
    let mut created: Vec<(usize, String)> = Vec::new();
    for (i, (child, step)) in children.iter().zip(steps).enumerate() {
        if !step.writes() {
            continue;
        }
        match write_child(app, ctx, namespace, child, step, live[i].as_ref()).await {
            Ok(applied) => {
                if *step == Step::Create {
                    let uid = applied["metadata"]["uid"].as_str().unwrap_or_default();
                    created.push((i, uid.to_owned()));
                }
                if let (Some(before), "StatefulSet") = (&live[i], child.kind) {
                    promoted = crate::controller::rollout::rolling::promotion(&child.name, before, &applied);
                }
                changes.push(change_event(child, step, live[i].as_ref()));
                observed[i] = Some(applied);
            }
            Err(error) => {
                if matches!(error, Error::ChildRejected { .. }) && !created.is_empty() {
                    changes = vec![roll_back(ctx, namespace, children, &created, child).await];
                }
                failure = Some(error);
                break;
            }
        }
    }
    if let Some((reason, message)) = summary(&changes) {
        ctx.event(app, EventType::Normal, reason, message).await;
    }
    if let Some(message) = promoted {
        ctx.event(app, EventType::Normal, "Promoted", message).await;
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(Written { observed }),
    }
}

/// Deletes what this reconcile created before `refused`; the Event's words.
async fn roll_back(
    ctx: &Context,
    namespace: &str,
    children: &[DesiredChild],
    created: &[(usize, String)],
    refused: &DesiredChild,
) -> (&'static str, String) {
    let removed = remove_created(ctx, namespace, children, created).await;
    let what = format!(
        "removed {removed}, created by this reconcile, since {} {} was refused",
        refused.kind, refused.name
    );
    ("RolledBack", what)
}

/// Sends the writes `plan::dry_runs` picks as dry runs, so that a spec the
/// API server refuses changes no child.
async fn dry_run_first(ctx: &Context, namespace: &str, children: &[DesiredChild], steps: &[Step]) -> Result<(), Error> {
    let kinds: Vec<(&str, &Step)> = children.iter().map(|c| c.kind).zip(steps).collect();
    for (child, dry_run) in children.iter().zip(dry_runs(&kinds)) {
        if dry_run {
            apply_child(&ctx.client, namespace, child, true, &ctx.metrics)
                .await
                .map_err(|source| refused_or_failed(child, source))?;
        }
    }
    Ok(())
}

/// The Event's reason and words for one write.
pub fn change_event(child: &DesiredChild, step: &Step, live: Option<&Value>) -> (&'static str, String) {
    match step {
        Step::Create => ("Created", format!("created {} {}", child.kind, child.name)),
        Step::Update => ("Updated", updated(child, live)),
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
    }
}

/// One Event for every change of a reconcile: the reason they share, else
/// `Applied`, and each change's words.
pub fn summary(changes: &[(&'static str, String)]) -> Option<(&'static str, String)> {
    let (first, _) = changes.first()?;
    let reason = if changes.iter().all(|(r, _)| r == first) {
        *first
    } else {
        "Applied"
    };
    let words: Vec<&str> = changes.iter().map(|(_, what)| what.as_str()).collect();
    Some((reason, words.join("; ")))
}

/// What an Update Event says: the child and the fields the update changes.
pub fn updated(child: &DesiredChild, live: Option<&Value>) -> String {
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

/// Grows the claims of the app's StatefulSet `statefulset` (the serving one,
/// under blue/green) to `storage.size` before it is re-created with the new
/// claim template.
async fn grow_volumes(app: &VisitCounterApp, ctx: &Context, namespace: &str, statefulset: &str) -> Result<(), Error> {
    let size = &app.spec.storage.size.0;
    let template = app.spec.storage.claim_template_name.as_str();
    let grown = expand_claims(&ctx.client, namespace, (template, statefulset), size, &ctx.metrics).await?;
    if !grown.is_empty() {
        let message = format!(
            "asked for {size} on {}; the storage driver grows each volume in place",
            grown.join(", ")
        );
        ctx.event(app, EventType::Normal, "ExpandingVolumes", message).await;
    }
    Ok(())
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
        orphan_statefulset(app, ctx, namespace, child, fields, uid).await?;
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

/// Deletes the StatefulSet with its pods and claims orphaned, and waits
/// until it is gone, so that the apply after it creates the new one.
async fn orphan_statefulset(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    child: &DesiredChild,
    fields: &[&str],
    uid: &str,
) -> Result<(), Error> {
    let message = format!(
        "StatefulSet {} cannot change {} in place: deleting it with its pods and volume claims \
         orphaned, and creating it again to adopt them",
        child.name,
        fields.join(", ")
    );
    ctx.event(app, EventType::Normal, "Recreating", message).await;
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
    Ok(())
}

/// A refusal of the child (the spec is wrong for this cluster), or a
/// failure to retry.
pub fn refused_or_failed(child: &DesiredChild, source: kube::Error) -> Error {
    let code = match &source {
        kube::Error::Api(status) => status.code,
        _ => 0,
    };
    if code == 404 && child.kind == ROUTE_KIND {
        // An apply creates what is missing: only the resource can be.
        Error::GatewayApiMissing
    } else if code == 409 && child.precondition.is_some() {
        Error::CacheBehind {
            kind: child.kind,
            name: child.name.clone(),
        }
    } else if is_refusal(&source) {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config_map() -> DesiredChild {
        DesiredChild::new(
            "ConfigMap",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config-1"}, "data": {"a": "1"}}),
        )
    }

    fn conflict() -> kube::Error {
        let status = kube::core::Status::failure("the object has been modified", "Conflict").with_code(409);
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn a_route_the_cluster_has_no_resource_for_says_the_gateway_api_is_missing() {
        let route = DesiredChild::new(ROUTE_KIND, json!({"metadata": {"name": "web"}}));
        let status =
            kube::core::Status::failure("the server could not find the requested resource", "NotFound").with_code(404);
        let error = refused_or_failed(&route, kube::Error::Api(Box::new(status)));
        assert_eq!(error.reason(), "GatewayAPIMissing");
        assert!(error.stalls() && !error.needs_spec_change());
        assert!(error.to_string().contains("install the Gateway API CRDs"), "{error}");
    }

    #[test]
    fn a_conflict_on_a_write_pinned_to_what_was_read_says_the_cache_is_behind() {
        let mut service = DesiredChild::new("Service", json!({"metadata": {"name": "web", "resourceVersion": "7"}}));
        let error = refused_or_failed(&service, conflict());
        assert!(error.cache_behind() && !error.stalls(), "{error:?}");
        assert_eq!(error.reason(), "CacheBehind");
        service.precondition = None;
        assert_eq!(refused_or_failed(&service, conflict()).reason(), "ChildRejected");
    }

    #[test]
    fn each_step_has_its_reason_and_words() {
        let child = config_map();
        assert_eq!(
            change_event(&child, &Step::Create, None),
            ("Created", "created ConfigMap web-config-1".into())
        );
        assert_eq!(
            change_event(&child, &Step::RestoreDrift { path: "data.a".into() }, None),
            (
                "DriftRestored",
                "restored ConfigMap web-config-1 (data.a had been changed)".into()
            )
        );
        let (reason, words) = change_event(
            &child,
            &Step::Recreate {
                fields: vec!["selector"],
            },
            None,
        );
        assert_eq!(reason, "Recreated");
        assert!(words.contains("adopts the existing pods and claims"), "{words}");
    }

    #[test]
    fn an_update_names_the_fields_it_changes() {
        let child = config_map();
        let live =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config-1"}, "data": {"a": "2"}});
        let (reason, words) = change_event(&child, &Step::Update, Some(&live));
        assert_eq!(reason, "Updated");
        assert_eq!(words, "updated ConfigMap web-config-1 (data.a changed)");
    }

    #[test]
    fn one_event_names_every_change_with_the_reason_they_share() {
        assert_eq!(summary(&[]), None);
        let created = [("Created", "created A".to_owned()), ("Created", "created B".to_owned())];
        assert_eq!(summary(&created), Some(("Created", "created A; created B".into())));
        let mixed = [("Created", "created A".to_owned()), ("Updated", "updated B".to_owned())];
        assert_eq!(summary(&mixed), Some(("Applied", "created A; updated B".into())));
    }
}
