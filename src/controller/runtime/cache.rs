//! What the watch caches hold. A StatefulSet or a Service keeps its spec
//! and status as compact JSON text: typed, a StatefulSet takes about 20 KiB
//! of memory and a Service 3 KiB; as text, under 3 KiB and 1 KiB. They are
//! read only when their app is reconciled.

use std::{marker::PhantomData, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{
            ConfigMap, ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodCondition, PodStatus,
            Service, ServiceAccount,
        },
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::runtime::reflector::{ObjectRef, Store};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};
use serde_json::Value;

use super::watch::store_ready;
use crate::{
    children::{INSTANCE_LABEL, green_statefulset_name},
    controller::{
        observe::{crash_loops::WORDS_KEPT, pods::REVISION_LABEL},
        text::cut,
    },
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

/// A pod as the watch cache keeps it: its name, uid, times and the two
/// labels the operator reads (`POD_LABELS_KEPT`), its IP and its `Ready`
/// condition, and nothing of its spec or the rest of its status. Decoded
/// straight into this form, so a pod's spec (most of its size) is never
/// kept. A container whose last run failed keeps that run's exit code and
/// words (`observe::crash_loops`); a healthy pod keeps no container status.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct SlimPod(pub Pod);

impl<'de> Deserialize<'de> for SlimPod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            metadata: ObjectMeta,
            #[serde(default)]
            status: Option<RawStatus>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct RawStatus {
            #[serde(default, rename = "podIP")]
            pod_ip: Option<String>,
            #[serde(default)]
            conditions: Option<Vec<PodCondition>>,
            #[serde(default)]
            container_statuses: Option<Vec<ContainerStatus>>,
        }
        let raw = Raw::deserialize(deserializer)?;
        Ok(SlimPod(Pod {
            metadata: kept_metadata(raw.metadata),
            spec: None,
            status: raw.status.map(|s| PodStatus {
                pod_ip: s.pod_ip,
                conditions: s
                    .conditions
                    .map(|c| c.into_iter().filter(|c| c.type_ == "Ready").collect()),
                container_statuses: failed_runs(s.container_statuses.unwrap_or_default()),
                ..PodStatus::default()
            }),
        }))
    }
}

/// The labels of a pod the operator reads: which app it belongs to, and
/// its StatefulSet revision.
pub const POD_LABELS_KEPT: [&str; 2] = [INSTANCE_LABEL, REVISION_LABEL];

/// Of a pod's metadata, what the operator reads: name, namespace, uid,
/// creation and deletion, and `POD_LABELS_KEPT`; and the resourceVersion,
/// which the watch resumes from.
fn kept_metadata(metadata: ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: metadata.name,
        namespace: metadata.namespace,
        uid: metadata.uid,
        resource_version: metadata.resource_version,
        creation_timestamp: metadata.creation_timestamp,
        deletion_timestamp: metadata.deletion_timestamp,
        labels: metadata.labels.map(|labels| {
            labels
                .into_iter()
                .filter(|(k, _)| POD_LABELS_KEPT.contains(&k.as_str()))
                .collect()
        }),
        ..ObjectMeta::default()
    }
}

/// Of the containers' statuses, those whose last run failed, with only
/// their restart count and that run's exit code and words (cut to what the
/// status repeats); `None` when there is none.
fn failed_runs(statuses: Vec<ContainerStatus>) -> Option<Vec<ContainerStatus>> {
    let failed: Vec<ContainerStatus> = statuses
        .into_iter()
        .filter_map(|s| {
            let last = s.last_state?.terminated.filter(|t| t.exit_code != 0)?;
            Some(ContainerStatus {
                name: s.name,
                ready: s.ready,
                restart_count: s.restart_count,
                last_state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: last.exit_code,
                        message: last.message.map(|m| cut(&m, WORDS_KEPT)),
                        ..ContainerStateTerminated::default()
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            })
        })
        .collect();
    (!failed.is_empty()).then_some(failed)
}

