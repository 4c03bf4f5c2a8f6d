//! Shadow (`updateStrategy.type: Shadow`): a new template runs first in a
//! StatefulSet of its own, `<app>-shadow`, with its own claims, and the
//! app's HTTPRoute sends it a copy of every request (Gateway API
//! `RequestMirror`). Users only ever get the serving pods' answers; the
//! shadow's visits are counted apart (`status.visits.shadow`).
//!
//! - The serving StatefulSet's template stays as it is while the shadow
//!   runs, so nothing users reach changes.
//! - The app's `visitcounter.dev/promote` annotation naming the shadow's
//!   revision promotes it: the serving StatefulSet rolls to the new template
//!   (a rolling update, each pod keeping its claim and its count) and the
//!   shadow is deleted.
//! - A spec reverted to the serving template drops the shadow: it is
//!   deleted. Its claims follow the retention policy (`whenDeleted`).
//!
//! Pure: the reconcile writes what this builds and deletes what it names.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::{
    Decision,
    blue_green::{PROMOTE_ANNOTATION, freeze_template},
    seen_by_its_controller,
    template::Template,
};
use crate::{
    children::{Children, shadow_name, shadow_statefulset},
    controller::status::conditions::SHADOW_STARTING,
    resource::{UpdateStrategyType, VisitCounterApp},
};

/// `Progressing`'s reason once every shadow pod is Ready and the shadow
/// waits for its promotion.
pub const SHADOW_RUNNING: &str = "ShadowRunning";

/// Whether the app needs the shadow decision: it is a shadow app, or its
/// shadow StatefulSet is still there.
pub fn applies(app: &VisitCounterApp, shadow: Option<&Value>) -> bool {
    app.spec.update_strategy.type_ == UpdateStrategyType::Shadow || shadow.is_some()
}

/// Decides the app's shadow: fills `children` (the shadow StatefulSet, the
/// route's mirror, the serving template kept) and says what to delete and
/// report. `serving` and `shadow` are the StatefulSets as cached.
pub fn decide(
    app: &VisitCounterApp,
    children: &mut Children,
    serving: Option<&Value>,
    shadow: Option<&Value>,
    _now: &Time,
) -> Decision {
    let name = app.metadata.name.clone().unwrap_or_default();
    // Only a shadow app's template is stamped here: blue/green stamps and
    // freezes its own, and a stamp after its freeze would rewrite the hash.
    let template = (app.spec.update_strategy.type_ == UpdateStrategyType::Shadow)
        .then(|| Template::stamp(&mut children.stateful_set));
    let promoted = template
        .as_ref()
        .is_some_and(|t| promoted(app, settled_revision(shadow, t)));
    let mut decision = Decision::default();
    let Some(template) = template.filter(|t| serving.is_some_and(|s| t.is_new_to(s)) && !promoted) else {
        if let Some(live) = shadow {
            let uid = live["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
            decision.delete_statefulset = Some((shadow_name(&name), uid));
            // Reasons of their own: Events of one reason are one series,
            // which keeps its first message.
            decision.deleted_because = Some(match promoted {
                true => (
                    "ShadowPromoted",
                    format!(
                        "deleted StatefulSet {}: its template was promoted and the app's StatefulSet rolls to it; its claims follow the retention policy",
                        shadow_name(&name)
                    ),
                ),
                false => (
                    "ShadowDropped",
                    format!(
                        "deleted StatefulSet {}: the app's template no longer differs from the serving one, or the app is no longer under Shadow; its claims follow the retention policy",
                        shadow_name(&name)
                    ),
                ),
            });
        }
        return decision;
    };
    let new = shadow_statefulset(&children.stateful_set, &name);
    freeze_template(&mut children.stateful_set, serving);
    if let Some(second) = children.shadow.as_mut() {
        second.stateful_set = Some(new);
    }
    if let Some(traffic) = children.traffic.as_mut() {
        mirror(&mut traffic.route, &shadow_name(&name), app.spec.port);
    }
    decision.progress = Some(progress(app, &name, shadow, &template));
    decision
}

/// The route's every request copied to the shadow's Service.
pub fn mirror(route: &mut Value, service: &str, port: i32) {
    if let Some(rules) = route["spec"]["rules"].as_array_mut() {
        for rule in rules {
            rule["filters"] = json!([{
                "type": "RequestMirror",
                "requestMirror": {"backendRef": {"group": "", "kind": "Service", "name": service, "port": port}},
            }]);
        }
    }
}

/// The shadow's revision once it runs `template` on every pod, as its
/// controller has seen it: the one a promotion may name. A promotion of a
/// revision the shadow has since moved on from (the spec changed again)
/// promotes nothing.
fn settled_revision<'a>(shadow: Option<&'a Value>, template: &Template) -> Option<&'a str> {
    let shadow = shadow?;
    let status = &shadow["status"];
    let settled = !template.is_new_to(shadow)
        && seen_by_its_controller(shadow)
        && status["currentRevision"] == status["updateRevision"];
    status["updateRevision"].as_str().filter(|_| settled)
}

