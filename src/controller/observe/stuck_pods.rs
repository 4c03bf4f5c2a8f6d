//! Stuck rollouts: the pod that blocks a rolling update for good.
//!
//! Under `OrderedReady` the StatefulSet controller goes through the pods in
//! ordinal order and stops at the first one that is not ready. A pod of a
//! broken template never becomes ready, so the rollout stops there; and once
//! the template is reverted (or fixed), the controller still waits for that
//! pod before it would replace it, for ever (kubernetes#67250). The fix is to
//! delete the pod: the StatefulSet re-creates it from the current template.
//!
//! Pure: the pods and the clock come in as arguments.

use std::time::Duration;

use k8s_openapi::{api::apps::v1::StatefulSet, apimachinery::pkg::apis::meta::v1::Time};
use kube::ResourceExt;

use super::pods::{is_ready, ordinal_of, ready_condition};
use crate::{
    controller::runtime::slim_pod::SlimPod,
    resource::{PodManagementPolicy, StuckPod, UpdateStrategyType, VisitCounterApp},
};

/// A pod that blocks the rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct Stuck {
    pub pod: String,
    pub uid: String,
    pub revision: String,
    pub since: Option<Time>,
    /// The StatefulSet's update revision, which the pod does not run.
    pub update_revision: String,
    /// The pod runs another revision than the one the StatefulSet rolls out
    /// (the template was reverted or changed again): the rollout would
    /// replace it, but waits for it to become ready first, so deleting it
    /// unblocks the rollout. When false, the pod runs the new template, which
    /// is broken.
    pub abandoned: bool,
}

impl Stuck {
    /// The status entry, with what to do about it.
    pub fn status(&self, app: &VisitCounterApp, replaced: bool) -> StuckPod {
        let message = if self.abandoned && replaced {
            format!(
                "pod {} runs revision {}, not the update revision {}, and is not ready; the operator deletes it \
                 (updateStrategy.rollingUpdate.replaceStuckPods) so the StatefulSet re-creates it from the current template",
                self.pod, self.revision, self.update_revision
            )
        } else if self.abandoned {
            format!(
                "pod {} runs revision {}, not the update revision {}, and is not ready; under OrderedReady the \
                 StatefulSet waits for it to become ready before it replaces it, for ever (kubernetes#67250): delete \
                 the pod, or set updateStrategy.rollingUpdate.replaceStuckPods: true",
                self.pod, self.revision, self.update_revision
            )
        } else {
            format!(
                "pod {} of the new revision {} has not become ready, and under OrderedReady the rollout waits for it; \
                 fix or revert the pod template of {}{}",
                self.pod,
                self.revision,
                app.name_any(),
                if app.spec.update_strategy.replaces_stuck_pods() {
                    " (the operator then replaces the pod)"
                } else {
                    ", then delete the pod or set updateStrategy.rollingUpdate.replaceStuckPods: true"
                }
            )
        };
        StuckPod {
            name: self.pod.clone(),
            revision: self.revision.clone(),
            not_ready_since: self.since.clone(),
            message,
        }
    }
}

/// What the rollout check found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutCheck {
    pub stuck: Option<Stuck>,
    /// A pod that would count as stuck if it stays not ready this much longer.
    pub look_again_in: Option<Duration>,
}

