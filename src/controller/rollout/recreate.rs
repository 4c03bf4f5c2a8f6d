//! `Recreate` (the report's strategy 2): every pod of the old template is
//! gone before any pod of the new one starts, all at once rather than one by
//! one. The claims are kept, so each pod's count continues.
//!
//! Underneath, the StatefulSet is `OnDelete`, so it replaces no pod on its
//! own. When the template changes, the operator writes it with `replicas: 0`
//! and deletes every pod at once; once no pod of the app is left, it writes
//! the spec's replicas again, and the StatefulSet controller creates the
//! pods from the new template. A pod that runs another revision than the
//! StatefulSet's update revision (a template changed while the operator was
//! away) starts the same. The app has no ready pod meanwhile: the status
//! measures how long (`rollout.downtime`), from the moment the StatefulSet
//! carries in `RECREATE_SINCE_ANNOTATION`, so that the measure survives a
//! status write put off and a restart of the operator.

use k8s_openapi::{api::apps::v1::StatefulSet, apimachinery::pkg::apis::meta::v1::Time};
use serde_json::Value;

use super::{
    Decision, PodView, seen_by_its_controller,
    template::{Template, whole_seconds},
};

/// The annotation on the StatefulSet with when the operator started the
/// last recreate (RFC 3339): where its downtime is measured from.
pub const RECREATE_SINCE_ANNOTATION: &str = "visitcounter.dev/recreate-since";

