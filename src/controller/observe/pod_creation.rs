//! Pods the StatefulSet controller cannot create: a missing ServiceAccount,
//! a ResourceQuota, a Pod Security refusal, a webhook. The StatefulSet's status
//! does not say so; only its `FailedCreate` Events do, so the operator reads
//! them, once pod creation has stood still for a while.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Event};
use kube::{Api, Client, api::ListParams};

use crate::{
    controller::status::{Failure, PODS_NOT_CREATED},
    resource::VisitCounterApp,
};
/// How long the StatefulSet's pod count may stand still, with pods missing,
/// before the operator looks for why: a busy StatefulSet controller takes its
/// time (at 200 apps on two cores, often more than 5 s), and a look costs a
/// read. Then it looks again after each `look_interval` while it lasts.
pub const GRACE: Duration = Duration::from_secs(30);

/// The longest wait between two looks while pods stay missing.
pub const MAX_LOOK_INTERVAL: Duration = Duration::from_secs(300);

/// How long after the `looks`-th look (1 after the first) the next is due:
/// two grace periods, doubling after each look that found nothing new, up
/// to `MAX_LOOK_INTERVAL`. A controller manager that is merely busy (1,000
/// new apps at its default client rate take it minutes) costs a few reads
/// per app, not one per reconcile.
pub fn look_interval(looks: u32) -> Duration {
    let doublings = looks.saturating_sub(1).min(8);
    (GRACE * 2 * 2u32.pow(doublings)).min(MAX_LOOK_INTERVAL)
}

/// When to look at a StatefulSet with pods missing for `missing_for`
/// again: at the end of the grace period; after it, when the next look at
/// its Events is due (`next_look_in`), and at least a second from now. A new
/// pod wakes the app through its StatefulSet before that.
pub fn next_look(missing_for: Duration, next_look_in: Duration) -> Duration {
    match GRACE.checked_sub(missing_for) {
        Some(left) if !left.is_zero() => left,
        _ => next_look_in.max(Duration::from_secs(1)),
    }
}

/// Whether to read the StatefulSet's Events: pods are missing, none of the
/// existing ones holds the next back (under `OrderedReady` the controller
/// waits for each pod to be ready before it creates the next, which is no
/// failure), and the StatefulSet's pod count has not moved for `stalled_for`,
/// at least `GRACE`; or the app's status already says pods cannot be created
/// (after a restart of the operator, say).
pub fn worth_a_look(app: &VisitCounterApp, sts: &StatefulSet, all_existing_ready: bool, stalled_for: Duration) -> bool {
    if !pods_missing(sts) {
        return false;
    }
    let ordered = sts.spec.as_ref().and_then(|s| s.pod_management_policy.as_deref()) != Some("Parallel");
    let already_said = app
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Progressing"))
        .is_some_and(|c| c.reason == PODS_NOT_CREATED);
    already_said || ((all_existing_ready || !ordered) && stalled_for >= GRACE)
}

/// Whether the StatefulSet controller holds the missing pods back itself:
/// under `OrderedReady` it creates the next pod only once every existing one
/// is ready. A change of those pods wakes the app; a timer would only find
/// the same again, app after app, for as long as a pod stays unready (one
/// that cannot be scheduled, an image that cannot be pulled).
pub fn held_back_by_a_pod(sts: &StatefulSet, all_existing_ready: bool) -> bool {
    let ordered = sts.spec.as_ref().and_then(|s| s.pod_management_policy.as_deref()) != Some("Parallel");
    ordered && !all_existing_ready
}

/// What the app's status already says about pods that cannot be created,
/// as a failure to say again: between two looks at the Events the last
/// look's finding stands.
pub fn pods_not_created(app: &VisitCounterApp) -> Option<Failure> {
    let said = app
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == PODS_NOT_CREATED)?;
    Some(Failure {
        reason: PODS_NOT_CREATED,
        message: said.message.clone(),
        stalled: true,
    })
}

/// Whether the StatefulSet, as its controller last saw it, has fewer pods
/// than it asks for.
pub fn pods_missing(sts: &StatefulSet) -> bool {
    let wanted = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = sts.status.as_ref();
    let current = status
        .and_then(|s| s.observed_generation)
        .is_some_and(|seen| Some(seen) >= sts.metadata.generation);
    current && status.map_or(0, |s| s.replicas) < wanted
}

