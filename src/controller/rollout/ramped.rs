//! A rollout in steps (`rollingUpdate.steps`, the report's ramped slow
//! rollout, and a canary that goes on by itself): the operator sets the
//! StatefulSet's partition step by step, and the StatefulSet controller
//! updates the pods above it, highest ordinals first.
//!
//! A step of `replicas: k` lowers the partition to `replicas - k` and is
//! done once those k pods run the update revision and are Ready; a step of
//! `pauseSeconds` waits. After the last step the partition is 0. A step of
//! replicas not done within `progressDeadlineSeconds` aborts the rollout:
//! under `Hold` the partition stays; under `Rollback` it rises to the
//! replicas, which holds every pod at the current revision, and the updated
//! pods are deleted, so that the StatefulSet re-creates them from it. An
//! aborted rollout stays so until the template changes again.
//!
//! Where the rollout is lives on the StatefulSet, in `STEP_ANNOTATION`
//! beside the template's hash (`template`), so it survives a status write
//! put off and a restart of the operator.

use std::time::Duration;

use k8s_openapi::{
    api::apps::v1::{RollingUpdateStatefulSetStrategy, StatefulSet},
    apimachinery::pkg::apis::meta::v1::Time,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Decision, PodView, seen_by_its_controller,
    template::{Template, whole_seconds},
};
use crate::resource::{AbortAction, RollingUpdate, Step, StepStatus};

/// The annotation on the StatefulSet with where its rollout in steps is.
pub const STEP_ANNOTATION: &str = "visitcounter.dev/rollout-step";

/// `Progressing`'s reasons while a step is under way. Neither is timed by
/// the progress deadline of the whole rollout: a step of replicas has its
/// own, and a pause is as long as the user asked.
pub const STEP_REASON: &str = "RolloutStep";
pub const PAUSE_REASON: &str = "RolloutStepPaused";

/// What the spec asks of a rollout in steps.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    pub steps: &'a [Step],
    pub abort: AbortAction,
    pub replicas: i32,
    pub deadline_seconds: i32,
}

impl<'a> Plan<'a> {
    pub fn of(rolling: &'a RollingUpdate, replicas: i32, deadline_seconds: i32) -> Self {
        Self {
            steps: &rolling.steps,
            abort: rolling.abort_action.unwrap_or_default(),
            replicas,
            deadline_seconds,
        }
    }

    /// The partition while the step at `index` is under way: that of the
    /// last step of replicas up to it (all pods held before the first),
    /// and 0 once every step is done.
    fn partition_at(&self, index: usize) -> i32 {
        if index >= self.steps.len() {
            return 0;
        }
        let updated = self.steps[..=index].iter().rev().find_map(|s| s.replicas).unwrap_or(0);
        (self.replicas - updated).max(0)
    }
}

/// Where a rollout in steps is, as the StatefulSet carries it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct State {
    /// The step under way, from 0; the number of steps once all are done.
    step: usize,
    /// When it started.
    since: Time,
    #[serde(default)]
    aborted: bool,
}

/// What the live StatefulSet says of its update revision, and its pods.
struct Live<'a> {
    update_revision: Option<&'a str>,
    pods: &'a [PodView],
}

/// Decides, and changes `desired` for it: the template's hash, where the
/// rollout is, and the partition of its step.
pub fn decide(
    plan: Plan<'_>,
    desired: &mut StatefulSet,
    live: Option<&Value>,
    pods: &[PodView],
    now: &Time,
) -> Decision {
    let template = Template::stamp(desired);
    let now = whole_seconds(now);
    let done = State {
        step: plan.steps.len(),
        since: now.clone(),
        aborted: false,
    };
    let state = match live {
        // A new StatefulSet creates every pod from its template at once.
        None => done,
        Some(live) if template.is_new_to(live) => State {
            step: 0,
            since: now.clone(),
            aborted: false,
        },
        Some(live) => {
            let state = written_state(live).unwrap_or(done);
            if seen_by_its_controller(live) {
                let view = Live {
                    update_revision: live.pointer("/status/updateRevision").and_then(Value::as_str),
                    pods,
                };
                advance(plan, state, &view, &now)
            } else {
                state
            }
        }
    };
    let rollback = state.aborted && plan.abort == AbortAction::Rollback;
    let partition = if rollback {
        plan.replicas
    } else {
        plan.partition_at(state.step)
    };
    write_state(desired, &state, partition);
    let delete = match (rollback, live) {
        (true, Some(live)) => to_roll_back(live, pods),
        _ => Vec::new(),
    };
    Decision {
        delete,
        progress: progress(plan, &state, partition),
        look_again_in: look_again_in(plan, &state, &now),
        step: Some(step_status(plan, &state)),
        aborted: state.aborted.then(|| aborted_message(plan, &state)),
        ..Decision::default()
    }
}

