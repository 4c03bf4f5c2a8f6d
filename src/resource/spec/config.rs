//! The app's configuration: `config.json`, plain environment variables, and
//! the variable that carries `config.json` itself.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::resource::schema;

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
