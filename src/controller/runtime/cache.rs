//! What the watch caches hold. A StatefulSet, a Service or a ConfigMap is
//! kept packed (`compact::Packed`), a pod slim (`slim_pod::SlimPod`); each
//! is read only when its app is reconciled.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Service, ServiceAccount},
};

use super::{compact::Packed, slim_pod::SlimPod, store::ChildStore};
use crate::{children::green_statefulset_name, resource::VisitCounterApp};

/// What every watch drops of its objects before caching them: their
/// managedFields, never read, and on a real API server a large part of
/// every object.
pub fn strip_child<K: kube::Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// kubectl's copy of what it last applied client-side: as large as the
/// spec, and never read.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the apps' watch drops: `strip_child`'s, and `LAST_APPLIED`.
pub fn strip_app(app: &mut VisitCounterApp) {
    strip_child(app);
    if let Some(annotations) = app.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The watch caches of the children.
#[derive(Clone)]
pub struct ChildCaches {
    pub stateful_sets: ChildStore<Packed<StatefulSet>>,
    pub services: ChildStore<Packed<Service>>,
    pub config_maps: ChildStore<Packed<ConfigMap>>,
    /// Only the ServiceAccounts the operator created (by label).
    pub service_accounts: ChildStore<ServiceAccount>,
    /// The apps' pods, stripped to what the rollout check and the visits
    /// poller read.
    pub pods: ChildStore<SlimPod>,
}

impl ChildCaches {
    /// Waits until every cache holds its first full list.
    pub async fn ready(&self) {
        while !self.is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether every cache holds its first full list.
    pub fn is_ready(&self) -> bool {
        self.stateful_sets.is_ready()
            && self.services.is_ready()
            && self.config_maps.is_ready()
            && self.service_accounts.is_ready()
            && self.pods.is_ready()
    }

    /// The cached child of `kind`, as JSON.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<serde_json::Value> {
        match kind {
            "StatefulSet" => self.stateful_sets.get(namespace, name).map(|s| s.to_json()),
            "Service" => self.services.get(namespace, name).map(|s| s.to_json()),
            "ConfigMap" => self.config_maps.get(namespace, name).map(|c| c.to_json()),
            "ServiceAccount" => self
                .service_accounts
                .get(namespace, name)
                .and_then(|a| serde_json::to_value(a.as_ref()).ok()),
            _ => None,
        }
    }

    /// Every cached pod of the app `app` (by its instance label), whatever
    /// its ordinal.
    pub fn pods_of_app(&self, namespace: &str, app: &str) -> Vec<Arc<SlimPod>> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .filter(|p| p.instance() == Some(app))
            .collect()
    }

    /// The cached pods of the StatefulSet `name` with ordinals below `replicas`.
    pub fn pods_of(&self, namespace: &str, name: &str, replicas: i32) -> Vec<Arc<SlimPod>> {
        (0..replicas.max(0))
            .filter_map(|ordinal| self.pods.get(namespace, &format!("{name}-{ordinal}")))
            .collect()
    }

    /// The cached pods of both of the app `app`'s StatefulSets (`app`, then
    /// `app-green`, blue/green's two slots) with ordinals below `replicas`.
    pub fn pods_of_both_slots(&self, namespace: &str, app: &str, replicas: i32) -> Vec<Arc<SlimPod>> {
        let mut pods = self.pods_of(namespace, app, replicas);
        pods.extend(self.pods_of(namespace, &green_statefulset_name(app), replicas));
        pods
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_app_keeps_its_annotations_but_kubectl_s_last_applied_copy() {
        let mut app: VisitCounterApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "visitcounter.dev/v1alpha1", "kind": "VisitCounterApp",
            "metadata": {"name": "web", "annotations": {LAST_APPLIED: "{}", "visitcounter.dev/paused": "true"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"replicas": 1},
        }))
        .unwrap();
        strip_app(&mut app);
        assert_eq!(app.metadata.managed_fields, None);
        let annotations = app.metadata.annotations.unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["visitcounter.dev/paused"]);
    }
}
