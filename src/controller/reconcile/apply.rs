//! The API calls that write: server-side apply of a child (as a dry run
//! when asked), the orphaning delete of a StatefulSet, deletes by uid, the
//! status, and Events. Each counts itself in the metrics.

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, ObjectReference, Pod, Service, ServiceAccount},
};
use kube::{
    Api, Client, Resource,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, Preconditions,
        PropagationPolicy,
    },
    runtime::events::{Event, EventType, Recorder},
};
use serde_json::{Value, json};

use super::plan::DesiredChild;
use crate::{
    children::ROUTE_KIND,
    controller::runtime::{FIELD_MANAGER, metrics::Metrics},
    resource::{API_VERSION, KIND, VisitCounterApp, VisitCounterAppStatus},
};

pub fn api_resource(kind: &str) -> ApiResource {
    match kind {
        ROUTE_KIND => ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", ROUTE_KIND),
            "httproutes",
        ),
        "StatefulSet" => ApiResource::erase::<StatefulSet>(&()),
        "Service" => ApiResource::erase::<Service>(&()),
        "ServiceAccount" => ApiResource::erase::<ServiceAccount>(&()),
        _ => ApiResource::erase::<ConfigMap>(&()),
    }
}

/// Server-side apply of one child under the operator's field manager,
/// taking back fields a hand edit took. With `dry_run` the API server
/// validates and stores nothing.
pub async fn apply_child(
    client: &Client,
    namespace: &str,
    child: &DesiredChild,
    dry_run: bool,
    metrics: &Metrics,
) -> Result<Value, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &api_resource(child.kind));
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    if dry_run {
        params = params.dry_run();
    } else {
        metrics.wrote(child.kind);
    }
    let applied = match &child.precondition {
        Some(version) => {
            let mut object = child.object.clone();
            object["metadata"]["resourceVersion"] = Value::String(version.clone());
            api.patch(&child.name, &params, &Patch::Apply(&object)).await?
        }
        None => api.patch(&child.name, &params, &Patch::Apply(&child.object)).await?,
    };
    Ok(serde_json::to_value(applied).unwrap_or(Value::Null))
}

/// Deletes the StatefulSet `name` (the one with `uid`, not a newer one) and
/// leaves its pods and volume claims to be adopted by the next one.
pub async fn delete_statefulset_orphaning(
    client: &Client,
    namespace: &str,
    name: &str,
    uid: &str,
    metrics: &Metrics,
) -> Result<(), kube::Error> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    delete_by_uid(&api, "StatefulSet", name, uid, Some(PropagationPolicy::Orphan), metrics).await
}

/// Deletes the pod `name` (the one with `uid`, not its replacement), so its
/// StatefulSet creates it again from the current template. Its claim stays.
pub async fn delete_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    uid: &str,
    metrics: &Metrics,
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match delete_by_uid(&api, "Pod", name, uid, None, metrics).await {
        // Already replaced by a pod with another uid: what we wanted.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        other => other,
    }
}

/// Deletes the child `kind`/`name` (the one with `uid`, not a newer one).
pub async fn delete_child(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
    uid: &str,
    metrics: &Metrics,
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &api_resource(kind));
    match delete_by_uid(&api, kind, name, uid, None, metrics).await {
        // Another object of that name by now: not ours to delete.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        other => other,
    }
}

/// Deletes `name` only if it is still the object with `uid` (409 Conflict
/// otherwise). Gone already is what was wanted.
async fn delete_by_uid<K>(
    api: &Api<K>,
    kind: &str,
    name: &str,
    uid: &str,
    propagation_policy: Option<PropagationPolicy>,
    metrics: &Metrics,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        propagation_policy,
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    metrics.wrote(kind);
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes the app's status through the status subresource.
pub async fn write_status(
    client: &Client,
    app: &VisitCounterApp,
    status: &VisitCounterAppStatus,
    metrics: &Metrics,
) -> Result<(), kube::Error> {
    let namespace = app.metadata.namespace.as_deref().unwrap_or("default");
    let name = app.metadata.name.as_deref().unwrap_or_default();
    let api: Api<VisitCounterApp> = Api::namespaced(client.clone(), namespace);
    let patch = json!({"apiVersion": API_VERSION, "kind": KIND, "status": status});
    metrics.wrote(KIND);
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Records an Event on the app. A failure to record one is logged, not
/// raised: Events are for people, and must not block the reconcile.
pub async fn record(
    recorder: &Recorder,
    app: &VisitCounterApp,
    type_: EventType,
    reason: &str,
    note: String,
    related: Option<ObjectReference>,
    metrics: &Metrics,
) {
    // The Events API refuses notes over 1 kB.
    let note = crate::controller::text::cut(&note, 1000);
    // The log tells the same story as the Events, in the same words.
    let app_key = format!(
        "{}/{}",
        app.metadata.namespace.as_deref().unwrap_or_default(),
        app.metadata.name.as_deref().unwrap_or_default()
    );
    match type_ {
        EventType::Normal => tracing::info!(app = %app_key, reason, "{note}"),
        EventType::Warning => tracing::warn!(app = %app_key, reason, "{note}"),
    }
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: related,
    };
    metrics.wrote("Event");
    if let Err(error) = recorder.publish(&event, &app.object_ref(&())).await {
        tracing::warn!(%error, reason, "cannot record an Event");
    }
}
