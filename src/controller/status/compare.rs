//! Comparing two statuses: whether a write is needed, whether it can wait,
//! and whether it is news worth an Event.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{PROGRESSING, conditions::ROLLOUT_ABORTED, progress::PROGRESS_DEADLINE_EXCEEDED};
use crate::resource::{RolloutStatus, VisitCounterAppStatus};

/// `Progressing`'s reason and words.
fn progressing(status: &VisitCounterAppStatus) -> Option<(String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == PROGRESSING)
        .map(|c| (c.reason.clone(), c.message.clone()))
}

/// The Event for a rollout that has just come to be held by a partition or
/// a canary: the `RolloutHeld` message, when `new` says held and `old` did
/// not.
pub fn newly_held(old: Option<&VisitCounterAppStatus>, new: &VisitCounterAppStatus) -> Option<String> {
    let (new_reason, message) = progressing(new)?;
    let was_held = old.and_then(progressing).is_some_and(|(r, _)| r == "RolloutHeld");
    (new_reason == "RolloutHeld" && !was_held).then(|| format!("held: {message}"))
}

/// The Event for a downtime that has just ended: the words, when `new`
/// has one measured that `old` does not.
pub fn newly_ended_downtime(old: Option<&VisitCounterAppStatus>, new: &VisitCounterAppStatus) -> Option<String> {
    let downtime = |s: &VisitCounterAppStatus| s.rollout.as_ref().and_then(|r| r.downtime.clone());
    let ended = downtime(new).filter(|d| d.until.is_some())?;
    // Measured already, or the status that opened it was never written.
    let told = old
        .and_then(downtime)
        .is_some_and(|d| d.since == ended.since && d.until.is_some());
    (!told).then(|| {
        format!(
            "recreated: every old pod was gone before a pod of the new template started; the app had no ready pod for {} s",
            ended.seconds.unwrap_or_default()
        )
    })
}

/// The Warning Event for a rollout that has just passed its progress
/// deadline: `Progressing`'s words, when `new` says so and `old` did not.
pub fn newly_past_deadline(old: Option<&VisitCounterAppStatus>, new: &VisitCounterAppStatus) -> Option<String> {
    let (new_reason, message) = progressing(new)?;
    let was = old
        .and_then(progressing)
        .is_some_and(|(r, _)| r == PROGRESS_DEADLINE_EXCEEDED);
    (new_reason == PROGRESS_DEADLINE_EXCEEDED && !was).then_some(message)
}

/// The Warning Event for a rollout in steps that has just been aborted:
/// `Progressing`'s words, when `new` says so and `old` did not.
pub fn newly_aborted(old: Option<&VisitCounterAppStatus>, new: &VisitCounterAppStatus) -> Option<String> {
    let (new_reason, message) = progressing(new)?;
    let was = old.and_then(progressing).is_some_and(|(r, _)| r == ROLLOUT_ABORTED);
    (new_reason == ROLLOUT_ABORTED && !was).then_some(message)
}

/// Whether two statuses say the same thing (the conditions' times aside, and
/// `visits`, which the reconcile does not write).
pub fn same_status(a: &VisitCounterAppStatus, b: &VisitCounterAppStatus) -> bool {
    let strip = |s: &VisitCounterAppStatus| {
        let mut s = s.clone();
        s.visits = None;
        for c in &mut s.conditions {
            c.last_transition_time = Time(Default::default());
        }
        s
    };
    strip(a) == strip(b)
}

/// `Progressing` reasons of an app at rest: a change into or out of one is
/// written at once, never held back as mere progress.
const SETTLED_REASONS: &[&str] = &[
    "RolloutComplete",
    "RolloutHeld",
    "RolloutStuck",
    "PodsNotCreated",
    ROLLOUT_ABORTED,
];

/// Whether `new` differs from `old` only in progress: counts, revisions,
/// messages, and reasons under an unchanged condition status. Such a status
/// can wait a moment, so that pods turning ready one after another cost one
/// status write rather than one each; a condition that turns (Ready, say)
/// cannot.
pub fn only_progress(old: &VisitCounterAppStatus, new: &VisitCounterAppStatus) -> bool {
    // Coming to rest, or leaving rest, is news even when `Progressing`
    // stays False: RolloutHeld to RolloutComplete is a promotion.
    let settled = |s: &VisitCounterAppStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == PROGRESSING)
            .map(|c| c.reason.clone())
            .filter(|r| SETTLED_REASONS.contains(&r.as_str()))
    };
    if settled(old) != settled(new) {
        return false;
    }
    let strip = |s: &VisitCounterAppStatus| {
        let mut s = s.clone();
        // A downtime that starts or ends is news: its times are the measure.
        let downtime = s.rollout.as_ref().and_then(|r| r.downtime.clone());
        s.visits = None;
        s.replicas = 0;
        s.ready_replicas = 0;
        s.updated_replicas = 0;
        s.current_revision = None;
        s.update_revision = None;
        // So is a step of a rollout in steps: people watch for it.
        let step = s.rollout.as_ref().and_then(|r| r.step.clone());
        s.rollout = (downtime.is_some() || step.is_some()).then(|| RolloutStatus {
            downtime,
            step,
            ..RolloutStatus::default()
        });
        for c in &mut s.conditions {
            c.last_transition_time = Time(Default::default());
            c.message.clear();
            c.reason.clear();
        }
        s
    };
    strip(old) == strip(new)
}
