//! The conditions of the status, each from the pod counts and what the
//! reconcile saw: `Ready`, `Progressing` and `Degraded` for people and
//! Argo CD, kstatus' `Reconciling` and `Stalled` for Flux and kpt, and
//! `Paused` and `UnsupportedSpec` while they apply.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{
    Counts, DEGRADED, Observed, PAUSED, PODS_NOT_CREATED, PROGRESSING, READY, RECONCILING, STALLED, UNSUPPORTED_SPEC,
    dropped_message, progress::PROGRESS_DEADLINE_EXCEEDED,
};
use crate::{
    controller::observe::crash_loops::PODS_CRASH_LOOPING,
    resource::{PAUSED_ANNOTATION, VisitCounterApp},
};

/// A condition before it gets its times.
pub struct Cond {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// `Progressing`'s reason for an aborted rollout in steps.
pub const ROLLOUT_ABORTED: &str = "RolloutAborted";

/// `Progressing`'s reason while a blue/green preview's pods start
/// (`rollout::blue_green`, which says it).
pub const PREVIEW_STARTING: &str = "PreviewStarting";

/// `Progressing`'s reason while a shadow's pods start (`rollout::shadow`).
pub const SHADOW_STARTING: &str = "ShadowStarting";

/// `Progressing` reasons of a rollout under way, which its progress
/// deadline applies to.
pub const PROGRESS_REASONS: &[&str] = &[
    "Scaling",
    "RollingOut",
    "WaitingForPods",
    "Recreating",
    PREVIEW_STARTING,
    SHADOW_STARTING,
];

/// Every condition of the status, in the order they are written, around
/// `progressing` (see [`progressing`] and `Cond::past_deadline`).
pub fn all(observed: &Observed<'_>, counts: &Counts, progressing: Cond) -> Vec<Cond> {
    let (reconciling, stalled) = kstatus(&progressing, observed);
    let paused = observed.paused.then(|| {
        Cond::new(
            PAUSED,
            true,
            "PausedByAnnotation",
            format!(
                "the operator changes nothing while the app has {PAUSED_ANNOTATION}: \"true\"; remove it to resume"
            ),
        )
    });
    let unsupported = (!observed.dropped.is_empty()).then(|| {
        Cond::new(
            UNSUPPORTED_SPEC,
            true,
            "DroppedByAPIServer",
            dropped_message(&observed.dropped),
        )
    });
    [
        ready(observed, counts),
        progressing,
        degraded(observed),
        reconciling,
        stalled,
    ]
    .into_iter()
    .chain(paused)
    .chain(unsupported)
    .collect()
}

/// `Progressing`: what is under way, or why nothing is.
pub fn progressing(app: &VisitCounterApp, observed: &Observed<'_>, counts: &Counts) -> Cond {
    let Counts {
        wanted,
        replicas,
        ready,
        updated,
        expected_updated,
        ..
    } = *counts;
    let running = |reason, message| Cond::new(PROGRESSING, true, reason, message);
    if observed.stateful_set.is_none() {
        running("Creating", "the StatefulSet is being created".into())
    } else if let Some(message) = &observed.aborted {
        Cond::new(PROGRESSING, false, ROLLOUT_ABORTED, message.clone())
    } else if let Some((reason, message)) = &observed.rollout {
        running(*reason, message.clone())
    } else if !counts.current {
        running(
            "StatefulSetPending",
            "the StatefulSet controller has not yet seen the latest spec".into(),
        )
    } else if let Some(f) = observed.failure.as_ref().filter(|f| f.reason == PODS_NOT_CREATED) {
        Cond::new(PROGRESSING, false, f.reason, f.message.clone())
    } else if let Some(stuck) = &observed.stuck {
        Cond::new(PROGRESSING, false, "RolloutStuck", stuck.message.clone())
    } else if replicas != wanted {
        running("Scaling", format!("{replicas} of {wanted} pods exist"))
    } else if updated < expected_updated {
        running(
            "RollingOut",
            format!("{updated} of {expected_updated} pods run the latest template"),
        )
    } else if ready < wanted {
        running("WaitingForPods", format!("{ready} of {wanted} pods are ready"))
    } else if counts.held > 0 {
        Cond::new(PROGRESSING, false, "RolloutHeld", held_message(app, counts))
    } else {
        Cond::new(
            PROGRESSING,
            false,
            "RolloutComplete",
            format!("{wanted} pods are up to date"),
        )
    }
}

/// What `RolloutHeld` says: which pods run which revision, what holds the
/// rest, and how to promote.
fn held_message(app: &VisitCounterApp, counts: &Counts) -> String {
    let rolling = app.spec.update_strategy.rolling_update.as_ref();
    let by = match rolling.and_then(|r| r.canary_replicas) {
        Some(canary) => format!(
            "updateStrategy.rollingUpdate.canaryReplicas: {canary}; raise or remove it to promote the new revision"
        ),
        None => format!(
            "updateStrategy.rollingUpdate.partition: {}; lower or remove it to promote the new revision",
            counts.partition
        ),
    };
    format!(
        "{} of {} pods run revision {}; {} are held at revision {} by {by}",
        counts.updated,
        counts.wanted,
        counts.update_revision.as_deref().unwrap_or("?"),
        counts.held,
        counts.current_revision.as_deref().unwrap_or("?"),
    )
}

/// `Degraded`: the failure of this reconcile, if any.
fn degraded(observed: &Observed<'_>) -> Cond {
    match &observed.failure {
        Some(failure) => Cond::new(DEGRADED, true, failure.reason, failure.message.clone()),
        None => Cond::new(
            DEGRADED,
            false,
            "ReconcileSucceeded",
            "the children match the spec".into(),
        ),
    }
}

/// `Ready`: every pod of the spec exists and is ready, and nothing failed.
fn ready(observed: &Observed<'_>, counts: &Counts) -> Cond {
    let Counts {
        wanted,
        replicas,
        ready,
        ..
    } = *counts;
    if let Some(failure) = &observed.failure {
        let what = match failure.reason {
            PODS_NOT_CREATED => "pods cannot be created",
            PODS_CRASH_LOOPING => "pods crash and restart",
            _ => "the last reconcile failed",
        };
        Cond::new(READY, false, "Degraded", format!("{what}; see the Degraded condition"))
    } else if counts.current && ready >= wanted && replicas == wanted {
        if wanted == 0 {
            Cond::new(READY, true, "ScaledToZero", "the app is scaled to zero".into())
        } else {
            Cond::new(
                READY,
                true,
                "AllReplicasReady",
                format!("{ready} of {wanted} pods are ready"),
            )
        }
    } else {
        Cond::new(
            READY,
            false,
            "ReplicasNotReady",
            format!("{ready} of {wanted} pods are ready"),
        )
    }
}

/// `Reconciling` and `Stalled`, from `Progressing`, the failure and the pause.
fn kstatus(progressing: &Cond, observed: &Observed<'_>) -> (Cond, Cond) {
    let failure = observed.failure.as_ref();
    let reconciling = match failure {
        Some(f) if f.stalled => Cond::new(
            RECONCILING,
            false,
            f.reason,
            "stalled; see the Stalled condition".into(),
        ),
        Some(f) => Cond::new(
            RECONCILING,
            true,
            "Retrying",
            format!("retrying after {}: {}", f.reason, f.message),
        ),
        // kstatus would read Reconciling as "still in progress" for as long as
        // the pause lasts; a paused app is as settled as it will get.
        None if observed.paused => Cond::new(RECONCILING, false, "Paused", "reconciling is paused".into()),
        None if stalled_rollout(progressing, observed) => Cond::new(
            RECONCILING,
            false,
            progressing.reason,
            "stalled; see the Stalled condition".into(),
        ),
        None => Cond::new(
            RECONCILING,
            progressing.status,
            progressing.reason,
            progressing.message.clone(),
        ),
    };
    let stalled = match failure {
        Some(f) if f.stalled => Cond::new(STALLED, true, f.reason, f.message.clone()),
        Some(_) => Cond::new(STALLED, false, "Retrying", "the operator retries with backoff".into()),
        None if stalled_rollout(progressing, observed) => {
            Cond::new(STALLED, true, progressing.reason, progressing.message.clone())
        }
        None => Cond::new(
            STALLED,
            false,
            "ReconcileSucceeded",
            "the children match the spec".into(),
        ),
    };
    (reconciling, stalled)
}

/// A rollout that will not go on by itself: a stuck pod, no progress
/// within the deadline, or an aborted rollout in steps.
fn stalled_rollout(progressing: &Cond, observed: &Observed<'_>) -> bool {
    observed.stuck.is_some() || [PROGRESS_DEADLINE_EXCEEDED, ROLLOUT_ABORTED].contains(&progressing.reason)
}

impl Cond {
    /// `Progressing` once the rollout it says is under way has gone
    /// `deadline` seconds without progress.
    pub fn past_deadline(self, deadline: i32) -> Self {
        Cond::new(
            PROGRESSING,
            false,
            PROGRESS_DEADLINE_EXCEEDED,
            format!(
                "{}, with no progress for {deadline} s (progressDeadlineSeconds): the rollout has failed; fix or revert the spec",
                self.message
            ),
        )
    }

    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: String) -> Self {
        Self {
            type_,
            status,
            reason,
            message,
        }
    }

    /// The condition, keeping its last transition time while its status
    /// stays what it was.
    pub fn into_condition(self, previous: &[Condition], generation: Option<i64>, now: &Time) -> Condition {
        let status = if self.status { "True" } else { "False" };
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == self.type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: self.type_.into(),
            status: status.into(),
            reason: self.reason.into(),
            message: self.message,
            last_transition_time,
            observed_generation: generation,
        }
    }
}
