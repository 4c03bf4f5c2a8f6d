//! `spec.traffic`'s weights: while a rolling update is under way, the
//! app's HTTPRoute sends `canaryWeight` percent of requests to the new
//! template's pods and the rest to the current ones, whatever the number of
//! pods on each side (after Argo Rollouts' and Flagger's weighted canaries,
//! with a StatefulSet's two revisions in place of two ReplicaSets).
//!
//! `<app>-stable` selects the pods of the StatefulSet's current revision
//! and `<app>-canary` those of its update revision. The route splits only
//! while each side has a Ready pod to answer; otherwise, and at rest, it
//! sends every request to the app's own Service, which selects every pod
//! and is never re-pinned, so no request meets a Service with nothing
//! behind it (the last old pod gone before the StatefulSet's current
//! revision moves on, say). Pure: the reconcile writes what this pins.

use serde_json::Value;

use super::{PodView, blue_green::carried, pin};
use crate::controller::observe::pods::REVISION_LABEL;
use crate::{
    children::{
        Backend, Children, ab_header_match, canary_service_name, set_ab_rules, set_backends, stable_service_name,
    },
    resource::{AbMatch, TrafficBackend, TrafficStatus, VisitCounterApp},
};

/// Pins the version Services and sets the route's weights or A/B rules in
/// `children`, from the serving StatefulSet as it is live and the app's
/// pods; says where requests go. `None` without `spec.traffic`.
pub fn decide(
    app: &VisitCounterApp,
    children: &mut Children,
    serving: Option<&Value>,
    pods: &[PodView],
) -> Option<TrafficStatus> {
    let spec = app.spec.traffic.as_ref()?;
    let traffic = children.traffic.as_mut()?;
    let route = traffic.route["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The version Services listen on the app's port.
    let port = app.spec.port;
    // At rest, and until both sides can answer: the app's own Service.
    let mut backends = vec![TrafficBackend {
        service: route.clone(),
        weight: 100,
        matches: None,
    }];
    if let Some(versions) = traffic.versions.as_mut() {
        let revisions = Revisions::of(serving);
        pin(&mut versions.stable, revisions.current.as_deref());
        pin(&mut versions.canary, revisions.update.as_deref());
        let answers = |revision: &Option<String>| {
            pods.iter()
                .any(|p| p.ready && !p.terminating && p.revision.is_some() && p.revision == *revision)
        };
        let sides = Sides {
            rolling: revisions.rolling(),
            stable: answers(&revisions.current),
            canary: answers(&revisions.update),
        };
        if let Some(weight) = spec.canary_weight
            && let Some(split) = split(&route, port, weight, &sides)
        {
            set_backends(&mut traffic.route, &split);
            backends = split.into_iter().map(|b| status_of(b, None)).collect();
        }
        if let Some(ab) = &spec.ab_test
            && sides.rolling
            && sides.stable
            && sides.canary
        {
            let side = |service| Backend {
                service,
                port,
                weight: 100,
            };
            let (a, b) = (side(stable_service_name(&route)), side(canary_service_name(&route)));
            set_ab_rules(&mut traffic.route, ab_header_match(&ab.match_), a.clone(), b.clone());
            backends = vec![status_of(b, Some(described(&ab.match_))), status_of(a, None)];
        }
    }
    if let Some(weight) = spec.canary_weight
        && let Some(split) = blue_green_split(app, children, pods, weight)
    {
        if let Some(traffic) = children.traffic.as_mut() {
            set_backends(&mut traffic.route, &split);
        }
        backends = split.into_iter().map(|b| status_of(b, None)).collect();
    }
    Some(TrafficStatus { route, backends })
}

/// Under blue/green, before the switch: `weight` percent to the preview's
/// Service, the rest to the app's (pinned to the serving pods), once each
/// side has a Ready pod and every preview pod holds its serving pod's
/// count. The preview's first carry takes the larger count; a preview pod
/// that answered visits before it would lose them. After it, the poller
/// adds the serving pods' new visits to the preview pods', whose own add
/// up on top, and the app's count (each ordinal once, by the larger) holds
/// both.
fn blue_green_split(app: &VisitCounterApp, children: &Children, pods: &[PodView], weight: i32) -> Option<Vec<Backend>> {
    let preview = children.preview.as_ref()?;
    let preview_set = preview.stateful_set.as_ref()?;
    let revision_of = |service: &k8s_openapi::api::core::v1::Service| {
        service.spec.as_ref()?.selector.as_ref()?.get(REVISION_LABEL).cloned()
    };
    let (serving, new) = (revision_of(&children.service)?, revision_of(&preview.service)?);
    let answers = |revision: &str| {
        pods.iter()
            .any(|p| p.ready && !p.terminating && p.revision.as_deref() == Some(revision))
    };
    let visits = app.status.as_ref().and_then(|s| s.visits.as_ref());
    let counted = visits.is_some_and(|v| v.pods.iter().any(|p| p.visits.is_some()));
    let serving_set = children.stateful_set.metadata.name.as_deref()?;
    let carried = counted
        && carried(
            visits,
            serving_set,
            preview_set.metadata.name.as_deref()?,
            app.spec.replicas,
        );
    if serving == new || !answers(&serving) || !answers(&new) || !carried {
        return None;
    }
    let app_name = children.service.metadata.name.clone()?;
    let preview_name = preview.service.metadata.name.clone()?;
    // The app's Service on its own port; the preview's on the app's.
    let current = Backend {
        service: app_name,
        port: app.spec.service.port.unwrap_or(app.spec.port),
        weight: 100 - weight,
    };
    let preview = Backend {
        service: preview_name,
        port: app.spec.port,
        weight,
    };
    Some(match weight {
        0 => vec![current],
        100 => vec![preview],
        _ => vec![current, preview],
    })
}

fn status_of(backend: Backend, matches: Option<String>) -> TrafficBackend {
    TrafficBackend {
        service: backend.service,
        weight: backend.weight,
        matches,
    }
}

/// An A/B match as the status says it: `header X-Variant: b`, `cookie variant=b`.
fn described(ab: &AbMatch) -> String {
    match (&ab.header, &ab.cookie) {
        (Some(h), _) => format!("header {}: {}", h.name, h.value),
        (None, Some(c)) => format!("cookie {}={}", c.name, c.value),
        (None, None) => String::new(),
    }
}

/// Where a rolling update stands, for the split: whether one is under
/// way, and whether each side has a Ready pod.
struct Sides {
    rolling: bool,
    stable: bool,
    canary: bool,
}

/// The route's backends while a rolling update is under way: `weight`
/// percent to the canary, the rest to the stable pods, each side only
/// while it has a pod to answer. `None`: the app's own Service.
fn split(app: &str, port: i32, weight: i32, sides: &Sides) -> Option<Vec<Backend>> {
    if !sides.rolling {
        return None;
    }
    let side = |service: String, weight| Backend { service, port, weight };
    let stable = side(stable_service_name(app), 100 - weight);
    let canary = side(canary_service_name(app), weight);
    match (weight, sides.stable, sides.canary) {
        (0, true, _) => Some(vec![stable]),
        (100, _, true) => Some(vec![canary]),
        (1..=99, true, true) => Some(vec![stable, canary]),
        _ => None,
    }
}

/// The StatefulSet's two revisions, as its controller last said them.
struct Revisions {
    current: Option<String>,
    update: Option<String>,
}

impl Revisions {
    fn of(live: Option<&Value>) -> Self {
        let revision = |field: &str| live.and_then(|l| l["status"][field].as_str()).map(str::to_owned);
        Self {
            current: revision("currentRevision"),
            update: revision("updateRevision"),
        }
    }

    /// Whether pods of two revisions run: a rolling update under way.
    fn rolling(&self) -> bool {
        self.current.is_some() && self.update.is_some() && self.current != self.update
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use k8s_openapi::api::core::v1::Service;

    use super::*;
    use crate::children::{BuildSettings, desired_children, tests::app};
    use crate::controller::observe::pods::REVISION_LABEL;

    fn web(weight: Option<i32>) -> VisitCounterApp {
        let mut traffic = json!({"parentRef": {"name": "edge"}});
        if let Some(weight) = weight {
            traffic["canaryWeight"] = json!(weight);
        }
        app("web", json!({"replicas": 4, "traffic": traffic}))
    }

    fn sts(current: &str, update: &str) -> Value {
        json!({"status": {"currentRevision": current, "updateRevision": update}})
    }

    fn pod(revision: &str, ready: bool) -> PodView {
        PodView {
            revision: Some(revision.into()),
            ready,
            ..PodView::default()
        }
    }

    fn run(app: &VisitCounterApp, live: Option<&Value>, pods: &[PodView]) -> (Children, Option<TrafficStatus>) {
        let mut children = desired_children(app, &BuildSettings::default()).unwrap();
        let status = decide(app, &mut children, live, pods);
        (children, status)
    }

    fn selector(service: &Service) -> std::collections::BTreeMap<String, String> {
        service
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default()
    }

    fn shares(status: &TrafficStatus) -> Vec<(&str, i32)> {
        status.backends.iter().map(|b| (b.service.as_str(), b.weight)).collect()
    }

    #[test]
    fn without_traffic_nothing_is_decided() {
        let (children, status) = run(&app("web", json!({})), None, &[]);
        assert_eq!((children.traffic, status), (None, None));
    }

    #[test]
    fn without_a_weight_every_request_goes_to_the_apps_service() {
        let live = sts("web-1", "web-2");
        let (_, status) = run(&web(None), Some(&live), &[pod("web-2", true)]);
        assert_eq!(shares(&status.unwrap()), [("web", 100)]);
    }

    #[test]
    fn at_rest_the_apps_service_takes_every_request() {
        let live = sts("web-1", "web-1");
        let (children, status) = run(&web(Some(10)), Some(&live), &[pod("web-1", true)]);
        assert_eq!(shares(&status.unwrap()), [("web", 100)]);
        let versions = children.traffic.unwrap().versions.unwrap();
        assert_eq!(selector(&versions.stable)[REVISION_LABEL], "web-1");
        assert_eq!(selector(&versions.canary)[REVISION_LABEL], "web-1");
    }

    #[test]
    fn during_a_rolling_update_the_canary_gets_its_weight_whatever_its_pod_count() {
        let live = sts("web-1", "web-2");
        let pods = [
            pod("web-1", true),
            pod("web-1", true),
            pod("web-1", true),
            pod("web-2", true),
        ];
        let (children, status) = run(&web(Some(10)), Some(&live), &pods);
        assert_eq!(shares(&status.unwrap()), [("web-stable", 90), ("web-canary", 10)]);
        let traffic = children.traffic.unwrap();
        let refs = &traffic.route["spec"]["rules"][0]["backendRefs"];
        assert_eq!(refs[1]["name"], "web-canary");
        assert_eq!(refs[1]["weight"], 10);
        let versions = traffic.versions.unwrap();
        assert_eq!(selector(&versions.stable)[REVISION_LABEL], "web-1");
        assert_eq!(selector(&versions.canary)[REVISION_LABEL], "web-2");
    }

    #[test]
    fn no_split_until_each_side_has_a_ready_pod() {
        let live = sts("web-1", "web-2");
        let (_, status) = run(&web(Some(10)), Some(&live), &[pod("web-1", true), pod("web-2", false)]);
        assert_eq!(shares(&status.unwrap()), [("web", 100)], "no canary pod Ready yet");
        // The last old pod replaced, before the StatefulSet's current
        // revision moves on: nothing is left behind the stable Service.
        let (_, status) = run(&web(Some(10)), Some(&live), &[pod("web-2", true), pod("web-1", false)]);
        assert_eq!(shares(&status.unwrap()), [("web", 100)], "no stable pod Ready any more");
    }

    #[test]
    fn a_weight_of_0_keeps_every_request_on_the_stable_pods() {
        let live = sts("web-1", "web-2");
        let (_, status) = run(&web(Some(0)), Some(&live), &[pod("web-1", true), pod("web-2", true)]);
        assert_eq!(shares(&status.unwrap()), [("web-stable", 100)]);
    }

    #[test]
    fn a_weight_of_100_sends_everything_to_the_canary() {
        let live = sts("web-1", "web-2");
        let (_, status) = run(&web(Some(100)), Some(&live), &[pod("web-2", true)]);
        assert_eq!(shares(&status.unwrap()), [("web-canary", 100)]);
    }

    fn ab(matched: Value) -> VisitCounterApp {
        app(
            "web",
            json!({"replicas": 4, "traffic": {"parentRef": {"name": "edge"}, "abTest": {"match": matched}}}),
        )
    }

    #[test]
    fn an_ab_test_sends_the_matching_requests_to_b_and_the_rest_to_a() {
        let web = ab(json!({"header": {"name": "X-Variant", "value": "b"}}));
        let live = sts("web-1", "web-2");
        let (children, status) = run(&web, Some(&live), &[pod("web-1", true), pod("web-2", true)]);
        let status = status.unwrap();
        assert_eq!(shares(&status), [("web-canary", 100), ("web-stable", 100)]);
        assert_eq!(status.backends[0].matches.as_deref(), Some("header X-Variant: b"));
        assert_eq!(status.backends[1].matches, None);
        let traffic = children.traffic.unwrap();
        let rules = traffic.route["spec"]["rules"].as_array().unwrap();
        assert_eq!(
            rules[0]["matches"][0]["headers"],
            json!([{"type": "Exact", "name": "X-Variant", "value": "b"}])
        );
        assert_eq!(rules[0]["backendRefs"][0]["name"], "web-canary");
        assert_eq!(rules[1]["backendRefs"][0]["name"], "web-stable");
        let versions = traffic.versions.unwrap();
        assert_eq!(selector(&versions.canary)[REVISION_LABEL], "web-2");
    }

    #[test]
    fn an_ab_test_routes_by_the_apps_service_until_both_variants_answer() {
        let web = ab(json!({"cookie": {"name": "variant", "value": "b"}}));
        let live = sts("web-1", "web-2");
        let (children, status) = run(&web, Some(&live), &[pod("web-1", true), pod("web-2", false)]);
        assert_eq!(shares(&status.unwrap()), [("web", 100)]);
        assert_eq!(
            children.traffic.unwrap().route["spec"]["rules"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        // Promoted: one revision left, the test is over.
        let live = sts("web-2", "web-2");
        let (_, status) = run(&web, Some(&live), &[pod("web-2", true)]);
        assert_eq!(shares(&status.unwrap()), [("web", 100)]);
    }

    /// A blue/green app mid-rollout, as `blue_green::decide` leaves its
    /// children: the preview `web-green` running `web-green-2`, the app's
    /// Service pinned to `web-1`; and the counts of pod 0 of each.
    fn blue_green(weight: i32, counts: (i64, i64)) -> (VisitCounterApp, Children) {
        let mut web = app(
            "web",
            json!({"replicas": 1, "updateStrategy": {"type": "BlueGreen", "blueGreen": {"autoPromote": false}},
                   "service": {"port": 80}, "traffic": {"parentRef": {"name": "edge"}, "canaryWeight": weight}}),
        );
        web.status = Some(
            serde_json::from_value(json!({"visits": {"total": counts.0, "complete": true, "pods": [
            {"name": "web-0", "visits": counts.0}, {"name": "web-green-0", "visits": counts.1}]}}))
            .unwrap(),
        );
        let mut children = desired_children(&web, &BuildSettings::default()).unwrap();
        assert_eq!(
            children.traffic.as_ref().unwrap().versions,
            None,
            "the app's and the preview's Services"
        );
        let preview = children.preview.as_mut().unwrap();
        let mut green = children.stateful_set.clone();
        green.metadata.name = Some("web-green".into());
        preview.stateful_set = Some(green);
        pin(&mut preview.service, Some("web-green-2"));
        pin(&mut children.service, Some("web-1"));
        (web, children)
    }

    #[test]
    fn under_blue_green_the_preview_gets_its_weight_once_it_holds_the_counts() {
        let pods = [pod("web-1", true), pod("web-green-2", true)];
        let (web, mut children) = blue_green(10, (7, 7));
        let status = decide(&web, &mut children, None, &pods).unwrap();
        assert_eq!(shares(&status), [("web", 90), ("web-preview", 10)]);
        let refs = &children.traffic.unwrap().route["spec"]["rules"][0]["backendRefs"];
        assert_eq!(
            (refs[0]["port"].as_i64(), refs[1]["port"].as_i64()),
            (Some(80), Some(8080))
        );
        // Before the first carry, a preview pod that answered would lose
        // its visits to it: every request stays on the serving pods.
        let (web, mut children) = blue_green(10, (7, 0));
        assert_eq!(
            shares(&decide(&web, &mut children, None, &pods).unwrap()),
            [("web", 100)]
        );
        // No Ready preview pod: nothing to send.
        let (web, mut children) = blue_green(10, (7, 7));
        let unready = [pod("web-1", true), pod("web-green-2", false)];
        assert_eq!(
            shares(&decide(&web, &mut children, None, &unready).unwrap()),
            [("web", 100)]
        );
        let (web, mut children) = blue_green(100, (7, 9));
        assert_eq!(
            shares(&decide(&web, &mut children, None, &pods).unwrap()),
            [("web-preview", 100)]
        );
    }

    #[test]
    fn before_the_statefulset_has_revisions_the_version_services_select_every_pod() {
        let (children, _) = run(&web(Some(10)), None, &[]);
        let versions = children.traffic.unwrap().versions.unwrap();
        assert!(!selector(&versions.stable).contains_key(REVISION_LABEL));
    }
}
