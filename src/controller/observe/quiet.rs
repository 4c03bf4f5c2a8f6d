//! Apps a visits round leaves out: those nothing touched since a round that
//! asked none of their pods and wrote nothing.
//!
//! Such a round took each ready pod's count from its stream (`follow`) and
//! found the status already said what it would write. The next round would
//! build the same status again, unless the app changed, one of its pods
//! changed, or a stream sent a count other than the one it took (each app
//! notes its own: an app's shadow pods may also be another app's). The
//! caches put a new `Arc` in place of an object each time it changes, so
//! the `Arc`s that round looked at tell: the same `Arc`, the same version.
//! A pod whose count is asked, or that is skipped while it does not answer
//! (`unanswered`), keeps its app in every round.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use kube::ResourceExt;

use super::rest::is_same;
use crate::{controller::runtime::slim_pod::SlimPod, resource::VisitCounterApp};

/// What a quiet round looked at for one app: the versions of the app and of
/// its pods, each pod with the count its stream had sent (`None`: it could
/// not be asked). Held weakly: an object replaced in its cache is freed,
/// while its address cannot be taken by another until this is dropped.
struct Seen {
    app: Weak<VisitCounterApp>,
    pods: Vec<(Weak<SlimPod>, Option<i64>)>,
}

/// Whether `app` and `pods` are the versions `seen` holds (pods in any
/// order), each pod's count (`count_of`) still the one that round took.
fn unchanged(
    seen: &Seen,
    app: &Arc<VisitCounterApp>,
    pods: &[&Arc<SlimPod>],
    count_of: impl Fn(&SlimPod) -> Option<i64>,
) -> bool {
    is_same(&seen.app, app)
        && seen.pods.len() == pods.len()
        && pods.iter().all(|pod| {
            seen.pods
                .iter()
                .any(|(held, count)| is_same(held, pod) && count_of(pod) == *count)
        })
}

/// The quiet apps, by uid.
#[derive(Default)]
pub struct QuietApps {
    by_uid: Mutex<HashMap<String, Seen>>,
}

