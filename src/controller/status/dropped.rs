//! Fields of the spec that a cluster drops: a StatefulSet field behind a
//! feature gate that is off, which the API server leaves out of what it
//! stores. Applying it again would only be dropped again, so the plan does
//! not, and the status says so (`UnsupportedSpec`).

use serde_json::Value;

/// StatefulSet fields that an API server drops when a feature gate is off,
/// with the gate: applying them again would only be dropped again.
pub const GATED_STATEFULSET_FIELDS: &[(&str, &str)] = &[(
    "/spec/updateStrategy/rollingUpdate/maxUnavailable",
    "MaxUnavailableStatefulSet",
)];

/// The gated fields `desired` sets that the API server left out of `live`,
/// as JSON pointers.
pub fn dropped_by_server(desired: &Value, live: &Value) -> Vec<&'static str> {
    GATED_STATEFULSET_FIELDS
        .iter()
        .map(|(pointer, _)| *pointer)
        .filter(|p| desired.pointer(p).is_some_and(|v| !v.is_null()) && live.pointer(p).is_none())
        .collect()
}

/// What `UnsupportedSpec` says about fields the API server dropped.
pub fn dropped_message(dropped: &[&str]) -> String {
    let parts: Vec<String> = dropped
        .iter()
        .map(|pointer| {
            let gate = GATED_STATEFULSET_FIELDS
                .iter()
                .find(|(p, _)| p == pointer)
                .map_or("?", |(_, gate)| gate);
            format!(
                "{} has no effect: this cluster's API server drops it from the StatefulSet (the {gate} feature gate is off)",
                pointer.trim_start_matches('/').replace('/', ".")
            )
        })
        .collect();
    parts.join("; ")
}
