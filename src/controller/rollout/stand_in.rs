//! A stand-in for a serving StatefulSet that is missing a moment.
//!
//! A re-create (a new `podManagementPolicy`) deletes the StatefulSet with
//! its pods, claims and ControllerRevisions orphaned, then creates it
//! again. An operator stopped between the two finds the pods running and
//! no StatefulSet. Blue/green and shadow keep the serving template as it
//! is live; with nothing live they would write the app's new template, and
//! the StatefulSet created again would roll the pods users reach to it,
//! with no preview, no switch and no promotion. The ControllerRevision of
//! the pods' revision, orphaned with them, still holds the template: the
//! stand-in is the StatefulSet at rest on it.
//!
//! Pure: the reconcile reads the pods and the revision.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::PodView;
use crate::controller::observe::pods::ordinal_of;

/// The revision most of the serving StatefulSet's pods run: `None` when no
/// pod of it is left (a new app, or one deleted with its pods).
pub fn pods_revision(serving: &str, pods: &[PodView]) -> Option<String> {
    let prefix = format!("{serving}-");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    pods.iter()
        .filter(|p| !p.terminating && ordinal_of(serving, &p.name).is_some())
        .filter_map(|p| p.revision.as_deref())
        .filter(|r| r.strip_prefix(&prefix).is_some_and(|hash| !hash.contains('-')))
        .for_each(|r| *counts.entry(r).or_default() += 1);
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(r, _)| r.to_owned())
}

/// The StatefulSet `serving` at rest on `revision`, which its pods run:
/// that revision as current and update revision, and the template of its
/// ControllerRevision (as JSON) when it was found. No template hash: what
/// the template was written from is not known, so it is compared by
/// content.
pub fn at_rest(serving: &str, revision: &str, controller_revision: Option<&Value>) -> Value {
    let mut live = json!({
        "metadata": {"name": serving},
        "status": {"currentRevision": revision, "updateRevision": revision},
    });
    if let Some(template) = controller_revision.and_then(template_of) {
        live["spec"] = json!({"template": template});
    }
    live
}

/// The pod template a StatefulSet's ControllerRevision holds.
fn template_of(controller_revision: &Value) -> Option<Value> {
    let mut template = controller_revision["data"]["spec"]["template"].clone();
    template.as_object_mut()?.remove("$patch");
    Some(template)
}

/// Whether pods of the app's second slot (`green`) are left and none of
/// its own name's: with both StatefulSets missing, the second one served
/// (an app that left blue/green keeps being served by it).
pub fn only_second_slot_pods(app: &str, green: &str, pods: &[PodView]) -> bool {
    let left = |slot: &str| pods_revision(slot, pods).is_some();
    left(green) && !left(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, revision: &str, terminating: bool) -> PodView {
        PodView {
            name: name.into(),
            revision: Some(revision.into()),
            terminating,
            ..PodView::default()
        }
    }

    #[test]
    fn the_revision_most_serving_pods_run() {
        let pods = [
            pod("web-green-0", "web-green-7f", false),
            pod("web-green-1", "web-green-7f", false),
            pod("web-green-2", "web-green-5c", false),
            pod("web-0", "web-9a", false),
        ];
        assert_eq!(pods_revision("web-green", &pods).as_deref(), Some("web-green-7f"));
        assert_eq!(
            pods_revision("web", &pods).as_deref(),
            Some("web-9a"),
            "not web-green's"
        );
        assert_eq!(pods_revision("web", &pods[..3]), None, "no pod of web");
        let leaving = [pod("web-0", "web-9a", true)];
        assert_eq!(pods_revision("web", &leaving), None, "a pod being deleted is not kept");
    }

    #[test]
    fn the_template_of_the_revision_at_rest() {
        let revision = json!({
            "metadata": {"name": "web-green-7f"},
            "data": {"spec": {"template": {"$patch": "replace", "spec": {"containers": [{"image": "v1"}]}}}},
        });
        let live = at_rest("web-green", "web-green-7f", Some(&revision));
        assert_eq!(
            live["spec"]["template"],
            json!({"spec": {"containers": [{"image": "v1"}]}})
        );
        assert_eq!(live["status"]["updateRevision"], "web-green-7f");
        assert_eq!(live["status"]["currentRevision"], "web-green-7f");
        let unknown = at_rest("web-green", "web-green-7f", None);
        assert_eq!(unknown["spec"], Value::Null, "no template when its revision is gone");
        assert_eq!(unknown["status"]["updateRevision"], "web-green-7f");
    }

    #[test]
    fn only_the_second_slot_left() {
        let green = [pod("web-green-0", "web-green-7f", false)];
        assert!(only_second_slot_pods("web", "web-green", &green));
        let both = [pod("web-green-0", "web-green-7f", false), pod("web-0", "web-9a", false)];
        assert!(!only_second_slot_pods("web", "web-green", &both));
        assert!(!only_second_slot_pods("web", "web-green", &[]));
    }
}
