//! Blue/green (`updateStrategy.type: BlueGreen`): the new template runs in
//! a StatefulSet of its own beside the serving one, and the user-facing
//! Service switches to it in one write. After Argo Rollouts' blue/green,
//! with StatefulSets in place of ReplicaSets.
//!
//! An app has two slots, two StatefulSet names: the app's own and
//! `<app>-green`. A StatefulSet cannot be renamed, so the serving one's name
//! alternates between them. Which one serves is live state: the revision
//! the user-facing Service's selector names (`controller-revision-hash`,
//! whose value starts with its StatefulSet's name). So the switch is that
//! one write, and nothing else needs to remember it.
//!
//! - The serving StatefulSet's template is never changed: a new template
//!   goes to the other slot (the preview), reached by `<app>-preview`.
//! - Once every preview pod is Ready (available) and the rollout is
//!   promoted (`autoPromote`, or the app's `visitcounter.dev/promote`
//!   annotation), the Service selects the preview's revision, and the
//!   Service's `visitcounter.dev/switched-at` says when.
//! - The previous StatefulSet stays `scaleDownDelaySeconds` after the
//!   switch. A spec reverted meanwhile switches back at once (its pods are
//!   Ready); past the delay it is deleted, once the new pods' counts hold
//!   the old pods' last ones.
//! - Counts: while two slots run, the newer (the desired template's) takes
//!   in the older one's visits, ordinal by ordinal (`status.rollout.blueGreen.carry`,
//!   done by the visits poller through each pod's `POST /carry`).
//!
//! Pure: the reconcile writes what this builds and deletes what it names.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Service},
    apimachinery::pkg::apis::meta::v1::Time,
};
use serde_json::Value;

use super::{
    Decision, pin,
    template::{TEMPLATE_HASH_ANNOTATION, Template, whole_seconds},
};
use crate::{
    children::{Children, green_statefulset_name, preview_service_name},
    controller::observe::pods::{REVISION_LABEL, ordinal_of},
    resource::{BlueGreen, BlueGreenStatus, Carry, UpdateStrategyType, VisitCounterApp, VisitsStatus},
};

/// The annotation on the user-facing Service: when it last switched.
pub const SWITCHED_AT_ANNOTATION: &str = "visitcounter.dev/switched-at";
/// The annotation on the user-facing Service: the revision it selected
/// before it last switched, so a revert to it is told from a new template.
pub const SWITCHED_FROM_ANNOTATION: &str = "visitcounter.dev/switched-from";
/// The app's annotation that promotes a rollout waiting for it.
pub const PROMOTE_ANNOTATION: &str = "visitcounter.dev/promote";
/// `Progressing`'s reasons while a blue/green rollout is under way.
pub use crate::controller::status::conditions::PREVIEW_STARTING;
pub const AWAITING_PROMOTION: &str = "AwaitingPromotion";

/// The app's StatefulSets as the watch cache holds them, by slot, and its
/// user-facing Service.
#[derive(Clone, Copy, Debug, Default)]
pub struct Live<'a> {
    pub blue: Option<&'a Value>,
    pub green: Option<&'a Value>,
    pub service: Option<&'a Value>,
}

/// Which StatefulSet serves, and which is the other slot's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slots {
    pub serving: String,
    pub other: String,
}

/// Whether the app needs the blue/green decision: it is blue/green, or a
/// second slot of an app that was is still there.
pub fn applies(app: &VisitCounterApp, live: &Live<'_>) -> bool {
    app.spec.update_strategy.type_ == UpdateStrategyType::BlueGreen || live.green.is_some()
}

/// The serving slot: the StatefulSet whose revision the Service selects,
/// else the one that exists (the app's own name first).
///
/// The selected slot serves even while its StatefulSet is missing: a
/// re-create (a new `podManagementPolicy`) orphaned its pods a moment, and
/// the operator may have stopped right then. Created again under the same
/// name, it takes its pods and claims, and their counts, back; the other
/// slot holds older counts or none.
pub fn slots(app: &str, live: &Live<'_>) -> Slots {
    let green = green_statefulset_name(app);
    let serving_green = match pinned(live.service) {
        Some(revision) if revision.starts_with(&format!("{green}-")) => true,
        Some(revision) if revision.starts_with(&format!("{app}-")) => false,
        _ => live.blue.is_none() && live.green.is_some(),
    };
    if serving_green {
        Slots {
            serving: green,
            other: app.to_owned(),
        }
    } else {
        Slots {
            serving: app.to_owned(),
            other: green,
        }
    }
}