/// The pod that blocks the app's rollout, if one does: the lowest ordinal that
/// is not ready, and has not been for `stuck_after`, running either the new
/// revision (while a rollout is under way) or a revision that the rollout
/// would replace (any other, above the partition).
pub fn check_rollout<'a>(
    app: &VisitCounterApp,
    stateful_set: &StatefulSet,
    pods: impl IntoIterator<Item = &'a SlimPod>,
    now: &Time,
    stuck_after: Duration,
) -> RolloutCheck {
    let spec = &app.spec;
    if spec.pod_management_policy != PodManagementPolicy::OrderedReady
        || spec.update_strategy.type_ != UpdateStrategyType::RollingUpdate
    {
        return RolloutCheck::default();
    }
    let Some(status) = stateful_set.status.as_ref() else {
        return RolloutCheck::default();
    };
    // Revisions count only once they describe the StatefulSet's current spec.
    if status.observed_generation.is_none() || status.observed_generation < stateful_set.metadata.generation {
        return RolloutCheck::default();
    }
    let (Some(current), Some(update)) = (status.current_revision.as_deref(), status.update_revision.as_deref()) else {
        return RolloutCheck::default();
    };
    let name = app.name_any();
    let sts_spec = stateful_set.spec.as_ref();
    let replicas = sts_spec.and_then(|s| s.replicas).unwrap_or(1);
    let partition = sts_spec
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let mut pods: Vec<(i32, &SlimPod)> = pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let ordinal = ordinal_of(&name, &p.name_any())?;
            (ordinal < replicas).then_some((ordinal, p))
        })
        .collect();
    pods.sort_by_key(|(ordinal, _)| *ordinal);
    let Some((ordinal, pod)) = pods.into_iter().find(|(_, p)| !is_ready(p)) else {
        return RolloutCheck::default();
    };
    let Some(revision) = pod.revision() else {
        return RolloutCheck::default();
    };
    // Deleted, the pod comes back at the update revision at or above the
    // partition, and at the current one below it.
    let abandoned = revision != update && (ordinal >= partition || revision != current);
    let failing_update = revision == update && current != update;
    if !abandoned && !failing_update {
        // A pod of the template every pod runs: not a rollout's problem.
        return RolloutCheck::default();
    }
    let since = not_ready_since(pod);
    let waited = since
        .as_ref()
        .map(|s| now.0.duration_since(s.0))
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default();
    if waited < stuck_after {
        return RolloutCheck {
            stuck: None,
            look_again_in: Some(stuck_after - waited),
        };
    }
    RolloutCheck {
        stuck: Some(Stuck {
            pod: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            revision: revision.to_owned(),
            update_revision: update.to_owned(),
            since,
            abandoned,
        }),
        look_again_in: None,
    }
}

