//! Best-effort controlled rollout (the report's strategy 4):
//! `rollingUpdate.maxUnavailable` pods may be unavailable at once while the
//! pods take a new template, highest ordinals first.
//!
//! Where the API server keeps the field (its `MaxUnavailableStatefulSet`
//! gate on), the StatefulSet does it. Where the API server drops it (the
//! gate off: Kubernetes 1.34, and 1.36 by default), the StatefulSet would
//! replace one pod at a time, so the operator drives the update itself:
//! the StatefulSet is `OnDelete` underneath, and each reconcile deletes, by
//! uid, the old pods that fit in what is left of the budget. A user sees the
//! same behaviour on every cluster; `status.rollout.maxUnavailableBy` says
//! which one is in force.

use k8s_openapi::{
    api::apps::v1::{StatefulSet, StatefulSetUpdateStrategy},
    apimachinery::pkg::apis::meta::v1::Time,
};
use serde_json::Value;

use super::{Decision, PodView, Wanted, seen_by_its_controller};
use crate::resource::RollingUpdate;

/// Who keeps to `maxUnavailable`, as the status says.
pub const BY_STATEFULSET: &str = "StatefulSet";
pub use crate::controller::status::MAX_UNAVAILABLE_BY_OPERATOR as BY_OPERATOR;

/// Decides for an app with `maxUnavailable` on a cluster whose API server
/// drops the field (`native` false): `desired` turns `OnDelete`, and the
/// old pods that fit in the budget are deleted, highest ordinals first.
pub fn decide(
    rolling: &RollingUpdate,
    wanted: Wanted,
    native: bool,
    desired: &mut StatefulSet,
    live: Option<&Value>,
    pods: &[PodView],
    now: &Time,
) -> Decision {
    let replicas = wanted.replicas;
    let Some(max) = rolling.max_unavailable.as_ref() else {
        return Decision::default();
    };
    if native {
        return Decision {
            max_unavailable_by: Some(BY_STATEFULSET),
            ..Decision::default()
        };
    }
    if let Some(spec) = desired.spec.as_mut() {
        spec.update_strategy = Some(StatefulSetUpdateStrategy {
            type_: Some("OnDelete".into()),
            rolling_update: None,
        });
    }
    let mut decision = Decision {
        max_unavailable_by: Some(BY_OPERATOR),
        ..Decision::default()
    };
    let Some(live) = live.filter(|l| seen_by_its_controller(l)) else {
        return decision;
    };
    let update = live.pointer("/status/updateRevision").and_then(Value::as_str);
    let partition = rolling.partition_for(replicas).unwrap_or(0);
    let limit = budget(max, replicas);
    // Only the pods the spec asks for count: during a scale-down the ones
    // above it still run, and would hide that those below it are down.
    let available = pods
        .iter()
        .filter(|p| p.ordinal().is_some_and(|o| o < replicas))
        .filter(|p| available_at(p, wanted.min_ready_seconds, now))
        .count() as i32;
    let unavailable = (replicas - available).max(0);
    let mut old: Vec<(i32, &PodView)> = pods
        .iter()
        .filter(|p| !p.terminating && p.revision.as_deref() != update)
        .filter_map(|p| Some((p.ordinal()?, p)))
        .filter(|(ordinal, _)| *ordinal >= partition && *ordinal < replicas)
        .collect();
    if old.is_empty() {
        // What is left is pods of the new template turning ready: the
        // StatefulSet's own progress says it.
        return decision;
    }
    old.sort_by_key(|(ordinal, _)| std::cmp::Reverse(*ordinal));
    // An unavailable old pod costs nothing more to replace.
    let free = (limit - unavailable).max(0) as usize;
    let (down, up): (Vec<_>, Vec<_>) = old.into_iter().partition(|(_, p)| !p.ready);
    decision.delete = down
        .into_iter()
        .chain(up.into_iter().take(free))
        .map(|(_, p)| p.clone())
        .collect();
    let left = pods.iter().filter(|p| p.revision.as_deref() != update).count();
    decision.progress = Some((
        "RollingOut",
        format!(
            "maxUnavailable {limit}, kept by the operator: {unavailable} of {replicas} pods unavailable, {left} still on the old revision"
        ),
    ));
    decision
}