/// The steps that are done by now, from `state` on.
fn advance(plan: Plan<'_>, mut state: State, live: &Live<'_>, now: &Time) -> State {
    while !state.aborted {
        let Some(step) = plan.steps.get(state.step) else {
            break;
        };
        let elapsed = seconds_between(&state.since, now);
        let over = match (step.replicas, step.pause_seconds) {
            (Some(_), _) => updated_and_ready(live, plan.partition_at(state.step), plan.replicas),
            (None, Some(pause)) => elapsed >= i64::from(pause),
            (None, None) => true,
        };
        if over {
            state = State {
                step: state.step + 1,
                since: now.clone(),
                aborted: false,
            };
        } else {
            state.aborted = step.replicas.is_some() && elapsed >= i64::from(plan.deadline_seconds);
            break;
        }
    }
    state
}

/// Whether every pod from `partition` up to `replicas` runs the update
/// revision and is Ready.
fn updated_and_ready(live: &Live<'_>, partition: i32, replicas: i32) -> bool {
    let Some(update) = live.update_revision else {
        return false;
    };
    (partition..replicas).all(|ordinal| {
        live.pods
            .iter()
            .any(|p| p.ordinal() == Some(ordinal) && p.revision.as_deref() == Some(update) && p.ready && !p.terminating)
    })
}

/// The pods a rollback replaces: those of the update revision, when it is
/// not the current one.
fn to_roll_back(live: &Value, pods: &[PodView]) -> Vec<PodView> {
    let update = live.pointer("/status/updateRevision").and_then(Value::as_str);
    let current = live.pointer("/status/currentRevision").and_then(Value::as_str);
    if update.is_none() || update == current {
        return Vec::new();
    }
    pods.iter()
        .filter(|p| p.revision.as_deref() == update && !p.terminating)
        .cloned()
        .collect()
}

fn seconds_between(since: &Time, now: &Time) -> i64 {
    now.0.as_second() - since.0.as_second()
}

fn written_state(live: &Value) -> Option<State> {
    let written = live.pointer("/metadata/annotations")?.get(STEP_ANNOTATION)?.as_str()?;
    serde_json::from_str(written).ok()
}

fn write_state(desired: &mut StatefulSet, state: &State, partition: i32) {
    let annotations = desired.metadata.annotations.get_or_insert_default();
    annotations.insert(STEP_ANNOTATION.into(), serde_json::to_string(state).unwrap_or_default());
    if let Some(strategy) = desired.spec.as_mut().and_then(|s| s.update_strategy.as_mut()) {
        strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateStatefulSetStrategy::default)
            .partition = Some(partition);
    }
}

/// `Progressing` while a step is under way.
fn progress(plan: Plan<'_>, state: &State, partition: i32) -> Option<(&'static str, String)> {
    if state.aborted {
        return None;
    }
    let step = plan.steps.get(state.step)?;
    let of = format!("step {} of {}", state.step + 1, plan.steps.len());
    let updated = plan.replicas - partition;
    Some(match step.pause_seconds {
        Some(pause) => (
            PAUSE_REASON,
            format!(
                "{of}: a pause of {pause} s, with {updated} of {} pods on the new template",
                plan.replicas
            ),
        ),
        None => (
            STEP_REASON,
            format!(
                "{of}: updating {updated} of {} pods to the new template, highest ordinals first; the next step starts once they are Ready",
                plan.replicas
            ),
        ),
    })
}

/// When to look again without a change to see: the end of a pause, or a
/// step's deadline.
fn look_again_in(plan: Plan<'_>, state: &State, now: &Time) -> Option<Duration> {
    if state.aborted {
        return None;
    }
    let step = plan.steps.get(state.step)?;
    let wait = step.pause_seconds.unwrap_or(plan.deadline_seconds);
    let left = i64::from(wait) - seconds_between(&state.since, now);
    Some(Duration::from_secs(left.max(0) as u64))
}

fn step_status(plan: Plan<'_>, state: &State) -> StepStatus {
    let count = plan.steps.len() as i32;
    let current = state.step as i32 + 1;
    let text = if state.aborted {
        format!("aborted at {current} of {count}")
    } else if current > count {
        "done".to_owned()
    } else {
        format!("{current} of {count}")
    };
    StepStatus {
        current,
        count,
        since: Some(state.since.clone()),
        aborted: state.aborted,
        text,
    }
}

