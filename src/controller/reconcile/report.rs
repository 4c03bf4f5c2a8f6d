//! The status write of a reconcile, and what a failed reconcile tells:
//! written only when the status changed, progress alone at most once per
//! `PROGRESS_WRITE_INTERVAL`, and not while the StatefulSet just written
//! waits for its controller.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{ResourceExt, runtime::events::EventType};

use super::{Context, app_key, apply::write_status, context::STATEFULSET_SEEN_WAIT};
use crate::{
    controller::{
        Error,
        status::{
            Failure, Observed, PROGRESSING, conditions::ROLLOUT_ABORTED, desired_status, only_progress, same_status,
        },
    },
    resource::{VisitCounterApp, VisitCounterAppStatus},
};

/// Status writes that only report progress come at most this often per app
/// (at most the cache-lag window, within which the last write is known).
const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_secs(5);

/// What `update_status` did.
pub enum StatusWrite {
    /// The app has this status already, or we just wrote it and the cache
    /// has not caught up.
    Unchanged,
    /// Only progress changed, and the last write was too recent: a
    /// reconcile after this long writes it.
    Deferred(Duration),
    Written,
}

/// Writes the status when it changed. Progress alone is written at most
/// once per `PROGRESS_WRITE_INTERVAL`.
pub async fn update_status(
    app: &VisitCounterApp,
    status: VisitCounterAppStatus,
    ctx: &Context,
) -> Result<StatusWrite, Error> {
    let key = app_key(app);
    let unchanged = app.status.as_ref().is_some_and(|s| same_status(s, &status));
    if unchanged || ctx.recently_written_status(&key, &status) {
        return Ok(StatusWrite::Unchanged);
    }
    if let Some(current) = &app.status
        && only_progress(current, &status)
        && let Some(left) = ctx
            .status_written_ago(&key)
            .and_then(|ago| PROGRESS_WRITE_INTERVAL.checked_sub(ago))
    {
        return Ok(StatusWrite::Deferred(left));
    }
    write_status(&ctx.client, app, &status, &ctx.metrics)
        .await
        .map_err(|e| Error::Status(Box::new(e)))?;
    ctx.remember_status(key, status);
    Ok(StatusWrite::Written)
}

/// How much longer the status waits for the StatefulSet controller, if it
/// waits at all. Just written, the StatefulSet is not yet seen by its
/// controller, whose status update usually comes within moments and wakes
/// the app again: the status is written then, once, rather than now and
/// again then. It is waited for no longer than `STATEFULSET_SEEN_WAIT` after
/// the write (`written_ago`), and not at all while the controller is
/// `behind` (another StatefulSet has waited longer than that): the status
/// then says the StatefulSet is pending.
pub fn status_wait_left(unseen: bool, behind: bool, written_ago: Option<Duration>) -> Option<Duration> {
    if !unseen || behind {
        return None;
    }
    written_ago
        .and_then(|ago| STATEFULSET_SEEN_WAIT.checked_sub(ago))
        .filter(|left| !left.is_zero())
}

/// The status, from the app's StatefulSet and Service as the watch caches
/// hold them, for a reconcile that applied nothing.
pub fn status_from_caches(
    app: &VisitCounterApp,
    ctx: &Context,
    failure: Option<Failure>,
    paused: bool,
) -> VisitCounterAppStatus {
    let (namespace, name) = (app.namespace().unwrap_or_default(), app.name_any());
    let previous = app.status.as_ref();
    // Blue/green's serving StatefulSet, as the last status said.
    let blue_green = previous.and_then(|s| s.rollout.as_ref()?.blue_green.clone());
    let serving = blue_green.as_ref().map_or(name.as_str(), |b| b.serving.as_str());
    let stateful_set = ctx
        .caches
        .stateful_sets
        .get(&namespace, serving)
        .and_then(|s| s.typed());
    let service = ctx.caches.services.get(&namespace, &name).and_then(|s| s.typed());
    let observed = Observed {
        stateful_set: stateful_set.as_ref(),
        service: service.as_ref(),
        failure,
        paused,
        stuck: None,
        dropped: Vec::new(),
        rollout: None,
        recreate_since: None,
        max_unavailable_by: None,
        // As the last status said: this reconcile did not look.
        step: previous.and_then(|s| s.rollout.as_ref()?.step.clone()),
        aborted: previous
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == PROGRESSING))
            .filter(|c| c.reason == ROLLOUT_ABORTED)
            .map(|c| c.message.clone()),
        blue_green,
        // As the last status said: this reconcile did not decide.
        traffic: previous.and_then(|s| s.traffic.clone()),
    };
    desired_status(app, &observed, Time(Timestamp::now()))
}

/// Makes a failure visible: a Warning Event and the `Degraded` condition.
pub async fn report_failure(app: &VisitCounterApp, error: &Error, ctx: &Context) {
    let message = error.to_string();
    ctx.event(app, EventType::Warning, error.reason(), message.clone())
        .await;
    let failure = Failure {
        reason: error.reason(),
        message,
        stalled: error.stalls(),
    };
    let status = status_from_caches(app, ctx, Some(failure), false);
    if let Err(error) = update_status(app, status, ctx).await {
        tracing::warn!(app = %app_key(app), %error, "cannot write the Degraded condition");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_statefulset_just_written_is_waited_for_what_is_left_of_the_wait() {
        assert_eq!(status_wait_left(true, false, Some(MS(300))), Some(MS(700)));
    }

    #[test]
    fn no_wait_once_seen_when_the_controller_is_behind_or_past_the_wait() {
        assert_eq!(status_wait_left(false, false, Some(MS(300))), None, "seen");
        assert_eq!(status_wait_left(true, true, Some(MS(300))), None, "behind");
        assert_eq!(status_wait_left(true, false, Some(MS(1000))), None, "waited");
        assert_eq!(status_wait_left(true, false, None), None, "not written lately");
    }
}