/// Decides, and changes `desired` for it: the template's hash, `replicas:
/// 0` while the old pods go, and when the last recreate started (`now` for
/// one that starts).
pub fn decide(desired: &mut StatefulSet, live: Option<&Value>, pods: &[PodView], now: &Time) -> Decision {
    let template = Template::stamp(desired);
    let annotations = desired.metadata.annotations.get_or_insert_default();
    let Some(live) = live else {
        return Decision::default();
    };
    let live_since = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(RECREATE_SINCE_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|t| t.parse().ok())
        .map(Time);
    let scaled_to_zero = live.pointer("/spec/replicas").and_then(Value::as_i64) == Some(0);
    let recreating = if template.is_new_to(live) {
        !pods.is_empty()
    } else if !seen_by_its_controller(live) {
        // Until its controller has seen the last write, the revisions say
        // nothing: a scale to zero stays as it is.
        scaled_to_zero && !pods.is_empty()
    } else {
        // A pod going away on its own (a scale-down, an eviction) is no
        // reason to recreate: only a pod of another revision is.
        let update = live.pointer("/status/updateRevision").and_then(Value::as_str);
        pods.iter().any(|p| p.revision.as_deref() != update)
    };
    // A recreate under way keeps the moment it started; a new one starts now.
    let since = match (recreating, live_since) {
        (true, Some(since)) if scaled_to_zero => Some(since),
        // Whole seconds, as the status writes times: the status's measure
        // of this start is then the same start, and reconciles within the
        // second before the cache shows the write stamp the same.
        (true, _) => Some(whole_seconds(now)),
        (false, since) => since,
    };
    if let Some(since) = &since {
        annotations.insert(RECREATE_SINCE_ANNOTATION.into(), since.0.to_string());
    }
    if !recreating {
        return Decision {
            recreate_since: since,
            ..Decision::default()
        };
    }
    if let Some(spec) = desired.spec.as_mut() {
        spec.replicas = Some(0);
    }
    Decision {
        recreate_since: since,
        delete: pods.iter().filter(|p| !p.terminating).cloned().collect(),
        progress: Some((
            "Recreating",
            format!(
                "Recreate: {} of the old pods left; the pods of the new template start once every one is gone",
                pods.len()
            ),
        )),
        ..Decision::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::children::{BuildSettings, desired_children, tests::app};
    use crate::controller::rollout::template::TEMPLATE_HASH_ANNOTATION;

    fn built(image: &str) -> StatefulSet {
        let app = app(
            "web",
            json!({"replicas": 3, "image": image, "updateStrategy": {"type": "Recreate"}}),
        );
        desired_children(&app, &BuildSettings::default()).unwrap().stateful_set
    }

    /// `desired` as the API server holds it once written and seen, with
    /// `replicas` and the update revision `revision`.
    fn live(desired: &StatefulSet, replicas: i64, revision: &str) -> Value {
        let mut live = serde_json::to_value(desired).unwrap();
        live["spec"]["replicas"] = json!(replicas);
        live["metadata"]["generation"] = json!(4);
        live["status"] = json!({"observedGeneration": 4, "updateRevision": revision, "replicas": replicas});
        live
    }

    fn pod(ordinal: u32, revision: &str) -> PodView {
        PodView {
            name: format!("web-{ordinal}"),
            uid: format!("uid-{ordinal}"),
            revision: Some(revision.into()),
            ready: true,
            ready_since: None,
            terminating: false,
        }
    }

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn annotation<'a>(sts: &'a StatefulSet, key: &str) -> Option<&'a str> {
        sts.metadata.annotations.as_ref()?.get(key).map(String::as_str)
    }

    fn replicas(sts: &StatefulSet) -> Option<i32> {
        sts.spec.as_ref().and_then(|s| s.replicas)
    }

    /// The StatefulSet as it was last written for image `v1`.
    fn written_v1() -> Value {
        let mut v1 = built("v1");
        decide(&mut v1, None, &[], &at(0));
        live(&v1, 3, "web-1")
    }

    #[test]
    fn a_new_template_scales_to_zero_and_deletes_every_pod_at_once() {
        let mut desired = built("v2");
        let pods = [pod(0, "web-1"), pod(1, "web-1"), pod(2, "web-1")];
        let decision = decide(&mut desired, Some(&written_v1()), &pods, &at(100));
        assert_eq!(replicas(&desired), Some(0));
        assert_eq!(decision.delete, pods);
        assert!(decision.progress.unwrap().1.contains("3 of the old pods left"));
        assert_eq!(decision.recreate_since, Some(at(100)), "it starts now");
        assert_eq!(
            annotation(&desired, RECREATE_SINCE_ANNOTATION),
            Some(at(100).0.to_string().as_str()),
            "the StatefulSet carries when"
        );
    }

    #[test]
    fn a_recreate_under_way_keeps_when_it_started_and_so_does_the_statefulset_after_it() {
        let mut v2 = built("v2");
        decide(&mut v2, Some(&written_v1()), &[pod(0, "web-1")], &at(100));
        let scaled_down = live(&v2, 0, "web-2");
        let mut desired = built("v2");
        let decision = decide(&mut desired, Some(&scaled_down), &[pod(0, "web-1")], &at(130));
        assert_eq!(decision.recreate_since, Some(at(100)));
        let mut desired = built("v2");
        let done = decide(&mut desired, Some(&scaled_down), &[], &at(140));
        assert_eq!((done.recreate_since, done.progress), (Some(at(100)), None));
        assert_eq!(
            annotation(&desired, RECREATE_SINCE_ANNOTATION),
            Some(at(100).0.to_string().as_str())
        );
    }

    #[test]
    fn the_same_template_changes_nothing_and_a_scale_goes_through() {
        let mut desired = built("v1");
        let pods = [pod(0, "web-1"), pod(1, "web-1"), pod(2, "web-1")];
        assert_eq!(
            decide(&mut desired, Some(&written_v1()), &pods, &at(100)),
            Decision::default()
        );
        assert_eq!(replicas(&desired), Some(3));
    }

    #[test]
    fn zero_stays_until_every_old_pod_is_gone_then_the_spec_replicas_come_back() {
        let mut v2 = built("v2");
        decide(&mut v2, None, &[], &at(0));
        let scaled_down = live(&v2, 0, "web-2");
        let terminating = PodView {
            terminating: true,
            ..pod(1, "web-1")
        };
        let mut desired = built("v2");
        let decision = decide(
            &mut desired,
            Some(&scaled_down),
            std::slice::from_ref(&terminating),
            &at(100),
        );
        assert_eq!(replicas(&desired), Some(0));
        assert!(decision.delete.is_empty(), "a pod already going is not deleted again");
        let mut desired = built("v2");
        assert_eq!(
            decide(&mut desired, Some(&scaled_down), &[], &at(100)),
            Decision::default()
        );
        assert_eq!(replicas(&desired), Some(3), "no pod left: the new pods start");
    }

    #[test]
    fn before_its_controller_saw_the_write_a_scale_to_zero_holds() {
        let mut v2 = built("v2");
        decide(&mut v2, None, &[], &at(0));
        let mut written = live(&v2, 0, "web-1");
        written["metadata"]["generation"] = json!(5);
        let mut desired = built("v2");
        decide(&mut desired, Some(&written), &[pod(0, "web-1")], &at(100));
        assert_eq!(replicas(&desired), Some(0));
    }

    #[test]
    fn a_pod_going_away_on_its_own_starts_no_recreate() {
        let mut desired = built("v1");
        let evicted = PodView {
            terminating: true,
            ..pod(2, "web-1")
        };
        let pods = [pod(0, "web-1"), pod(1, "web-1"), evicted];
        assert_eq!(
            decide(&mut desired, Some(&written_v1()), &pods, &at(100)),
            Decision::default()
        );
        assert_eq!(replicas(&desired), Some(3));
    }

    #[test]
    fn a_recreate_starts_on_a_whole_second_as_the_status_keeps_times() {
        let mut desired = built("v2");
        let now = Time(k8s_openapi::jiff::Timestamp::from_millisecond(100_750).unwrap());
        let decision = decide(&mut desired, Some(&written_v1()), &[pod(0, "web-1")], &now);
        assert_eq!(decision.recreate_since, Some(at(100)));
    }

    #[test]
    fn a_pod_of_an_old_revision_starts_a_recreate() {
        let mut desired = built("v1");
        let pods = [pod(0, "web-1"), pod(1, "web-0")];
        let decision = decide(&mut desired, Some(&written_v1()), &pods, &at(100));
        assert_eq!(replicas(&desired), Some(0));
        assert_eq!(decision.delete.len(), 2, "the pods of the update revision go too");
    }

    #[test]
    fn switching_to_recreate_restarts_no_pod_of_the_same_template() {
        let mut desired = built("v1");
        let mut before = written_v1();
        before["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(TEMPLATE_HASH_ANNOTATION);
        let pods = [pod(0, "web-1")];
        assert_eq!(
            decide(&mut desired, Some(&before), &pods, &at(100)),
            Decision::default()
        );
        let mut desired = built("v2");
        assert_eq!(
            decide(&mut desired, Some(&before), &pods, &at(100)).delete,
            pods,
            "another template does"
        );
    }

    #[test]
    fn a_new_app_starts_its_pods() {
        let mut desired = built("v1");
        assert_eq!(decide(&mut desired, None, &[], &at(100)), Decision::default());
        assert_eq!(replicas(&desired), Some(3));
        let annotations = desired.metadata.annotations.unwrap();
        assert_eq!(annotations[TEMPLATE_HASH_ANNOTATION].len(), 16);
        assert!(
            !annotations.contains_key(RECREATE_SINCE_ANNOTATION),
            "no recreate, no start"
        );
    }
}
