//! What the operator reads of a pod: its readiness, its revision and its
//! ordinal.

use k8s_openapi::api::core::v1::PodCondition;

use crate::controller::runtime::slim_pod::SlimPod;

/// The label the StatefulSet controller puts on each pod: its revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The ordinal of the app `app`'s pod `pod` (`<app>-<n>`); `None` for a
/// name of another form.
pub fn ordinal_of(app: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(app)?.strip_prefix('-')?.parse().ok()
}

/// The ordinal of a pod of either of the app's StatefulSets: `<app>-<n>`,
/// or under blue/green `<app>-green-<n>`.
pub fn slot_ordinal_of(app: &str, pod: &str) -> Option<i32> {
    ordinal_of(app, pod).or_else(|| ordinal_of(&crate::children::green_statefulset_name(app), pod))
}

/// Whether the pod's `Ready` condition is `True`.
pub fn is_ready(pod: &SlimPod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// The pod's `Ready` condition, as the kubelet last reported it.
pub fn ready_condition(pod: &SlimPod) -> Option<&PodCondition> {
    pod.ready.as_ref()
}

#[cfg(test)]
mod tests {
    use super::ordinal_of;

    #[test]
    fn another_apps_pods_are_not_ordinals() {
        assert_eq!(ordinal_of("web", "web-3"), Some(3));
        assert_eq!(ordinal_of("web", "web-api-3"), None);
        assert_eq!(ordinal_of("web", "webx-3"), None);
    }
}
