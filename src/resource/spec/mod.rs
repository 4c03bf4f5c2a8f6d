//! The spec of a `VisitCounterApp`: everything the seed's Helm charts configured.
//!
//! Defaults are written once, as serde defaults; schemars copies them into the
//! CRD schema, so the API server applies the same defaults the Rust code assumes
//! and GitOps tools see no perpetual diff. Rules a schema can state are schema
//! rules (ranges, enums, patterns) or CEL `x-kubernetes-validations`.
//!
//! This file holds the spec itself, its top-level defaults and the image pull
//! policy; each section of the spec has its own file, named for what it holds.

mod config;
mod probes;
mod resources;
mod service;
mod storage;
mod strategy;
mod traffic;

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{VisitCounterAppStatus, schema};

pub use config::{AppConfig, EnvEntry};
pub use probes::{HttpProbe, LIVENESS_PATH, Probes, READINESS_PATH};
pub use resources::{ComputeResources, Resources};
pub use service::{ServiceSpec, ServiceType};
pub use storage::{AccessMode, PvcRetentionPolicy, RetentionPolicy, Storage};
pub use strategy::{
    AbortAction, BlueGreen, PodManagementPolicy, RollingUpdate, Step, UpdateStrategy, UpdateStrategyType,
};
pub use traffic::{AbMatch, AbTest, CookieMatch, HeaderMatch, ParentRef, Traffic};

/// A visit-counter web app, run as a StatefulSet with one volume per pod.
///
/// The operator keeps, for each app, a StatefulSet and a NodePort Service named
/// after the app, a headless Service `<name>-headless` and a ConfigMap
/// `<name>-config`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "visitcounter.dev",
    version = "v1alpha1",
    kind = "VisitCounterApp",
    plural = "visitcounterapps",
    shortname = "vca",
    namespaced,
    derive = "PartialEq",
    status = "VisitCounterAppStatus",
    doc = "A visit-counter web app, run as a StatefulSet with one persistent volume per pod.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired number of pods"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Pods that are ready"
    ),
    printcolumn(
        name = "Step",
        type_ = "string",
        json_path = ".status.rollout.step.text",
        description = "The step of a rollout in steps under way"
    ),
    printcolumn(
        name = "NodePort",
        type_ = "integer",
        json_path = ".status.nodePort",
        description = "Node port allocated to the app's Service"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new(
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 52"
    )
    .message(
        "metadata.name must be a lowercase DNS label that starts with a letter and has at most 52 characters: it names the app's Services, and the StatefulSet's pods carry a controller-revision-hash label of the name plus 11 characters, which must fit in 63"
    ),
    cel
)]
#[x_kube(
    validation = Rule::new(
        "!has(self.updateStrategy.rollingUpdate) || !has(self.updateStrategy.rollingUpdate.partition) || self.updateStrategy.rollingUpdate.partition <= self.replicas"
    )
    .message(Message::Expression(
        // format(), not string() and +: the API server estimates a
        // concatenated string() of a number as unbounded and refuses the CRD.
        "'%d is greater than spec.replicas (%d)'.format([self.updateStrategy.rollingUpdate.partition, self.replicas])".into()
    ))
    .field_path(".updateStrategy.rollingUpdate.partition"),
    validation = Rule::new(
        "!has(self.updateStrategy.rollingUpdate) || !has(self.updateStrategy.rollingUpdate.steps) || self.updateStrategy.rollingUpdate.steps.all(s, !has(s.replicas) || s.replicas <= self.replicas)"
    )
    .message(Message::Expression(
        "'a step asks for more pods than spec.replicas (%d)'.format([self.replicas])".into()
    ))
    .field_path(".updateStrategy.rollingUpdate.steps"),
    validation = Rule::new("self.updateStrategy.type != 'Shadow' || has(self.traffic)")
        .message("updateStrategy.type Shadow sends a copy of every request to the new template's pods through the app's HTTPRoute: set spec.traffic")
        .field_path(".updateStrategy.type"),
    validation = Rule::new("!has(self.traffic) || !has(self.traffic.canaryWeight) || self.updateStrategy.type != 'Shadow'")
        .message("traffic.canaryWeight splits requests during a rolling update; under Shadow every answer comes from the current pods")
        .field_path(".traffic.canaryWeight"),
    validation = Rule::new("!has(self.traffic) || !has(self.traffic.abTest) || self.updateStrategy.type == 'RollingUpdate'")
        .message("traffic.abTest splits requests between the pods of a rolling update held by rollingUpdate.partition or canaryReplicas; updateStrategy.type must be RollingUpdate")
        .field_path(".traffic.abTest"),
    validation = Rule::new("!has(self.traffic) || !has(self.traffic.abTest) || !has(self.traffic.canaryWeight)")
        .message("traffic.abTest and traffic.canaryWeight each decide where requests go during a rolling update; set one of them")
        .field_path(".traffic.abTest")
)]
#[serde(rename_all = "camelCase")]
pub struct VisitCounterAppSpec {
    /// Container image of the app. When unset, the operator's own image, which
    /// runs `visitcounter serve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// When the kubelet pulls the image.
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,

