//! The update strategies: how a changed pod template reaches the pods.
//! Each strategy is a file of its own here, after Argo Rollouts' `rollout/`
//! package, behind one shape: given the app, the StatefulSet the builders
//! made for it, the live one and the app's pods, [`decide`] says what the
//! strategy changes in the StatefulSet to apply and which pods to delete
//! ([`Decision`]). Pure: the reconcile does the writes and deletes.
//!
//! - `RollingUpdate` ([`rolling`]) and `OnDelete` are the StatefulSet's own
//!   strategies; the operator only sets the partition a canary holds.
//! - `Recreate` ([`recreate`]) is driven by the operator, on `OnDelete`
//!   underneath.
//! - `rollingUpdate.steps` ([`ramped`]): the operator sets the partition
//!   step by step, and aborts a step that does not get Ready in time.
//! - `rollingUpdate.maxUnavailable` ([`max_unavailable`]) is the
//!   StatefulSet's where the API server keeps the field, and driven by the
//!   operator on `OnDelete` where it drops it.
//! - `BlueGreen` ([`blue_green`]): a second StatefulSet of the new
//!   template, and the Service switched to it in one write.

pub mod blue_green;
pub mod max_unavailable;
pub mod ramped;
pub mod recreate;
pub mod rolling;
pub mod shadow;
pub mod stand_in;
mod template;
pub mod traffic;

use k8s_openapi::{api::apps::v1::StatefulSet, apimachinery::pkg::apis::meta::v1::Time};
use kube::ResourceExt;
use serde_json::Value;

use super::{
    observe::pods::{REVISION_LABEL, is_ready, ready_condition},
    runtime::slim_pod::SlimPod,
};
use crate::resource::{BlueGreenStatus, StepStatus, TrafficStatus, UpdateStrategyType, VisitCounterApp};

/// Pins a Service's selector to the pods of `revision`
/// (`controller-revision-hash`); leaves it selecting all the app's pods
/// while the revision is unknown (a StatefulSet its controller has not
/// seen yet). Blue/green's Services and a route's Services per version.
fn pin(service: &mut k8s_openapi::api::core::v1::Service, revision: Option<&str>) {
    let Some(revision) = revision else { return };
    if let Some(selector) = service.spec.as_mut().and_then(|s| s.selector.as_mut()) {
        selector.insert(REVISION_LABEL.into(), revision.into());
    }
}

/// A pod of the app, as a strategy sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodView {
    pub name: String,
    pub uid: String,
    /// Its StatefulSet revision (`controller-revision-hash`).
    pub revision: Option<String>,
    pub ready: bool,
    /// When its `Ready` condition last turned.
    pub ready_since: Option<Time>,
    /// Being deleted.
    pub terminating: bool,
}

impl PodView {
    /// The ordinal in its name (`<statefulset>-<n>`).
    pub fn ordinal(&self) -> Option<i32> {
        self.name.rsplit_once('-')?.1.parse().ok()
    }

