//! The spec of a `VisitCounterApp`: everything the seed's Helm charts configured.
//!
//! Defaults are written once, as serde defaults; schemars copies them into the
//! CRD schema, so the API server applies the same defaults the Rust code assumes
//! and GitOps tools see no perpetual diff. Rules a schema can state are schema
//! rules (ranges, enums, patterns) or CEL `x-kubernetes-validations`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{VisitCounterAppStatus, schema};

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
    .field_path(".updateStrategy.rollingUpdate.partition")
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

/// CPU and memory requests and limits.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new(
        "!has(self.requests.cpu) || !has(self.limits.cpu) || quantity(string(self.requests.cpu)).compareTo(quantity(string(self.limits.cpu))) <= 0"
    )
    .message("the CPU request must not be greater than the CPU limit")
    .field_path(".requests.cpu")
)]
#[x_kube(
    validation = Rule::new(
        "!has(self.requests.memory) || !has(self.limits.memory) || quantity(string(self.requests.memory)).compareTo(quantity(string(self.limits.memory))) <= 0"
    )
    .message("the memory request must not be greater than the memory limit")
    .field_path(".requests.memory")
)]
pub struct Resources {
    /// What the scheduler reserves for each pod.
    #[serde(default)]
    pub requests: ComputeResources,
    /// The most each pod may use. A pod over its memory limit is killed.
    #[serde(default)]
    pub limits: ComputeResources,
}

impl Default for Resources {
    /// The seed's apps: 100m CPU and 128Mi memory, requested and limited.
    fn default() -> Self {
        let seed = ComputeResources {
            cpu: Some(Quantity("100m".into())),
            memory: Some(Quantity("128Mi".into())),
        };
        Self {
            requests: seed.clone(),
            limits: seed,
        }
    }
}

/// An amount of CPU and of memory.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct ComputeResources {
    /// CPU, in cores or millicores (`100m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::quantity")]
    pub cpu: Option<Quantity>,
    /// Memory, in bytes with an optional suffix (`128Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::quantity")]
    pub memory: Option<Quantity>,
}

/// Liveness and readiness probes. Neither ever counts a visit: the app serves
/// them on their own paths.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.liveness.successThreshold == 1")
        .message("a liveness probe's successThreshold must be 1 (Kubernetes refuses any other value)")
        .field_path(".liveness.successThreshold")
)]
pub struct Probes {
    /// Restarts a pod whose app stops answering. Path defaults to `/healthz`.
    #[serde(default = "HttpProbe::liveness")]
    pub liveness: HttpProbe,
    /// Takes a pod out of its Services while it is not ready. Path defaults to
    /// `/readyz`.
    #[serde(default = "HttpProbe::readiness")]
    pub readiness: HttpProbe,
}

impl Default for Probes {
    fn default() -> Self {
        Self {
            liveness: HttpProbe::liveness(),
            readiness: HttpProbe::readiness(),
        }
    }
}

/// Liveness probe path when the spec names none.
pub const LIVENESS_PATH: &str = "/healthz";
/// Readiness probe path when the spec names none.
pub const READINESS_PATH: &str = "/readyz";

/// An HTTP GET probe on the named port `http`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    /// Whether the probe is set on the container at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// HTTP path to GET. Defaults to `/healthz` for liveness and `/readyz` for
    /// readiness; never `/`, which counts a visit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub path: Option<String>,
    /// Seconds after the container starts before the first probe.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub initial_delay_seconds: i32,
    /// Seconds between probes.
    #[serde(default = "default_period_seconds")]
    #[schemars(range(min = 1))]
    pub period_seconds: i32,
    /// Seconds after which a probe times out.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: i32,
    /// Consecutive failures before the probe counts as failed.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1))]
    pub failure_threshold: i32,
    /// Consecutive successes before the probe counts as succeeded again (1 for
    /// liveness).
    #[serde(default = "default_success_threshold")]
    #[schemars(range(min = 1))]
    pub success_threshold: i32,
}

impl HttpProbe {
    fn with_path(path: &str) -> Self {
        Self {
            enabled: true,
            path: Some(path.into()),
            initial_delay_seconds: 0,
            period_seconds: default_period_seconds(),
            timeout_seconds: default_timeout_seconds(),
            failure_threshold: default_failure_threshold(),
            success_threshold: default_success_threshold(),
        }
    }

    fn liveness() -> Self {
        Self::with_path(LIVENESS_PATH)
    }

    fn readiness() -> Self {
        Self::with_path(READINESS_PATH)
    }
}

fn default_true() -> bool {
    true
}
fn default_period_seconds() -> i32 {
    10
}
fn default_timeout_seconds() -> i32 {
    1
}
fn default_failure_threshold() -> i32 {
    3
}
fn default_success_threshold() -> i32 {
    1
}

/// The app's configuration, kept in the ConfigMap `<name>-config`.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AppConfig {
    /// Free-form JSON object, written to the ConfigMap key `config.json` and
    /// mounted in every pod at `/config.json`.
    #[serde(default = "empty_object")]
    #[schemars(schema_with = "schema::free_form_object")]
    pub json: serde_json::Value,

    /// Plain environment variables, stored as ConfigMap keys; the container
    /// gets each one by name (and no other key of the ConfigMap).
    #[serde(default)]
    #[schemars(length(max = 256), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvEntry>,

    /// Name of one environment variable whose value is the whole `config.json`
    /// (the seed's `LAB12_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub json_env_var: Option<String>,
}