/// Decides the app's blue/green rollout: renames and fills `children`
/// (the serving StatefulSet, the preview, the Service's selector) and says
/// what to delete and report. `visits` is the app's `status.visits`.
pub fn decide(
    app: &VisitCounterApp,
    children: &mut Children,
    live: Live<'_>,
    visits: Option<&VisitsStatus>,
    now: &Time,
) -> Decision {
    let name = children.stateful_set.metadata.name.clone().unwrap_or_default();
    let slots = slots(&name, &live);
    let (serving_live, other_live) = if slots.serving == name {
        (live.blue, live.green)
    } else {
        (live.green, live.blue)
    };
    let blue_green = app.spec.update_strategy.type_ == UpdateStrategyType::BlueGreen;
    let template = Template::stamp(&mut children.stateful_set);
    let switched_at = switched_at(live.service);
    let mut wanted = children.stateful_set.clone();
    children.stateful_set.metadata.name = Some(slots.serving.clone());
    let mut decision = Decision::default();
    let mut status = BlueGreenStatus {
        serving: slots.serving.clone(),
        preview_service: preview_service_name(&name),
        switched_at: switched_at.clone(),
        ..BlueGreenStatus::default()
    };
    let serving_revision = serving_revision(&live, &slots, serving_live, other_live.is_some());
    let at = Moment {
        app,
        slots: &slots,
        visits,
        switched_at: switched_at.as_ref(),
        now,
        hash: &template.hash,
    };
    let mut selected = Selected {
        service: serving_revision.clone(),
        preview: serving_revision.clone(),
        switched_from: switched_from(live.service).map(str::to_owned),
    };
    if blue_green && serving_live.is_some_and(|l| template.is_new_to(l)) {
        freeze_template(&mut children.stateful_set, serving_live);
        wanted.metadata.name = Some(slots.other.clone());
        let preview = Preview::of(app, &slots, other_live, &template, live.service, visits);
        selected.preview = Some(preview.revision.clone());
        match preview.progress {
            None => {
                selected.switched_from = serving_revision.or(selected.switched_from.take());
                selected.service = Some(preview.revision);
                status.serving = slots.other.clone();
                status.switched_at = Some(whole_seconds(now));
            }
            Some((progress, look_again_in)) => {
                decision.progress = Some(progress);
                decision.look_again_in = look_again_in;
            }
        }
        status.preview = Some(slots.other.clone());
        status.carry = Some(at.carry_into_preview());
        if let Some(preview) = children.preview.as_mut() {
            preview.stateful_set = Some(wanted);
        }
    } else if let Some(other) = other_live {
        status.carry = Some(at.after_switch(other, serving_live, &mut decision));
    }
    if let Some(preview) = children.preview.as_mut() {
        pin(&mut preview.service, selected.preview.as_deref());
    }
    if blue_green || other_live.is_some() {
        mark(
            &mut children.service,
            live.service,
            &selected,
            status.switched_at.as_ref(),
        );
    }
    decision.blue_green = Some(status);
    decision
}

/// What one decision rests on, for the parts of it below.
struct Moment<'a> {
    app: &'a VisitCounterApp,
    slots: &'a Slots,
    visits: Option<&'a VisitsStatus>,
    switched_at: Option<&'a Time>,
    now: &'a Time,
    /// The desired template's.
    hash: &'a str,
}

impl Moment<'_> {
    /// The carry from the serving pods into the preview's, once a carry
    /// the other way is done (`still_to_finish`).
    fn carry_into_preview(&self) -> Carry {
        let Moment { app, slots, .. } = *self;
        match previous_carry(app) {
            Some(back) if still_to_finish(back, slots, self.visits, self.switched_at, app.spec.replicas) => {
                back.clone()
            }
            previous => carry(&slots.serving, &slots.other, previous, self.hash, self.now),
        }
    }

    /// After a switch (or the end of blue/green): the previous StatefulSet
    /// `other` goes after the delay, once its counts are carried, and not
    /// while the serving one is missing a moment (see `slots`). The carry
    /// from it.
    fn after_switch(&self, other: &Value, serving: Option<&Value>, decision: &mut Decision) -> Carry {
        let Moment { app, slots, .. } = *self;
        match previous_left(app, self.switched_at, slots, self.visits, self.now) {
            None if serving.is_none() => decision.look_again_in = Some(std::time::Duration::from_secs(5)),
            None => decision.delete_statefulset = Some((slots.other.clone(), uid(other))),
            left => decision.look_again_in = left,
        }
        carry(&slots.other, &slots.serving, previous_carry(app), self.hash, self.now)
    }
}

/// The revision the user-facing Service selects while nothing switches:
/// the serving StatefulSet's (`pinned_revision`) or, while it is missing a
/// moment (see `slots`) or created again and not yet seen by its
/// controller, the one it selects now, so its pods stay selected.
fn serving_revision(live: &Live<'_>, slots: &Slots, serving: Option<&Value>, other_exists: bool) -> Option<String> {
    let unseen = serving.and_then(update_revision).is_none();
    pinned_revision(serving, other_exists).or_else(|| {
        pinned(live.service)
            .filter(|r| unseen && r.starts_with(&format!("{}-", slots.serving)))
            .map(str::to_owned)
    })
}

/// The revision the serving StatefulSet's pods are selected by: its update
/// revision, unless it is mid-roll (switched to BlueGreen during a rolling
/// update) and alone, when it is not pinned to its newest pods.
fn pinned_revision(serving: Option<&Value>, other_exists: bool) -> Option<String> {
    let settled = serving.is_some_and(|l| l["status"]["currentRevision"] == l["status"]["updateRevision"]);
    serving.and_then(update_revision).filter(|_| settled || other_exists)
}

/// The revisions the two Services select, and the one the user-facing
/// Service left at its last switch.
struct Selected {
    service: Option<String>,
    preview: Option<String>,
    switched_from: Option<String>,
}