fn progress(app: &VisitCounterApp, name: &str, shadow: Option<&Value>, template: &Template) -> (&'static str, String) {
    let shadow_name = shadow_name(name);
    let revision = settled_revision(shadow, template);
    let available = shadow
        .filter(|_| revision.is_some())
        .and_then(|s| s["status"]["availableReplicas"].as_i64())
        .unwrap_or(0);
    match revision {
        Some(revision) if available >= i64::from(app.spec.replicas) => (
            SHADOW_RUNNING,
            format!(
                "the new template runs in StatefulSet {shadow_name}, every pod Ready, and gets a copy of every request; users get the answers of StatefulSet {name}: to promote it, annotate the app {PROMOTE_ANNOTATION}={revision} --overwrite"
            ),
        ),
        _ => (
            SHADOW_STARTING,
            format!(
                "{available} of {} pods of the new template are available in StatefulSet {shadow_name}; users get the answers of StatefulSet {name}",
                app.spec.replicas
            ),
        ),
    }
}

fn promoted(app: &VisitCounterApp, revision: Option<&str>) -> bool {
    let annotation = app
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROMOTE_ANNOTATION));
    revision.is_some() && annotation.map(String::as_str) == revision
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::{
        children::{BuildSettings, INSTANCE_LABEL, desired_children, tests::app},
        controller::rollout::blue_green::tests::{image, live_sts},
    };

    fn web(image: &str, promote: Option<&str>) -> VisitCounterApp {
        let mut web = app(
            "web",
            json!({"replicas": 2, "image": image, "updateStrategy": {"type": "Shadow"},
                   "traffic": {"parentRef": {"name": "edge"}}}),
        );
        if let Some(revision) = promote {
            web.metadata.annotations = Some([(PROMOTE_ANNOTATION.to_owned(), revision.to_owned())].into());
        }
        web
    }

    fn run(app: &VisitCounterApp, serving: Option<&Value>, shadow: Option<&Value>) -> (Children, Decision) {
        let mut children = desired_children(app, &BuildSettings::default()).unwrap();
        let now = Time(Timestamp::from_second(1_800_000_000).unwrap());
        let decision = decide(app, &mut children, serving, shadow, &now);
        (children, decision)
    }

    /// The serving StatefulSet missing a moment (a re-create cut short):
    /// its stand-in, read from its pods' ControllerRevision, keeps the
    /// template users get and the shadow running.
    #[test]
    fn a_missing_serving_statefulset_is_stood_in_for() {
        let serving = live_sts(&web("v1", None), "web", "web-1", 2);
        let revision = json!({"metadata": {"name": "web-1"},
                              "data": {"spec": {"template": serving["spec"]["template"].clone()}}});
        let stand_in = super::super::stand_in::at_rest("web", "web-1", Some(&revision));
        let shadow = live_sts(&web("v2", None), "web-shadow", "web-shadow-2", 2);
        let (children, decision) = run(&web("v2", None), Some(&stand_in), Some(&shadow));
        assert_eq!(image(&children.stateful_set), "v1", "the serving template is kept");
        assert_eq!(decision.delete_statefulset, None, "the shadow stays");
        assert_eq!(decision.progress.map(|p| p.0), Some(SHADOW_RUNNING));
    }

    #[test]
    fn a_new_template_runs_in_the_shadow_and_the_route_mirrors_to_it() {
        let serving = live_sts(&web("v1", None), "web", "web-1", 2);
        let (children, decision) = run(&web("v2", None), Some(&serving), None);
        assert_eq!(image(&children.stateful_set), "v1", "the serving template is kept");
        let shadow = children.shadow.unwrap().stateful_set.expect("the shadow StatefulSet");
        assert_eq!(shadow.metadata.name.as_deref(), Some("web-shadow"));
        assert_eq!(image(&shadow), "v2");
        assert_eq!(
            shadow.spec.unwrap().template.metadata.unwrap().labels.unwrap()[INSTANCE_LABEL],
            "web-shadow"
        );
        let route = children.traffic.unwrap().route;
        assert_eq!(
            route["spec"]["rules"][0]["filters"],
            json!([{"type": "RequestMirror", "requestMirror": {"backendRef": {"group": "", "kind": "Service", "name": "web-shadow", "port": 8080}}}])
        );
        assert_eq!(
            route["spec"]["rules"][0]["backendRefs"][0]["name"], "web",
            "answers come from the app"
        );
        assert_eq!(decision.progress.unwrap().0, SHADOW_STARTING);
        assert_eq!(decision.delete_statefulset, None);
    }

    #[test]
    fn a_ready_shadow_waits_for_promotion_and_says_how() {
        let serving = live_sts(&web("v1", None), "web", "web-1", 2);
        let shadow = live_sts(&web("v2", None), "web-shadow", "web-shadow-7", 2);
        let (_, decision) = run(&web("v2", None), Some(&serving), Some(&shadow));
        let (reason, words) = decision.progress.unwrap();
        assert_eq!(reason, SHADOW_RUNNING);
        assert!(words.contains("visitcounter.dev/promote=web-shadow-7"), "{words}");
        // Not all Ready yet: still starting, under the progress deadline.
        let starting = live_sts(&web("v2", None), "web-shadow", "web-shadow-7", 1);
        let (_, decision) = run(&web("v2", None), Some(&serving), Some(&starting));
        assert_eq!(decision.progress.unwrap().0, SHADOW_STARTING);
    }

    #[test]
    fn promotion_rolls_the_app_to_the_template_and_deletes_the_shadow() {
        let serving = live_sts(&web("v1", None), "web", "web-1", 2);
        let shadow = live_sts(&web("v2", None), "web-shadow", "web-shadow-7", 2);
        let (children, decision) = run(&web("v2", Some("web-shadow-7")), Some(&serving), Some(&shadow));
        assert_eq!(image(&children.stateful_set), "v2");
        assert_eq!(children.shadow.unwrap().stateful_set, None);
        assert_eq!(children.traffic.unwrap().route["spec"]["rules"][0].get("filters"), None);
        assert_eq!(
            decision.delete_statefulset,
            Some(("web-shadow".into(), "uid-web-shadow".into()))
        );
        assert_eq!(decision.deleted_because.unwrap().0, "ShadowPromoted");
        // An annotation naming another revision promotes nothing.
        let (children, _) = run(&web("v2", Some("web-shadow-6")), Some(&serving), Some(&shadow));
        assert_eq!(image(&children.stateful_set), "v1");
        // Nor one naming the shadow's revision once the spec moved on: the
        // shadow gets the newer template first.
        let (children, decision) = run(&web("v3", Some("web-shadow-7")), Some(&serving), Some(&shadow));
        assert_eq!(image(&children.stateful_set), "v1");
        assert_eq!(image(&children.shadow.unwrap().stateful_set.unwrap()), "v3");
        assert_eq!(decision.delete_statefulset, None);
        // Nor while the shadow's controller has not seen its template.
        let mut rolling = shadow.clone();
        rolling["status"]["currentRevision"] = json!("web-shadow-6");
        let (children, decision) = run(&web("v2", Some("web-shadow-7")), Some(&serving), Some(&rolling));
        assert_eq!(image(&children.stateful_set), "v1");
        assert_eq!(decision.progress.unwrap().0, SHADOW_STARTING);
    }

    #[test]
    fn a_reverted_template_or_another_strategy_drops_the_shadow() {
        let serving = live_sts(&web("v1", None), "web", "web-1", 2);
        let shadow = live_sts(&web("v2", None), "web-shadow", "web-shadow-7", 2);
        let (children, decision) = run(&web("v1", None), Some(&serving), Some(&shadow));
        assert_eq!(children.shadow.unwrap().stateful_set, None);
        assert_eq!(decision.delete_statefulset.unwrap().0, "web-shadow");
        assert_eq!(decision.deleted_because.unwrap().0, "ShadowDropped");
        let rolling = app("web", json!({"replicas": 2, "image": "v2"}));
        assert!(applies(&rolling, Some(&shadow)));
        let (children, decision) = run(&rolling, Some(&serving), Some(&shadow));
        assert_eq!(image(&children.stateful_set), "v2");
        assert_eq!(decision.delete_statefulset.unwrap().0, "web-shadow");
        assert!(!applies(&rolling, None));
    }

    #[test]
    fn a_new_app_starts_with_its_template_and_no_shadow() {
        let (children, decision) = run(&web("v1", None), None, None);
        assert_eq!(image(&children.stateful_set), "v1");
        assert_eq!(children.shadow.unwrap().stateful_set, None);
        assert_eq!(decision, Decision::default());
    }
}
