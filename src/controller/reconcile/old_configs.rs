//! Removing the ConfigMaps of configs no revision uses any more.
//!
//! Each config gets its own immutable ConfigMap, `<app>-config-<hash>`, and
//! the pod template names it; so each StatefulSet revision (a
//! ControllerRevision holding its template) refers to the ConfigMap of the
//! config it was built with. An old ConfigMap stays while a revision in the
//! StatefulSet's history (`revisionHistoryLimit`) refers to it: the pods
//! of that revision mount it, and a rollback needs it. The StatefulSet
//! controller never prunes the revision of a live pod, so a ConfigMap no
//! kept revision names is mounted by no pod. When a pod's revision is not
//! among the revisions listed, nothing is removed.
//!
//! `referenced_config_maps` and `removable` are pure; `remove_old_config_maps`
//! does the I/O.

use std::collections::BTreeSet;

use k8s_openapi::api::{
    apps::v1::{ControllerRevision, StatefulSet},
    core::v1::ConfigMap,
};
use kube::{Api, Client, ResourceExt, api::ListParams, runtime::events::EventType};
use serde_json::Value;

use super::{Context, app_key, apply::delete_child};
use crate::{
    children::{is_config_map_of, selector_string},
    controller::runtime::metrics::Metrics,
    resource::VisitCounterApp,
};

/// Names of the ConfigMaps an object refers to anywhere in it: volumes
/// (plain and projected), `env[].valueFrom.configMapKeyRef` and
/// `envFrom[].configMapRef`.
pub fn referenced_config_maps(object: &Value, into: &mut BTreeSet<String>) {
    match object {
        Value::Object(fields) => {
            for (key, value) in fields {
                if matches!(key.as_str(), "configMap" | "configMapKeyRef" | "configMapRef")
                    && let Some(name) = value["name"].as_str()
                {
                    into.insert(name.to_owned());
                }
                referenced_config_maps(value, into);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| referenced_config_maps(item, into)),
        _ => {}
    }
}

/// The app's ConfigMaps (`candidates`, by name and uid, the current one
/// excluded) that no revision refers to, or `None` when a pod runs a
/// revision that is not in `revisions` (its template is unknown, so
/// nothing is safe to remove).
pub fn removable(
    candidates: &[(String, String)],
    revisions: &[ControllerRevision],
    pod_revisions: &BTreeSet<String>,
) -> Option<Vec<(String, String)>> {
    let known: BTreeSet<String> = revisions.iter().map(|r| r.name_any()).collect();
    if !pod_revisions.is_subset(&known) {
        return None;
    }
    let mut referenced = BTreeSet::new();
    for revision in revisions {
        if let Some(data) = &revision.data {
            referenced_config_maps(&data.0, &mut referenced);
        }
    }
    Some(
        candidates
            .iter()
            .filter(|(name, _)| !referenced.contains(name))
            .cloned()
            .collect(),
    )
}

/// The app's ConfigMaps in `cached` other than `current`: labelled as its
/// children, controlled by the app (`app_uid`), and named as its configs.
pub fn candidates<'a>(
    cached: impl IntoIterator<Item = &'a ConfigMap>,
    namespace: &str,
    app: &str,
    app_uid: &str,
    current: &str,
) -> Vec<(String, String)> {
    cached
        .into_iter()
        .filter(|c| c.metadata.namespace.as_deref() == Some(namespace))
        .filter(|c| c.labels().get(crate::children::INSTANCE_LABEL).map(String::as_str) == Some(app))
        .filter(|c| {
            c.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == app_uid)
        })
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| (c.name_any(), c.metadata.uid.clone().unwrap_or_default()))
        .filter(|(name, _)| name != current && is_config_map_of(app, name))
        .collect()
}

/// What a look for old ConfigMaps did.
struct Looked {
    deleted: Vec<String>,
    /// The StatefulSet controller has revisions to prune, which may free
    /// more: worth another look soon.
    pruning_due: bool,
}