/// Where the preview of a new template stands.
struct Preview {
    /// The revision its pods run (a name no pod has before it exists).
    revision: String,
    /// `None` when the Service switches to it now; else `Progressing`'s
    /// reason and words, and when to look again.
    progress: Option<((&'static str, String), Option<std::time::Duration>)>,
}

impl Preview {
    fn of(
        app: &VisitCounterApp,
        slots: &Slots,
        other: Option<&Value>,
        template: &Template,
        service: Option<&Value>,
        visits: Option<&VisitsStatus>,
    ) -> Self {
        let settings = app.spec.update_strategy.blue_green_settings();
        let ready = other.is_some_and(|l| !template.is_new_to(l) && all_available(l, app.spec.replicas));
        let running = other.and_then(update_revision);
        // A revert: the other StatefulSet still runs the revision the
        // Service selected before its last switch, and takes it back
        // without another promotion.
        let rollback = running.as_deref().is_some_and(|r| switched_from(service) == Some(r));
        let revision = running.unwrap_or_else(|| format!("{}-not-created-yet", slots.other));
        // The new pods hold the serving pods' counts (a first carry took
        // them whole) before they serve, so no visit is counted twice or
        // lost across the switch.
        let counts_in = carried(visits, &slots.serving, &slots.other, app.spec.replicas);
        let promoted = settings.auto_promote || promoted(app, Some(&revision)) || rollback;
        let progress = if ready && counts_in && promoted {
            None
        } else if ready && !counts_in {
            let words = format!(
                "every pod of StatefulSet {} is Ready; it takes in the counts of StatefulSet {}'s pods before the Service switches to it",
                slots.other, slots.serving
            );
            Some(((PREVIEW_STARTING, words), Some(std::time::Duration::from_secs(5))))
        } else {
            Some((waiting(app, &settings, slots, other, ready), None))
        };
        Self { revision, progress }
    }
}

/// How long before the previous StatefulSet may go: `None` once the delay
/// has passed and counts asked after the switch show its pods' visits
/// carried; else when to look again.
fn previous_left(
    app: &VisitCounterApp,
    switched_at: Option<&Time>,
    slots: &Slots,
    visits: Option<&VisitsStatus>,
    now: &Time,
) -> Option<std::time::Duration> {
    let delay = app.spec.update_strategy.blue_green_settings().scale_down_delay_seconds;
    let left = switched_at.map_or(0, |at| i64::from(delay) - seconds_between(at, now));
    if left > 0 {
        Some(std::time::Duration::from_secs(left as u64))
    } else if carried(visits, &slots.other, &slots.serving, app.spec.replicas) && counted_since(visits, switched_at) {
        None
    } else {
        Some(std::time::Duration::from_secs(5))
    }
}

/// The user-facing Service as `selected` says: its selector pinned, and,
/// once it ever switched, when and from which revision. Which slot serves
/// was read from `read`, the cached Service: the write carries its
/// resourceVersion, so it lands only on that Service, and a cache behind
/// (after an API server restart) never switches back or moves
/// `switched-at`.
fn mark(service: &mut Service, read: Option<&Value>, selected: &Selected, switched_at: Option<&Time>) {
    service.metadata.resource_version = read
        .and_then(|s| s["metadata"]["resourceVersion"].as_str())
        .map(str::to_owned);
    pin(service, selected.service.as_deref());
    let Some(at) = switched_at else { return };
    let at = serde_json::to_value(at)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned));
    let annotations = service.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if let Some(at) = at {
        annotations.insert(SWITCHED_AT_ANNOTATION.into(), at);
    }
    if let Some(from) = &selected.switched_from {
        annotations.insert(SWITCHED_FROM_ANNOTATION.into(), from.clone());
    }
}

/// Keeps the serving StatefulSet's template as it is live, with the hash it
/// was written with: under blue/green it changes by a switch, not in place.
pub(super) fn freeze_template(desired: &mut StatefulSet, live: Option<&Value>) {
    let Some(live) = live else { return };
    let (Ok(template), Some(spec)) = (
        serde_json::from_value(live["spec"]["template"].clone()),
        desired.spec.as_mut(),
    ) else {
        return;
    };
    spec.template = template;
    let annotations = desired.metadata.annotations.get_or_insert_default();
    match live["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION].as_str() {
        Some(hash) => annotations.insert(TEMPLATE_HASH_ANNOTATION.into(), hash.into()),
        None => annotations.remove(TEMPLATE_HASH_ANNOTATION),
    };
}

/// The revision the user-facing Service's selector names, if any.
fn pinned(service: Option<&Value>) -> Option<&str> {
    service?["spec"]["selector"][REVISION_LABEL].as_str()
}

fn switched_at(service: Option<&Value>) -> Option<Time> {
    let value = service?["metadata"]["annotations"][SWITCHED_AT_ANNOTATION].clone();
    serde_json::from_value(value).ok()
}

fn switched_from(service: Option<&Value>) -> Option<&str> {
    service?["metadata"]["annotations"][SWITCHED_FROM_ANNOTATION].as_str()
}

/// Whether the app's promote annotation names the preview's revision: an
/// annotation left from an earlier rollout promotes no later one.
fn promoted(app: &VisitCounterApp, preview: Option<&str>) -> bool {
    let annotation = app
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROMOTE_ANNOTATION));
    annotation.is_some_and(|v| Some(v.as_str()) == preview)
}

fn update_revision(live: &Value) -> Option<String> {
    live["status"]["updateRevision"].as_str().map(str::to_owned)
}

fn uid(live: &Value) -> String {
    live["metadata"]["uid"].as_str().unwrap_or_default().to_owned()
}

/// Whether every pod of the StatefulSet runs its template and is available,
/// as its controller last saw it.
fn all_available(live: &Value, replicas: i32) -> bool {
    let status = &live["status"];
    let count = |field: &str| status[field].as_i64().unwrap_or(0);
    let seen = status["observedGeneration"].as_i64() >= live["metadata"]["generation"].as_i64();
    let replicas = i64::from(replicas);
    seen && count("replicas") == replicas
        && count("updatedReplicas") == replicas
        && count("availableReplicas") == replicas
        && count("readyReplicas") == replicas
}

