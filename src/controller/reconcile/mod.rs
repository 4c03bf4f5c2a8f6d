//! One reconcile of one app, and what happens when it fails. The steps, in
//! the order `reconcile_app` takes them:
//!
//! 1. the pause annotation ([`pause`]);
//! 2. the spec against the CRD's rules, the children built and put in the
//!    write order, and their names checked against other owners
//!    ([`desired`]);
//! 3. each child planned against the watch cache ([`plan`], [`plan_steps`]);
//! 4. the writes ([`write`], through the API calls of [`apply`]), with the
//!    claims grown first for a larger claim template ([`storage`]);
//! 5. old ConfigMaps removed ([`old_configs`]), the pods looked at
//!    ([`pods`]), fields the cluster dropped told;
//! 6. the status computed and written ([`report`]), and the next look
//!    scheduled ([`requeue_after`]).
//!
//! Each step that decides is a pure function with its own tests; this file
//! and the I/O around them only carry their results from one to the next.

mod adopt;
pub mod apply;
mod context;
pub mod desired;
mod leftovers;
pub mod old_configs;
pub mod pause;
pub mod plan;
pub mod pods;
pub mod report;
pub mod storage;
pub mod strategy;
pub mod write;

use std::{sync::Arc, time::Duration, time::Instant};

pub use context::Context;
use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Service},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType},
};
use serde_json::Value;

use self::{
    context::CACHE_LAG_WINDOW,
    desired::{check_owned, desired, validate},
    plan::{DesiredChild, Step, plan},
    pods::{PodFindings, earliest, look_at_pods},
    report::{StatusWrite, report_failure, status_wait_left, update_status},
};
use crate::{
    children::desired_children,
    controller::{
        Error,
        status::{
            Observed, UNSUPPORTED_SPEC,
            conditions::ROLLOUT_ABORTED,
            desired_status, dropped_by_server, dropped_message, newly_aborted, newly_ended_downtime, newly_held,
            newly_past_deadline,
            progress::{self, PROGRESS_DEADLINE_EXCEEDED},
        },
    },
    resource::VisitCounterApp,
};

const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How soon a reconcile whose write met a newer object than its cache held
/// decides again: the watch delivers that object within moments.
const CACHE_BEHIND_RETRY: Duration = Duration::from_secs(1);
/// A cache behind this many reconciles in a row is reported, and backed
/// off from, as any failure: a watch that does not catch up is news.
const CACHE_BEHIND_QUIET: u32 = 10;
/// The longest wait between tries while the cluster has no Gateway API.
const GATEWAY_API_RETRY: Duration = Duration::from_secs(30);
/// Every this many reconciles, what is kept for deleted apps is dropped.
const FORGET_EVERY: u64 = 512;

fn app_key(app: &VisitCounterApp) -> String {
    format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any())
}

/// The key of a child in the operator's memory of its own writes
/// (`Context::remember_apply`, `applied_ago`, `statefulset_written`).
fn child_key(child: &DesiredChild, namespace: &str) -> String {
    format!("{}/{namespace}/{}", child.kind, child.name)
}

pub async fn reconcile(app: Arc<VisitCounterApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.caches.ready().await;
    ctx.metrics.apps.set(ctx.app_count() as i64);
    if ctx.metrics.reconciles().is_multiple_of(FORGET_EVERY) {
        ctx.forget_deleted_apps();
    }
    let started = Instant::now();
    let result = reconcile_app(&app, &ctx).await;
    ctx.metrics
        .reconciled(started.elapsed(), result.as_ref().err().map(Error::reason));
    match &result {
        Ok(_) => ctx.succeeded(&app_key(&app)),
        // A cache behind for a moment is no failure; for longer, it is said.
        Err(error) if error.cache_behind() && ctx.failures(&app_key(&app)) < CACHE_BEHIND_QUIET => {
            tracing::debug!(app = %app_key(&app), %error)
        }
        Err(error) => report_failure(&app, error, &ctx).await,
    }
    result
}

/// Waits for a change when only a new spec can help; decides again in a
/// second when a write met a newer object than the cache held (for the
/// first `CACHE_BEHIND_QUIET` times in a row); otherwise retries with
/// exponential backoff, 1 s doubling up to 5 minutes, or up to 30 s while
/// the Gateway API is missing, so that its CRDs, once installed, are seen
/// soon (nothing of the app changes then to wake it).
pub fn error_policy(app: Arc<VisitCounterApp>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.needs_spec_change() {
        return Action::await_change();
    }
    Action::requeue(retry_wait(error, ctx.failed(&app_key(&app))))
}

