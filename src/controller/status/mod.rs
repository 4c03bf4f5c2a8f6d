//! The app's status, computed from what was applied and observed. Pure: the
//! clock comes in as an argument.
//!
//! [`desired_status`] counts the pods ([`Counts`]), then says each condition
//! ([`conditions`]); [`compare`] decides whether a new status is worth a
//! write now, later or not at all.

pub mod compare;
pub mod conditions;
pub mod dropped;
pub mod progress;

use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Service},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};

use crate::{
    children::selector_string,
    resource::{
        BlueGreenStatus, Downtime, RolloutStatus, StepStatus, StuckPod, TrafficStatus, UpdateStrategyType,
        VisitCounterApp, VisitCounterAppStatus,
    },
};
pub use compare::{newly_aborted, newly_ended_downtime, newly_held, newly_past_deadline, only_progress, same_status};
pub use dropped::{dropped_by_server, dropped_message};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
/// kstatus' abnormal-true conditions, which Flux and kpt read: `Reconciling`
/// while the children have not caught up with the spec (or a retry is due),
/// `Stalled` when only a person can unblock the app.
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
/// Present, and True, only while the app is paused by its annotation.
pub const PAUSED: &str = "Paused";
/// The condition that names spec fields the cluster ignores.
pub const UNSUPPORTED_SPEC: &str = "UnsupportedSpec";
/// `status.rollout.maxUnavailableBy` when the operator keeps to
/// `maxUnavailable` (`rollout::max_unavailable`).
pub const MAX_UNAVAILABLE_BY_OPERATOR: &str = "Operator";
/// `Degraded`'s reason while pods cannot be created (see
/// `observe::pod_creation`).
pub const PODS_NOT_CREATED: &str = "PodsNotCreated";

/// Why the reconcile failed.
#[derive(Debug)]
pub struct Failure {
    /// `Error::reason()`.
    pub reason: &'static str,
    pub message: String,
    /// Whether retrying cannot help until someone changes something
    /// (`Error::stalls()`).
    pub stalled: bool,
}

/// What the reconcile saw.
#[derive(Debug, Default)]
pub struct Observed<'a> {
    pub stateful_set: Option<&'a StatefulSet>,
    pub service: Option<&'a Service>,
    /// The failure of this reconcile.
    pub failure: Option<Failure>,
    /// The app is paused (`visitcounter.dev/paused: "true"`): nothing was
    /// applied.
    pub paused: bool,
    /// A pod that blocks the rollout for good (see `observe::stuck_pods`),
    /// unless the operator just replaced it.
    pub stuck: Option<StuckPod>,
    /// Fields of the spec the API server dropped from the StatefulSet (JSON
    /// pointers into it, from [`dropped_by_server`]).
    pub dropped: Vec<&'static str>,
    /// A rollout the operator drives is under way (`rollout::Decision`):
    /// `Progressing`'s reason and words.
    pub rollout: Option<(&'static str, String)>,
    /// Who keeps to `maxUnavailable` (`rollout::Decision`).
    pub max_unavailable_by: Option<&'static str>,
    /// When the last recreate started (`rollout::Decision`).
    pub recreate_since: Option<Time>,
    /// Where a rollout in steps is (`rollout::Decision`).
    pub step: Option<StepStatus>,
    /// The rollout was aborted (`rollout::Decision`): why, and what now.
    pub aborted: Option<String>,
    /// Where a blue/green app stands (`rollout::Decision`).
    pub blue_green: Option<BlueGreenStatus>,
    /// Where the app's HTTPRoute sends requests (`rollout::Decision`).
    pub traffic: Option<TrafficStatus>,
}

/// The pods of the app, as its StatefulSet's status counts them.
#[derive(Debug, Default, PartialEq)]
pub struct Counts {
    /// The StatefulSet's status describes its current spec.
    pub current: bool,
    /// Pods asked for by the spec.
    pub wanted: i32,
    pub replicas: i32,
    pub ready: i32,
    /// Pods of the update revision.
    pub updated: i32,
    /// Pods the rollout is to update: those at or above the partition.
    pub expected_updated: i32,
    pub partition: i32,
    pub current_revision: Option<String>,
    pub update_revision: Option<String>,
    /// Pods the partition keeps at the old revision once the rest run the new.
    pub held: i32,
}

