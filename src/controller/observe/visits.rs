//! One visit count per app: every interval the operator asks each ready pod
//! for its `/visits` (by pod IP, on the app's port), sums what answered, and
//! writes `status.visits` when the counts changed. A pod that does not answer
//! is reported with the reason, never counted as zero.
//!
//! `visits_status` is pure; `poll_once` does the I/O.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, stream};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{Client as HttpClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::Store,
};
use serde_json::json;

use super::{pods::is_ready, retained::keep_retained};
use crate::{
    children::INSTANCE_LABEL,
    controller::runtime::{cache::SlimPod, metrics::Metrics},
    resource::{API_VERSION, KIND, PodVisits, VisitCounterApp, VisitsStatus},
};

/// The field manager of `status.visits`, apart from the reconcile's, so the
/// two status writers never remove each other's fields.
pub const VISITS_FIELD_MANAGER: &str = "visitcounter-operator-visits";
/// How long one pod may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Pods asked at once, over all apps.
const PARALLEL_ASKS: usize = 16;

/// What one pod said, or why it could not be asked.
pub type Answer = Result<i64, String>;

/// A pod of an app, as far as counting its visits goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTarget {
    pub name: String,
    /// `None` when the pod is not ready or has no IP yet.
    pub address: Option<String>,
}

/// The app's pods, sorted by name, with the address of each ready one.
pub fn pod_targets<'a>(app: &VisitCounterApp, pods: impl IntoIterator<Item = &'a Pod>) -> Vec<PodTarget> {
    let name = app.name_any();
    let namespace = app.namespace();
    let mut targets: Vec<PodTarget> = pods
        .into_iter()
        .filter(|p| p.namespace() == namespace && p.labels().get(INSTANCE_LABEL) == Some(&name))
        .map(|pod| {
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
            PodTarget {
                name: pod.name_any(),
                address: ip.filter(|_| is_ready(pod) && pod.metadata.deletion_timestamp.is_none()),
            }
        })
        .collect();
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    targets
}

/// The status from each pod's answer (pods in name order).
pub fn visits_status(answers: Vec<(String, Answer)>, now: Time) -> VisitsStatus {
    let pods = answers
        .into_iter()
        .map(|(name, answer)| match answer {
            Ok(visits) => PodVisits {
                name,
                visits: Some(visits),
                error: None,
                retained: false,
            },
            Err(error) => PodVisits {
                name,
                visits: None,
                error: Some(error),
                retained: false,
            },
        })
        .collect();
    summed(pods, Some(now))
}

/// The status of `pods`: `total` sums the counts, and it is `complete` when
/// every pod has one.
pub fn summed(pods: Vec<PodVisits>, observed_at: Option<Time>) -> VisitsStatus {
    VisitsStatus {
        total: pods.iter().filter_map(|p| p.visits).sum(),
        complete: pods.iter().all(|p| p.visits.is_some()),
        pods,
        observed_at,
    }
}

/// Whether two visit statuses give the same counts (their times aside).
pub fn same_counts(a: &VisitsStatus, b: &VisitsStatus) -> bool {
    a.total == b.total && a.complete == b.complete && a.pods == b.pods
}

/// Whether `new` is worth a status write: it says something `previous` did
/// not. An app none of whose pods could be asked yet (none ready, as while
/// its first pods start) has no count to report: until one is asked, its
/// status gets no `visits` at all rather than a list of pods not asked.
pub fn worth_writing(previous: Option<&VisitsStatus>, new: &VisitsStatus, asked_any: bool) -> bool {
    match previous {
        Some(previous) => !same_counts(previous, new),
        None => asked_any,
    }
}

/// Parses the body of `GET /visits`: `{"visits": N}` with N a whole number.
pub fn parse_answer(body: &[u8]) -> Answer {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("answered /visits with something that is not JSON: {e}"))?;
    value["visits"]
        .as_i64()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("answered /visits without a whole count: {value}"))
}

