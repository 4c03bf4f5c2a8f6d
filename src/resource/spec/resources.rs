//! The app container's CPU and memory: requests and limits, seeded with the
//! seed's 100m CPU and 128Mi memory.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resource::schema;

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