/// The wait after `error`, the `failures`-th failure in a row.
fn retry_wait(error: &Error, failures: u32) -> Duration {
    match error {
        Error::CacheBehind { .. } if failures <= CACHE_BEHIND_QUIET => CACHE_BEHIND_RETRY,
        Error::CacheBehind { .. } => backoff(failures - CACHE_BEHIND_QUIET),
        Error::GatewayApiMissing => backoff(failures).min(GATEWAY_API_RETRY),
        _ => backoff(failures),
    }
}

/// The wait after the `failures`-th failure in a row.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(9)).min(MAX_BACKOFF)
}

async fn reconcile_app(app: &VisitCounterApp, ctx: &Context) -> Result<Action, Error> {
    if app.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children.
        return Ok(Action::await_change());
    }
    if pause::handle(app, ctx).await? {
        return Ok(Action::await_change());
    }
    let namespace = app.namespace().unwrap_or_default();
    validate(app, &ctx.admission)?;
    let mut built = desired_children(app, &ctx.settings.build).map_err(Error::Build)?;
    let now = Time(Timestamp::now());
    let strategy = strategy::decide_from_caches(app, ctx, &namespace, &mut built, &now).await?;
    let children = desired(built)?;
    let mut live: Vec<Option<Value>> = children
        .iter()
        .map(|c| ctx.caches.get(c.kind, &namespace, &c.name))
        .collect();
    adopt::look_past_the_caches(ctx, &namespace, &children, &mut live).await?;
    check_owned(app, &children, &live)?;
    let (steps, recheck_soon) = plan_steps(&children, &live, |child| {
        ctx.recently_applied(&child_key(child, &namespace), &child.hash)
    });
    let observed = write::apply_changes(app, ctx, &namespace, &children, &steps, &live)
        .await?
        .observed;
    strategy::delete(app, ctx, &namespace, &strategy).await?;
    leftovers::remove(app, ctx, &namespace).await?;

    let sts_live = observed.last().cloned().flatten();
    let stateful_set: Option<StatefulSet> = sts_live.clone().and_then(|v| serde_json::from_value(v).ok());
    let service = user_service(app, &children, &observed);
    adopt::replace_leftover_pods(app, ctx, &namespace, stateful_set.as_ref()).await?;
    let mut configs_again_in = None;
    if let (Some(sts), Some(config_map)) = (&stateful_set, children.iter().find(|c| c.kind == "ConfigMap")) {
        configs_again_in = old_configs::remove_old_configs(app, ctx, &namespace, &config_map.name, sts).await;
    }
    let PodFindings {
        stuck,
        failure,
        look_again_in,
    } = look_at_pods(app, ctx, &namespace, stateful_set.as_ref(), &now).await?;
    let dropped = match (children.last(), &sts_live) {
        (Some(desired), Some(live)) => dropped_by_server(&desired.object, live),
        _ => Vec::new(),
    };
    tell_dropped(app, ctx, &dropped).await;
    let observed = Observed {
        stateful_set: stateful_set.as_ref(),
        service: service.as_ref(),
        failure,
        paused: false,
        stuck,
        dropped,
        rollout: strategy.progress,
        recreate_since: strategy.recreate_since,
        max_unavailable_by: strategy.max_unavailable_by,
        step: strategy.step,
        aborted: strategy.aborted,
        blue_green: strategy.blue_green,
        traffic: strategy.traffic,
    };
    let status = desired_status(app, &observed, now.clone());
    let deadline_in = progress::look_again_in(&status, app.spec.progress_deadline_seconds, &now);
    let sts_key = children
        .last()
        .map(|sts| child_key(sts, &namespace))
        .unwrap_or_default();
    let sts_written = steps.last().is_some_and(Step::writes);
    let (wait, deferred) = settle_status(app, ctx, status, &sts_key, stateful_set.as_ref(), sts_written).await?;
    Ok(Action::requeue(requeue_after(
        ctx.settings.resync,
        recheck_soon,
        earliest(
            earliest(earliest(look_again_in, deferred), deadline_in),
            earliest(strategy.look_again_in, configs_again_in),
        ),
        wait,
    )))
}

