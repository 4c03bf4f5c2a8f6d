//! Visits rounds left out whole while everything is at rest.
//!
//! A round that left every app out (`quiet`: none of them changed since a
//! round that asked none of their pods and wrote nothing) did nothing but
//! look. The next one would look at the same things and do the same, unless
//! an app or a pod changed in its cache or a stream sent something. The
//! caches put a new `Arc` in place of an object each time it changes, and
//! list the same map the same way while none does: the same `Arc`s in the
//! same order are the same objects. The streams count what they send
//! (`follow::News`). So a round that finds the two lists and that count as
//! the last round left them, after a round that built no app, leaves itself
//! out: at rest it costs a look at two lists of pointers, not a walk of
//! every app and pod with its hashing and copying.

use std::sync::{Arc, Mutex, Weak};

use crate::{controller::runtime::slim_pod::SlimPod, resource::VisitCounterApp};

/// What a round that built no app looked at. Held weakly, as in `quiet`: a
/// replaced object is freed, but its address is not taken by another while
/// it is held.
struct Looked {
    apps: Vec<Weak<VisitCounterApp>>,
    pods: Vec<Weak<SlimPod>>,
    news: u64,
}

/// The last round, while it built no app.
#[derive(Default)]
pub struct Rest(Mutex<Option<Looked>>);

/// Whether `held` is a handle on `now` itself: the same object, so the
/// same version of it (caches replace an object's `Arc` when it changes).
pub(super) fn is_same<T>(held: &Weak<T>, now: &Arc<T>) -> bool {
    std::ptr::eq(held.as_ptr(), Arc::as_ptr(now))
}

/// Whether `now` holds the objects `held` does, in the same order.
fn same<T>(held: &[Weak<T>], now: &[Arc<T>]) -> bool {
    held.len() == now.len() && held.iter().zip(now).all(|(held, now)| is_same(held, now))
}

impl Rest {
    /// Whether this round may be left out: the last one built no app, and
    /// since it no app or pod changed (`apps`, `pods`, the caches' lists)
    /// and no stream sent anything (`news`).
    pub fn still(&self, apps: &[Arc<VisitCounterApp>], pods: &[Arc<SlimPod>], news: u64) -> bool {
        let last = self.0.lock().expect("last round");
        last.as_ref()
            .is_some_and(|l| l.news == news && same(&l.apps, apps) && same(&l.pods, pods))
    }