impl Counts {
    /// The counts from the StatefulSet, or the last status's while the
    /// StatefulSet's status is behind its spec.
    pub fn of(app: &VisitCounterApp, sts: Option<&StatefulSet>) -> Self {
        let previous = app.status.clone().unwrap_or_default();
        let wanted = app.spec.replicas;
        let sts_status = sts.and_then(|s| s.status.as_ref());
        // A child's status counts only once it describes the child's current spec.
        let current = sts.is_some_and(|s| {
            let seen = sts_status.and_then(|st| st.observed_generation);
            seen.is_some() && seen >= s.metadata.generation
        });
        let (replicas, ready, updated) = match (current, sts_status) {
            (true, Some(st)) => (
                st.replicas,
                st.ready_replicas.unwrap_or(0),
                st.updated_replicas.unwrap_or(0),
            ),
            _ => (previous.replicas, previous.ready_replicas, previous.updated_replicas),
        };
        let rolling = app.spec.update_strategy.rolling_update.as_ref();
        let partition = match app.spec.update_strategy.type_ {
            UpdateStrategyType::OnDelete => wanted,
            UpdateStrategyType::Recreate | UpdateStrategyType::BlueGreen | UpdateStrategyType::Shadow => 0,
            UpdateStrategyType::RollingUpdate => rolling.and_then(|r| r.partition_for(wanted)).unwrap_or(0),
        };
        let mut counts = Self {
            current,
            wanted,
            replicas,
            ready,
            updated,
            expected_updated: (wanted - partition).max(0),
            partition,
            current_revision: sts_status
                .and_then(|s| s.current_revision.clone())
                .or(previous.current_revision),
            update_revision: sts_status
                .and_then(|s| s.update_revision.clone())
                .or(previous.update_revision),
            held: 0,
        };
        counts.held = counts.held_replicas(app.spec.update_strategy.type_ == UpdateStrategyType::RollingUpdate);
        counts
    }

    /// Under a strategy the operator drives on an `OnDelete` StatefulSet,
    /// whose controller never moves `currentRevision` on: the update
    /// revision, once every pod asked for runs it and is ready.
    fn rolled_out_by_the_operator(mut self) -> Self {
        if self.current && self.replicas == self.wanted && self.updated == self.wanted && self.ready >= self.wanted {
            self.current_revision = self.update_revision.clone();
        }
        self
    }

    /// Pods the partition keeps at the old revision once the rest run the new.
    fn held_replicas(&self, rolling: bool) -> i32 {
        let held = rolling
            && self.partition > 0
            && self.current
            && self.replicas == self.wanted
            && self.updated >= self.expected_updated
            && self.current_revision != self.update_revision;
        if held { self.replicas - self.updated } else { 0 }
    }
}

/// How long the app has had, or last had, no ready pod while the operator
/// recreated its pods: from `since`, when the last recreate started (the
/// old pods, deleted then, leave the Service's endpoints at once), until the
/// first reconcile after it that sees a ready pod, by a StatefulSet status
/// that describes the current spec (`ready`, `None` while that status is
/// behind). A downtime already measured for that start stays as it is.
pub fn downtime(
    previous: Option<&Downtime>,
    since: Option<&Time>,
    rolling_out: bool,
    ready: Option<i32>,
    now: &Time,
) -> Option<Downtime> {
    let Some(since) = since else {
        return previous.cloned();
    };
    // Compared in whole seconds: the status keeps no finer times.
    if let Some(measured) = previous.filter(|d| d.since.0.as_second() == since.0.as_second() && d.until.is_some()) {
        return Some(measured.clone());
    }
    let over = !rolling_out && ready.is_some_and(|r| r > 0);
    let seconds = now.0.duration_since(since.0).as_secs_f64();
    Some(Downtime {
        since: since.clone(),
        until: over.then(|| now.clone()),
        seconds: over.then_some((seconds * 10.0).round() / 10.0),
    })
}

/// Who keeps to `maxUnavailable`: as this reconcile found, else as the
/// last status said while the spec still sets it (a reconcile that failed
/// or is paused did not look).
fn max_unavailable_by(
    app: &VisitCounterApp,
    observed: &Observed<'_>,
    previous: &VisitCounterAppStatus,
) -> Option<String> {
    let set = app.spec.update_strategy.type_ == UpdateStrategyType::RollingUpdate
        && app
            .spec
            .update_strategy
            .rolling_update
            .as_ref()
            .is_some_and(|r| r.max_unavailable.is_some());
    observed.max_unavailable_by.map(str::to_owned).or_else(|| {
        set.then(|| previous.rollout.as_ref().and_then(|r| r.max_unavailable_by.clone()))
            .flatten()
    })
}

