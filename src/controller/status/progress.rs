//! The progress deadline of every rollout: how long it may go without a pod
//! updated, created or turned ready before it counts as failed, as a
//! Deployment's `progressDeadlineSeconds` does. Pure: the clock comes in.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::Counts;
use crate::resource::VisitCounterAppStatus;

/// `Progressing`'s reason once the deadline has passed.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

/// When the rollout under way last made progress: `now` when the spec or
/// the update revision changed, or a pod was updated, turned ready or came
/// closer to the replicas asked for; else kept from the previous status. A
/// pod whose readiness only flaps is no progress. `None` when no rollout is
/// under way.
pub fn last_progress(
    previous: &VisitCounterAppStatus,
    generation: Option<i64>,
    counts: &Counts,
    in_progress: bool,
    now: &Time,
) -> Option<Time> {
    if !in_progress {
        return None;
    }
    let distance = |replicas: i32| (replicas - counts.wanted).abs();
    let progressed = previous.observed_generation != generation
        || previous.update_revision != counts.update_revision
        || counts.updated > previous.updated_replicas
        || counts.ready > previous.ready_replicas
        || distance(counts.replicas) < distance(previous.replicas);
    let kept = previous.rollout.as_ref().and_then(|r| r.last_progress.clone());
    match kept {
        Some(at) if !progressed => Some(at),
        _ => Some(now.clone()),
    }
}

/// How long is left before the deadline, from the last progress: `None`
/// once it has passed.
pub fn left(last_progress: &Time, deadline_seconds: i32, now: &Time) -> Option<Duration> {
    let deadline = Duration::from_secs(deadline_seconds.max(0) as u64);
    let waited = Duration::try_from(now.0.duration_since(last_progress.0)).unwrap_or_default();
    deadline.checked_sub(waited).filter(|left| !left.is_zero())
}

/// When a reconcile should look at the app again for its deadline: the time
/// left, while a rollout is under way and its deadline not yet passed.
pub fn look_again_in(status: &VisitCounterAppStatus, deadline_seconds: i32, now: &Time) -> Option<Duration> {
    let last = status.rollout.as_ref()?.last_progress.as_ref()?;
    left(last, deadline_seconds, now)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::resource::RolloutStatus;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn counts(ready: i32, updated: i32) -> Counts {
        Counts {
            current: true,
            wanted: 3,
            replicas: 3,
            ready,
            updated,
            expected_updated: 3,
            update_revision: Some("web-2".into()),
            ..Counts::default()
        }
    }

    fn status(ready: i32, updated: i32, last: Option<i64>) -> VisitCounterAppStatus {
        VisitCounterAppStatus {
            observed_generation: Some(2),
            replicas: 3,
            ready_replicas: ready,
            updated_replicas: updated,
            update_revision: Some("web-2".into()),
            rollout: last.map(|s| RolloutStatus {
                last_progress: Some(at(s)),
                ..RolloutStatus::default()
            }),
            ..VisitCounterAppStatus::default()
        }
    }

    #[test]
    fn progress_is_kept_while_nothing_moves_and_starts_again_when_a_pod_does() {
        let before = status(2, 1, Some(100));
        assert_eq!(
            last_progress(&before, Some(2), &counts(2, 1), true, &at(150)),
            Some(at(100))
        );
        assert_eq!(
            last_progress(&before, Some(2), &counts(1, 1), true, &at(150)),
            Some(at(100)),
            "a pod that stops being ready is no progress"
        );
        assert_eq!(
            last_progress(&before, Some(2), &counts(3, 1), true, &at(150)),
            Some(at(150)),
            "a pod turned ready"
        );
        assert_eq!(
            last_progress(&before, Some(2), &counts(2, 2), true, &at(150)),
            Some(at(150)),
            "a pod updated"
        );
        assert_eq!(
            last_progress(&before, Some(3), &counts(2, 1), true, &at(150)),
            Some(at(150)),
            "a new spec"
        );
        assert_eq!(
            last_progress(&status(2, 1, None), Some(2), &counts(2, 1), true, &at(150)),
            Some(at(150))
        );
        assert_eq!(
            last_progress(&before, Some(2), &counts(3, 3), false, &at(150)),
            None,
            "at rest"
        );
    }

    #[test]
    fn the_deadline_counts_from_the_last_progress() {
        assert_eq!(left(&at(100), 600, &at(150)), Some(Duration::from_secs(550)));
        assert_eq!(left(&at(100), 600, &at(700)), None);
        assert_eq!(left(&at(100), 600, &at(800)), None);
        assert_eq!(
            look_again_in(&status(2, 1, Some(100)), 60, &at(130)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            look_again_in(&status(3, 3, None), 60, &at(130)),
            None,
            "no rollout, no deadline"
        );
    }
}