impl QuietApps {
    /// The apps this round must look at, of `apps`: those not quiet, and
    /// those changed since (they or their pods, `pods_of`, or the count a
    /// pod's stream sent last, `count_of`). The others stay quiet; the rest
    /// are forgotten until a round finds them quiet again.
    pub fn due<'a>(
        &self,
        apps: &[Arc<VisitCounterApp>],
        pods_of: impl Fn(&VisitCounterApp) -> Vec<&'a Arc<SlimPod>>,
        count_of: impl Fn(&VisitCounterApp, &SlimPod) -> Option<i64>,
    ) -> Vec<Arc<VisitCounterApp>> {
        let mut by_uid = self.by_uid.lock().expect("quiet apps");
        let mut kept = HashMap::new();
        let mut due = Vec::new();
        for app in apps {
            let quiet = app.uid().and_then(|uid| Some((uid.clone(), by_uid.remove(&uid)?)));
            match quiet {
                Some((uid, seen)) if unchanged(&seen, app, &pods_of(app), |pod| count_of(app, pod)) => {
                    kept.insert(uid, seen);
                }
                _ => due.push(Arc::clone(app)),
            }
        }
        *by_uid = kept;
        due
    }

    /// Notes that this round asked none of `app`'s pods and wrote nothing
    /// for it: each of its pods, with the count taken from its stream.
    pub fn note<'a>(&self, app: &Arc<VisitCounterApp>, pods: impl Iterator<Item = (&'a Arc<SlimPod>, Option<i64>)>) {
        if let Some(uid) = app.uid() {
            let seen = Seen {
                app: Arc::downgrade(app),
                pods: pods.map(|(pod, count)| (Arc::downgrade(pod), count)).collect(),
            };
            self.by_uid.lock().expect("quiet apps").insert(uid, seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::tests::app;

    fn with_uid(name: &str) -> Arc<VisitCounterApp> {
        let mut app = app(name, serde_json::json!({}));
        app.metadata.uid = Some(format!("uid-{name}"));
        Arc::new(app)
    }

    fn pod(name: &str) -> Arc<SlimPod> {
        let mut pod = SlimPod::default();
        pod.metadata.name = Some(name.into());
        Arc::new(pod)
    }

    fn names(apps: &[Arc<VisitCounterApp>]) -> Vec<String> {
        apps.iter().map(|a| a.name_any()).collect()
    }

    /// Every pod's stream last sent 4.
    fn four(_: &VisitCounterApp, _: &SlimPod) -> Option<i64> {
        Some(4)
    }

    #[test]
    fn an_app_is_left_out_only_while_it_and_its_pods_are_the_versions_noted() {
        let quiet = QuietApps::default();
        let (web, other) = (with_uid("web"), with_uid("other"));
        let (web_0, web_1) = (pod("web-0"), pod("web-1"));
        let pods = vec![&web_0, &web_1];
        let apps = || vec![web.clone(), other.clone()];
        assert_eq!(names(&quiet.due(&apps(), |_| pods.clone(), four)), ["web", "other"]);
        quiet.note(&web, [(&web_1, Some(4)), (&web_0, Some(4))].into_iter());
        assert_eq!(
            names(&quiet.due(&apps(), |_| pods.clone(), four)),
            ["other"],
            "the same versions, in another order"
        );
        let web_0_changed = Arc::new((*web_0).clone());
        let changed = vec![&web_0_changed, &web_1];
        assert_eq!(
            names(&quiet.due(&apps(), |_| changed.clone(), four)),
            ["web", "other"],
            "web-0 changed"
        );
        assert_eq!(
            names(&quiet.due(&apps(), |_| pods.clone(), four)),
            ["web", "other"],
            "forgotten once due, until noted again"
        );
    }

    #[test]
    fn a_changed_app_another_pod_or_another_count_makes_it_due() {
        let quiet = QuietApps::default();
        let web = with_uid("web");
        let web_0 = pod("web-0");
        let web_1 = pod("web-1");
        let due = |app: &Arc<VisitCounterApp>, pods: Vec<&Arc<SlimPod>>, count: Option<i64>| {
            quiet.note(&web, [(&web_0, Some(4))].into_iter());
            names(&quiet.due(std::slice::from_ref(app), |_| pods.clone(), |_, _| count))
        };
        assert!(due(&web, vec![&web_0], Some(4)).is_empty(), "nothing changed");
        let edited = Arc::new((*web).clone());
        assert_eq!(due(&edited, vec![&web_0], Some(4)), ["web"], "the app changed");
        assert_eq!(due(&web, vec![&web_0, &web_1], Some(4)), ["web"], "a pod more");
        assert_eq!(due(&web, vec![], Some(4)), ["web"], "a pod less");
        assert_eq!(due(&web, vec![&web_0], Some(5)), ["web"], "its stream sent 5");
        assert_eq!(due(&web, vec![&web_0], None), ["web"], "no longer followed");
    }

    #[test]
    fn two_apps_counting_one_pod_each_compare_with_the_count_they_took() {
        let quiet = QuietApps::default();
        let (web, shadow) = (with_uid("web"), with_uid("web-shadow"));
        let shared = pod("web-shadow-0");
        quiet.note(&web, [(&shared, Some(6))].into_iter());
        quiet.note(&shadow, [(&shared, Some(5))].into_iter());
        let due = quiet.due(&[web, shadow], |_| vec![&shared], |_, _| Some(6));
        assert_eq!(names(&due), ["web-shadow"], "it took 5, before the stream sent 6");
    }

    #[test]
    fn gone_apps_and_apps_without_a_uid_are_not_kept() {
        let quiet = QuietApps::default();
        let web = with_uid("web");
        quiet.note(&web, std::iter::empty());
        assert!(quiet.due(&[], |_| Vec::new(), four).is_empty());
        assert_eq!(
            names(&quiet.due(std::slice::from_ref(&web), |_| Vec::new(), four)),
            ["web"],
            "forgotten once gone"
        );
        let mut nameless = app("web", serde_json::json!({}));
        nameless.metadata.uid = None;
        let nameless = Arc::new(nameless);
        quiet.note(&nameless, std::iter::empty());
        assert_eq!(names(&quiet.due(&[nameless], |_| Vec::new(), four)), ["web"]);
    }
}