/// When the pod's Ready condition last turned, or else when it was created.
fn not_ready_since(pod: &SlimPod) -> Option<Time> {
    ready_condition(pod)
        .and_then(|c| c.last_transition_time.clone())
        .or_else(|| pod.metadata.creation_timestamp.clone())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    use super::*;
    use crate::children::tests::app;
    use crate::controller::observe::pods::REVISION_LABEL;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn sts(current: &str, update: &str) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": 3, "selector": {}, "template": {}, "serviceName": "web-headless"},
            "status": {"observedGeneration": 2, "replicas": 3, "currentRevision": current, "updateRevision": update},
        }))
        .unwrap()
    }

    fn pod(ordinal: i32, revision: &str, ready: bool, since: i64) -> SlimPod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("web-{ordinal}"), "uid": format!("u{ordinal}"),
                         "labels": {REVISION_LABEL: revision}},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                       "lastTransitionTime": at(since)}]},
        }))
        .unwrap()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_reverted_template_leaves_an_abandoned_pod_that_blocks_the_rollout() {
        let app = app("web", json!({"replicas": 3}));
        let pods = [
            pod(0, "good", true, 0),
            pod(1, "good", true, 0),
            pod(2, "bad", false, 0),
        ];
        let check = check_rollout(&app, &sts("good", "good"), &pods, &at(600), MINUTE);
        let stuck = check.stuck.unwrap();
        assert_eq!(
            (stuck.pod.as_str(), stuck.revision.as_str(), stuck.abandoned),
            ("web-2", "bad", true)
        );
        assert_eq!(stuck.uid, "u2");
        assert!(stuck.status(&app, false).message.contains("kubernetes#67250"));
    }

    #[test]
    fn a_pod_of_the_new_revision_that_never_gets_ready_is_reported_not_abandoned() {
        let app = app("web", json!({"replicas": 3}));
        let pods = [pod(0, "old", true, 0), pod(1, "old", true, 0), pod(2, "new", false, 0)];
        let stuck = check_rollout(&app, &sts("old", "new"), &pods, &at(600), MINUTE)
            .stuck
            .unwrap();
        assert!(!stuck.abandoned);
        assert!(
            stuck
                .status(&app, false)
                .message
                .contains("fix or revert the pod template of web")
        );
    }

    #[test]
    fn a_pod_not_ready_for_less_than_the_threshold_is_looked_at_again_later() {
        let app = app("web", json!({"replicas": 3}));
        let pods = [
            pod(0, "old", true, 0),
            pod(1, "old", true, 0),
            pod(2, "new", false, 590),
        ];
        let check = check_rollout(&app, &sts("old", "new"), &pods, &at(600), MINUTE);
        assert_eq!(check.stuck, None);
        assert_eq!(check.look_again_in, Some(Duration::from_secs(50)));
    }

    #[test]
    fn no_rollout_no_parallel_and_no_on_delete_means_nothing_is_stuck() {
        let crashing = [pod(0, "same", false, 0)];
        let check = |app: VisitCounterApp, current: &str, update: &str| {
            check_rollout(&app, &sts(current, update), &crashing, &at(600), MINUTE)
        };
        // Every pod runs the one template: a crash, not a rollout.
        assert_eq!(check(app("web", json!({})), "same", "same"), RolloutCheck::default());
        // Parallel and OnDelete do not wait for pods in order.
        let abandoned = [pod(0, "gone", false, 0)];
        for spec in [
            json!({"podManagementPolicy": "Parallel"}),
            json!({"updateStrategy": {"type": "OnDelete"}}),
        ] {
            let app = app("web", spec);
            assert_eq!(
                check_rollout(&app, &sts("a", "b"), &abandoned, &at(600), MINUTE),
                RolloutCheck::default()
            );
        }
    }

    #[test]
    fn a_broken_pod_of_the_current_revision_is_replaceable_while_a_rollout_waits_for_it() {
        // A StatefulSet re-created with a broken template counts it as its
        // current revision; the next template is the update revision.
        let app = app("web", json!({"replicas": 3}));
        let pods = [
            pod(0, "older", true, 0),
            pod(1, "older", true, 0),
            pod(2, "broken", false, 0),
        ];
        let stuck = check_rollout(&app, &sts("broken", "fixed"), &pods, &at(600), MINUTE)
            .stuck
            .unwrap();
        assert!(stuck.abandoned);
        // Below a partition it would come back at the same broken revision.
        let mut held = sts("broken", "fixed");
        held.spec.as_mut().unwrap().update_strategy =
            Some(serde_json::from_value(json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 3}})).unwrap());
        assert_eq!(
            check_rollout(&app, &held, &pods, &at(600), MINUTE),
            RolloutCheck::default()
        );
    }

    #[test]
    fn the_first_not_ready_pod_in_ordinal_order_is_the_one_that_blocks() {
        let app = app("web", json!({"replicas": 3}));
        let pods = [pod(2, "gone", false, 0), pod(1, "gone", false, 0), pod(0, "a", true, 0)];
        let stuck = check_rollout(&app, &sts("a", "a"), &pods, &at(600), MINUTE)
            .stuck
            .unwrap();
        assert_eq!(stuck.pod, "web-1");
    }

    #[test]
    fn a_statefulset_status_behind_its_spec_says_nothing() {
        let app = app("web", json!({}));
        let mut stale = sts("a", "a");
        stale.metadata.generation = Some(3);
        let pods = [pod(0, "gone", false, 0)];
        assert_eq!(
            check_rollout(&app, &stale, &pods, &at(600), MINUTE),
            RolloutCheck::default()
        );
    }
}