/// The StatefulSet controller's message, when its latest Event about `sts` is
/// a `FailedCreate` (a later `SuccessfulCreate` means pods are coming again).
pub fn failed_create(events: &[Event]) -> Option<String> {
    let latest = events.iter().max_by_key(|e| {
        e.last_timestamp
            .as_ref()
            .or(e.first_timestamp.as_ref())
            .map(|t| t.0)
            .or(e.event_time.as_ref().map(|t| t.0))
            .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    })?;
    (latest.reason.as_deref() == Some("FailedCreate")).then(|| latest.message.clone().unwrap_or_default())
}

/// Reads the Events about `sts` (one list, by its uid) and returns why its
/// pods cannot be created, if that is what they say. A failed read says
/// nothing: the status then keeps saying the pods are being created.
pub async fn why_pods_are_missing(client: &Client, sts: &StatefulSet) -> Option<String> {
    let namespace = sts.metadata.namespace.as_deref()?;
    let uid = sts.metadata.uid.as_deref()?;
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
    match events.list(&params).await {
        Ok(list) => failed_create(&list.items),
        Err(error) => {
            tracing::debug!(%error, "cannot read the StatefulSet's Events");
            None
        }
    }
}

/// A StatefulSet whose pod count stands still with pods missing.
struct Stall {
    replicas: i32,
    since: Instant,
    /// Looks at its Events since its pod count last moved, and the last one.
    looks: u32,
    looked: Option<Instant>,
}

impl Stall {
    fn new(replicas: i32) -> Self {
        Self {
            replicas,
            since: Instant::now(),
            looks: 0,
            looked: None,
        }
    }
}

/// Each app's StatefulSet with pods missing, by app key: its pod count,
/// since when it has stood still, and the looks at its Events since.
#[derive(Default)]
pub struct PodCreationStalls(Mutex<HashMap<String, Stall>>);