    /// Notes the round that looked at `apps`, `pods` and `news`: kept when
    /// it built no app, forgotten otherwise.
    pub fn note(&self, built: usize, apps: &[Arc<VisitCounterApp>], pods: &[Arc<SlimPod>], news: u64) {
        let looked = (built == 0).then(|| Looked {
            apps: apps.iter().map(Arc::downgrade).collect(),
            pods: pods.iter().map(Arc::downgrade).collect(),
            news,
        });
        *self.0.lock().expect("last round") = looked;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::tests::app;

    fn apps() -> Vec<Arc<VisitCounterApp>> {
        ["web", "shop"]
            .map(|name| Arc::new(app(name, serde_json::json!({}))))
            .to_vec()
    }

    fn pods() -> Vec<Arc<SlimPod>> {
        (0..3).map(|_| Arc::new(SlimPod::default())).collect()
    }

    #[test]
    fn a_round_is_left_out_only_after_one_that_built_no_app_and_while_nothing_changed() {
        let rest = Rest::default();
        let (apps, pods) = (apps(), pods());
        assert!(!rest.still(&apps, &pods, 7), "no round yet");
        rest.note(1, &apps, &pods, 7);
        assert!(!rest.still(&apps, &pods, 7), "the last round built an app");
        rest.note(0, &apps, &pods, 7);
        assert!(rest.still(&apps, &pods, 7));
        assert!(rest.still(&apps, &pods, 7), "and again, until something changes");
    }

    #[test]
    fn a_stream_s_news_an_app_or_a_pod_changed_added_or_gone_brings_the_round_back() {
        let rest = Rest::default();
        let (apps, pods) = (apps(), pods());
        rest.note(0, &apps, &pods, 7);
        assert!(!rest.still(&apps, &pods, 8), "a stream sent a count");
        let mut changed = pods.clone();
        changed[1] = Arc::new((*pods[1]).clone());
        assert!(!rest.still(&apps, &changed, 7), "a pod changed");
        assert!(!rest.still(&apps, &pods[..2], 7), "a pod gone");
        let mut more = pods.clone();
        more.push(Arc::new(SlimPod::default()));
        assert!(!rest.still(&apps, &more, 7), "a pod added");
        let edited = vec![apps[0].clone(), Arc::new((*apps[1]).clone())];
        assert!(!rest.still(&edited, &pods, 7), "an app changed");
        let reordered = vec![apps[1].clone(), apps[0].clone()];
        assert!(!rest.still(&reordered, &pods, 7), "listed another way: looked at again");
    }

    #[test]
    fn pods_replaced_in_the_cache_are_not_taken_for_those_noted() {
        let rest = Rest::default();
        let apps = apps();
        rest.note(0, &apps, &pods(), 7);
        // The noted pods are dropped from the cache; new ones cannot take
        // their addresses while the round holds them.
        for _ in 0..100 {
            assert!(!rest.still(&apps, &pods(), 7));
        }
    }

    #[test]
    fn a_round_that_builds_an_app_forgets_the_rest_noted_before() {
        let rest = Rest::default();
        let (apps, pods) = (apps(), pods());
        rest.note(0, &apps, &pods, 7);
        rest.note(2, &apps, &pods, 7);
        assert!(!rest.still(&apps, &pods, 7));
    }

    /// The poller's rounds themselves, with an app whose pods cannot be
    /// asked yet: nothing in them reaches a pod or the API server, so the
    /// client points nowhere.
    mod rounds {
        use kube::{
            ResourceExt,
            runtime::{reflector, watcher::Event},
        };

        use super::*;
        use crate::controller::{
            observe::visits::Poller,
            runtime::{metrics::Metrics, store::ChildStore},
        };

        /// A counter of the operator's metrics, as it serves them.
        fn counter(metrics: &Metrics, name: &str) -> u64 {
            let text = metrics.encode();
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("visitcounter_operator_{name}_total ")))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        }

        fn pending_pod(name: &str) -> SlimPod {
            let mut pod = SlimPod::default();
            pod.metadata.name = Some(name.into());
            pod.metadata.namespace = Some("shop".into());
            pod.instance = Some("web".into());
            pod
        }

        #[tokio::test]
        async fn a_round_rests_until_an_app_or_a_pod_changes() {
            let (apps, mut app_events) = reflector::store::<VisitCounterApp>();
            let pods = ChildStore::<SlimPod>::default();
            let web = app("web", serde_json::json!({}));
            app_events.apply_watcher_event(&Event::Apply(web.clone()));
            pods.apply(&Event::Apply(pending_pod("web-0")), SlimPod::clone);
            let metrics = Arc::new(Metrics::new());
            let nowhere = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
            let client = kube::Client::try_from(nowhere).unwrap();
            let poller = Poller::new(client, apps, pods.clone(), Arc::clone(&metrics));
            let rounds = async |n| {
                for _ in 0..n {
                    poller.poll_once().await;
                }
                (
                    counter(&metrics, "visits_apps_polled"),
                    counter(&metrics, "visits_rounds_at_rest"),
                )
            };
            // The first round builds web and finds it quiet, the second
            // builds nothing, and the third is left out.
            assert_eq!(rounds(3).await, (1, 1));
            assert_eq!(rounds(2).await, (1, 3), "at rest while nothing changes");

            let mut edited = web.clone();
            edited.labels_mut().insert("team".into(), "blue".into());
            app_events.apply_watcher_event(&Event::Apply(edited));
            assert_eq!(rounds(1).await, (2, 3), "an edited app is built again");
            assert_eq!(rounds(2).await, (2, 4), "then rests again");

            pods.apply(&Event::Apply(pending_pod("web-1")), SlimPod::clone);
            assert_eq!(rounds(3).await, (3, 5), "a new pod brings its app back, then it rests");
            pods.apply(&Event::Delete(pending_pod("web-1")), SlimPod::clone);
            assert_eq!(rounds(1).await, (4, 5), "and so does a pod gone");
        }
    }
}
