//! The per-pod volume that holds the visit count: its claim's size, class,
//! access modes and mount path, and what happens to the claims when the app is
//! deleted or scaled down.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resource::schema;

/// The per-pod volume. Each pod gets its own claim,
/// `<claimTemplateName>-<name>-<ordinal>` (`data-<name>-<ordinal>` by default).
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
    /// The name of the StatefulSet's claim template, the first part of each
    /// claim's name. Set it to the one an existing StatefulSet used (for a
    /// chart's `python-counter-data`, the claims are
    /// `python-counter-data-<name>-<ordinal>`), and the app's pods reuse those
    /// claims, ordinal by ordinal, with the counts on them. It cannot change
    /// afterwards: the pods would start on new, empty claims.
    #[serde(default = "default_claim_template_name")]
    #[schemars(length(min = 1, max = 40), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("storage.claimTemplateName cannot change: the pods would start on new, empty claims, without their counts"),
        validation = Rule::new("self != 'config'")
            .message("storage.claimTemplateName cannot be config: the pods' config volume has that name")
    )]
    pub claim_template_name: String,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            access_modes: default_access_modes(),
            mount_path: default_mount_path(),
            claim_template_name: default_claim_template_name(),
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
fn default_claim_template_name() -> String {
    "data".into()
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