    pub fn of(pod: &SlimPod) -> Self {
        Self {
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            revision: pod.revision().map(str::to_owned),
            ready: is_ready(pod),
            ready_since: ready_condition(pod).and_then(|c| c.last_transition_time.clone()),
            terminating: pod.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// What a strategy decided for one reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// Pods to delete once the StatefulSet is written.
    pub delete: Vec<PodView>,
    /// A rollout the operator drives is under way: `Progressing`'s reason
    /// and words.
    pub progress: Option<(&'static str, String)>,
    /// When the last recreate started, if one ever did.
    pub recreate_since: Option<Time>,
    /// Who keeps to `maxUnavailable`, when the app sets it.
    pub max_unavailable_by: Option<&'static str>,
    /// When to look again with nothing else changed: a pause that ends, a
    /// deadline that passes.
    pub look_again_in: Option<std::time::Duration>,
    /// Under `rollingUpdate.steps`, where the rollout is.
    pub step: Option<StepStatus>,
    /// The rollout was aborted: `Progressing`'s words.
    pub aborted: Option<String>,
    /// Under blue/green, where the app stands.
    pub blue_green: Option<BlueGreenStatus>,
    /// A StatefulSet of the app to delete (name, uid): blue/green's previous
    /// one, past its delay, or a shadow no longer wanted.
    pub delete_statefulset: Option<(String, String)>,
    /// The Event of that delete (reason, message), when not blue/green's.
    pub deleted_because: Option<(&'static str, String)>,
    /// With `spec.traffic`, where the app's HTTPRoute sends requests.
    pub traffic: Option<TrafficStatus>,
}

impl Decision {
    /// This decision, with what blue/green decided for the app's slots
    /// (`blue_green::decide`, which named the StatefulSet this one decided
    /// for).
    pub fn with_slots(mut self, slots: Decision) -> Self {
        self.blue_green = slots.blue_green;
        if slots.delete_statefulset.is_some() {
            self.delete_statefulset = slots.delete_statefulset;
            self.deleted_because = slots.deleted_because;
        }
        self.look_again_in = match (self.look_again_in, slots.look_again_in) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self
    }
}

impl Decision {
    /// This decision, deleting `other`'s StatefulSet when it deletes none
    /// itself (a shadow left by a change of strategy; the other one goes at
    /// the next reconcile).
    pub fn or_delete(mut self, other: Decision) -> Self {
        if self.delete_statefulset.is_none() {
            self.delete_statefulset = other.delete_statefulset;
            self.deleted_because = other.deleted_because;
        }
        self
    }
}

/// The pods the spec asks for, and how long each must be ready to count as
/// available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub replicas: i32,
    pub min_ready_seconds: i32,
}

/// What the cluster does with the fields a strategy may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cluster {
    /// The API server keeps `rollingUpdate.maxUnavailable` on a StatefulSet
    /// (its `MaxUnavailableStatefulSet` gate is on).
    pub keeps_max_unavailable: bool,
}

/// Decides for the app's strategy, and changes `desired` (the StatefulSet
/// the builders made) as the strategy needs. `live` is the StatefulSet as the
/// watch cache holds it, `pods` every pod of the app.
pub fn decide(
    app: &VisitCounterApp,
    desired: &mut StatefulSet,
    live: Option<&Value>,
    pods: &[PodView],
    now: &Time,
    cluster: Cluster,
) -> Decision {
    let strategy = &app.spec.update_strategy;
    match (strategy.type_, strategy.rolling_update.as_ref()) {
        (UpdateStrategyType::Recreate, _) => recreate::decide(desired, live, pods, now),
        (UpdateStrategyType::RollingUpdate, Some(rolling)) if !rolling.steps.is_empty() => ramped::decide(
            ramped::Plan::of(rolling, app.spec.replicas, app.spec.progress_deadline_seconds),
            desired,
            live,
            pods,
            now,
        ),
        (UpdateStrategyType::RollingUpdate, Some(rolling)) => max_unavailable::decide(
            rolling,
            Wanted {
                replicas: app.spec.replicas,
                min_ready_seconds: app.spec.min_ready_seconds,
            },
            cluster.keeps_max_unavailable,
            desired,
            live,
            pods,
            now,
        ),
        (
            UpdateStrategyType::RollingUpdate
            | UpdateStrategyType::OnDelete
            | UpdateStrategyType::BlueGreen
            | UpdateStrategyType::Shadow,
            _,
        ) => Decision::default(),
    }
}

/// Whether the app's rollout is in steps (`rollingUpdate.steps`).
pub fn uses_steps(app: &VisitCounterApp) -> bool {
    let strategy = &app.spec.update_strategy;
    strategy.type_ == UpdateStrategyType::RollingUpdate
        && strategy.rolling_update.as_ref().is_some_and(|r| !r.steps.is_empty())
}

/// Whether the app needs to know what the cluster does with
/// `maxUnavailable` (see [`Cluster`]).
pub fn uses_max_unavailable(app: &VisitCounterApp) -> bool {
    let strategy = &app.spec.update_strategy;
    strategy.type_ == UpdateStrategyType::RollingUpdate
        && strategy
            .rolling_update
            .as_ref()
            .is_some_and(|r| r.max_unavailable.is_some())
}

/// Whether the StatefulSet's status describes its current spec.
pub fn seen_by_its_controller(live: &Value) -> bool {
    let generation = live.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = live.pointer("/status/observedGeneration").and_then(Value::as_i64);
    observed.is_some() && observed >= generation
}