impl PodCreationStalls {
    fn stalls(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stall>> {
        self.0.lock().expect("pods missing since")
    }

    /// How long the app's StatefulSet has had pods missing without its pod
    /// count moving (`replicas` is that count), as this operator has seen it;
    /// `None` (and forgotten) when none is missing.
    pub fn stalled_for(&self, key: &str, missing: bool, replicas: i32) -> Option<Duration> {
        let mut stalls = self.stalls();
        if !missing {
            stalls.remove(key);
            return None;
        }
        let stall = stalls.entry(key.to_owned()).or_insert_with(|| Stall::new(replicas));
        if stall.replicas != replicas {
            *stall = Stall::new(replicas);
        }
        Some(stall.since.elapsed())
    }

    /// How long until the app's StatefulSet Events may be read again: zero
    /// before the first look, then `look_interval` after each.
    pub fn next_look_in(&self, key: &str) -> Duration {
        match self.stalls().get(key) {
            Some(Stall {
                looks,
                looked: Some(at),
                ..
            }) => look_interval(*looks).saturating_sub(at.elapsed()),
            _ => Duration::ZERO,
        }
    }

    /// Records a look at the app's StatefulSet Events.
    pub fn looked(&self, key: &str) {
        if let Some(stall) = self.stalls().get_mut(key) {
            stall.looks += 1;
            stall.looked = Some(Instant::now());
        }
    }

    /// Keeps only the apps `keep` says yes to.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.stalls().retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::apps::v1::{StatefulSetSpec, StatefulSetStatus},
        apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time},
        jiff::Timestamp,
    };
    use serde_json::json;

    use super::*;
    use crate::{children::tests::app, resource::VisitCounterAppStatus};

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + seconds).unwrap())
    }

    fn sts(wanted: i32, have: i32) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(wanted),
                ..StatefulSetSpec::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(1),
                replicas: have,
                ..StatefulSetStatus::default()
            }),
        }
    }

    fn progressing(reason: &str, since: i64) -> VisitCounterApp {
        let mut app = app("web", json!({"replicas": 3}));
        app.status = Some(VisitCounterAppStatus {
            conditions: vec![Condition {
                type_: "Progressing".into(),
                status: "True".into(),
                reason: reason.into(),
                message: String::new(),
                last_transition_time: at(since),
                observed_generation: None,
            }],
            ..VisitCounterAppStatus::default()
        });
        app
    }

    #[test]
    fn look_only_when_pod_creation_has_stalled_for_the_grace_period() {
        let scaling = progressing("Scaling", 0);
        assert!(!worth_a_look(&scaling, &sts(3, 0), true, GRACE / 2));
        assert!(worth_a_look(&scaling, &sts(3, 0), true, GRACE));
        assert!(
            !worth_a_look(&scaling, &sts(3, 3), true, GRACE * 10),
            "no pod is missing"
        );
        assert!(
            !worth_a_look(&scaling, &sts(3, 1), false, GRACE * 10),
            "under OrderedReady an unready pod holds the next back"
        );
        let mut parallel = sts(3, 1);
        parallel.spec.as_mut().unwrap().pod_management_policy = Some("Parallel".into());
        assert!(worth_a_look(&scaling, &parallel, false, GRACE));
        assert!(
            worth_a_look(&progressing(PODS_NOT_CREATED, 0), &sts(3, 0), true, Duration::ZERO),
            "the status already says so"
        );
        let mut unseen = sts(3, 0);
        unseen.metadata.generation = Some(2);
        assert!(
            !worth_a_look(&scaling, &unseen, true, GRACE * 10),
            "the controller has not seen the spec"
        );
    }

    #[test]
    fn an_unready_pod_holds_the_next_back_under_ordered_ready_only() {
        assert!(held_back_by_a_pod(&sts(3, 1), false));
        assert!(!held_back_by_a_pod(&sts(3, 1), true));
        let mut parallel = sts(3, 1);
        parallel.spec.as_mut().unwrap().pod_management_policy = Some("Parallel".into());
        assert!(!held_back_by_a_pod(&parallel, false));
    }

    #[test]
    fn what_the_last_look_found_stands_until_the_next() {
        let mut app = progressing("Scaling", 0);
        assert!(pods_not_created(&app).is_none());
        app.status.as_mut().unwrap().conditions.push(Condition {
            type_: "Degraded".into(),
            status: "True".into(),
            reason: PODS_NOT_CREATED.into(),
            message: "the StatefulSet controller cannot create pods: quota".into(),
            last_transition_time: at(0),
            observed_generation: None,
        });
        let failure = pods_not_created(&app).unwrap();
        assert_eq!(
            (failure.reason, failure.message.as_str(), failure.stalled),
            (
                PODS_NOT_CREATED,
                "the StatefulSet controller cannot create pods: quota",
                true
            )
        );
    }

    #[test]
    fn looks_back_off_while_pods_stay_missing() {
        let intervals: Vec<u64> = (1..=6).map(|n| look_interval(n).as_secs()).collect();
        assert_eq!(intervals, [60, 120, 240, 300, 300, 300]);
    }

    fn event(reason: &str, message: &str, at_second: i64) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": format!("e{at_second}")},
            "involvedObject": {},
            "reason": reason,
            "message": message,
            "lastTimestamp": at(at_second).0.to_string(),
        }))
        .unwrap()
    }

    #[test]
    fn the_latest_event_decides() {
        let forbidden = "create Pod web-0 in StatefulSet web failed error: pods \"web-0\" is forbidden: error looking up service account shop/app: serviceaccount \"app\" not found";
        let failed = event("FailedCreate", forbidden, 10);
        assert_eq!(failed_create(std::slice::from_ref(&failed)).as_deref(), Some(forbidden));
        let created = event("SuccessfulCreate", "create Pod web-0 in StatefulSet web successful", 20);
        assert_eq!(failed_create(&[failed.clone(), created.clone()]), None);
        let again = event("FailedCreate", forbidden, 30);
        assert!(failed_create(&[failed, created, again]).is_some());
        assert_eq!(failed_create(&[]), None);
    }

    #[test]
    fn the_next_look_is_at_the_end_of_the_grace_period_then_when_due() {
        let s = Duration::from_secs;
        assert_eq!(next_look(s(10), Duration::ZERO), GRACE - s(10));
        assert_eq!(next_look(GRACE, s(50)), s(50));
        assert_eq!(
            next_look(GRACE + s(5), Duration::ZERO),
            s(1),
            "never sooner than a second"
        );
    }
}
