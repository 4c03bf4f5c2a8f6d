//! How the StatefulSet creates, deletes and replaces pods: the pod management
//! policy and the update strategy, with its partition and canary.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resource::schema;

/// How the StatefulSet creates and deletes pods.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodManagementPolicy {
    /// One pod at a time, in ordinal order, each waiting for the previous one
    /// to be ready.
    #[default]
    OrderedReady,
    /// All pods at once.
    Parallel,
}

impl PodManagementPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderedReady => "OrderedReady",
            Self::Parallel => "Parallel",
        }
    }
}

/// How a changed pod template reaches the pods.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("self.type == 'RollingUpdate' || !has(self.rollingUpdate)")
        .message("updateStrategy.rollingUpdate can only be set when updateStrategy.type is RollingUpdate")
        .field_path(".rollingUpdate"),
    validation = Rule::new("self.type == 'BlueGreen' || !has(self.blueGreen)")
        .message("updateStrategy.blueGreen can only be set when updateStrategy.type is BlueGreen")
        .field_path(".blueGreen")
)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// `RollingUpdate` replaces pods from the highest ordinal down;
    /// `OnDelete` replaces a pod only when it is deleted; `Recreate` deletes
    /// every pod at once and starts the new ones only once all are gone (the
    /// app has no ready pod meanwhile; the volume claims are kept, so counts
    /// continue); `BlueGreen` starts a second StatefulSet of the new
    /// template beside the serving one and switches the Service to it in one
    /// write (see `blueGreen`); `Shadow` runs the new template in a
    /// StatefulSet of its own, `<app>-shadow`, that gets a copy of every
    /// request through `spec.traffic`'s route and whose answers nobody sees,
    /// until the app's `visitcounter.dev/promote` annotation names its
    /// revision: then the app's StatefulSet rolls to it and the shadow goes.
    #[serde(default, rename = "type")]
    pub type_: UpdateStrategyType,
    /// Parameters of a rolling update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
    /// Parameters of a blue/green rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreen>,
}

/// A blue/green rollout: the new template runs in a StatefulSet of its own
/// (the app's name, or the app's name with `-green`, whichever is not
/// serving), with its own claims, reached by the preview Service
/// `NAME-preview`. The user-facing Service keeps selecting the serving pods
/// until the new ones are all Ready and the rollout is promoted; it then
/// selects the new pods, in one write. Each new pod starts from the count
/// of the serving pod of its ordinal, and takes in the visits that pod
/// answers until it goes, so no visit is lost across the switch.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreen {
    /// Switch as soon as every new pod is Ready. When false, the switch
    /// waits for the app's annotation `visitcounter.dev/promote` to name the
    /// new pods' revision (`Progressing` says which).
    #[serde(default = "yes")]
    pub auto_promote: bool,
    /// How long the previous StatefulSet stays after the switch, for an
    /// instant rollback (revert the spec: the Service switches back at
    /// once). Then it is deleted; its claims follow the retention policy.
    #[serde(default = "thirty")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_delay_seconds: i32,
}

impl UpdateStrategy {
    /// The blue/green settings, with their defaults when unset.
    pub fn blue_green_settings(&self) -> BlueGreen {
        self.blue_green.clone().unwrap_or_default()
    }
}

impl Default for BlueGreen {
    fn default() -> Self {
        Self {
            auto_promote: true,
            scale_down_delay_seconds: 30,
        }
    }
}

fn yes() -> bool {
    true
}

fn thirty() -> i32 {
    30
}

impl UpdateStrategy {
    /// Whether the operator may delete a pod that blocks a rolling update
    /// (`rollingUpdate.replaceStuckPods`).
    pub fn replaces_stuck_pods(&self) -> bool {
        self.rolling_update.as_ref().is_some_and(|r| r.replace_stuck_pods)
    }
}

/// Kind of update strategy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpdateStrategyType {
    #[default]
    RollingUpdate,
    OnDelete,
    Recreate,
    BlueGreen,
    Shadow,
}

impl UpdateStrategyType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RollingUpdate => "RollingUpdate",
            Self::OnDelete => "OnDelete",
            Self::Recreate => "Recreate",
            Self::BlueGreen => "BlueGreen",
            Self::Shadow => "Shadow",
        }
    }

    /// The StatefulSet's own strategy underneath: the operator drives a
    /// `Recreate` itself, so the StatefulSet replaces no pod on its own. Under
    /// `BlueGreen` the serving StatefulSet's template never changes, and the
    /// preview's rolls to a template newer than its own.
    pub fn statefulset_type(self) -> &'static str {
        match self {
            Self::RollingUpdate | Self::BlueGreen | Self::Shadow => "RollingUpdate",
            Self::OnDelete | Self::Recreate => "OnDelete",
        }
    }
}