    /// Container port the app listens on, exposed as the named port `http`.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Number of pods. Each pod gets its own volume and its own visit count.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// CPU and memory requests and limits of the app container.
    #[serde(default)]
    pub resources: Resources,

    /// Liveness and readiness HTTP probes on the named port `http`.
    #[serde(default)]
    pub probes: Probes,

    /// The app's configuration: `config.json`, plain environment variables, and
    /// the variable that carries `config.json` itself.
    #[serde(default)]
    pub config: AppConfig,

    /// The per-pod volume that holds the visit count.
    #[serde(default)]
    pub storage: Storage,

    /// The user-facing Service.
    #[serde(default)]
    pub service: ServiceSpec,

    /// Service account the pods run as. When unset, the namespace's `default`,
    /// or the app's name with `createServiceAccount`. Pods are created only
    /// once it exists: the app is `Degraded` until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,

    /// Create the pods' ServiceAccount (named by `serviceAccountName`, or the
    /// app's name when that is unset) and keep it with the app's other
    /// children, as the seed's Helm charts did. Deleting the app deletes it.
    /// When false, the ServiceAccount must already exist.
    #[serde(default)]
    pub create_service_account: bool,

    /// Annotations added to every pod (for example Vault agent-injection
    /// annotations).
    #[serde(default)]
    pub pod_annotations: BTreeMap<String, String>,

    /// Labels added to every pod. The `app.kubernetes.io/name`, `instance` and
    /// `managed-by` labels belong to the operator and cannot be set here.
    #[serde(default)]
    #[schemars(schema_with = "schema::label_values")]
    #[x_kube(
        validation = Rule::new(
            "!('app.kubernetes.io/name' in self) && !('app.kubernetes.io/instance' in self) && !('app.kubernetes.io/managed-by' in self)"
        )
        .message("podLabels must not set app.kubernetes.io/name, app.kubernetes.io/instance or app.kubernetes.io/managed-by: the operator owns them and selects pods by them")
    )]
    pub pod_labels: BTreeMap<String, String>,

    /// How pods are created and deleted: `OrderedReady` one at a time in
    /// ordinal order, or `Parallel` all at once.
    #[serde(default)]
    pub pod_management_policy: PodManagementPolicy,

    /// How a changed pod template reaches the pods.
    #[serde(default)]
    pub update_strategy: UpdateStrategy,

    /// Seconds a new pod must be ready, without any container crashing, before
    /// it counts as available.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_ready_seconds: i32,

    /// Seconds a rollout may go without progress (a pod updated, created or
    /// turned ready) before it counts as failed: `Progressing` turns False
    /// and `Stalled` True with reason `ProgressDeadlineExceeded`, as for a
    /// Deployment, so GitOps tools report a failure instead of waiting for
    /// ever. It applies to every update strategy.
    #[serde(default = "default_progress_deadline_seconds")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: i32,

    /// Old StatefulSet revisions kept for rollback, as the StatefulSet's
    /// `revisionHistoryLimit`. Each revision keeps the ConfigMap of its config
    /// (`<app>-config-<hash>`); the operator deletes an old ConfigMap once no
    /// kept revision and no pod refers to it.
    #[serde(default = "default_revision_history_limit")]
    #[schemars(range(min = 0))]
    pub revision_history_limit: i32,

    /// What happens to the pods' volume claims when the app is deleted or
    /// scaled down. `Retain` (the default) keeps every visit count.
    #[serde(default)]
    pub persistent_volume_claim_retention_policy: PvcRetentionPolicy,

    /// Requests routed through a Gateway (Gateway API): the operator keeps
    /// an `HTTPRoute` for the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
}

fn default_port() -> i32 {
    8080
}

fn default_replicas() -> i32 {
    1
}

fn default_revision_history_limit() -> i32 {
    10
}

fn default_progress_deadline_seconds() -> i32 {
    600
}

/// When the kubelet pulls the image.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImagePullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}
