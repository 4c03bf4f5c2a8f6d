//! The status of a `VisitCounterApp`, as observed from its StatefulSet and Service.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// What the operator last observed of the app.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VisitCounterAppStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods that run the current pod template.
    #[serde(default)]
    pub updated_replicas: i32,
    /// StatefulSet revision the older pods run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// StatefulSet revision of the current pod template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// Label selector of the app's pods, for the scale subresource (HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Node port allocated to the app's Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
    /// `Ready`, `Progressing` and `Degraded`, and kstatus' `Reconciling` and
    /// `Stalled` (for Flux), in the standard `metav1.Condition` form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,
    /// Where the rollout of a changed pod template stands, while it is held by
    /// the partition or blocked by a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// The visit count, read from each ready pod's `/visits` at the operator's
    /// `--visits-interval-seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visits: Option<VisitsStatus>,
    /// With `spec.traffic`: the app's HTTPRoute and where it sends requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficStatus>,
}

/// Where the app's HTTPRoute sends requests.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficStatus {
    /// The HTTPRoute's name.
    pub route: String,
    /// Its backends and their weights (percent of requests).
    #[serde(default)]
    pub backends: Vec<TrafficBackend>,
}

/// One backend of the app's HTTPRoute.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficBackend {
    /// A Service of the app.
    pub service: String,
    /// Its share of the requests, in percent.
    pub weight: i32,
    /// Under an A/B test, the requests it answers (`header X-Variant: b`);
    /// unset for those that match nothing else.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
}

/// The app's visits, summed over its pods.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VisitsStatus {
    /// The sum over the pods that answered, and the counts the claims of
    /// pods scaled away keep (`retained`). A pod that did not answer is left
    /// out, never counted as zero: see `complete`.
    pub total: i64,
    /// Whether every pod of the app answered, so `total` is the app's count
    /// (with the retained counts as last asked).
    pub complete: bool,
    /// Each pod: its count, or why it has none.
    #[serde(default)]
    pub pods: Vec<PodVisits>,
    /// When the pods were asked and gave these counts (not rewritten while the
    /// counts stay the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
    /// While the pods run two revisions (an A/B test's variants, a held
    /// canary): the counts of the pods of each, summed by the revision each
    /// pod runs now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_revision: Vec<RevisionVisits>,
    /// Under `Shadow`, while the shadow runs: its pods' visits (the copies of
    /// requests it was sent), never part of `total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowVisits>,
}

/// The visits of a shadow's pods.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShadowVisits {
    /// The sum over its pods that answered.
    pub total: i64,
    /// Whether every one of its pods answered.
    pub complete: bool,
    /// Each of its pods: its count, or why it has none.
    #[serde(default)]
    pub pods: Vec<PodVisits>,
}

/// The visits of the pods that run one revision.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionVisits {
    /// The StatefulSet revision (`controller-revision-hash`).
    pub revision: String,
    /// The sum of the counts of its pods that answered. A pod keeps its
    /// claim, and so its count, when it moves to a new revision.
    pub visits: i64,
    /// Its pods.
    pub pods: i32,
}

/// One pod's visits.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodVisits {
    /// The pod's name.
    pub name: String,
    /// Its count, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visits: Option<i64>,
    /// Why it has no count: not ready, unreachable, or a bad answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The pod was scaled away and its claim kept (`whenScaled: Retain`):
    /// `visits` is its count as it last answered, still part of `total`,
    /// and the pod starts from it again when the app scales back up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retained: bool,
}

/// A rollout that is not simply in progress or done.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The partition (or `canaryReplicas`) holds this many pods, the lowest
    /// ordinals, at `currentRevision` while the others run `updateRevision`.
    /// Raising or removing `canaryReplicas` (or lowering `partition`)
    /// promotes the rest.
    #[serde(default)]
    pub held_replicas: i32,
    /// A pod the StatefulSet waits for and that will not become ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck_pod: Option<StuckPod>,
    /// While a rollout is in progress: when it last made progress (a pod
    /// updated, created or turned ready, or a new spec). After
    /// `progressDeadlineSeconds` without, the rollout counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress: Option<Time>,
    /// Who keeps to `rollingUpdate.maxUnavailable`: `StatefulSet` where the
    /// API server keeps the field (its `MaxUnavailableStatefulSet` gate is
    /// on), else `Operator`, which then replaces the pods itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable_by: Option<String>,
    /// Under `updateStrategy.type: Recreate`, how long the app had no ready
    /// pod: the one under way, or else the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime: Option<Downtime>,
    /// Under `rollingUpdate.steps`, the step of the last rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepStatus>,
    /// Under `updateStrategy.type: BlueGreen`, which StatefulSet serves and
    /// which runs the new template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStatus>,
}

/// Where a blue/green app stands.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStatus {
    /// The StatefulSet whose pods the user-facing Service selects.
    pub serving: String,
    /// The StatefulSet of the new template, while a rollout is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    /// The Service that reaches the new template's pods (the serving ones
    /// when no rollout is under way).
    pub preview_service: String,
    /// When the user-facing Service last switched StatefulSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at: Option<Time>,
    /// While two StatefulSets run: whose pods take in whose visits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carry: Option<Carry>,
}

/// Visits carried between the two StatefulSets of a blue/green app,
/// ordinal by ordinal: each pod of `to` takes the count of the pod of
/// `from` of its ordinal, then every visit it answers after.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Carry {
    /// The StatefulSet whose pods' counts are carried.
    pub from: String,
    /// The StatefulSet whose pods take them in.
    pub to: String,
    /// Changes with each switch and each template, so a carry starts over.
    pub key: String,
}

/// Where a rollout in steps is.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// The step under way, from 1; `count + 1` once every step is done and
    /// the rest of the pods are updated.
    pub current: i32,
    /// How many steps the spec has.
    pub count: i32,
    /// When the step under way started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The rollout was aborted at this step (see `rollingUpdate.abortAction`).
    #[serde(default)]
    pub aborted: bool,
    /// For people and the printer column: "2 of 5", "done", "aborted at 2 of 5".
    pub text: String,
}

/// A time without a ready pod, as the operator saw it at its reconciles:
/// from the deletion of the old pods, which leave the Service's endpoints
/// then, until a pod of the new template is ready.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Downtime {
    /// When the operator deleted the old pods.
    pub since: Time,
    /// When a pod of the new template was first seen ready; unset while the
    /// downtime lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Time>,
    /// `until - since`, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// A pod that blocks a rollout under `OrderedReady`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StuckPod {
    /// The pod's name.
    pub name: String,
    /// The StatefulSet revision (`controller-revision-hash`) the pod runs.
    pub revision: String,
    /// When the pod was last seen to stop being ready, or was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready_since: Option<Time>,
    /// What blocks the rollout and what to do about it.
    pub message: String,
}