impl k8s_openapi::Resource for SlimPod {
    const API_VERSION: &'static str = Pod::API_VERSION;
    const GROUP: &'static str = Pod::GROUP;
    const KIND: &'static str = Pod::KIND;
    const VERSION: &'static str = Pod::VERSION;
    const URL_PATH_SEGMENT: &'static str = Pod::URL_PATH_SEGMENT;
    type Scope = <Pod as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for SlimPod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.0.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
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

/// What the apps' watch drops (`strip_child`'s).
pub fn strip_app(app: &mut VisitCounterApp) {
    strip_child(app);
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
            .filter(|p| p.0.metadata.namespace.as_deref() == Some(namespace))
            .filter(|p| {
                p.0.metadata
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
    fn a_slim_pod_keeps_what_the_operator_reads_only() {
        let json = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "u1", "generateName": "web-",
                         "resourceVersion": "42", "creationTimestamp": "2026-12-06T10:00:00Z",
                         "annotations": {"a": "b"}, "ownerReferences": [{"apiVersion": "apps/v1",
                         "kind": "StatefulSet", "name": "web", "uid": "u0", "controller": true}],
                         "labels": {"controller-revision-hash": "web-1", "app.kubernetes.io/instance": "web",
                                    "app.kubernetes.io/name": "visitcounter",
                                    "statefulset.kubernetes.io/pod-name": "web-0"}},
            "spec": {"containers": [{"name": "app", "image": "x"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.7",
                       "conditions": [{"type": "PodScheduled", "status": "True"},
                                      {"type": "Ready", "status": "True"}]},
        });
        let SlimPod(pod) = serde_json::from_value(json).unwrap();
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(
            labels.keys().map(String::as_str).collect::<Vec<_>>(),
            ["app.kubernetes.io/instance", "controller-revision-hash"]
        );
        assert_eq!(
            (
                pod.metadata.name.as_deref(),
                pod.metadata.namespace.as_deref(),
                pod.metadata.uid.as_deref()
            ),
            (Some("web-0"), Some("shop"), Some("u1"))
        );
        assert!(pod.metadata.creation_timestamp.is_some());
        assert_eq!(
            pod.metadata.resource_version.as_deref(),
            Some("42"),
            "the watch resumes from it"
        );
        assert_eq!((&pod.metadata.generate_name, &pod.metadata.annotations), (&None, &None));
        assert_eq!(pod.metadata.owner_references, None);
        assert!(pod.spec.is_none());
        let status = pod.status.unwrap();
        assert_eq!((status.pod_ip.as_deref(), status.phase), (Some("10.0.0.7"), None));
        let conditions = status.conditions.unwrap();
        assert_eq!(
            conditions.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            ["Ready"]
        );
        assert_eq!(status.container_statuses, None, "no container status of a healthy pod");
    }

    #[test]
    fn a_slim_pod_keeps_the_exit_code_and_words_of_a_failed_run() {
        let words = "x".repeat(3000);
        let json = serde_json::json!({
            "metadata": {"name": "web-0"},
            "status": {"containerStatuses": [
                {"name": "app", "image": "x", "imageID": "sha", "ready": false, "restartCount": 4,
                 "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                 "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": words}}},
                {"name": "side", "image": "y", "imageID": "", "ready": true, "restartCount": 0,
                 "state": {"running": {}}, "lastState": {}},
            ]},
        });
        let SlimPod(pod) = serde_json::from_value(json).unwrap();
        let kept = pod.status.unwrap().container_statuses.unwrap();
        assert_eq!(kept.len(), 1, "only the container whose last run failed");
        let last = kept[0].last_state.clone().unwrap().terminated.unwrap();
        assert_eq!(
            (kept[0].name.as_str(), last.exit_code, kept[0].restart_count),
            ("app", 1, 4)
        );
        assert!(last.message.unwrap().len() <= WORDS_KEPT + "…".len());
        assert_eq!((kept[0].image.as_str(), kept[0].state.as_ref()), ("", None));
    }
}