/// `Progressing`'s reason and words while the preview is not switched to.
fn waiting(
    app: &VisitCounterApp,
    settings: &BlueGreen,
    slots: &Slots,
    other: Option<&Value>,
    ready: bool,
) -> (&'static str, String) {
    let preview = preview_service_name(app.metadata.name.as_deref().unwrap_or_default());
    if ready && !settings.auto_promote {
        let revision = other.and_then(update_revision).unwrap_or_default();
        return (
            AWAITING_PROMOTION,
            format!(
                "the new template runs in StatefulSet {}, every pod Ready, reached by Service {preview}; the Service still selects StatefulSet {}: to switch, annotate the app {PROMOTE_ANNOTATION}={revision} --overwrite",
                slots.other, slots.serving
            ),
        );
    }
    let ready_pods = other
        .and_then(|l| l["status"]["availableReplicas"].as_i64())
        .unwrap_or(0);
    (
        PREVIEW_STARTING,
        format!(
            "{ready_pods} of {} pods of the new template are available in StatefulSet {} (Service {preview}); the Service still selects StatefulSet {}",
            app.spec.replicas, slots.other, slots.serving
        ),
    )
}

/// The poller's carry of counts from `from`'s pods into `to`'s. A pod takes
/// the other's count whole on first contact under a key, and only the
/// visits since afterwards. So the key stays the same while the carry goes
/// the same way for the same template, across the switch (a visit either
/// side of it is counted once), and is new when it starts: with a new
/// template, or the other way after a revert (the other pod's count then
/// holds this one's, as it took them in).
/// The carry between `from` and `to`: the previous one's key while it goes
/// the same way, so each pod adds only the visits since its last carry;
/// else a new key, whose first carry takes the larger count. The key stays
/// when the template changes again mid-rollout: the new pods keep their
/// claims, and with them every visit carried so far, so a first carry
/// there would drop the visits either side counted since the last one.
fn carry(from: &str, to: &str, previous: Option<&Carry>, hash: &str, now: &Time) -> Carry {
    let key = match previous {
        Some(p) if p.from == from && p.to == to => p.key.clone(),
        _ => format!("{hash}-{}", now.0.as_second()),
    };
    Carry {
        from: from.to_owned(),
        to: to.to_owned(),
        key,
    }
}

/// Whether the last carry went the other way (`other` into `serving`: a
/// revert, or a new template, soon after a switch) and has yet to take in
/// the last visits of `other`'s pods, which stopped at the switch. Until
/// then it goes on: the first carry the new way takes the larger count,
/// which loses nothing only once one side holds every visit of the other.
fn still_to_finish(
    back: &Carry,
    slots: &Slots,
    visits: Option<&VisitsStatus>,
    switched_at: Option<&Time>,
    replicas: i32,
) -> bool {
    back.from == slots.other
        && back.to == slots.serving
        && !(carried(visits, &back.from, &back.to, replicas) && counted_since(visits, switched_at))
}

/// The carry the last status named (the visits poller carries what it
/// names).
pub fn previous_carry(app: &VisitCounterApp) -> Option<&Carry> {
    app.status
        .as_ref()?
        .rollout
        .as_ref()?
        .blue_green
        .as_ref()?
        .carry
        .as_ref()
}

/// Whether each pod of `to` counts at least what the pod of `from` of its
/// ordinal last answered, as `status.visits` says, for every ordinal the
/// spec has (a count kept for a pod scaled away is not carried). Where the
/// app's pods answer counts, a pod of `from` that has none now is not
/// carried yet; pods that answer none (an image without `/visits`) hold
/// nothing to carry.
pub fn carried(visits: Option<&VisitsStatus>, from: &str, to: &str, replicas: i32) -> bool {
    let Some(visits) = visits else { return true };
    if visits.pods.iter().all(|p| p.visits.is_none()) {
        return true;
    }
    let count = |name: &str| visits.pods.iter().find(|p| p.name == name).and_then(|p| p.visits);
    visits
        .pods
        .iter()
        .filter(|p| !p.retained)
        .filter_map(|p| Some((ordinal_of(from, &p.name)?, p)))
        .filter(|(ordinal, _)| *ordinal < replicas)
        .all(|(ordinal, old)| {
            let new = count(&format!("{to}-{ordinal}"));
            old.visits.is_some_and(|old| new.is_some_and(|new| new >= old))
        })
}

/// Whether the counts were asked after the switch at `switched_at`, so the
/// old pods' last visits are in them; pods that answer none aside.
fn counted_since(visits: Option<&VisitsStatus>, switched_at: Option<&Time>) -> bool {
    let Some(visits) = visits.filter(|v| v.pods.iter().any(|p| p.visits.is_some())) else {
        return true;
    };
    match (&visits.observed_at, switched_at) {
        (Some(asked), Some(switched)) => asked.0 > switched.0,
        (_, None) => true,
        (None, Some(_)) => false,
    }
}

/// Whole seconds from `from` to `to`.
fn seconds_between(from: &Time, to: &Time) -> i64 {
    to.0.as_second() - from.0.as_second()
}

#[cfg(test)]
pub(super) mod tests {
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    use super::*;
    use crate::{
        children::{BuildSettings, desired_children, tests::app},
        resource::PodVisits,
    };

    const AUTO: &str = "auto";
    const MANUAL: &str = "manual";

