//! A pod as the watch cache keeps it: its name, uid, times and the two
//! labels the operator reads (as fields of their own), its IP, its `Ready`
//! condition and the containers whose last run failed; nothing of its spec
//! or the rest of its status. Decoded straight into this form, so a pod's
//! spec (most of its size) is never kept, and held in a struct of its own
//! rather than a `Pod` with the rest left empty: a `Pod` takes 2,176 bytes
//! before any of its fields is filled (`cargo bench --bench cache`).

use k8s_openapi::{
    api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodCondition},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Deserialize, Deserializer};

use crate::{
    children::INSTANCE_LABEL,
    controller::{
        observe::{crash_loops::WORDS_KEPT, pods::REVISION_LABEL},
        text::cut,
    },
};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlimPod {
    /// Name, namespace, uid, resourceVersion (the watch resumes from it),
    /// creation and deletion; no labels (a map of any size takes 544
    /// bytes): the two read are the fields below.
    pub metadata: ObjectMeta,
    /// Its `app.kubernetes.io/instance` label: the app it belongs to.
    pub instance: Option<String>,
    /// Its `controller-revision-hash` label: its StatefulSet revision.
    pub revision: Option<String>,
    /// `status.podIP`.
    pub ip: Option<String>,
    /// Its `Ready` condition, as the kubelet last reported it.
    pub ready: Option<PodCondition>,
    /// Its containers whose last run failed, with only their restart count
    /// and that run's exit code and words (`observe::crash_loops`); none
    /// for a healthy pod.
    pub failed_runs: Vec<ContainerStatus>,
}

impl<'de> Deserialize<'de> for SlimPod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            metadata: ObjectMeta,
            #[serde(default)]
            status: Option<RawStatus>,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct RawStatus {
            #[serde(default, rename = "podIP")]
            pod_ip: Option<String>,
            #[serde(default)]
            conditions: Option<Vec<PodCondition>>,
            #[serde(default)]
            container_statuses: Option<Vec<ContainerStatus>>,
        }
        let mut raw = Raw::deserialize(deserializer)?;
        let status = raw.status.unwrap_or_default();
        let mut label = |key: &str| raw.metadata.labels.as_mut().and_then(|l| l.remove(key));
        let (instance, revision) = (label(INSTANCE_LABEL), label(REVISION_LABEL));
        Ok(SlimPod {
            metadata: kept_metadata(raw.metadata),
            instance,
            revision,
            ip: status.pod_ip,
            ready: status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Ready"),
            failed_runs: failed_runs(status.container_statuses.unwrap_or_default()),
        })
    }
}

/// Of a pod's metadata, what the operator reads: name, namespace, uid,
/// creation and deletion; and the resourceVersion, which the watch resumes
/// from.
fn kept_metadata(metadata: ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: metadata.name,
        namespace: metadata.namespace,
        uid: metadata.uid,
        resource_version: metadata.resource_version,
        creation_timestamp: metadata.creation_timestamp,
        deletion_timestamp: metadata.deletion_timestamp,
        ..ObjectMeta::default()
    }
}

/// Of the containers' statuses, those whose last run failed, with only
/// their restart count and that run's exit code and words (cut to what the
/// status repeats).
fn failed_runs(statuses: Vec<ContainerStatus>) -> Vec<ContainerStatus> {
    statuses
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
        .collect()
}

impl SlimPod {
    /// The app it belongs to (its `app.kubernetes.io/instance` label).
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// Its StatefulSet revision (its `controller-revision-hash` label).
    pub fn revision(&self) -> Option<&str> {
        self.revision.as_deref()
    }
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
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let pod: SlimPod = serde_json::from_value(json).unwrap();
        assert_eq!((pod.instance(), pod.revision()), (Some("web"), Some("web-1")));
        assert_eq!(
            pod.metadata.labels, None,
            "the two labels read are kept apart, and no other"
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
        assert_eq!(pod.ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(
            pod.ready.map(|c| (c.type_, c.status)),
            Some(("Ready".into(), "True".into()))
        );
        assert_eq!(pod.failed_runs, [], "no container status of a healthy pod");
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
        let pod: SlimPod = serde_json::from_value(json).unwrap();
        let kept = pod.failed_runs;
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
