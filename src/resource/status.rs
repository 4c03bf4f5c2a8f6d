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
    /// The visit count, read from each ready pod's `/visits` at the operator's
    /// `--visits-interval-seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visits: Option<VisitsStatus>,
}

/// The app's visits, summed over its pods.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VisitsStatus {
    /// The sum over the pods that answered. A pod that did not is left out,
    /// never counted as zero: see `complete`.
    pub total: i64,
    /// Whether every pod of the app answered, so `total` is the app's count.
    pub complete: bool,
    /// Each pod: its count, or why it has none.
    #[serde(default)]
    pub pods: Vec<PodVisits>,
    /// When the pods were asked and gave these counts (not rewritten while the
    /// counts stay the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
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
}