/// Asks every app's pods once, and writes the statuses that changed.
pub struct Poller {
    client: Client,
    http: HttpClient<HttpConnector, Empty<Bytes>>,
    apps: Store<VisitCounterApp>,
    pods: Store<SlimPod>,
    metrics: Arc<Metrics>,
    /// Apps with a gauge, to drop the gauges of deleted apps.
    gauged: Mutex<HashSet<(String, String)>>,
}

impl Poller {
    pub fn new(client: Client, apps: Store<VisitCounterApp>, pods: Store<SlimPod>, metrics: Arc<Metrics>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(ANSWER_TIMEOUT));
        Self {
            client,
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
            apps,
            pods,
            metrics,
            gauged: Mutex::default(),
        }
    }

    /// Polls every `interval` until the future is dropped.
    pub async fn run(self, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.poll_once().await;
        }
    }

    pub async fn poll_once(&self) {
        let pods = self.pods.state();
        let apps = self.apps.state();
        let now: HashSet<(String, String)> = apps
            .iter()
            .map(|a| (a.namespace().unwrap_or_default(), a.name_any()))
            .collect();
        let gone: Vec<_> = {
            let mut gauged = self.gauged.lock().expect("gauged apps");
            let gone = gauged.difference(&now).cloned().collect();
            *gauged = now;
            gone
        };
        for (namespace, name) in gone {
            self.metrics.forget_visits(&namespace, &name);
        }
        // Every pod of every app in one stream, so at most PARALLEL_ASKS are
        // asked at once overall and a slow app does not hold up the others.
        let mut pods_of: HashMap<(Option<String>, &str), Vec<&Pod>> = HashMap::new();
        for pod in pods.iter().map(|p| &p.0) {
            if let Some(instance) = pod.labels().get(INSTANCE_LABEL) {
                pods_of.entry((pod.namespace(), instance)).or_default().push(pod);
            }
        }
        let asks: Vec<(usize, i32, PodTarget)> = apps
            .iter()
            .enumerate()
            .flat_map(|(i, app)| {
                let name = app.name_any();
                let own = pods_of.get(&(app.namespace(), name.as_str())).into_iter().flatten();
                pod_targets(app, own.copied())
                    .into_iter()
                    .map(move |target| (i, app.spec.port, target))
            })
            .collect();
        let answers: Vec<(usize, String, Answer, bool)> = stream::iter(asks)
            .map(|(i, port, target)| async move {
                let answer = match &target.address {
                    None => Err("not ready or no IP yet, not asked".to_owned()),
                    Some(ip) => self.ask_one(ip, port).await,
                };
                (i, target.name, answer, target.address.is_some())
            })
            .buffered(PARALLEL_ASKS)
            .collect()
            .await;
        let mut answers_of: Vec<Vec<(String, Answer)>> = vec![Vec::new(); apps.len()];
        let mut asked_any = vec![false; apps.len()];
        for (i, name, answer, asked) in answers {
            answers_of[i].push((name, answer));
            asked_any[i] |= asked;
        }
        let asked_at = Time(Timestamp::now());
        for ((app, answers), asked_any) in apps.iter().zip(answers_of).zip(asked_any) {
            let previous = app.status.as_ref().and_then(|s| s.visits.as_ref());
            let status = keep_retained(visits_status(answers, asked_at.clone()), previous, app);
            self.metrics.set_visits(
                &app.namespace().unwrap_or_default(),
                &app.name_any(),
                status.total,
                status.complete,
            );
            if !worth_writing(previous, &status, asked_any) {
                continue;
            }
            if let Err(error) = self.write(app, &status).await {
                tracing::warn!(app = %app.name_any(), %error, "cannot write status.visits");
            }
        }
    }

    async fn ask_one(&self, ip: &str, port: i32) -> Answer {
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        };
        let uri: hyper::Uri = format!("http://{host}:{port}/visits")
            .parse()
            .map_err(|e| format!("bad address {ip}: {e}"))?;
        let asked = async {
            let response = self
                .http
                .get(uri)
                .await
                .map_err(|e| format!("unreachable at {ip}:{port}: {e}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("broke off its answer: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("answered /visits with {status}"));
            }
            parse_answer(&body)
        };
        tokio::time::timeout(ANSWER_TIMEOUT, asked)
            .await
            .unwrap_or_else(|_| Err(format!("did not answer within {ANSWER_TIMEOUT:?} at {ip}:{port}")))
    }

    async fn write(&self, app: &VisitCounterApp, status: &VisitsStatus) -> Result<(), kube::Error> {
        let api: Api<VisitCounterApp> = Api::namespaced(self.client.clone(), &app.namespace().unwrap_or_default());
        let patch = json!({"apiVersion": API_VERSION, "kind": KIND, "status": {"visits": status}});
        self.metrics.wrote(KIND);
        api.patch_status(
            &app.name_any(),
            &PatchParams::apply(VISITS_FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use kube::api::ObjectMeta;

    use super::*;
    use crate::children::tests::app;

    fn pod(name: &str, instance: &str, ip: Option<&str>, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: Some([(INSTANCE_LABEL.to_owned(), instance.to_owned())].into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                pod_ip: ip.map(str::to_owned),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn only_the_apps_ready_pods_with_an_ip_are_asked() {
        let mut web = app("web", serde_json::json!({}));
        web.metadata.namespace = Some("default".into());
        let pods = [
            pod("web-1", "web", Some("10.0.0.2"), true),
            pod("web-0", "web", Some("10.0.0.1"), true),
            pod("web-2", "web", Some("10.0.0.3"), false),
            pod("web-3", "web", None, true),
            pod("other-0", "other", Some("10.0.0.9"), true),
        ];
        let targets = pod_targets(&web, pods.iter());
        let got: Vec<(&str, Option<&str>)> = targets
            .iter()
            .map(|t| (t.name.as_str(), t.address.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("web-0", Some("10.0.0.1")),
                ("web-1", Some("10.0.0.2")),
                ("web-2", None),
                ("web-3", None)
            ]
        );
    }

    #[test]
    fn a_pod_without_an_answer_is_left_out_of_the_total_not_counted_as_zero() {
        let now = Time(Timestamp::from_second(10).unwrap());
        let status = visits_status(
            vec![
                ("web-0".into(), Ok(5)),
                ("web-1".into(), Err("unreachable".into())),
                ("web-2".into(), Ok(7)),
            ],
            now.clone(),
        );
        assert_eq!(status.total, 12);
        assert!(!status.complete);
        assert_eq!(status.pods[1].visits, None);
        assert_eq!(status.pods[1].error.as_deref(), Some("unreachable"));
        let all = visits_status(vec![("web-0".into(), Ok(5)), ("web-2".into(), Ok(7))], now);
        assert!(all.complete);
        assert_eq!(all.total, 12);
    }

    #[test]
    fn nothing_is_written_before_a_pod_can_be_asked() {
        let not_asked = visits_status(vec![("web-0".into(), Err("not ready".into()))], Time(Timestamp::now()));
        assert!(!worth_writing(None, &not_asked, false), "no pod asked, nothing to say");
        assert!(worth_writing(None, &not_asked, true), "a pod asked that did not answer");
        let counted = visits_status(vec![("web-0".into(), Ok(3))], Time(Timestamp::now()));
        assert!(
            worth_writing(Some(&counted), &not_asked, false),
            "a count that went away is news"
        );
        assert!(!worth_writing(Some(&counted), &counted.clone(), true));
    }

    #[test]
    fn counts_compare_without_their_time() {
        let at = |s| Time(Timestamp::from_second(s).unwrap());
        let a = visits_status(vec![("web-0".into(), Ok(5))], at(10));
        assert!(same_counts(&a, &visits_status(vec![("web-0".into(), Ok(5))], at(20))));
        assert!(!same_counts(&a, &visits_status(vec![("web-0".into(), Ok(6))], at(20))));
    }

    #[test]
    fn answers_are_whole_counts() {
        assert_eq!(parse_answer(br#"{"visits": 42}"#), Ok(42));
        assert!(parse_answer(br#"{"visits": "42"}"#).is_err());
        assert!(parse_answer(br#"{"visits": -1}"#).is_err());
        assert!(parse_answer(b"<html>").is_err());
    }
}