/// Lists the app's ControllerRevisions and deletes the `candidates` none
/// of them refers to (each by uid).
async fn remove_old_config_maps(
    client: &Client,
    namespace: &str,
    app: &str,
    candidates: &[(String, String)],
    live: (&BTreeSet<String>, &StatefulSet),
    metrics: &Metrics,
) -> Result<Looked, kube::Error> {
    let (pod_revisions, sts) = live;
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    let revisions = api
        .list(&ListParams::default().labels(&selector_string(app)))
        .await?
        .items;
    // Only this StatefulSet's: a blue/green app's other one shares the
    // selector, and keeps a history of its own.
    let sts_uid = sts.metadata.uid.as_deref().unwrap_or_default();
    let own = revisions
        .iter()
        .filter(|r| r.owner_references().iter().any(|o| o.uid == sts_uid))
        .count();
    let pruning_due = pruning_due(own, kept_revisions(sts, pod_revisions));
    let Some(unused) = removable(candidates, &revisions, pod_revisions) else {
        return Ok(Looked {
            deleted: Vec::new(),
            pruning_due,
        });
    };
    let mut deleted = Vec::with_capacity(unused.len());
    for (name, uid) in unused {
        delete_child(client, namespace, "ConfigMap", &name, &uid, metrics).await?;
        deleted.push(name);
    }
    Ok(Looked { deleted, pruning_due })
}

/// Whether the StatefulSet controller is yet to prune revisions: it keeps
/// `kept` (the history limit, plus the live revisions), and `listed` are
/// more. It prunes at its next sync, which changes nothing the operator
/// watches, so the look for old ConfigMaps must come again by itself.
pub fn pruning_due(listed: usize, kept: usize) -> bool {
    listed > kept
}

/// How soon to look again for old ConfigMaps while revisions are due to be
/// pruned.
pub const PRUNING_LOOK_AGAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Deletes the app's old ConfigMaps that no kept revision and no pod needs
/// any more. Looks only when the candidates or the StatefulSet's revisions
/// changed, or a resync period passed, or, while the StatefulSet controller
/// has revisions to prune, again after `PRUNING_LOOK_AGAIN` (returned, for
/// the reconcile to come back then). A failure is logged and tried again
/// later: it leaves an unused ConfigMap, no worse.
pub async fn remove_old_configs(
    app: &VisitCounterApp,
    ctx: &Context,
    namespace: &str,
    current: &str,
    sts: &StatefulSet,
) -> Option<std::time::Duration> {
    let (name, key) = (app.name_any(), app_key(app));
    let uid = app.metadata.uid.as_deref()?;
    // Only the app's own are decoded from their text.
    let own: Vec<ConfigMap> = ctx
        .caches
        .config_maps
        .named_in(namespace, |n| is_config_map_of(&name, n))
        .iter()
        .filter_map(|c| c.typed())
        .collect();
    let found = candidates(&own, namespace, &name, uid, current);
    if found.is_empty() {
        return None;
    }
    let pod_revisions: BTreeSet<String> = ctx
        .caches
        .pods_of_app(namespace, &name)
        .iter()
        .filter_map(|p| p.revision().map(str::to_owned))
        .collect();
    if !ctx.old_configs_worth_a_look(&key, look_digest(&found, &pod_revisions, sts)) {
        return None;
    }
    let looked = remove_old_config_maps(
        &ctx.client,
        namespace,
        &name,
        &found,
        (&pod_revisions, sts),
        &ctx.metrics,
    );
    match looked.await {
        Ok(looked) => {
            if !looked.deleted.is_empty() {
                let message = format!(
                    "deleted ConfigMap {}: no pod and no revision in StatefulSet {name}'s history refers to it",
                    looked.deleted.join(", ")
                );
                ctx.event(app, EventType::Normal, "OldConfigRemoved", message).await;
            }
            looked.pruning_due.then(|| {
                ctx.old_configs_forget(&key);
                PRUNING_LOOK_AGAIN
            })
        }
        Err(error) => {
            ctx.old_configs_forget(&key);
            tracing::warn!(app = %key, %error, "cannot remove old ConfigMaps; trying again later");
            None
        }
    }
}

/// How many revisions the StatefulSet controller keeps: its history limit,
/// and the live ones (current, update, and any a pod runs).
fn kept_revisions(sts: &StatefulSet, pod_revisions: &BTreeSet<String>) -> usize {
    let limit = sts
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let mut live = pod_revisions.clone();
    if let Some(status) = &sts.status {
        live.extend(status.current_revision.clone());
        live.extend(status.update_revision.clone());
    }
    limit + live.len()
}