/// The status to write. Conditions keep their `lastTransitionTime` while
/// their status stays the same.
pub fn desired_status(app: &VisitCounterApp, observed: &Observed<'_>, now: Time) -> VisitCounterAppStatus {
    let name = app.metadata.name.as_deref().unwrap_or_default();
    let generation = app.metadata.generation;
    let previous = app.status.clone().unwrap_or_default();
    let mut counts = Counts::of(app, observed.stateful_set);
    // As the last status said when this reconcile did not look (a failure,
    // a pause), so the revisions do not flap with it.
    let max_unavailable_by = max_unavailable_by(app, observed, &previous);
    let operator_driven = app.spec.update_strategy.type_ == UpdateStrategyType::Recreate
        || max_unavailable_by.as_deref() == Some(MAX_UNAVAILABLE_BY_OPERATOR);
    if operator_driven {
        counts = counts.rolled_out_by_the_operator();
    }
    let running = conditions::progressing(app, observed, &counts);
    // A paused rollout is not timed, as a paused Deployment's is not: the
    // clock starts again on resume.
    let in_progress = !observed.paused && running.status && conditions::PROGRESS_REASONS.contains(&running.reason);
    let mut last_progress = progress::last_progress(&previous, generation, &counts, in_progress, &now);
    // A blue/green preview progresses in its own StatefulSet, which the
    // counts above do not see: its words change as its pods get available.
    if in_progress && preview_progressed(&previous, &running) {
        last_progress = Some(now.clone());
    }
    let deadline = app.spec.progress_deadline_seconds;
    let progressing = match &last_progress {
        Some(last) if progress::left(last, deadline, &now).is_none() => running.past_deadline(deadline),
        _ => running,
    };
    let conditions = conditions::all(observed, &counts, progressing)
        .into_iter()
        .map(|c| c.into_condition(&previous.conditions, generation, &now))
        .collect::<Vec<Condition>>();
    let downtime = downtime(
        previous.rollout.as_ref().and_then(|r| r.downtime.as_ref()),
        observed.recreate_since.as_ref(),
        observed.rollout.is_some(),
        counts.current.then_some(counts.ready),
        &now,
    );
    let node_port = observed
        .service
        .and_then(|s| s.spec.as_ref())
        .and_then(|spec| spec.ports.as_ref())
        .and_then(|ports| ports.first())
        .and_then(|p| p.node_port)
        .or(previous.node_port);
    VisitCounterAppStatus {
        observed_generation: generation,
        replicas: counts.replicas,
        ready_replicas: counts.ready,
        updated_replicas: counts.updated,
        current_revision: counts.current_revision,
        update_revision: counts.update_revision,
        selector: Some(selector_string(name)),
        node_port,
        conditions,
        rollout: (counts.held > 0
            || observed.stuck.is_some()
            || downtime.is_some()
            || last_progress.is_some()
            || max_unavailable_by.is_some()
            || observed.step.is_some()
            || observed.blue_green.is_some())
        .then(|| RolloutStatus {
            held_replicas: counts.held,
            stuck_pod: observed.stuck.clone(),
            last_progress,
            downtime,
            max_unavailable_by,
            step: observed.step.clone(),
            blue_green: observed.blue_green.clone(),
        }),
        // Written apart, by the visits poller (`observe::visits`).
        visits: None,
        traffic: observed.traffic.clone(),
    }
}