/// The step of each child. A write of ours that the cache may not show yet
/// (`recently_applied`) is not sent twice: the child counts as up to date,
/// and the app is looked at again once the cache has had time to catch up
/// (the second value).
pub fn plan_steps(
    children: &[DesiredChild],
    live: &[Option<Value>],
    recently_applied: impl Fn(&DesiredChild) -> bool,
) -> (Vec<Step>, bool) {
    let mut recheck_soon = false;
    let steps = children
        .iter()
        .zip(live)
        .map(|(child, live)| {
            let step = plan(child, live.as_ref());
            if step.writes() && recently_applied(child) {
                recheck_soon = true;
                return Step::UpToDate;
            }
            step
        })
        .collect();
    (steps, recheck_soon)
}

/// When to reconcile the app again: after a resync period, or sooner for a
/// write of ours the cache may not show yet, a pod or a status write that
/// is due (`look_again_in`, a second late, so that it is past due), or the
/// StatefulSet controller's status that the status waits for.
pub fn requeue_after(
    resync: Duration,
    recheck_soon: bool,
    look_again_in: Option<Duration>,
    status_wait: Option<Duration>,
) -> Duration {
    let mut requeue = if recheck_soon { CACHE_LAG_WINDOW } else { resync };
    if let Some(later) = look_again_in {
        requeue = requeue.min(later + Duration::from_secs(1));
    }
    if let Some(left) = status_wait {
        requeue = requeue.min(left);
    }
    requeue
}

/// The user-facing Service (named as the app), as written or cached.
fn user_service(app: &VisitCounterApp, children: &[DesiredChild], observed: &[Option<Value>]) -> Option<Service> {
    let i = children
        .iter()
        .position(|c| c.kind == "Service" && c.name == app.name_any())?;
    serde_json::from_value(observed[i].clone()?).ok()
}

/// Whether the status waits for the StatefulSet controller, and how much
/// longer (see `report::status_wait_left`); records the StatefulSet as
/// written-and-unseen or seen for the next reconciles.
fn statefulset_wait(ctx: &Context, key: &str, sts: Option<&StatefulSet>, written: bool) -> Option<Duration> {
    let unseen = sts.is_some_and(|s| s.status.as_ref().and_then(|st| st.observed_generation) < s.metadata.generation);
    if !unseen {
        ctx.statefulset_seen(key);
        return None;
    }
    if written {
        ctx.statefulset_written(key);
    }
    status_wait_left(unseen, ctx.statefulset_controller_behind(), ctx.applied_ago(key))
}

/// Writes the status, unless it waits for the StatefulSet controller to see
/// the StatefulSet just written (see `report::status_wait_left`). Returns
/// that wait, and how long a write of mere progress was put off.
async fn settle_status(
    app: &VisitCounterApp,
    ctx: &Context,
    status: crate::resource::VisitCounterAppStatus,
    sts_key: &str,
    sts: Option<&StatefulSet>,
    sts_written: bool,
) -> Result<(Option<Duration>, Option<Duration>), Error> {
    let wait = statefulset_wait(ctx, sts_key, sts, sts_written);
    if wait.is_some() {
        return Ok((wait, None));
    }
    let deferred = match write_status(app, ctx, status).await? {
        StatusWrite::Deferred(left) => Some(left),
        StatusWrite::Written | StatusWrite::Unchanged => None,
    };
    Ok((None, deferred))
}

/// Writes the status, and the Events of what it newly says: a rollout held,
/// a Recreate's downtime over, a rollout past its progress deadline.
async fn write_status(
    app: &VisitCounterApp,
    ctx: &Context,
    status: crate::resource::VisitCounterAppStatus,
) -> Result<StatusWrite, Error> {
    let old = app.status.as_ref();
    let news = [
        newly_held(old, &status).map(|m| (EventType::Normal, "RolloutHeld", m)),
        newly_ended_downtime(old, &status).map(|m| (EventType::Normal, "RecreateComplete", m)),
        newly_past_deadline(old, &status).map(|m| (EventType::Warning, PROGRESS_DEADLINE_EXCEEDED, m)),
        newly_aborted(old, &status).map(|m| (EventType::Warning, ROLLOUT_ABORTED, m)),
    ];
    let write = update_status(app, status, ctx).await?;
    if let StatusWrite::Written = write {
        for (kind, reason, message) in news.into_iter().flatten() {
            ctx.event(app, kind, reason, message).await;
        }
    }
    Ok(write)
}