fn aborted_message(plan: Plan<'_>, state: &State) -> String {
    let what = match plan.abort {
        AbortAction::Hold => "every pod is held where it is (abortAction: Hold)",
        AbortAction::Rollback => "the updated pods go back to the stable template (abortAction: Rollback)",
    };
    format!(
        "the rollout was aborted at step {} of {}: its pods were not Ready within {} s (progressDeadlineSeconds); {what}; change the template to roll out again",
        state.step + 1,
        plan.steps.len(),
        plan.deadline_seconds
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        children::{BuildSettings, desired_children, tests::app},
        resource::VisitCounterApp,
    };

    fn app_of(image: &str, abort: &str) -> VisitCounterApp {
        app(
            "web",
            json!({"replicas": 3, "image": image, "progressDeadlineSeconds": 30,
                   "updateStrategy": {"rollingUpdate": {"abortAction": abort,
                       "steps": [{"replicas": 1}, {"pauseSeconds": 60}, {"replicas": 2}]}}}),
        )
    }

    /// Decides for the app of `image` against `live` at `seconds`.
    fn decide_at(
        image: &str,
        abort: &str,
        live: Option<&Value>,
        pods: &[PodView],
        seconds: i64,
    ) -> (StatefulSet, Decision) {
        let app = app_of(image, abort);
        let mut desired = desired_children(&app, &BuildSettings::default()).unwrap().stateful_set;
        let rolling = app.spec.update_strategy.rolling_update.as_ref().unwrap();
        let decision = decide(Plan::of(rolling, 3, 30), &mut desired, live, pods, &at(seconds));
        (desired, decision)
    }

    /// `desired` as the API server holds it once written and seen by its
    /// controller, with the revisions `current` and `update`.
    fn live(desired: &StatefulSet, current: &str, update: &str) -> Value {
        let mut live = serde_json::to_value(desired).unwrap();
        live["metadata"]["generation"] = json!(4);
        live["status"] = json!({"observedGeneration": 4, "currentRevision": current, "updateRevision": update});
        live
    }

    fn pod(ordinal: u32, revision: &str, ready: bool) -> PodView {
        PodView {
            name: format!("web-{ordinal}"),
            uid: format!("uid-{ordinal}-{revision}"),
            revision: Some(revision.into()),
            ready,
            ..PodView::default()
        }
    }

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn partition(sts: &StatefulSet) -> Option<i32> {
        sts.spec
            .as_ref()?
            .update_strategy
            .as_ref()?
            .rolling_update
            .as_ref()?
            .partition
    }

    fn text(decision: &Decision) -> &str {
        &decision.step.as_ref().unwrap().text
    }

    /// The v1 StatefulSet as first written: every pod on it, no step.
    fn v1() -> Value {
        let (written, decision) = decide_at("v1", "Hold", None, &[], 0);
        assert_eq!((partition(&written), text(&decision)), (Some(0), "done"));
        live(&written, "web-1", "web-1")
    }

    /// The v2 StatefulSet as written at 100 over v1, at its first step.
    fn v2_started(abort: &str) -> StatefulSet {
        decide_at("v2", abort, Some(&v1()), &[], 100).0
    }

    #[test]
    fn a_new_statefulset_starts_every_pod_from_its_template() {
        v1();
    }

    #[test]
    fn a_new_template_starts_at_the_first_step_and_holds_the_rest() {
        let (desired, decision) = decide_at("v2", "Hold", Some(&v1()), &[], 100);
        assert_eq!(partition(&desired), Some(2), "one pod, the highest, is updated");
        assert_eq!(text(&decision), "1 of 3");
        assert_eq!(decision.progress.unwrap().0, STEP_REASON);
        assert_eq!(decision.look_again_in, Some(Duration::from_secs(30)), "at the deadline");
    }

    #[test]
    fn ready_pods_end_a_step_and_a_pause_waits_its_time() {
        let written = live(&v2_started("Hold"), "web-1", "web-2");
        let pods = [pod(0, "web-1", true), pod(1, "web-1", true), pod(2, "web-2", true)];
        let (desired, decision) = decide_at("v2", "Hold", Some(&written), &pods, 110);
        assert_eq!((partition(&desired), text(&decision)), (Some(2), "2 of 3"));
        assert_eq!(decision.progress.unwrap().0, PAUSE_REASON);
        assert_eq!(decision.look_again_in, Some(Duration::from_secs(60)));

        let paused = live(&desired, "web-1", "web-2");
        let (_, decision) = decide_at("v2", "Hold", Some(&paused), &pods, 169);
        assert_eq!(text(&decision), "2 of 3", "a second before the pause ends");
        let (desired, decision) = decide_at("v2", "Hold", Some(&paused), &pods, 170);
        assert_eq!((partition(&desired), text(&decision)), (Some(1), "3 of 3"));
    }

    #[test]
    fn after_the_last_step_every_pod_is_updated() {
        let written = live(&v2_started("Hold"), "web-1", "web-2");
        let all = [pod(0, "web-1", true), pod(1, "web-2", true), pod(2, "web-2", true)];
        let (step_two, _) = decide_at("v2", "Hold", Some(&written), &all, 110);
        let (step_three, _) = decide_at("v2", "Hold", Some(&live(&step_two, "web-1", "web-2")), &all, 170);
        let (done, decision) = decide_at("v2", "Hold", Some(&live(&step_three, "web-1", "web-2")), &all, 175);
        assert_eq!((partition(&done), text(&decision)), (Some(0), "done"));
        assert_eq!((decision.progress, decision.look_again_in), (None, None));
    }

    #[test]
    fn a_pod_that_is_not_ready_or_not_updated_does_not_end_a_step() {
        let written = live(&v2_started("Hold"), "web-1", "web-2");
        for pods in [
            vec![pod(2, "web-2", false)],
            vec![pod(2, "web-1", true)],
            vec![pod(1, "web-2", true)],
        ] {
            let (desired, decision) = decide_at("v2", "Hold", Some(&written), &pods, 110);
            assert_eq!((partition(&desired), text(&decision)), (Some(2), "1 of 3"), "{pods:?}");
        }
    }

    #[test]
    fn an_unseen_write_moves_nothing_on() {
        let mut written = live(&v2_started("Hold"), "web-1", "web-2");
        written["metadata"]["generation"] = json!(5);
        let (_, decision) = decide_at("v2", "Hold", Some(&written), &[pod(2, "web-2", true)], 110);
        assert_eq!(text(&decision), "1 of 3");
    }

    #[test]
    fn a_step_not_ready_within_the_deadline_aborts_and_holds() {
        let written = live(&v2_started("Hold"), "web-1", "web-2");
        let pods = [pod(0, "web-1", true), pod(1, "web-1", true), pod(2, "web-2", false)];
        let (_, decision) = decide_at("v2", "Hold", Some(&written), &pods, 129);
        assert!(decision.aborted.is_none(), "a second before the deadline");
        let (desired, decision) = decide_at("v2", "Hold", Some(&written), &pods, 130);
        assert_eq!((partition(&desired), text(&decision)), (Some(2), "aborted at 1 of 3"));
        assert!(decision.aborted.unwrap().contains("abortAction: Hold"));
        assert_eq!((decision.progress, decision.delete), (None, vec![]));
        // Aborted, it stays so, whatever the pods do.
        let (_, decision) = decide_at("v2", "Hold", Some(&live(&desired, "web-1", "web-2")), &[], 500);
        assert_eq!(text(&decision), "aborted at 1 of 3");
    }

    #[test]
    fn a_rollback_holds_every_pod_and_deletes_the_updated_ones() {
        let written = live(&v2_started("Rollback"), "web-1", "web-2");
        let pods = [pod(0, "web-1", true), pod(1, "web-1", true), pod(2, "web-2", false)];
        let (desired, decision) = decide_at("v2", "Rollback", Some(&written), &pods, 130);
        assert_eq!(partition(&desired), Some(3), "every ordinal below the partition");
        assert_eq!(decision.delete, vec![pods[2].clone()]);
        // Back on the stable template, nothing more is deleted.
        let rolled_back = [pod(0, "web-1", true), pod(1, "web-1", true), pod(2, "web-1", true)];
        let (_, decision) = decide_at(
            "v2",
            "Rollback",
            Some(&live(&desired, "web-1", "web-2")),
            &rolled_back,
            140,
        );
        assert_eq!(text(&decision), "aborted at 1 of 3");
        assert_eq!(decision.delete, vec![]);
    }

    #[test]
    fn a_new_template_after_an_abort_starts_again() {
        let written = live(&v2_started("Hold"), "web-1", "web-2");
        let (aborted, _) = decide_at("v2", "Hold", Some(&written), &[pod(2, "web-2", false)], 130);
        let (desired, decision) = decide_at("v3", "Hold", Some(&live(&aborted, "web-1", "web-2")), &[], 200);
        assert_eq!((partition(&desired), text(&decision)), (Some(2), "1 of 3"));
        assert!(decision.aborted.is_none());
    }
}