/// Whether a blue/green preview got on since the previous status: it was
/// starting then too, and says another count of available pods now. Once
/// past its deadline it must progress by the counts, or a new spec.
fn preview_progressed(previous: &VisitCounterAppStatus, running: &conditions::Cond) -> bool {
    let said = previous.conditions.iter().find(|c| c.type_ == PROGRESSING);
    running.reason == conditions::PREVIEW_STARTING
        && said.is_some_and(|s| s.reason == running.reason && s.message != running.message)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::apps::v1::StatefulSetStatus, apimachinery::pkg::apis::meta::v1::ObjectMeta, jiff::Timestamp,
    };
    use serde_json::json;

    use super::*;
    use crate::children::tests::app;

    fn now(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn sts(generation: i64, observed: Option<i64>, replicas: i32, ready: i32) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: None,
            status: Some(StatefulSetStatus {
                observed_generation: observed,
                replicas,
                ready_replicas: Some(ready),
                updated_replicas: Some(replicas),
                current_revision: Some("web-1".into()),
                update_revision: Some("web-1".into()),
                ..Default::default()
            }),
        }
    }

    /// An app of 3 with a canary of one pod.
    fn canary_app() -> VisitCounterApp {
        app(
            "web",
            json!({"replicas": 3, "updateStrategy": {"rollingUpdate": {"canaryReplicas": 1}}}),
        )
    }

    /// Its StatefulSet, held: 1 of 3 pods on revision web-2, the rest on web-1.
    fn held_sts() -> StatefulSet {
        let mut held = sts(2, Some(2), 3, 3);
        let st = held.status.as_mut().unwrap();
        (st.updated_replicas, st.update_revision) = (Some(1), Some("web-2".into()));
        held
    }

    fn seen(sts: &StatefulSet) -> Observed<'_> {
        Observed {
            stateful_set: Some(sts),
            ..Default::default()
        }
    }

    #[test]
    fn a_preview_progresses_when_its_count_of_available_pods_changes() {
        let now = Time(Timestamp::from_second(100).unwrap());
        let starting =
            |words: &str| conditions::Cond::new(PROGRESSING, true, conditions::PREVIEW_STARTING, words.into());
        let previous = VisitCounterAppStatus {
            conditions: vec![starting("0 of 2 pods").into_condition(&[], Some(1), &now)],
            ..VisitCounterAppStatus::default()
        };
        assert!(preview_progressed(&previous, &starting("1 of 2 pods")));
        assert!(!preview_progressed(&previous, &starting("0 of 2 pods")));
        let stalled = VisitCounterAppStatus {
            conditions: vec![
                starting("0 of 2 pods")
                    .past_deadline(5)
                    .into_condition(&[], Some(1), &now),
            ],
            ..VisitCounterAppStatus::default()
        };
        assert!(
            !preview_progressed(&stalled, &starting("0 of 2 pods")),
            "past its deadline, the words it had before are no progress"
        );
    }

    fn condition<'a>(status: &'a VisitCounterAppStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn all_pods_ready_is_ready_and_not_progressing() {
        let app = app("web", json!({"replicas": 3}));
        let sts = sts(2, Some(2), 3, 3);
        let status = desired_status(&app, &seen(&sts), now(10));
        assert_eq!(condition(&status, READY).status, "True");
        assert_eq!(condition(&status, PROGRESSING).status, "False");
        assert_eq!(condition(&status, DEGRADED).status, "False");
        assert_eq!(status.ready_replicas, 3);
        assert_eq!(
            status.selector.as_deref(),
            Some("app.kubernetes.io/instance=web,app.kubernetes.io/name=visitcounter")
        );
    }

    #[test]
    fn a_stale_statefulset_status_does_not_count() {
        let app = app("web", json!({"replicas": 3}));
        let sts = sts(3, Some(2), 3, 3);
        let status = desired_status(&app, &seen(&sts), now(10));
        assert_eq!(condition(&status, READY).status, "False");
        assert_eq!(condition(&status, PROGRESSING).reason, "StatefulSetPending");
        assert_eq!(
            status.ready_replicas, 0,
            "the stale status's 3 ready pods are not reported"
        );
    }

    #[test]
    fn a_failure_is_degraded_and_not_ready() {
        let app = app("web", json!({}));
        let status = desired_status(
            &app,
            &Observed {
                failure: Some(Failure {
                    reason: "ChildRejected",
                    message: "nodePort 30080 is taken".into(),
                    stalled: true,
                }),
                ..Default::default()
            },
            now(10),
        );
        let degraded = condition(&status, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "ChildRejected")
        );
        assert_eq!(degraded.message, "nodePort 30080 is taken");
        assert_eq!(condition(&status, READY).status, "False");
    }

    #[test]
    fn crash_looping_pods_are_degraded_and_the_rollout_waits_for_them() {
        let app = app("web", json!({"replicas": 3}));
        let sts = sts(1, Some(1), 3, 1);
        let status = desired_status(
            &app,
            &Observed {
                failure: Some(Failure {
                    reason: crate::controller::observe::crash_loops::PODS_CRASH_LOOPING,
                    message: "2 of 3 pods crash and restart; web-0 exited with code 1, its last words: no".into(),
                    stalled: false,
                }),
                ..seen(&sts)
            },
            now(10),
        );
        let degraded = condition(&status, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "PodsCrashLooping")
        );
        let ready = condition(&status, READY);
        assert_eq!(ready.message, "pods crash and restart; see the Degraded condition");
        let progressing = condition(&status, PROGRESSING);
        assert_eq!(progressing.reason, "WaitingForPods", "the progress deadline still runs");
    }

    #[test]
    fn transition_times_are_kept_while_a_condition_holds() {
        let mut app = app("web", json!({"replicas": 1}));
        let sts = sts(1, Some(1), 1, 1);
        let observed = seen(&sts);
        let first = desired_status(&app, &observed, now(10));
        app.status = Some(first.clone());
        let second = desired_status(&app, &observed, now(20));
        assert_eq!(condition(&second, READY).last_transition_time, now(10));
        assert!(same_status(&first, &second));
        let waiting = self::sts(1, Some(1), 1, 0);
        let third = desired_status(&app, &seen(&waiting), now(30));
        assert_eq!(condition(&third, READY).last_transition_time, now(30));
        assert!(!same_status(&second, &third));
    }

    #[test]
    fn a_partition_lowers_the_pods_a_rollout_updates() {
        let app = app(
            "web",
            json!({"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}),
        );
        let mut sts = sts(1, Some(1), 3, 3);
        sts.status.as_mut().unwrap().updated_replicas = Some(1);
        let status = desired_status(&app, &seen(&sts), now(10));
        assert_eq!(condition(&status, PROGRESSING).status, "False");
    }

    #[test]
    fn coming_to_rest_is_not_mere_progress() {
        let app = canary_app();
        let held = held_sts();
        let held = desired_status(&app, &seen(&held), now(5));
        let complete = desired_status(&app, &seen(&sts(2, Some(2), 3, 3)), now(6));
        assert_eq!(
            condition(&held, PROGRESSING).status,
            condition(&complete, PROGRESSING).status
        );
        assert!(!only_progress(&held, &complete), "held to complete is a promotion");
        let mut more = sts(2, Some(2), 3, 2);
        more.status.as_mut().unwrap().updated_replicas = Some(2);
        let fewer = desired_status(&app, &seen(&sts(2, Some(2), 3, 1)), now(7));
        let two = desired_status(&app, &seen(&more), now(8));
        assert!(
            only_progress(&fewer, &two),
            "one more pod ready is progress: {fewer:?} {two:?}"
        );
    }

    #[test]
    fn a_held_rollout_is_told_once() {
        let app = canary_app();
        let held = held_sts();
        let rolling = desired_status(&app, &seen(&sts(2, Some(1), 3, 3)), now(5));
        let held = desired_status(&app, &seen(&held), now(10));
        let told = newly_held(Some(&rolling), &held).expect("an Event when the rollout comes to be held");
        assert!(told.starts_with("held: 1 of 3 pods run revision web-2"), "{told}");
        assert_eq!(newly_held(Some(&held), &held), None, "told once");
        assert_eq!(newly_held(Some(&held), &rolling), None);
    }

    #[test]
    fn a_canary_holds_the_rest_of_the_pods_and_says_how_to_promote() {
        let app = canary_app();
        let mut held = held_sts();
        let status = desired_status(&app, &seen(&held), now(10));
        let progressing = condition(&status, PROGRESSING);
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("False", "RolloutHeld")
        );
        assert_eq!(
            progressing.message,
            "1 of 3 pods run revision web-2; 2 are held at revision web-1 by \
             updateStrategy.rollingUpdate.canaryReplicas: 1; raise or remove it to promote the new revision"
        );
        assert_eq!(status.rollout.as_ref().unwrap().held_replicas, 2);
        assert_eq!(status.updated_replicas, 1);
        assert_eq!(condition(&status, READY).status, "True");
        assert_eq!(
            condition(&status, RECONCILING).status,
            "False",
            "a held canary is settled"
        );

        // Still rolling to the canary pod: not held yet.
        held.status.as_mut().unwrap().updated_replicas = Some(0);
        let rolling = desired_status(&app, &seen(&held), now(10));
        assert_eq!(condition(&rolling, PROGRESSING).reason, "RollingOut");
        assert_eq!(
            rolling
                .rollout
                .as_ref()
                .map(|r| (r.held_replicas, r.last_progress.is_some())),
            Some((0, true)),
            "nothing held; the rollout's progress is timed"
        );

        // Promoted: every pod on one revision, nothing held.
        let promoted = desired_status(&app, &seen(&sts(2, Some(2), 3, 3)), now(10));
        assert_eq!(condition(&promoted, PROGRESSING).reason, "RolloutComplete");
        assert_eq!(promoted.rollout, None);
    }

    #[test]
    fn a_stuck_pod_stalls_the_app_and_is_named() {
        let app = app("web", json!({"replicas": 3}));
        let rolling = sts(2, Some(2), 3, 2);
        let stuck = StuckPod {
            name: "web-2".into(),
            revision: "web-bad".into(),
            not_ready_since: Some(now(0)),
            message: "pod web-2 is stuck".into(),
        };
        let observed = Observed {
            stateful_set: Some(&rolling),
            stuck: Some(stuck.clone()),
            ..Default::default()
        };
        let status = desired_status(&app, &observed, now(10));
        assert_eq!(condition(&status, PROGRESSING).reason, "RolloutStuck");
        let stalled = condition(&status, STALLED);
        assert_eq!(
            (stalled.status.as_str(), stalled.message.as_str()),
            ("True", "pod web-2 is stuck")
        );
        assert_eq!(condition(&status, RECONCILING).status, "False");
        assert_eq!(status.rollout.unwrap().stuck_pod, Some(stuck));
    }

    /// kstatus (Flux, kpt) reads `Reconciling` and `Stalled`, both
    /// abnormal-true: neither may be True once the app is Ready.
    #[test]
    fn progress_alone_is_told_apart_from_a_condition_that_turns() {
        let app = app("web", json!({"replicas": 3}));
        let one = desired_status(&app, &seen(&sts(2, Some(2), 3, 1)), now(10));
        let two = desired_status(&app, &seen(&sts(2, Some(2), 3, 2)), now(11));
        assert!(!same_status(&one, &two));
        assert!(only_progress(&one, &two), "one more pod ready is progress");
        let ready = desired_status(&app, &seen(&sts(2, Some(2), 3, 3)), now(12));
        assert!(!only_progress(&two, &ready), "Ready turning True is written at once");
    }

    #[test]
    fn kstatus_conditions_follow_progress_and_failures() {
        let kstatus = |status: &VisitCounterAppStatus| {
            (
                condition(status, RECONCILING).status.clone(),
                condition(status, STALLED).status.clone(),
            )
        };
        let app = app("web", json!({"replicas": 3}));
        let done = sts(2, Some(2), 3, 3);
        assert_eq!(
            kstatus(&desired_status(&app, &seen(&done), now(10))),
            ("False".into(), "False".into())
        );
        let rolling = sts(2, Some(2), 3, 1);
        let status = desired_status(&app, &seen(&rolling), now(10));
        assert_eq!(kstatus(&status), ("True".into(), "False".into()));
        assert_eq!(condition(&status, RECONCILING).reason, "WaitingForPods");

        let failed = |stalled| {
            desired_status(
                &app,
                &Observed {
                    stateful_set: Some(&done),
                    failure: Some(Failure {
                        reason: "Reason",
                        message: "what went wrong".into(),
                        stalled,
                    }),
                    ..Default::default()
                },
                now(10),
            )
        };
        let stalled = failed(true);
        assert_eq!(kstatus(&stalled), ("False".into(), "True".into()));
        assert_eq!(condition(&stalled, STALLED).message, "what went wrong");
        assert_eq!(
            kstatus(&failed(false)),
            ("True".into(), "False".into()),
            "a retry is still progress"
        );
    }

    #[test]
    fn a_paused_app_says_so_and_is_not_reconciling() {
        let app = app("web", json!({"replicas": 3}));
        let rolling = sts(2, Some(2), 3, 1);
        let observed = Observed {
            stateful_set: Some(&rolling),
            paused: true,
            ..Default::default()
        };
        let status = desired_status(&app, &observed, now(10));
        let paused = condition(&status, PAUSED);
        assert_eq!(paused.status, "True");
        assert!(paused.message.contains("visitcounter.dev/paused"), "{}", paused.message);
        assert_eq!(condition(&status, RECONCILING).status, "False");
        assert_eq!(
            condition(&status, PROGRESSING).reason,
            "WaitingForPods",
            "the pods are still reported"
        );
        let resumed = desired_status(&app, &seen(&rolling), now(20));
        assert!(
            resumed.conditions.iter().all(|c| c.type_ != PAUSED),
            "gone once resumed"
        );
    }

    #[test]
    fn a_recreate_is_a_downtime_until_a_pod_is_ready_again() {
        let start = now(10);
        let open = downtime(None, Some(&start), true, Some(3), &now(11)).expect("it starts as the old pods go");
        assert_eq!(
            (open.since.clone(), open.until.clone(), open.seconds),
            (start.clone(), None, None)
        );
        assert_eq!(
            downtime(None, None, false, Some(0), &now(10)),
            None,
            "no recreate, no downtime"
        );
        assert_eq!(
            downtime(Some(&open), Some(&start), true, Some(0), &now(12)),
            Some(open.clone())
        );
        assert_eq!(
            downtime(None, Some(&start), false, Some(0), &now(13)),
            Some(open.clone()),
            "the old pods are gone, no new one is ready yet; the start is kept even if never written"
        );
        assert_eq!(
            downtime(Some(&open), Some(&start), false, None, &now(13)),
            Some(open.clone()),
            "a StatefulSet status behind its spec says nothing"
        );
        let over = downtime(Some(&open), Some(&start), false, Some(1), &now(14)).expect("it ends");
        assert_eq!((over.until.clone(), over.seconds), (Some(now(14)), Some(4.0)));
        assert_eq!(
            downtime(Some(&over), Some(&start), false, Some(3), &now(20)),
            Some(over.clone()),
            "the last one stays as measured"
        );
        let finer = Time(Timestamp::from_millisecond(10_400).unwrap());
        assert_eq!(
            downtime(Some(&over), Some(&finer), false, Some(3), &now(20)),
            Some(over.clone()),
            "a start the status keeps in whole seconds is the same start"
        );
        let next = downtime(Some(&over), Some(&now(30)), true, Some(3), &now(30)).expect("a new one starts");
        assert_eq!((next.since, next.until), (now(30), None));
    }

    #[test]
    fn a_recreate_under_way_is_progressing_and_its_end_is_told_once() {
        let app = app("web", json!({"replicas": 3, "updateStrategy": {"type": "Recreate"}}));
        let down = sts(1, Some(1), 3, 3);
        let recreating = Observed {
            stateful_set: Some(&down),
            rollout: Some(("Recreating", "Recreate: 3 of the old pods left".into())),
            recreate_since: Some(now(10)),
            ..Default::default()
        };
        let during = desired_status(&app, &recreating, now(10));
        let progressing = condition(&during, PROGRESSING);
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "Recreating")
        );
        let open = during
            .rollout
            .as_ref()
            .and_then(|r| r.downtime.clone())
            .expect("a downtime");
        assert_eq!((open.since, open.until), (now(10), None));
        let mut before = during.clone();
        before.rollout = None;
        assert!(
            !only_progress(&before, &during),
            "the start of a downtime is written at once"
        );
        let mut app = app;
        app.status = Some(during.clone());
        let up = sts(1, Some(1), 3, 3);
        let done = Observed {
            recreate_since: Some(now(10)),
            ..seen(&up)
        };
        let after = desired_status(&app, &done, now(15));
        let message = newly_ended_downtime(Some(&during), &after).expect("the end is told");
        assert!(message.contains("no ready pod for 5 s"), "{message}");
        assert!(
            !only_progress(&during, &after),
            "the end of a downtime is written at once"
        );
        assert_eq!(newly_ended_downtime(Some(&after), &after), None, "and told once");
    }

    #[test]
    fn a_rollout_without_progress_past_its_deadline_has_failed() {
        let mut app = app("web", json!({"replicas": 3, "progressDeadlineSeconds": 60}));
        app.metadata.generation = Some(1);
        let mut rolling = sts(1, Some(1), 3, 2);
        rolling.status.as_mut().unwrap().updated_replicas = Some(1);
        let first = desired_status(&app, &seen(&rolling), now(100));
        assert_eq!(condition(&first, PROGRESSING).reason, "RollingOut");
        let last = first.rollout.as_ref().and_then(|r| r.last_progress.clone());
        assert_eq!(last, Some(now(100)), "the rollout's progress is timed");
        app.status = Some(first);
        let waiting = desired_status(&app, &seen(&rolling), now(159));
        assert_eq!(
            condition(&waiting, PROGRESSING).reason,
            "RollingOut",
            "within the deadline"
        );
        let failed = desired_status(&app, &seen(&rolling), now(161));
        let progressing = condition(&failed, PROGRESSING);
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("False", "ProgressDeadlineExceeded")
        );
        assert!(
            progressing.message.contains("no progress for 60 s"),
            "{}",
            progressing.message
        );
        assert_eq!(condition(&failed, STALLED).status, "True");
        assert_eq!(condition(&failed, RECONCILING).status, "False");
        assert!(newly_past_deadline(app.status.as_ref(), &failed).is_some(), "told once");
        assert_eq!(newly_past_deadline(Some(&failed), &failed), None);
        let mut moved = rolling.clone();
        moved.status.as_mut().unwrap().updated_replicas = Some(2);
        let progressed = desired_status(&app, &seen(&moved), now(161));
        assert_eq!(
            condition(&progressed, PROGRESSING).reason,
            "RollingOut",
            "a pod updated is progress"
        );
    }

    #[test]
    fn a_paused_rollout_is_not_timed() {
        let mut app = app("web", json!({"replicas": 3, "progressDeadlineSeconds": 60}));
        app.metadata.generation = Some(1);
        let mut rolling = sts(1, Some(1), 3, 2);
        rolling.status.as_mut().unwrap().updated_replicas = Some(1);
        app.status = Some(desired_status(&app, &seen(&rolling), now(100)));
        let paused = Observed {
            paused: true,
            ..seen(&rolling)
        };
        let later = desired_status(&app, &paused, now(1000));
        assert_ne!(condition(&later, PROGRESSING).reason, "ProgressDeadlineExceeded");
        assert_eq!(
            later.rollout.and_then(|r| r.last_progress),
            None,
            "the clock starts again on resume"
        );
    }

    #[test]
    fn a_recreate_done_reports_the_revision_every_pod_runs() {
        let app = app("web", json!({"replicas": 3, "updateStrategy": {"type": "Recreate"}}));
        // The OnDelete StatefulSet keeps web-1 as its current revision.
        let mut done = sts(1, Some(1), 3, 3);
        done.status.as_mut().unwrap().update_revision = Some("web-2".into());
        let status = desired_status(&app, &seen(&done), now(10));
        assert_eq!(status.current_revision.as_deref(), Some("web-2"));
        let mut rolling = done.clone();
        rolling.status.as_mut().unwrap().updated_replicas = Some(2);
        let status = desired_status(&app, &seen(&rolling), now(10));
        assert_eq!(
            status.current_revision.as_deref(),
            Some("web-1"),
            "not every pod runs it yet"
        );
        let plain = on_delete_app();
        let status = desired_status(&plain, &seen(&done), now(10));
        assert_eq!(
            status.current_revision.as_deref(),
            Some("web-1"),
            "OnDelete by choice: as the StatefulSet says"
        );
    }

    fn on_delete_app() -> VisitCounterApp {
        app("web", json!({"replicas": 3, "updateStrategy": {"type": "OnDelete"}}))
    }

    #[test]
    fn a_reconcile_that_did_not_look_keeps_who_keeps_max_unavailable_and_the_revisions() {
        let mut app = app(
            "web",
            json!({"replicas": 3, "updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}}),
        );
        let mut done = sts(1, Some(1), 3, 3);
        done.status.as_mut().unwrap().update_revision = Some("web-2".into());
        let looked = Observed {
            max_unavailable_by: Some(MAX_UNAVAILABLE_BY_OPERATOR),
            ..seen(&done)
        };
        let first = desired_status(&app, &looked, now(10));
        assert_eq!(first.current_revision.as_deref(), Some("web-2"));
        app.status = Some(first.clone());
        let failed = Observed {
            failure: Some(Failure {
                reason: "ApplyFailed",
                message: "the API server did not answer".into(),
                stalled: false,
            }),
            ..seen(&done)
        };
        let after = desired_status(&app, &failed, now(20));
        assert_eq!(after.current_revision, first.current_revision);
        assert_eq!(
            after.rollout.and_then(|r| r.max_unavailable_by).as_deref(),
            Some("Operator")
        );
    }
}
