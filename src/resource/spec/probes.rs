//! The app container's liveness and readiness HTTP probes, and the paths they
//! use when the spec names none.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