/// Whether the pod counts as available, as the StatefulSet controller
/// counts it: ready, not going away, and ready for `min_ready_seconds`.
fn available_at(pod: &PodView, min_ready_seconds: i32, now: &Time) -> bool {
    let long_enough = min_ready_seconds <= 0
        || pod
            .ready_since
            .as_ref()
            .is_some_and(|since| now.0.duration_since(since.0).as_secs_f64() >= f64::from(min_ready_seconds));
    pod.ready && !pod.terminating && long_enough
}

/// The most pods that may be unavailable: a number, or a percentage of the
/// replicas rounded up, as the StatefulSet controller reads it; at least 1.
pub fn budget(max: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString, replicas: i32) -> i32 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let n = match max {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let percent: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((percent * i64::from(replicas) + 99) / 100) as i32
        }
    };
    n.max(1)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use serde_json::json;

    use super::*;
    use crate::children::{BuildSettings, desired_children, tests::app};

    fn rolling(max: IntOrString) -> RollingUpdate {
        RollingUpdate {
            max_unavailable: Some(max),
            ..RollingUpdate::default()
        }
    }

    fn built() -> StatefulSet {
        let app = app(
            "web",
            json!({"replicas": 4, "updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}}),
        );
        desired_children(&app, &BuildSettings::default()).unwrap().stateful_set
    }

    fn live() -> Value {
        json!({"metadata": {"generation": 3}, "status": {"observedGeneration": 3, "updateRevision": "web-2"}})
    }

    const FOUR: Wanted = Wanted {
        replicas: 4,
        min_ready_seconds: 0,
    };

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn pod(ordinal: i32, revision: &str, ready: bool) -> PodView {
        PodView {
            name: format!("web-{ordinal}"),
            uid: format!("uid-{ordinal}"),
            revision: Some(revision.into()),
            ready,
            ready_since: Some(at(0)),
            terminating: false,
        }
    }

    /// The decision where the operator keeps to `maxUnavailable: max`, with
    /// the StatefulSet seen by its controller at update revision web-2.
    fn kept_by_operator(max: i32, wanted: Wanted, pods: &[PodView], now: &Time) -> Decision {
        let rolling = rolling(IntOrString::Int(max));
        decide(&rolling, wanted, false, &mut built(), Some(&live()), pods, now)
    }

    fn names(decision: &Decision) -> Vec<&str> {
        decision.delete.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn where_the_api_server_keeps_the_field_the_statefulset_does_it() {
        let mut desired = built();
        let pods = [pod(3, "web-1", true)];
        let decision = decide(
            &rolling(IntOrString::Int(2)),
            FOUR,
            true,
            &mut desired,
            Some(&live()),
            &pods,
            &at(100),
        );
        assert_eq!(decision.max_unavailable_by, Some(BY_STATEFULSET));
        assert!(decision.delete.is_empty());
        let strategy = desired.spec.unwrap().update_strategy.unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    }

    #[test]
    fn elsewhere_the_operator_replaces_as_many_as_the_budget_highest_first() {
        let mut desired = built();
        let pods: Vec<PodView> = (0..4).map(|i| pod(i, "web-1", true)).collect();
        let rolling = rolling(IntOrString::Int(2));
        let decision = decide(&rolling, FOUR, false, &mut desired, Some(&live()), &pods, &at(100));
        assert_eq!(names(&decision), ["web-3", "web-2"]);
        assert_eq!(decision.max_unavailable_by, Some(BY_OPERATOR));
        let strategy = desired.spec.unwrap().update_strategy.unwrap();
        assert_eq!(
            strategy.type_.as_deref(),
            Some("OnDelete"),
            "the StatefulSet replaces nothing itself"
        );
    }

    #[test]
    fn pods_already_unavailable_use_the_budget_and_old_ones_down_go_first() {
        let pods = [
            pod(0, "web-1", true),
            pod(1, "web-1", false),
            pod(2, "web-2", true),
            pod(3, "web-2", false),
        ];
        let decision = kept_by_operator(2, FOUR, &pods, &at(100));
        assert_eq!(
            names(&decision),
            ["web-1"],
            "two are down already: only the old one down goes"
        );
        let terminating = PodView {
            terminating: true,
            ..pod(3, "web-1", true)
        };
        let pods = [
            pod(0, "web-1", true),
            pod(1, "web-1", true),
            pod(2, "web-2", true),
            terminating,
        ];
        let decision = kept_by_operator(2, FOUR, &pods, &at(100));
        assert_eq!(names(&decision), ["web-1"], "one going, one more fits");
    }

    #[test]
    fn the_partition_holds_the_lower_ordinals() {
        let mut desired = built();
        let held = RollingUpdate {
            partition: Some(3),
            ..rolling(IntOrString::Int(2))
        };
        let pods: Vec<PodView> = (0..4).map(|i| pod(i, "web-1", true)).collect();
        let decision = decide(&held, FOUR, false, &mut desired, Some(&live()), &pods, &at(100));
        assert_eq!(names(&decision), ["web-3"]);
    }

    #[test]
    fn nothing_is_deleted_before_the_controller_saw_the_template() {
        let mut desired = built();
        let mut behind = live();
        behind["metadata"]["generation"] = json!(4);
        let pods: Vec<PodView> = (0..4).map(|i| pod(i, "web-1", true)).collect();
        let decision = decide(
            &rolling(IntOrString::Int(2)),
            FOUR,
            false,
            &mut desired,
            Some(&behind),
            &pods,
            &at(100),
        );
        assert!(decision.delete.is_empty());
        assert_eq!(decision.progress, None);
    }

    #[test]
    fn pods_above_a_scale_down_do_not_hide_those_below_it_that_are_down() {
        // 5 -> 4: web-4 still runs; web-3 was replaced and is not ready yet.
        let pods = [
            pod(0, "web-1", true),
            pod(1, "web-1", true),
            pod(2, "web-1", true),
            pod(3, "web-2", false),
            pod(4, "web-1", true),
        ];
        let decision = kept_by_operator(1, FOUR, &pods, &at(100));
        assert!(decision.delete.is_empty(), "web-3 is down: the budget of 1 is used");
    }

    #[test]
    fn a_pod_ready_for_less_than_min_ready_seconds_is_not_available_yet() {
        let mut fresh = pod(3, "web-2", true);
        fresh.ready_since = Some(at(95));
        let pods = [
            pod(0, "web-1", true),
            pod(1, "web-1", true),
            pod(2, "web-1", true),
            fresh,
        ];
        let slow = Wanted {
            min_ready_seconds: 30,
            ..FOUR
        };
        let decision = kept_by_operator(1, slow, &pods, &at(100));
        assert!(decision.delete.is_empty(), "web-3 counts as unavailable for 30 s");
        let decision = kept_by_operator(1, slow, &pods, &at(125));
        assert_eq!(names(&decision), ["web-2"], "then the next one goes");
    }

    #[test]
    fn a_percentage_is_rounded_up_and_the_budget_is_at_least_one() {
        assert_eq!(budget(&IntOrString::String("25%".into()), 4), 1);
        assert_eq!(budget(&IntOrString::String("50%".into()), 5), 3);
        assert_eq!(budget(&IntOrString::String("1%".into()), 3), 1);
        assert_eq!(budget(&IntOrString::Int(2), 4), 2);
    }
}