/// What a look for old ConfigMaps depends on: the candidates, the pods'
/// revisions and the StatefulSet's.
fn look_digest(found: &[(String, String)], pod_revisions: &BTreeSet<String>, sts: &StatefulSet) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    (found, pod_revisions).hash(&mut digest);
    sts.status
        .as_ref()
        .map(|s| (&s.current_revision, &s.update_revision, s.observed_generation))
        .hash(&mut digest);
    digest.finish()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
    use serde_json::json;

    use super::*;

    fn revision(name: &str, config_map: &str) -> ControllerRevision {
        ControllerRevision {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            // As the StatefulSet controller stores a revision: a patch of
            // the template.
            data: Some(RawExtension(
                json!({"spec": {"template": {"$patch": "replace", "spec": {
                "containers": [{"name": "web", "env": [
                    {"name": "K", "valueFrom": {"configMapKeyRef": {"name": config_map, "key": "K"}}}]}],
                "volumes": [{"name": "config", "configMap": {"name": config_map}}]}}}}),
            )),
            revision: 1,
        }
    }

    fn names(pairs: &[(String, String)]) -> Vec<&str> {
        pairs.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn pruning_is_due_while_more_revisions_are_listed_than_the_statefulset_keeps() {
        let sts = |limit: i32, current: &str, update: &str| StatefulSet {
            spec: Some(k8s_openapi::api::apps::v1::StatefulSetSpec {
                revision_history_limit: Some(limit),
                ..Default::default()
            }),
            status: Some(k8s_openapi::api::apps::v1::StatefulSetStatus {
                current_revision: Some(current.into()),
                update_revision: Some(update.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pods = BTreeSet::from(["web-2".to_owned()]);
        // Promoted: web-2 current and updated, one more kept by the limit.
        assert_eq!(kept_revisions(&sts(1, "web-2", "web-2"), &pods), 2);
        assert!(pruning_due(3, 2), "web-1 and web-0 are listed beside web-2");
        assert!(!pruning_due(2, 2));
        // Mid-rollout, a pod still on web-1.
        let mixed = BTreeSet::from(["web-1".to_owned(), "web-2".to_owned()]);
        assert_eq!(kept_revisions(&sts(1, "web-1", "web-2"), &mixed), 3);
    }

    #[test]
    fn finds_config_maps_in_volumes_env_and_env_from() {
        let mut found = BTreeSet::new();
        referenced_config_maps(
            &json!({"volumes": [{"configMap": {"name": "a"}},
                                {"projected": {"sources": [{"configMap": {"name": "b"}}]}}],
                    "containers": [{"env": [{"valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}],
                                    "envFrom": [{"configMapRef": {"name": "d"}}]}]}),
            &mut found,
        );
        assert_eq!(found, BTreeSet::from(["a", "b", "c", "d"].map(String::from)));
    }

    #[test]
    fn keeps_what_a_kept_revision_names_and_removes_the_rest() {
        let candidates = vec![
            ("web-config-aaaaaaaaaa".to_owned(), "uid-a".to_owned()),
            ("web-config-bbbbbbbbbb".to_owned(), "uid-b".to_owned()),
        ];
        let revisions = [
            revision("web-1", "web-config-aaaaaaaaaa"),
            revision("web-2", "web-config-cccccccccc"),
        ];
        let pods = BTreeSet::from(["web-1".to_owned(), "web-2".to_owned()]);
        let gone = removable(&candidates, &revisions, &pods).unwrap();
        assert_eq!(names(&gone), ["web-config-bbbbbbbbbb"]);
        assert_eq!(gone[0].1, "uid-b", "deleted by uid");
    }

    #[test]
    fn removes_nothing_while_a_pod_runs_a_revision_not_listed() {
        let candidates = vec![("web-config-bbbbbbbbbb".to_owned(), "uid-b".to_owned())];
        let revisions = [revision("web-2", "web-config-cccccccccc")];
        let pods = BTreeSet::from(["web-1".to_owned(), "web-2".to_owned()]);
        assert_eq!(removable(&candidates, &revisions, &pods), None);
    }

    #[test]
    fn candidates_are_the_apps_own_configs_other_than_the_current() {
        let config_map = |name: &str, app: &str, owner: &str| -> ConfigMap {
            serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-uid"),
                "labels": {"app.kubernetes.io/instance": app},
                "ownerReferences": [{"apiVersion": "visitcounter.dev/v1alpha1", "kind": "VisitCounterApp",
                                     "name": app, "uid": owner, "controller": true}]}}),
            )
            .unwrap()
        };
        let cached = [
            config_map("web-config-aaaaaaaaaa", "web", "web-uid"),
            config_map("web-config-bbbbbbbbbb", "web", "web-uid"),
            config_map("web-config", "web", "web-uid"),
            config_map("web-config-cccccccccc", "web", "someone-else"),
            config_map("web-settings", "web", "web-uid"),
            config_map("web-2-config-aaaaaaaaaa", "web-2", "web-uid"),
        ];
        let found = candidates(&cached, "shop", "web", "web-uid", "web-config-aaaaaaaaaa");
        assert_eq!(names(&found), ["web-config-bbbbbbbbbb", "web-config"]);
        assert_eq!(found[0].1, "web-config-bbbbbbbbbb-uid");
    }
}
