//! The visits of pods scaled away. A scale-down removes the highest
//! ordinals, and their claims keep their counts (unless the app's
//! `whenScaled` is `Delete`): those visits are the app's still, and come back
//! with the pods on a scale-up. So `status.visits` keeps each such pod's
//! count as it last answered, marked `retained`, in its total.
//!
//! Pure: the poller passes the status it just computed and the one before.

use kube::ResourceExt;

use super::{pods::slot_ordinal_of, visits::summed};
use crate::resource::{PodVisits, RetentionPolicy, VisitCounterApp, VisitsStatus};

/// `status` with the retained counts of `previous` carried over: each pod
/// of an ordinal the spec no longer has that answered (or was retained)
/// before and has no answer now, because it is stopping or gone.
pub fn keep_retained(mut status: VisitsStatus, previous: Option<&VisitsStatus>, app: &VisitCounterApp) -> VisitsStatus {
    let Some(previous) = previous else { return status };
    if app.spec.persistent_volume_claim_retention_policy.when_scaled == RetentionPolicy::Delete {
        return status;
    }
    let name = app.name_any();
    for before in &previous.pods {
        let (Some(visits), Some(ordinal)) = (before.visits, slot_ordinal_of(&name, &before.name)) else {
            continue;
        };
        if ordinal < app.spec.replicas {
            continue;
        }
        let retained = PodVisits {
            name: before.name.clone(),
            visits: Some(visits),
            error: None,
            retained: true,
        };
        match status.pods.iter_mut().find(|p| p.name == before.name) {
            Some(now) if now.visits.is_some() => {}
            Some(now) => *now = retained,
            None => status.pods.push(retained),
        }
    }
    status.pods.sort_by_key(|p| slot_ordinal_of(&name, &p.name));
    summed(status.pods, status.observed_at)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::children::tests::app;

    fn entry(name: &str, visits: Option<i64>, retained: bool) -> PodVisits {
        PodVisits {
            name: name.into(),
            visits,
            error: visits.is_none().then(|| "not ready or no IP yet, not asked".to_owned()),
            retained,
        }
    }

    fn status(pods: Vec<PodVisits>) -> VisitsStatus {
        summed(pods, None)
    }

    #[test]
    fn a_pod_scaled_away_keeps_its_count_in_the_total() {
        let web = app("web", json!({"replicas": 1}));
        let before = status(vec![entry("web-0", Some(10), false), entry("web-1", Some(7), false)]);
        let stopping = status(vec![entry("web-0", Some(11), false), entry("web-1", None, false)]);
        let now = keep_retained(stopping, Some(&before), &web);
        assert_eq!(now.pods[1], entry("web-1", Some(7), true));
        assert_eq!((now.total, now.complete), (18, true));
        // The pod is gone: its count stays, from the status before.
        let gone = keep_retained(status(vec![entry("web-0", Some(12), false)]), Some(&now), &web);
        assert_eq!(
            gone.pods,
            vec![entry("web-0", Some(12), false), entry("web-1", Some(7), true)]
        );
        assert_eq!(gone.total, 19);
    }

    #[test]
    fn a_pod_back_after_a_scale_up_answers_for_itself() {
        let web = app("web", json!({"replicas": 2}));
        let before = status(vec![entry("web-0", Some(12), false), entry("web-1", Some(7), true)]);
        let starting = keep_retained(
            status(vec![entry("web-0", Some(12), false), entry("web-1", None, false)]),
            Some(&before),
            &web,
        );
        assert_eq!(
            starting.pods[1],
            entry("web-1", None, false),
            "not ready yet: not counted"
        );
        assert!(!starting.complete);
        let back = keep_retained(
            status(vec![entry("web-0", Some(12), false), entry("web-1", Some(8), false)]),
            Some(&starting),
            &web,
        );
        assert_eq!((back.total, back.complete), (20, true));
    }

    #[test]
    fn claims_deleted_on_scale_down_take_their_counts() {
        let web = app(
            "web",
            json!({"replicas": 1, "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}}),
        );
        let before = status(vec![entry("web-0", Some(10), false), entry("web-1", Some(7), false)]);
        let now = keep_retained(status(vec![entry("web-0", Some(10), false)]), Some(&before), &web);
        assert_eq!(now.total, 10);
    }

    #[test]
    fn a_pod_of_the_spec_that_does_not_answer_is_not_counted() {
        let web = app("web", json!({"replicas": 2}));
        let before = status(vec![entry("web-0", Some(10), false), entry("web-1", Some(7), false)]);
        let now = keep_retained(
            status(vec![entry("web-0", Some(10), false), entry("web-1", None, false)]),
            Some(&before),
            &web,
        );
        assert_eq!((now.total, now.complete), (10, false));
    }
}
