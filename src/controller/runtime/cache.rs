//! What the watch caches hold. A StatefulSet or a Service keeps its spec
//! and status as compact JSON text: typed, a StatefulSet takes about 20 KiB
//! of memory and a Service 3 KiB; as text, under 3 KiB and 1 KiB. They are
//! read only when their app is reconciled.

use std::{marker::PhantomData, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, Service, ServiceAccount},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::runtime::reflector::{ObjectRef, Store};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};
use serde_json::Value;

use super::{slim_pod::SlimPod, watch::store_ready};
use crate::{
    children::{INSTANCE_LABEL, green_statefulset_name},
    resource::VisitCounterApp,
};

/// `K` with its spec and status kept as text.
#[derive(Deserialize, Serialize)]
#[serde(bound = "")]
pub struct Compact<K> {
    pub metadata: ObjectMeta,
    /// (Watch events are decoded through serde's buffered form, which
    /// `RawValue` cannot come from, so each part is decoded once and kept
    /// as text.)
    #[serde(default, deserialize_with = "as_text", serialize_with = "from_text")]
    spec: Option<String>,
    #[serde(default, deserialize_with = "as_text", serialize_with = "from_text")]
    status: Option<String>,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Compact<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            spec: self.spec.clone(),
            status: self.status.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for Compact<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compact")
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl<K: k8s_openapi::Resource> k8s_openapi::Resource for Compact<K> {
    const API_VERSION: &'static str = K::API_VERSION;
    const GROUP: &'static str = K::GROUP;
    const KIND: &'static str = K::KIND;
    const VERSION: &'static str = K::VERSION;
    const URL_PATH_SEGMENT: &'static str = K::URL_PATH_SEGMENT;
    type Scope = K::Scope;
}

impl<K: k8s_openapi::Resource> k8s_openapi::Metadata for Compact<K> {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<K: k8s_openapi::Resource + DeserializeOwned> Compact<K> {
    /// The whole object as JSON, for planning.
    pub fn to_json(&self) -> Value {
        let parse = |text: &Option<String>| {
            text.as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(Value::Null)
        };
        let mut object = serde_json::json!({
            "apiVersion": K::API_VERSION,
            "kind": K::KIND,
            "metadata": self.metadata,
            "spec": parse(&self.spec),
        });
        if self.status.is_some() {
            object["status"] = parse(&self.status);
        }
        object
    }

    /// The typed object.
    pub fn typed(&self) -> Option<K> {
        serde_json::from_value(self.to_json()).ok()
    }
}

fn as_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Value>::deserialize(deserializer)?.map(|part| part.to_string()))
}

fn from_text<S: Serializer>(text: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    let value: Option<Value> = text.as_deref().and_then(|t| serde_json::from_str(t).ok());
    value.serialize(serializer)
}

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
    pub stateful_sets: Store<Compact<StatefulSet>>,
    pub services: Store<Compact<Service>>,
    pub config_maps: Store<ConfigMap>,
    /// Only the ServiceAccounts the operator created (by label).
    pub service_accounts: Store<ServiceAccount>,
    /// The apps' pods, stripped to what the rollout check and the visits
    /// poller read.
    pub pods: Store<SlimPod>,
}

impl ChildCaches {
    /// Waits until every cache holds its first full list.
    pub async fn ready(&self) {
        while !self.is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether every cache holds its first full list. Polled rather than
    /// awaited: a store's readiness wakes only one of several waiters.
    pub fn is_ready(&self) -> bool {
        store_ready(&self.stateful_sets)
            && store_ready(&self.services)
            && store_ready(&self.config_maps)
            && store_ready(&self.service_accounts)
            && store_ready(&self.pods)
    }

    /// The cached child of `kind`, as JSON.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<serde_json::Value> {
        match kind {
            "StatefulSet" => self
                .stateful_sets
                .get(&ObjectRef::new(name).within(namespace))
                .map(|s| s.to_json()),
            "Service" => self
                .services
                .get(&ObjectRef::new(name).within(namespace))
                .map(|s| s.to_json()),
            "ConfigMap" => self
                .config_maps
                .get(&ObjectRef::new(name).within(namespace))
                .and_then(|c| serde_json::to_value(c.as_ref()).ok()),
            "ServiceAccount" => self
                .service_accounts
                .get(&ObjectRef::new(name).within(namespace))
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
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(INSTANCE_LABEL))
                    .map(String::as_str)
                    == Some(app)
            })
            .collect()
    }

    /// The cached pods of the StatefulSet `name` with ordinals below `replicas`.
    pub fn pods_of(&self, namespace: &str, name: &str, replicas: i32) -> Vec<Arc<SlimPod>> {
        (0..replicas.max(0))
            .filter_map(|ordinal| {
                self.pods
                    .get(&ObjectRef::new(&format!("{name}-{ordinal}")).within(namespace))
            })
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
    use k8s_openapi::api::apps::v1::StatefulSet;

    use super::*;

    #[test]
    fn keeps_a_statefulset_whole_including_through_a_watch_event() {
        let json = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "shop", "generation": 2},
            "spec": {"replicas": 3, "serviceName": "web-headless"},
            "status": {"replicas": 3, "observedGeneration": 2},
        });
        let cached: Compact<StatefulSet> = serde_json::from_str(&json.to_string()).unwrap();
        assert_eq!(cached.to_json(), json);
        assert_eq!(cached.typed().unwrap().status.unwrap().observed_generation, Some(2));
        // Watch events arrive through serde's buffered form.
        #[derive(Deserialize)]
        #[serde(tag = "type", content = "object")]
        enum Event {
            #[serde(rename = "ADDED")]
            Added(Compact<StatefulSet>),
        }
        let event = serde_json::json!({"type": "ADDED", "object": json});
        let Event::Added(from_event) = serde_json::from_str(&event.to_string()).unwrap();
        assert_eq!(from_event.to_json(), json);
    }

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