/// Parameters of a rolling update.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.partition) || !has(self.canaryReplicas)")
        .message("set either partition or canaryReplicas, not both: canaryReplicas sets the partition to replicas - canaryReplicas")
        .field_path(".canaryReplicas"),
    validation = Rule::new("!has(self.steps) || !has(self.partition)")
        .message("set either steps or partition, not both: the steps set the partition")
        .field_path(".steps"),
    validation = Rule::new("!has(self.steps) || !has(self.canaryReplicas)")
        .message("set either steps or canaryReplicas, not both: a step of replicas is a canary of that many pods")
        .field_path(".steps"),
    validation = Rule::new("!has(self.steps) || !has(self.maxUnavailable)")
        .message("set either steps or maxUnavailable, not both: the steps set the pace")
        .field_path(".steps"),
    validation = Rule::new("!has(self.abortAction) || has(self.steps)")
        .message("abortAction applies to a rollout in steps: set rollingUpdate.steps")
        .field_path(".abortAction")
)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdate {
    /// Only pods with an ordinal at or above the partition are updated. When
    /// unset, the operator leaves the StatefulSet's partition to whoever else
    /// sets it (0 if nobody does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub partition: Option<i32>,
    /// A canary: the changed pod template goes only to this many pods, those
    /// with the highest ordinals, and the rollout holds there (the operator sets
    /// the partition to `replicas - canaryReplicas`, or 0 when that is
    /// negative). Raise it, or remove it, to promote the new template to the
    /// rest. Cannot be set with `partition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub canary_replicas: Option<i32>,
    /// Under `OrderedReady`, a pod of a template that has since been replaced
    /// (reverted or fixed) which never became ready blocks the rollout for good
    /// (kubernetes#67250). With this set, the operator deletes such a pod so
    /// the StatefulSet re-creates it from the current template. A pod of the
    /// current template is never deleted.
    #[serde(default)]
    pub replace_stuck_pods: bool,
    /// Most pods that may be unavailable during the update: a number, at least
    /// one, or a percentage such as `"25%"` (rounded up). Where the API server
    /// drops the field (its MaxUnavailableStatefulSet gate off), the operator
    /// keeps to it itself; `status.rollout.maxUnavailableBy` says which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int_or_string")]
    #[x_kube(
        validation = Rule::new("string(self).matches('^[1-9][0-9]*%?$')")
            .message("maxUnavailable must be an integer of at least 1 or a percentage such as \"25%\"")
    )]
    pub max_unavailable: Option<IntOrString>,
    /// A rollout at the user's pace (the report's ramped slow rollout): each
    /// step either updates the pods with the highest ordinals until that many
    /// run the new template (`replicas`), or waits (`pauseSeconds`). A step
    /// starts once the previous one's pods are Ready; after the last step
    /// every pod is updated. A step whose pods are not Ready within
    /// `progressDeadlineSeconds` aborts the rollout (see `abortAction`).
    /// `status.rollout.step` says which step is under way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 20))]
    pub steps: Vec<Step>,
    /// What an aborted rollout in steps does: `Hold` keeps every pod where it
    /// is; `Rollback` returns the updated pods to the stable template (their
    /// claims are kept, so their counts continue). Either way the rollout
    /// stays aborted until the template changes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_action: Option<AbortAction>,
}

/// One step of a rollout in steps: exactly one of its fields.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.replicas) != has(self.pauseSeconds)")
        .message("a step sets exactly one of replicas and pauseSeconds")
)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Update pods, highest ordinals first, until this many run the new
    /// template, and wait for them to be Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,
    /// Wait this long, the pods of the previous steps Ready all along.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub pause_seconds: Option<i32>,
}

/// What an aborted rollout in steps does with the pods it updated.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AbortAction {
    /// Keep every pod where it is.
    #[default]
    Hold,
    /// Return the updated pods to the stable template.
    Rollback,
}

impl RollingUpdate {
    /// The StatefulSet partition: the spec's, or the one its canary implies;
    /// `None` leaves the field to others.
    pub fn partition_for(&self, replicas: i32) -> Option<i32> {
        self.partition
            .or_else(|| self.canary_replicas.map(|canary| (replicas - canary).max(0)))
    }
}