/// One plain environment variable.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
pub struct EnvEntry {
    /// Variable name: letters, digits and `_`, not starting with a digit.
    /// `VISITCOUNTER_` is reserved for the variables the operator sets.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    #[x_kube(
        validation = Rule::new("!self.startsWith('VISITCOUNTER_')")
            .message("names starting with VISITCOUNTER_ are reserved for the variables the operator sets")
    )]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    pub value: String,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            json: empty_object(),
            env: Vec::new(),
            json_env_var: None,
        }
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// The per-pod volume. Each pod gets its own claim, `data-<name>-<ordinal>`.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0")
        .message(Message::Expression(
            "'storage.size cannot shrink from ' + string(oldSelf.size) + ' to ' + string(self.size) + ': Kubernetes can grow a volume but never make it smaller, and the visit counts live on it'".into()
        ))
        .field_path(".size")
)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Size of each pod's volume. Raising it grows every existing claim of the
    /// app in place (when their StorageClass allows volume expansion); it
    /// cannot be lowered.
    #[serde(default = "default_storage_size")]
    #[schemars(schema_with = "schema::quantity")]
    pub size: Quantity,
    /// StorageClass of the claims. When unset, the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub storage_class_name: Option<String>,
    /// Access modes of the claims.
    #[serde(default = "default_access_modes")]
    #[schemars(length(min = 1))]
    pub access_modes: Vec<AccessMode>,
    /// Where the volume is mounted in the container; the app keeps
    /// `visits.json` there.
    #[serde(default = "default_mount_path")]
    #[schemars(regex(pattern = r"^/.+"))]
    pub mount_path: String,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            access_modes: default_access_modes(),
            mount_path: default_mount_path(),
        }
    }
}

fn default_storage_size() -> Quantity {
    Quantity("1Gi".into())
}
fn default_access_modes() -> Vec<AccessMode> {
    vec![AccessMode::ReadWriteOnce]
}
fn default_mount_path() -> String {
    "/data".into()
}

/// An access mode of a persistent volume claim.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessMode {
    ReadWriteOnce,
    ReadOnlyMany,
    ReadWriteMany,
    ReadWriteOncePod,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadWriteOnce => "ReadWriteOnce",
            Self::ReadOnlyMany => "ReadOnlyMany",
            Self::ReadWriteMany => "ReadWriteMany",
            Self::ReadWriteOncePod => "ReadWriteOncePod",
        }
    }
}

/// The user-facing Service, named after the app.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.nodePort) || self.type != 'ClusterIP'")
        .message("service.nodePort can only be set when service.type is NodePort or LoadBalancer")
        .field_path(".nodePort")
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Port of the Service. Defaults to the app's `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Fixed node port. When unset, Kubernetes allocates one (see
    /// `status.nodePort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
}

/// Type of the user-facing Service.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    ClusterIP,
    #[default]
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

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
        .field_path(".rollingUpdate")
)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// `RollingUpdate` replaces pods from the highest ordinal down;
    /// `OnDelete` replaces a pod only when it is deleted.
    #[serde(default, rename = "type")]
    pub type_: UpdateStrategyType,
    /// Parameters of a rolling update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
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
}

impl UpdateStrategyType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RollingUpdate => "RollingUpdate",
            Self::OnDelete => "OnDelete",
        }
    }
}

/// Parameters of a rolling update.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.partition) || !has(self.canaryReplicas)")
        .message("set either partition or canaryReplicas, not both: canaryReplicas sets the partition to replicas - canaryReplicas")
        .field_path(".canaryReplicas")
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
    /// one, or a percentage such as `"25%"`. Needs the MaxUnavailableStatefulSet
    /// feature gate; ignored by clusters without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int_or_string")]
    #[x_kube(
        validation = Rule::new("string(self).matches('^[1-9][0-9]*%?$')")
            .message("maxUnavailable must be an integer of at least 1 or a percentage such as \"25%\"")
    )]
    pub max_unavailable: Option<IntOrString>,
}

impl RollingUpdate {
    /// The StatefulSet partition: the spec's, or the one its canary implies;
    /// `None` leaves the field to others.
    pub fn partition_for(&self, replicas: i32) -> Option<i32> {
        self.partition
            .or_else(|| self.canary_replicas.map(|canary| (replicas - canary).max(0)))
    }
}

/// What happens to the pods' volume claims.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetentionPolicy {
    /// When the app is deleted.
    #[serde(default)]
    pub when_deleted: RetentionPolicy,
    /// When the app is scaled down.
    #[serde(default)]
    pub when_scaled: RetentionPolicy,
}

/// `Retain` keeps the claims (and the counts on them); `Delete` removes them.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RetentionPolicy {
    #[default]
    Retain,
    Delete,
}

impl RetentionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retain => "Retain",
            Self::Delete => "Delete",
        }
    }
}