    fn web(image: &str, promote: &str) -> VisitCounterApp {
        app(
            "web",
            json!({
                "replicas": 2,
                "image": image,
                "updateStrategy": {
                    "type": "BlueGreen",
                    "blueGreen": {"autoPromote": promote == AUTO, "scaleDownDelaySeconds": 30},
                },
            }),
        )
    }

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + second).unwrap())
    }

    /// The StatefulSet `name` as the operator writes it for `app`, live: its
    /// controller has seen it and `available` of its 2 pods are available.
    pub(in crate::controller::rollout) fn live_sts(
        app: &VisitCounterApp,
        name: &str,
        revision: &str,
        available: i64,
    ) -> Value {
        let mut children = desired_children(app, &BuildSettings::default()).unwrap();
        Template::stamp(&mut children.stateful_set);
        let mut live = serde_json::to_value(&children.stateful_set).unwrap();
        live["metadata"]["name"] = json!(name);
        live["metadata"]["uid"] = json!(format!("uid-{name}"));
        live["metadata"]["generation"] = json!(1);
        live["status"] = json!({
            "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": available,
            "availableReplicas": available, "updateRevision": revision, "currentRevision": revision,
        });
        live
    }

    fn service(revision: &str, switched_at: Option<&Time>) -> Value {
        let mut service = json!({"metadata": {"name": "web"}, "spec": {"selector": {REVISION_LABEL: revision}}});
        if let Some(at) = switched_at {
            service["metadata"]["annotations"] = json!({SWITCHED_AT_ANNOTATION: at});
        }
        service
    }

    fn run(app: &VisitCounterApp, live: Live<'_>, visits: Option<&VisitsStatus>, now: &Time) -> (Children, Decision) {
        let mut children = desired_children(app, &BuildSettings::default()).unwrap();
        let decision = decide(app, &mut children, live, visits, now);
        (children, decision)
    }

    /// Both StatefulSets live, and the Service.
    fn both<'a>(blue: &'a Value, green: &'a Value, service: &'a Value) -> Live<'a> {
        Live {
            blue: Some(blue),
            green: Some(green),
            service: Some(service),
        }
    }

    fn selector(service: &Service) -> Option<String> {
        service.spec.as_ref()?.selector.as_ref()?.get(REVISION_LABEL).cloned()
    }

    pub(in crate::controller::rollout) fn image(sts: &StatefulSet) -> String {
        sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    }

    #[test]
    fn a_new_app_starts_in_the_first_slot_with_its_preview_service() {
        let (children, decision) = run(&web("v1", AUTO), Live::default(), None, &at(0));
        assert_eq!(children.stateful_set.metadata.name.as_deref(), Some("web"));
        let preview = children.preview.unwrap();
        assert_eq!(preview.service.metadata.name.as_deref(), Some("web-preview"));
        assert!(preview.stateful_set.is_none());
        assert_eq!(selector(&children.service), None, "one StatefulSet, no revision yet");
        assert_eq!(decision.blue_green.unwrap().serving, "web");
        assert!(decision.progress.is_none());
    }

    #[test]
    fn at_rest_the_services_select_the_serving_revision() {
        let app = web("v1", AUTO);
        let blue = live_sts(&app, "web", "web-1", 2);
        let live = Live {
            blue: Some(&blue),
            ..Live::default()
        };
        let (children, decision) = run(&app, live, None, &at(0));
        assert_eq!(selector(&children.service).as_deref(), Some("web-1"));
        assert_eq!(selector(&children.preview.unwrap().service).as_deref(), Some("web-1"));
        assert!(decision.delete_statefulset.is_none() && decision.progress.is_none());
    }

    #[test]
    fn a_new_template_starts_in_the_other_slot_and_the_serving_one_is_kept() {
        let blue = live_sts(&web("v1", AUTO), "web", "web-1", 2);
        let service = service("web-1", None);
        let live = Live {
            blue: Some(&blue),
            service: Some(&service),
            ..Live::default()
        };
        let (children, decision) = run(&web("v2", AUTO), live, None, &at(0));
        assert_eq!(
            image(&children.stateful_set),
            "v1",
            "the serving template is not changed"
        );
        let preview = children.preview.unwrap();
        let green = preview.stateful_set.unwrap();
        assert_eq!(
            (green.metadata.name.as_deref(), image(&green).as_str()),
            (Some("web-green"), "v2")
        );
        assert_eq!(selector(&children.service).as_deref(), Some("web-1"));
        assert_eq!(
            selector(&preview.service).as_deref(),
            Some("web-green-not-created-yet"),
            "the preview reaches no pod before the new ones exist"
        );
        assert_eq!(decision.progress.unwrap().0, PREVIEW_STARTING);
        let carry = decision.blue_green.unwrap().carry.unwrap();
        assert_eq!((carry.from.as_str(), carry.to.as_str()), ("web", "web-green"));
    }

    #[test]
    fn the_service_is_written_only_over_the_one_the_decision_read() {
        let blue = live_sts(&web("v1", AUTO), "web", "web-1", 2);
        let green = live_sts(&web("v2", AUTO), "web-green", "web-green-2", 2);
        let mut read = service("web-1", None);
        read["metadata"]["resourceVersion"] = json!("812");
        let (children, _) = run(&web("v2", AUTO), both(&blue, &green, &read), None, &at(5));
        assert_eq!(selector(&children.service).as_deref(), Some("web-green-2"));
        assert_eq!(children.service.metadata.resource_version.as_deref(), Some("812"));
        let live = Live {
            blue: None,
            green: None,
            service: None,
        };
        let (children, _) = run(&web("v1", AUTO), live, None, &at(0));
        assert_eq!(children.service.metadata.resource_version, None, "a Service to create");
    }

    #[test]
    fn the_service_switches_once_every_new_pod_is_available() {
        let blue = live_sts(&web("v1", AUTO), "web", "web-1", 2);
        let starting = live_sts(&web("v2", AUTO), "web-green", "web-green-2", 1);
        let service = service("web-1", None);
        let mut live = Live {
            blue: Some(&blue),
            green: Some(&starting),
            service: Some(&service),
        };
        let (children, _) = run(&web("v2", AUTO), live, None, &at(0));
        assert_eq!(selector(&children.service).as_deref(), Some("web-1"));
        assert_eq!(
            selector(&children.preview.unwrap().service).as_deref(),
            Some("web-green-2")
        );
        let ready = live_sts(&web("v2", AUTO), "web-green", "web-green-2", 2);
        live.green = Some(&ready);
        let (children, decision) = run(&web("v2", AUTO), live, None, &at(5));
        assert_eq!(selector(&children.service).as_deref(), Some("web-green-2"));
        let annotations = children.service.metadata.annotations.unwrap();
        assert_eq!(
            serde_json::to_value(&annotations[SWITCHED_AT_ANNOTATION]).unwrap(),
            serde_json::to_value(at(5)).unwrap()
        );
        assert!(decision.progress.is_none());
        assert_eq!(decision.blue_green.unwrap().serving, "web-green");
    }

    #[test]
    fn the_switch_waits_until_the_new_pods_hold_the_serving_pods_counts() {
        let blue = live_sts(&web("v1", AUTO), "web", "web-1", 2);
        let green = live_sts(&web("v2", AUTO), "web-green", "web-green-2", 2);
        let service = service("web-1", None);
        let live = both(&blue, &green, &service);
        let counts = |new: i64| VisitsStatus {
            pods: vec![pod("web-0", 7), pod("web-green-0", new)],
            ..VisitsStatus::default()
        };
        let (children, decision) = run(&web("v2", AUTO), live, Some(&counts(0)), &at(0));
        assert_eq!(selector(&children.service).as_deref(), Some("web-1"));
        assert!(decision.progress.unwrap().1.contains("takes in the counts"));
        let (children, _) = run(&web("v2", AUTO), live, Some(&counts(7)), &at(1));
        assert_eq!(selector(&children.service).as_deref(), Some("web-green-2"));
    }

    #[test]
    fn without_auto_promote_the_switch_waits_for_the_annotation() {
        let blue = live_sts(&web("v1", MANUAL), "web", "web-1", 2);
        let green = live_sts(&web("v2", MANUAL), "web-green", "web-green-2", 2);
        let service = service("web-1", None);
        let live = both(&blue, &green, &service);
        let mut app = web("v2", MANUAL);
        let (children, decision) = run(&app, live, None, &at(0));
        assert_eq!(selector(&children.service).as_deref(), Some("web-1"));
        let (reason, words) = decision.progress.unwrap();
        assert_eq!(reason, AWAITING_PROMOTION);
        assert!(words.contains("visitcounter.dev/promote=web-green-2"), "{words}");
        app.metadata.annotations = Some([(PROMOTE_ANNOTATION.to_owned(), "web-green-1".to_owned())].into());
        let (children, _) = run(&app, live, None, &at(1));
        assert_eq!(
            selector(&children.service).as_deref(),
            Some("web-1"),
            "an annotation naming another revision promotes nothing"
        );
        app.metadata.annotations = Some([(PROMOTE_ANNOTATION.to_owned(), "web-green-2".to_owned())].into());
        let (children, _) = run(&app, live, None, &at(1));
        assert_eq!(selector(&children.service).as_deref(), Some("web-green-2"));
    }

    #[test]
    fn the_previous_statefulset_goes_after_the_delay_once_its_counts_are_carried() {
        let blue = live_sts(&web("v1", AUTO), "web", "web-1", 2);
        let green = live_sts(&web("v2", AUTO), "web-green", "web-green-2", 2);
        let service = service("web-green-2", Some(&at(0)));
        let live = both(&blue, &green, &service);
        let app = web("v2", AUTO);
        let (children, decision) = run(&app, live, None, &at(10));
        assert_eq!(children.stateful_set.metadata.name.as_deref(), Some("web-green"));
        assert_eq!(decision.look_again_in, Some(std::time::Duration::from_secs(20)));
        assert!(decision.delete_statefulset.is_none());
        let counts = |old: i64, new: i64, asked: i64| VisitsStatus {
            pods: vec![
                pod("web-0", old),
                pod("web-1", 1),
                pod("web-green-0", new),
                pod("web-green-1", 1),
            ],
            observed_at: Some(at(asked)),
            ..VisitsStatus::default()
        };
        let (_, decision) = run(&app, live, Some(&counts(7, 5, 29)), &at(30));
        assert!(
            decision.delete_statefulset.is_none(),
            "web-0's 7 are not in web-green-0 yet"
        );
        let (_, decision) = run(&app, live, Some(&counts(7, 9, 0)), &at(30));
        assert!(
            decision.delete_statefulset.is_none(),
            "counts asked before the switch may miss the old pods' last visits"
        );
        let (_, decision) = run(&app, live, Some(&counts(7, 9, 29)), &at(30));
        assert_eq!(decision.delete_statefulset, Some(("web".into(), "uid-web".into())));
        let carry = decision.blue_green.unwrap().carry.unwrap();
        assert_eq!((carry.from.as_str(), carry.to.as_str()), ("web", "web-green"));
    }

    #[test]
    fn a_reverted_spec_switches_back_without_a_promotion_once_the_counts_are_carried() {
        let blue = live_sts(&web("v1", MANUAL), "web", "web-1", 2);
        let green = live_sts(&web("v2", MANUAL), "web-green", "web-green-2", 2);
        let mut service = service("web-green-2", Some(&at(0)));
        service["metadata"]["annotations"][SWITCHED_FROM_ANNOTATION] = json!("web-1");
        let live = both(&blue, &green, &service);
        let counts = |old: i64| VisitsStatus {
            pods: vec![pod("web-0", old), pod("web-green-0", 9)],
            observed_at: Some(at(40)),
            ..VisitsStatus::default()
        };
        let (children, decision) = run(&web("v1", MANUAL), live, Some(&counts(7)), &at(40));
        assert_eq!(
            selector(&children.service).as_deref(),
            Some("web-green-2"),
            "web-0 takes in web-green-0's 9 first"
        );
        assert!(decision.progress.unwrap().1.contains("takes in the counts"));
        let (children, decision) = run(&web("v1", MANUAL), live, Some(&counts(9)), &at(41));
        assert_eq!(
            selector(&children.service).as_deref(),
            Some("web-1"),
            "past the delay, without autoPromote: a revert needs no promotion"
        );
        let annotations = children.service.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[SWITCHED_FROM_ANNOTATION], "web-green-2");
        assert_eq!(image(&children.stateful_set), "v2", "web-green keeps its template");
        let status = decision.blue_green.unwrap();
        assert_eq!(status.serving, "web");
        let carry = status.carry.unwrap();
        assert_eq!((carry.from.as_str(), carry.to.as_str()), ("web-green", "web"));
    }

    #[test]
    fn a_new_template_in_the_previous_statefulset_is_no_revert() {
        let blue = live_sts(&web("v3", MANUAL), "web", "web-3", 2);
        let green = live_sts(&web("v2", MANUAL), "web-green", "web-green-2", 2);
        let mut service = service("web-green-2", Some(&at(0)));
        service["metadata"]["annotations"][SWITCHED_FROM_ANNOTATION] = json!("web-1");
        let live = both(&blue, &green, &service);
        let (children, decision) = run(&web("v3", MANUAL), live, None, &at(5));
        assert_eq!(selector(&children.service).as_deref(), Some("web-green-2"));
        assert_eq!(decision.progress.unwrap().0, AWAITING_PROMOTION);
    }

    /// Reverted 2 s after the switch, before the counts were asked again:
    /// web-0's last visits may not be in web-green-0 yet, so the carry goes
    /// on from web into web-green until a count asked after the switch shows
    /// them there; only then does it turn (and the Service switch back).
    #[test]
    fn a_revert_turns_the_carry_only_once_the_old_way_is_done() {
        let blue = live_sts(&web("v1", AUTO), "web", "web-1", 2);
        let green = live_sts(&web("v2", AUTO), "web-green", "web-green-2", 2);
        let service = service("web-green-2", Some(&at(10)));
        let old_way = Carry {
            from: "web".into(),
            to: "web-green".into(),
            key: "h-1".into(),
        };
        let mut app = web("v1", AUTO);
        let counts = |asked: i64, green: i64| VisitsStatus {
            observed_at: Some(at(asked)),
            pods: vec![
                pod("web-0", 7),
                pod("web-1", 3),
                pod("web-green-0", green),
                pod("web-green-1", 5),
            ],
            ..VisitsStatus::default()
        };
        last_carried(&mut app, &old_way);
        let live = both(&blue, &green, &service);
        let asked_before = counts(9, 9);
        let (children, decision) = run(&app, live, Some(&asked_before), &at(12));
        assert_eq!(decision.blue_green.unwrap().carry, Some(old_way.clone()));
        assert_eq!(selector(&children.service).as_deref(), Some("web-green-2"));
        let not_yet = counts(11, 6);
        let (_, decision) = run(&app, live, Some(&not_yet), &at(12));
        assert_eq!(
            decision.blue_green.unwrap().carry,
            Some(old_way.clone()),
            "web-0's 7 not in yet"
        );
        let done = counts(11, 9);
        let (_, decision) = run(&app, live, Some(&done), &at(12));
        let turned = decision.blue_green.unwrap().carry.unwrap();
        assert_eq!((turned.from.as_str(), turned.to.as_str()), ("web-green", "web"));
    }

    /// The app's status as if the last reconcile named `carry`.
    fn last_carried(app: &mut VisitCounterApp, carry: &Carry) {
        app.status = Some(crate::resource::VisitCounterAppStatus {
            rollout: Some(crate::resource::RolloutStatus {
                blue_green: Some(BlueGreenStatus {
                    carry: Some(carry.clone()),
                    ..BlueGreenStatus::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    #[test]
    fn a_template_changed_again_mid_rollout_keeps_the_key() {
        let blue = live_sts(&web("v1", MANUAL), "web", "web-1", 2);
        let green = live_sts(&web("v2", MANUAL), "web-green", "web-green-2", 2);
        let service = service("web-1", None);
        let mut app = web("v3", MANUAL);
        let going = Carry {
            from: "web".into(),
            to: "web-green".into(),
            key: "v2hash-1".into(),
        };
        last_carried(&mut app, &going);
        let (_, decision) = run(&app, both(&blue, &green, &service), None, &at(30));
        assert_eq!(decision.blue_green.unwrap().carry, Some(going));
    }

    #[test]
    fn the_carry_keeps_its_key_across_the_switch_and_starts_anew_the_other_way() {
        let blue = live_sts(&web("v1", AUTO), "web", "web-1", 2);
        let green = live_sts(&web("v2", AUTO), "web-green", "web-green-2", 2);
        let before = service("web-1", None);
        let after = service("web-green-2", Some(&at(5)));
        let live = |service| Live {
            blue: Some(&blue),
            green: Some(&green),
            service: Some(service),
        };
        let with_status = |mut app: VisitCounterApp, decision: Decision| {
            app.status = Some(crate::resource::VisitCounterAppStatus {
                rollout: Some(crate::resource::RolloutStatus {
                    blue_green: decision.blue_green,
                    ..Default::default()
                }),
                ..Default::default()
            });
            app
        };
        let (_, preview) = run(&web("v2", AUTO), live(&before), None, &at(0));
        let first = preview.blue_green.clone().unwrap().carry.unwrap();
        let app = with_status(web("v2", AUTO), preview);
        let (_, switched) = run(&app, live(&after), None, &at(9));
        assert_eq!(
            switched.blue_green.clone().unwrap().carry.unwrap(),
            first,
            "the same key after the switch"
        );
        let reverted = with_status(web("v1", AUTO), switched);
        let (_, back) = run(&reverted, live(&after), None, &at(12));
        let back = back.blue_green.unwrap().carry.unwrap();
        assert_eq!((back.from.as_str(), back.to.as_str()), ("web-green", "web"));
        assert_ne!(back.key, first.key, "the other way, a new key");
    }

    fn pod(name: &str, visits: i64) -> PodVisits {
        PodVisits {
            name: name.into(),
            visits: Some(visits),
            error: None,
            retained: false,
        }
    }

    #[test]
    fn counts_are_carried_when_each_new_pod_holds_at_least_the_old_ones() {
        let status = |pods| VisitsStatus {
            pods,
            ..VisitsStatus::default()
        };
        let both = status(vec![
            pod("web-0", 4),
            pod("web-1", 6),
            pod("web-green-0", 4),
            pod("web-green-1", 9),
        ]);
        assert!(carried(Some(&both), "web", "web-green", 2));
        assert!(!carried(Some(&both), "web-green", "web", 2));
        let missing = status(vec![pod("web-0", 4), pod("web-green-1", 9)]);
        assert!(!carried(Some(&missing), "web", "web-green", 2));
        assert!(carried(None, "web", "web-green", 2), "no counts, nothing to carry");
        let mut silent = pod("web-1", 0);
        silent.visits = None;
        let unanswered = status(vec![
            pod("web-0", 4),
            silent.clone(),
            pod("web-green-0", 4),
            pod("web-green-1", 9),
        ]);
        assert!(
            !carried(Some(&unanswered), "web", "web-green", 2),
            "web-1 answers no count now: what it holds is not known to be carried"
        );
        let kwok = status(vec![
            PodVisits {
                name: "web-0".into(),
                ..silent.clone()
            },
            silent,
        ]);
        assert!(
            carried(Some(&kwok), "web", "web-green", 2),
            "pods that answer no count hold nothing to carry"
        );
        let mut kept = pod("web-2", 5);
        kept.retained = true;
        let scaled = status(vec![
            pod("web-0", 4),
            pod("web-1", 6),
            kept,
            pod("web-green-0", 4),
            pod("web-green-1", 9),
        ]);
        assert!(
            carried(Some(&scaled), "web", "web-green", 2),
            "web-2 was scaled away, not carried"
        );
    }

    #[test]
    fn the_serving_slot_is_the_one_the_service_selects() {
        let (blue, green) = (json!({}), json!({}));
        let pinned = service("web-green-2", None);
        let slots_of = |service, blue, green| slots("web", &Live { blue, green, service }).serving;
        assert_eq!(slots_of(Some(&pinned), Some(&blue), Some(&green)), "web-green");
        assert_eq!(slots_of(None, Some(&blue), Some(&green)), "web");
        assert_eq!(slots_of(None, None, Some(&green)), "web-green");
        let blue_pinned = service("web-2", None);
        assert_eq!(slots_of(Some(&blue_pinned), Some(&blue), Some(&green)), "web");
        assert_eq!(
            slots_of(Some(&blue_pinned), None, Some(&green)),
            "web",
            "web is re-created"
        );
    }

    /// A re-create of the serving `web-green` orphans its pods; the
    /// operator stops before creating it again. The next one creates
    /// `web-green` (which takes its pods and claims back), not `web`, and
    /// the Service keeps selecting the pods that hold the counts.
    #[test]
    fn a_serving_slot_missing_a_moment_still_serves() {
        let app = web("v2", AUTO);
        let blue = live_sts(&web("v1", AUTO), "web", "web-1", 2);
        let pinned = service("web-green-2", Some(&at(0)));
        for previous in [None, Some(&blue)] {
            let live = Live {
                blue: previous,
                green: None,
                service: Some(&pinned),
            };
            let (children, decision) = run(&app, live, None, &at(600));
            assert_eq!(children.stateful_set.metadata.name.as_deref(), Some("web-green"));
            assert_eq!(selector(&children.service).as_deref(), Some("web-green-2"));
            assert_eq!(decision.blue_green.unwrap().serving, "web-green");
            assert_eq!(
                decision.delete_statefulset, None,
                "web goes only once its counts are carried"
            );
        }
    }

    /// `web-green` just created again has no status until its controller
    /// sees it: the Service keeps the revision it selects, and does not
    /// select every pod of the app for that moment.
    #[test]
    fn a_serving_slot_created_again_keeps_its_pin_until_seen() {
        let app = web("v2", AUTO);
        let mut green = live_sts(&app, "web-green", "web-green-2", 0);
        green.as_object_mut().unwrap().remove("status");
        let pinned = service("web-green-2", Some(&at(0)));
        let live = Live {
            blue: None,
            green: Some(&green),
            service: Some(&pinned),
        };
        let (children, decision) = run(&app, live, None, &at(600));
        assert_eq!(selector(&children.service).as_deref(), Some("web-green-2"));
        assert_eq!(decision.blue_green.unwrap().serving, "web-green");
    }
}
