//! Taking over a StatefulSet that nothing controls (a Helm release's), as
//! `visitcounter.dev/adopt` allows: `desired::check_owned` lets it through,
//! `plan` re-creates it as the app's, and this replaces the pods the old one
//! left. Those keep the names the app's own pods need but not its labels,
//! so the new StatefulSet can neither adopt them nor create its pods beside
//! them: they are deleted, all at once, and the app's pods start on the
//! same claims. The app's Service already selects only its own pods then.

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Service},
};
use kube::{Api, ResourceExt, api::DynamicObject, runtime::events::EventType};
use serde_json::Value;

use super::{Context, apply::api_resource, plan::DesiredChild};
use crate::{
    children::{ROUTE_KIND, selector_labels},
    controller::{Error, observe::pod_creation::pods_missing},
    resource::VisitCounterApp,
};

/// Fills in, for the StatefulSet and Services the caches do not hold, what
/// the API server holds under their names. The caches keep only objects
/// with the operator's labels, so a chart's objects of the same names are
/// not in them: without this look, creating the app's would write over
/// them. One read per such child, only while it is missing from the caches;
/// the reads go at once, so a new app waits for one, not three.
pub async fn look_past_the_caches(
    ctx: &Context,
    namespace: &str,
    children: &[DesiredChild],
    live: &mut [Option<Value>],
) -> Result<(), Error> {
    let reads = children
        .iter()
        .zip(live.iter())
        .enumerate()
        .filter(|(_, (child, live))| {
            live.is_none() && !ctx.recently_applied(&super::child_key(child, namespace), &child.hash)
        })
        .map(|(i, (child, _))| async move { Ok::<_, Error>((i, read(ctx, namespace, child).await?)) });
    for (i, found) in futures::future::try_join_all(reads).await? {
        if let Some(found) = found {
            live[i] = found;
        }
    }
    Ok(())
}

/// What the API server holds under `child`'s name, for the kinds the caches
/// may miss; `None` for the others (not read).
async fn read(ctx: &Context, namespace: &str, child: &DesiredChild) -> Result<Option<Option<Value>>, Error> {
    let found = match child.kind {
        "StatefulSet" => get_value::<StatefulSet>(ctx, namespace, &child.name).await,
        "Service" => get_value::<Service>(ctx, namespace, &child.name).await,
        // Routes are not watched (the cluster may have no Gateway API):
        // read each time it was not written lately.
        ROUTE_KIND => return get_route(ctx, namespace, &child.name).await.map(Some),
        _ => return Ok(None),
    };
    found.map(Some).map_err(|source| Error::Read {
        kind: child.kind,
        name: child.name.clone(),
        source: Box::new(source),
    })
}

async fn get_value<K>(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Value>, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let found = api.get_opt(name).await?;
    Ok(found.and_then(|o| serde_json::to_value(o).ok()))
}

/// The app's route, if any. A missing route is `None` (the API server's
/// NotFound); a 404 that is no such answer ("404 page not found") means the
/// API server serves no HTTPRoute at all: `GatewayApiMissing`.
pub(super) async fn get_route(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Value>, Error> {
    let resource = api_resource(ROUTE_KIND);
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
    match api.get_opt(name).await {
        Ok(found) => Ok(found.and_then(|o| serde_json::to_value(o).ok())),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(Error::GatewayApiMissing),
        Err(source) => Err(Error::Read {
            kind: ROUTE_KIND,
            name: name.to_owned(),
            source: Box::new(source),
        }),
    }
}

/// Deletes the pods an adopted StatefulSet left in the way, while the app's
/// own pods are missing.
pub async fn replace_leftover_pods(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    sts: Option<&StatefulSet>,
) -> Result<(), Error> {
    let Some(sts) = sts.filter(|sts| app.adopts() && pods_missing(sts)) else {
        return Ok(());
    };
    let name = app.name_any();
    let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ours: Vec<String> = ctx
        .caches
        .pods_of(namespace, &name, replicas)
        .iter()
        .map(|p| p.name_any())
        .collect();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let mut deleted = Vec::new();
    for ordinal in 0..replicas {
        let pod_name = format!("{name}-{ordinal}");
        if ours.contains(&pod_name) {
            continue;
        }
        let found = pods.get_opt(&pod_name).await.map_err(|source| Error::Read {
            kind: "Pod",
            name: pod_name.clone(),
            source: Box::new(source),
        })?;
        let Some(pod) = found.filter(|p| leftover(p, &name)) else {
            continue;
        };
        let uid = pod.uid().unwrap_or_default();
        let done = ctx
            .delete_pod_once(namespace, &pod_name, &uid)
            .await
            .map_err(|source| Error::DeletePod {
                pod: pod_name.clone(),
                source: Box::new(source),
            })?;
        if done {
            deleted.push(pod_name);
        }
    }
    if !deleted.is_empty() {
        let message = format!(
            "deleted {}, left by the StatefulSet the app took over, so that its own pods of those names start, on the same volume claims",
            deleted.join(", ")
        );
        tracing::info!(app = %format!("{namespace}/{name}"), "{message}");
        ctx.event(app, EventType::Normal, "LeftoverPodsReplaced", message).await;
    }
    Ok(())
}

/// Whether `pod` was left by a StatefulSet the app took over: nothing
/// controls it, and it lacks the app's selector labels (so it is not one
/// of the app's own, orphaned a moment by a re-create of its own).
pub fn leftover(pod: &Pod, app: &str) -> bool {
    let labels = pod.labels();
    let ours = selector_labels(app).iter().all(|(k, v)| labels.get(k) == Some(v));
    let controlled = pod.owner_references().iter().any(|o| o.controller == Some(true));
    !controlled && !ours
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(labels: serde_json::Value, owners: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "app-python-0", "labels": labels, "ownerReferences": owners}}),
        )
        .unwrap()
    }

    #[test]
    fn a_chart_pod_that_nothing_controls_is_a_leftover() {
        let chart = json!({"app.kubernetes.io/instance": "app-python", "app.kubernetes.io/managed-by": "Helm"});
        assert!(leftover(&pod(chart.clone(), json!([])), "app-python"));
        let controlled = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "app-python", "uid": "u", "controller": true}]);
        assert!(!leftover(&pod(chart, controlled), "app-python"), "still controlled");
    }

    #[test]
    fn the_apps_own_pod_orphaned_by_its_own_recreate_is_not() {
        let ours = json!({"app.kubernetes.io/instance": "app-python", "app.kubernetes.io/name": "visitcounter"});
        assert!(!leftover(&pod(ours, json!([])), "app-python"));
    }
}