/// One `FieldDropped` Event when the cluster starts dropping fields of the
/// spec (the status keeps saying it after).
async fn tell_dropped(app: &VisitCounterApp, ctx: &Context, dropped: &[&str]) {
    let said = app
        .status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == UNSUPPORTED_SPEC));
    if !dropped.is_empty() && !said {
        let message = dropped_message(dropped);
        ctx.event(app, EventType::Warning, "FieldDropped", message).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::children::{BuildSettings, tests::app};

    fn children() -> Vec<DesiredChild> {
        desired(desired_children(&app("web", json!({})), &BuildSettings::default()).unwrap()).unwrap()
    }

    #[test]
    fn a_cache_behind_is_retried_at_once_ten_times_then_backed_off_from() {
        let behind = Error::CacheBehind {
            kind: "Service",
            name: "web".into(),
        };
        let secs = |error: &Error, n| retry_wait(error, n).as_secs();
        assert_eq!((1..=10).map(|n| secs(&behind, n)).collect::<Vec<_>>(), [1; 10]);
        assert_eq!([11, 12, 13].map(|n| secs(&behind, n)), [1, 2, 4]);
    }

    #[test]
    fn a_missing_gateway_api_is_looked_for_again_at_least_every_30_s() {
        let missing = Error::GatewayApiMissing;
        assert_eq!(
            [1, 5, 6, 20].map(|n| retry_wait(&missing, n).as_secs()),
            [1, 16, 30, 30]
        );
        let status = Error::Status(Box::new(kube::Error::LinesCodecMaxLineLengthExceeded));
        assert_eq!(retry_wait(&status, 9).as_secs(), 256);
    }

    /// Each child as the API server would return it after the apply.
    fn applied(children: &[DesiredChild]) -> Vec<Option<Value>> {
        children.iter().map(|c| Some(c.object.clone())).collect()
    }

    #[test]
    fn a_new_app_creates_every_child() {
        let children = children();
        let (steps, recheck) = plan_steps(&children, &vec![None; children.len()], |_| false);
        assert!(steps.iter().all(|s| *s == Step::Create), "{steps:?}");
        assert!(!recheck);
    }

    #[test]
    fn a_converged_app_writes_nothing() {
        let children = children();
        let (steps, recheck) = plan_steps(&children, &applied(&children), |_| true);
        assert!(steps.iter().all(|s| *s == Step::UpToDate), "{steps:?}");
        assert!(!recheck, "nothing to write, so nothing to look at again");
    }

    #[test]
    fn our_own_write_not_yet_in_the_cache_is_not_sent_again() {
        let children = children();
        let live = vec![None; children.len()];
        let (steps, recheck) = plan_steps(&children, &live, |c| c.kind == "ConfigMap");
        let config_map = children.iter().position(|c| c.kind == "ConfigMap").unwrap();
        assert_eq!(steps[config_map], Step::UpToDate);
        assert!(steps.iter().filter(|s| **s == Step::Create).count() == children.len() - 1);
        assert!(recheck, "the app is looked at again once the cache caught up");
    }

    #[test]
    fn the_next_reconcile_is_the_soonest_that_is_due() {
        let s = Duration::from_secs;
        let resync = s(300);
        assert_eq!(requeue_after(resync, false, None, None), resync);
        assert_eq!(requeue_after(resync, true, None, None), CACHE_LAG_WINDOW);
        assert_eq!(
            requeue_after(resync, false, Some(s(10)), None),
            s(11),
            "a second past due"
        );
        assert_eq!(
            requeue_after(resync, true, Some(s(10)), Some(Duration::from_millis(400))),
            Duration::from_millis(400)
        );
    }

    #[test]
    fn failures_back_off_from_a_second_to_five_minutes() {
        let waits: Vec<u64> = [1, 2, 3, 9, 10, 30].map(|n| backoff(n).as_secs()).to_vec();
        assert_eq!(waits, [1, 2, 4, 256, 300, 300]);
    }

    #[test]
    fn the_user_facing_service_is_the_one_named_as_the_app() {
        let app = app("web", json!({}));
        let children = children();
        let service = user_service(&app, &children, &applied(&children)).expect("the Service");
        assert_eq!(service.metadata.name.as_deref(), Some("web"));
        assert!(user_service(&app, &children, &vec![None; children.len()]).is_none());
    }
}
