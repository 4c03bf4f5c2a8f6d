//! One visit count per app: every interval the operator takes each ready
//! pod's count, sums what answered, and writes `status.visits` when the
//! counts changed. A pod is asked for its `/visits` (by pod IP, on the app's
//! port) until it answered, then followed: its count comes on a stream it
//! sends (`follow`). A pod that does not answer is reported with the reason,
//! never counted as zero, and asked less often (`unanswered`). An app
//! nothing of which changed since a round that asked none of its pods and
//! wrote nothing is left out of the rounds (`quiet`).
//!
//! `visits_status` is pure; `poll_once` does the I/O.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, stream};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::Store,
};
use serde_json::json;

use super::{
    follow::{self, Followers, PodRef, Step},
    pod_http::{self, PodClient},
    pods::{is_ready, ordinal_of},
    quiet::QuietApps,
    rest::Rest,
    retained::keep_retained,
    unanswered::Unanswered,
};
use crate::{
    children::shadow_name,
    controller::{
        rollout::blue_green::previous_carry,
        runtime::{metrics::Metrics, slim_pod::SlimPod, store::ChildStore},
    },
    resource::{
        API_VERSION, KIND, PodVisits, RevisionVisits, ShadowVisits, UpdateStrategyType, VisitCounterApp, VisitsStatus,
    },
};

/// The field manager of `status.visits`, apart from the reconcile's, so the
/// two status writers never remove each other's fields.
pub const VISITS_FIELD_MANAGER: &str = "visitcounter-operator-visits";
/// How long one pod may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// The error a pod is reported with while it cannot be asked.
pub const NOT_ASKED: &str = "not ready or no IP yet, not asked";
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
    /// Tells a pod from another of the same name at the same address.
    pub uid: Option<String>,
}

/// The app's pods (or its shadow's: those of instance `name`), sorted by
/// name, with the address of each ready one.
pub fn pod_targets<'a>(
    app: &VisitCounterApp,
    name: &str,
    pods: impl IntoIterator<Item = &'a SlimPod>,
) -> Vec<PodTarget> {
    let namespace = app.metadata.namespace.as_deref();
    let mut targets: Vec<PodTarget> = pods
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == namespace && p.instance() == Some(name))
        .map(|pod| PodTarget {
            name: pod.name_any(),
            address: address_of(pod).map(str::to_owned),
            uid: pod.metadata.uid.clone(),
        })
        .collect();
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    targets
}

/// The pod's IP while it can be asked: ready, and not being deleted.
fn address_of(pod: &SlimPod) -> Option<&str> {
    pod.ip
        .as_deref()
        .filter(|_| is_ready(pod) && pod.metadata.deletion_timestamp.is_none())
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

/// The status of `pods`: `total` sums the counts, one per ordinal, and it is
/// `complete` when every pod has one. While a blue/green app runs two
/// StatefulSets, the pods of one ordinal (`web-0`, `web-green-0`) count
/// once, by the larger count: the newer pod takes in the other's visits
/// (`POST /carry`), so its count holds both once carried.
pub fn summed(pods: Vec<PodVisits>, observed_at: Option<Time>) -> VisitsStatus {
    let mut by_ordinal: HashMap<&str, i64> = HashMap::new();
    for pod in &pods {
        if let Some(visits) = pod.visits {
            let ordinal = pod.name.rsplit_once('-').map_or(pod.name.as_str(), |(_, n)| n);
            let most = by_ordinal.entry(ordinal).or_default();
            *most = (*most).max(visits);
        }
    }
    VisitsStatus {
        total: by_ordinal.values().sum(),
        complete: pods.iter().all(|p| p.visits.is_some()),
        pods,
        observed_at,
        by_revision: Vec::new(),
        shadow: None,
    }
}

/// The pods of each app instance label, by namespace (empty: none) and
/// instance.
type PodsOf<'a> = HashMap<&'a str, HashMap<&'a str, Vec<&'a Arc<SlimPod>>>>;

fn pods_by_instance(pods: &[Arc<SlimPod>]) -> PodsOf<'_> {
    let mut pods_of: PodsOf<'_> = HashMap::new();
    for pod in pods {
        if let Some(instance) = pod.instance() {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            pods_of
                .entry(namespace)
                .or_default()
                .entry(instance)
                .or_default()
                .push(pod);
        }
    }
    pods_of
}

/// The instances whose pods count for the app: its own, then its shadow's
/// (`shadow_name`), which counts apart (`true`).
fn instances_of(app: &VisitCounterApp) -> impl Iterator<Item = (String, bool)> {
    let name = app.name_any();
    // Only under Shadow: another app may be named `<name>-shadow`.
    let shadow = (app.spec.update_strategy.type_ == UpdateStrategyType::Shadow).then(|| shadow_name(&name));
    std::iter::once((name, false)).chain(shadow.map(|s| (s, true)))
}

/// The pods of the app's instance `instance`.
fn pods_of_instance<'m, 'a>(app: &VisitCounterApp, instance: &str, pods_of: &'m PodsOf<'a>) -> &'m [&'a Arc<SlimPod>] {
    let namespace = app.metadata.namespace.as_deref().unwrap_or_default();
    let pods = pods_of.get(namespace).and_then(|instances| instances.get(instance));
    pods.map_or(&[], |pods| pods.as_slice())
}

/// Every pod whose count the app's status holds (its shadow's too).
fn pods_counted<'a>(app: &VisitCounterApp, pods_of: &PodsOf<'a>) -> Vec<&'a Arc<SlimPod>> {
    instances_of(app)
        .flat_map(|(instance, _)| pods_of_instance(app, &instance, pods_of).iter().copied())
        .collect()
}

/// What to ask, over all apps: (app's index, port, pod, a shadow's pod).
/// The app's pods, then its shadow's, which count apart.
fn asks_of(apps: &[Arc<VisitCounterApp>], pods_of: &PodsOf<'_>) -> Vec<(usize, i32, PodTarget, bool)> {
    apps.iter()
        .enumerate()
        .flat_map(|(i, app)| {
            instances_of(app).flat_map(move |(instance, shadow)| {
                let own = pods_of_instance(app, &instance, pods_of).iter().map(|p| p.as_ref());
                pod_targets(app, &instance, own)
                    .into_iter()
                    .map(move |target| (i, app.spec.port, target, shadow))
            })
        })
        .collect()
}

/// Each app's ready pods' addresses, by pod name (its shadow's aside).
fn addresses_of(apps: usize, asks: &[(usize, i32, PodTarget, bool)]) -> Vec<HashMap<String, String>> {
    let mut addresses_of = vec![HashMap::new(); apps];
    for (i, _, target, _) in asks.iter().filter(|a| !a.3) {
        if let Some(address) = &target.address {
            addresses_of[*i].insert(target.name.clone(), address.clone());
        }
    }
    addresses_of
}

/// Whether each app's counts must be asked this round rather than taken
/// from its pods' streams: while its blue/green rollout carries counts from
/// pods that are still there (see `follow`).
fn afresh(apps: &[Arc<VisitCounterApp>], asks: &[(usize, i32, PodTarget, bool)]) -> Vec<bool> {
    let mut afresh = vec![false; apps.len()];
    for (i, _, target, _) in asks {
        if let Some(carry) = previous_carry(&apps[*i]) {
            afresh[*i] |= ordinal_of(&carry.from, &target.name).is_some();
        }
    }
    afresh
}

/// Each app's pods' revisions, by pod name.
fn revisions_of(apps: &[Arc<VisitCounterApp>], pods_of: &PodsOf<'_>) -> Vec<HashMap<String, String>> {
    apps.iter()
        .map(|app| {
            let own = pods_of_instance(app, &app.name_any(), pods_of).iter();
            own.filter_map(|p| Some((p.name_any(), p.revision()?.to_owned())))
                .collect()
        })
        .collect()
}

/// A shadow's visits from its pods' answers; `None` without shadow pods.
pub fn shadow_visits(answers: Vec<(String, Answer)>) -> Option<ShadowVisits> {
    if answers.is_empty() {
        return None;
    }
    let status = visits_status(answers, Time(Timestamp::now()));
    Some(ShadowVisits {
        total: status.total,
        complete: status.complete,
        pods: status.pods,
    })
}

/// Sums the counts by the revision each pod runs (`revision_of`, by pod
/// name), while the pods run more than one.
pub fn by_revision(status: &VisitsStatus, revision_of: &HashMap<String, String>) -> Vec<RevisionVisits> {
    let mut sums: BTreeMap<&str, RevisionVisits> = BTreeMap::new();
    for pod in status.pods.iter().filter(|p| !p.retained) {
        let Some(revision) = revision_of.get(&pod.name) else {
            continue;
        };
        let sum = sums.entry(revision).or_insert_with(|| RevisionVisits {
            revision: revision.clone(),
            ..RevisionVisits::default()
        });
        sum.visits += pod.visits.unwrap_or_default();
        sum.pods += 1;
    }
    match sums.len() {
        0 | 1 => Vec::new(),
        _ => sums.into_values().collect(),
    }
}

/// Whether two visit statuses give the same counts (their times aside).
pub fn same_counts(a: &VisitsStatus, b: &VisitsStatus) -> bool {
    a.total == b.total
        && a.complete == b.complete
        && a.pods == b.pods
        && a.by_revision == b.by_revision
        && a.shadow == b.shadow
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

/// One count to carry into a pod of a blue/green app (`POST /carry`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarryAsk {
    /// The pod that takes the count in, and its address.
    pub pod: String,
    pub address: String,
    pub key: String,
    pub visits: i64,
}

/// The counts to carry, as the app's `status.rollout.blueGreen.carry`
/// says: each answer of a pod of `from` goes to the ready pod of `to` of
/// its ordinal, under a key that names the pod it came from.
pub fn carries(
    app: &VisitCounterApp,
    answers: &[(String, Answer)],
    addresses: &HashMap<String, String>,
) -> Vec<CarryAsk> {
    let Some(carry) = previous_carry(app) else {
        return Vec::new();
    };
    answers
        .iter()
        .filter_map(|(name, answer)| {
            let ordinal = ordinal_of(&carry.from, name)?;
            let pod = format!("{}-{ordinal}", carry.to);
            Some(CarryAsk {
                address: addresses.get(&pod)?.clone(),
                pod,
                key: format!("{name}@{}", carry.key),
                visits: *answer.as_ref().ok()?,
            })
        })
        .collect()
}

/// Whether a blue/green app needs its counts written once after its last
/// switch even when they stand: the previous StatefulSet goes only once
/// counts asked after the switch show its pods' visits carried over
/// (`rollout::blue_green`).
pub fn due_after_a_switch(app: &VisitCounterApp, previous: Option<&VisitsStatus>) -> bool {
    let blue_green = app
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref()?.blue_green.as_ref());
    let Some(switched) = blue_green
        .filter(|b| b.carry.is_some())
        .and_then(|b| b.switched_at.as_ref())
    else {
        return false;
    };
    previous.is_some_and(|p| p.observed_at.as_ref().is_none_or(|asked| asked.0 <= switched.0))
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
    http: PodClient,
    apps: Store<VisitCounterApp>,
    pods: ChildStore<SlimPod>,
    metrics: Arc<Metrics>,
    /// Apps with a gauge, to drop the gauges of deleted apps.
    gauged: Mutex<HashSet<(String, String)>>,
    /// Pods that did not answer, asked less often.
    unanswered: Mutex<Unanswered>,
    /// Pods whose counts come on a stream, asked nothing while they do.
    followers: Followers,
    /// Apps left out of rounds while nothing of theirs changes.
    quiet: QuietApps,
    /// The last round, left out again while nothing at all changes.
    rest: Rest,
}

/// One pod's answer in a round.
struct Answered {
    /// The app's index in the round.
    app: usize,
    pod: String,
    answer: Answer,
    /// It could be asked (ready, with an IP).
    asked: bool,
    /// Its answer is the count its stream sent last: nothing was asked.
    streamed: bool,
    /// A pod of the app's shadow.
    shadow: bool,
}

/// A round's answers, by app's index.
struct ByApp {
    answers_of: Vec<Vec<(String, Answer)>>,
    shadow_answers_of: Vec<Vec<(String, Answer)>>,
    /// Some pod of the app could be asked.
    asked_any: Vec<bool>,
    /// No pod of the app was asked: each answer came on a stream, or the
    /// pod could not be asked (see `quiet`).
    quiet: Vec<bool>,
    /// The counts that came on streams, by pod name.
    streamed_of: Vec<HashMap<String, i64>>,
}

fn by_app(apps: usize, answers: Vec<Answered>) -> ByApp {
    let mut by_app = ByApp {
        answers_of: vec![Vec::new(); apps],
        shadow_answers_of: vec![Vec::new(); apps],
        asked_any: vec![false; apps],
        quiet: vec![true; apps],
        streamed_of: vec![HashMap::new(); apps],
    };
    for answered in answers {
        let i = answered.app;
        if let (true, Ok(count)) = (answered.streamed, &answered.answer) {
            by_app.streamed_of[i].insert(answered.pod.clone(), *count);
        }
        let answers = match answered.shadow {
            true => &mut by_app.shadow_answers_of[i],
            false => &mut by_app.answers_of[i],
        };
        answers.push((answered.pod, answered.answer));
        by_app.asked_any[i] |= answered.asked;
        by_app.quiet[i] &= !answered.asked || answered.streamed;
    }
    by_app
}

impl Poller {
    pub fn new(client: Client, apps: Store<VisitCounterApp>, pods: ChildStore<SlimPod>, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            http: pod_http::client(ANSWER_TIMEOUT),
            apps,
            pods,
            metrics,
            gauged: Mutex::default(),
            unanswered: Mutex::default(),
            followers: Followers::default(),
            quiet: QuietApps::default(),
            rest: Rest::default(),
        }
    }

    /// Follows at most `pods` pods at once (see `follow`); the others are
    /// asked each round.
    pub fn following_at_most(mut self, pods: usize) -> Self {
        self.followers = Followers::at_most(pods);
        self
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
        // Read before any count: a count sent after is news to the next round.
        let news = self.followers.heard();
        let pods = self.pods.state();
        let all = self.apps.state();
        if self.rest.still(&all, &pods, news) {
            self.metrics.rested_for_visits();
            return;
        }
        self.forget_gone(&all);
        let pods_of = pods_by_instance(&pods);
        let apps = self.quiet.due(
            &all,
            |app| pods_counted(app, &pods_of),
            |app, pod| self.count_of(app, pod),
        );
        self.rest.note(apps.len(), &all, &pods, news);
        self.metrics.polled_for_visits(apps.len());
        let asks = asks_of(&apps, &pods_of);
        let revisions_of = revisions_of(&apps, &pods_of);
        let addresses_of = addresses_of(apps.len(), &asks);
        let afresh = afresh(&apps, &asks);
        let answers = self.answers(asks, &afresh).await;
        self.unanswered.lock().expect("unanswered pods").end_round();
        self.metrics.followed_for_visits(self.followers.end_round());
        let ByApp {
            mut answers_of,
            mut shadow_answers_of,
            asked_any,
            mut quiet,
            streamed_of,
        } = by_app(apps.len(), answers);
        for ((app, answers), addresses) in apps.iter().zip(answers_of.iter_mut()).zip(&addresses_of) {
            self.carry(app, answers, addresses).await;
        }
        let asked_at = Time(Timestamp::now());
        let each = apps
            .iter()
            .zip(answers_of)
            .zip(asked_any)
            .zip(&revisions_of)
            .enumerate();
        for (i, (((app, answers), asked_any), revisions)) in each {
            let previous = app.status.as_ref().and_then(|s| s.visits.as_ref());
            let mut status = keep_retained(visits_status(answers, asked_at.clone()), previous, app);
            status.by_revision = by_revision(&status, revisions);
            status.shadow = shadow_visits(std::mem::take(&mut shadow_answers_of[i]));
            let (namespace, name) = (app.namespace().unwrap_or_default(), app.name_any());
            self.metrics
                .set_visits(&namespace, &name, status.total, status.complete);
            if !worth_writing(previous, &status, asked_any) && !due_after_a_switch(app, previous) {
                continue;
            }
            quiet[i] = false;
            if let Err(error) = self.write(app, &status).await {
                tracing::warn!(app = %name, %error, "cannot write status.visits");
            }
        }
        for ((app, _), streamed) in apps.iter().zip(quiet).zip(&streamed_of).filter(|((_, q), _)| *q) {
            let counted = pods_counted(app, &pods_of).into_iter();
            self.quiet
                .note(app, counted.map(|pod| (pod, streamed.get(&pod.name_any()).copied())));
        }
    }

    /// Each pod's answer, every pod of every app in one stream, so at most
    /// PARALLEL_ASKS are asked at once overall and a slow app does not hold
    /// up the others.
    async fn answers(&self, asks: Vec<(usize, i32, PodTarget, bool)>, afresh: &[bool]) -> Vec<Answered> {
        stream::iter(asks)
            .map(|(i, port, target, shadow)| async move {
                let (answer, streamed) = match &target.address {
                    None => (Err(NOT_ASKED.to_owned()), false),
                    Some(ip) => self.answer(&target, ip, port, afresh[i]).await,
                };
                Answered {
                    app: i,
                    asked: target.address.is_some(),
                    pod: target.name,
                    answer,
                    streamed,
                    shadow,
                }
            })
            .buffered(PARALLEL_ASKS)
            .collect()
            .await
    }

    /// The count the app's pod sent last on its stream, while it can be
    /// asked and is followed (see `quiet`).
    fn count_of(&self, app: &VisitCounterApp, pod: &SlimPod) -> Option<i64> {
        let (ip, uid) = (address_of(pod)?, pod.metadata.uid.as_deref()?);
        let port = app.spec.port;
        self.followers.count(PodRef { uid, ip, port })
    }

    /// Drops the visit gauges of the apps gone since the last round.
    fn forget_gone(&self, apps: &[Arc<VisitCounterApp>]) {
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
    }

    /// Carries the counts the app's blue/green rollout asks for (see
    /// [`carries`]); each pod that took one in answers with its new count.
    async fn carry(
        &self,
        app: &VisitCounterApp,
        answers: &mut [(String, Answer)],
        addresses: &HashMap<String, String>,
    ) {
        for ask in carries(app, answers, addresses) {
            let answer = self.carry_one(&ask, app.spec.port).await;
            match (answer, answers.iter_mut().find(|(name, _)| *name == ask.pod)) {
                (Ok(count), Some((_, answered))) => *answered = Ok(count),
                (Ok(_), None) => {}
                (Err(error), _) => tracing::warn!(pod = %ask.pod, %error, "cannot carry visits in"),
            }
        }
    }

    /// The count of the pod `name`: the last its stream sent while it is
    /// followed (unless `afresh`), else what it answers when asked. A pod
    /// skipped this round for not answering before (`Unanswered`) gives its
    /// last error. A pod that answered is followed from then on.
    async fn answer(&self, target: &PodTarget, ip: &str, port: i32, afresh: bool) -> (Answer, bool) {
        let pod = target.uid.as_deref().map(|uid| PodRef { uid, ip, port });
        // A pod without a uid (none the API server made) is asked each round.
        let step = pod.map_or(Step::Ask, |pod| self.followers.step(pod, afresh));
        if let Step::Use(count) = step {
            return (Ok(count), true);
        }
        (self.ask(&target.name, (ip, port), pod, step).await, false)
    }

    /// Asks the pod for its count (see `answer`), unless it is skipped
    /// while it does not answer.
    async fn ask(&self, name: &str, (ip, port): (&str, i32), pod: Option<PodRef<'_>>, step: Step) -> Answer {
        let address = format!("{ip}:{port}");
        if let Some(error) = self.unanswered.lock().expect("unanswered pods").skipped(name, &address) {
            return Err(error);
        }
        self.metrics.asked_for_visits();
        let answer = self.request(ip, port, "/visits", None).await;
        self.unanswered
            .lock()
            .expect("unanswered pods")
            .note(name, &address, &answer);
        if let (Step::AskThenFollow, Some(pod), Ok(_)) = (step, pod, &answer) {
            let (http, uri) = (self.http.clone(), pod_http::uri(ip, port, "/visits"));
            let news = self.followers.news();
            self.followers.follow(pod, |state| {
                tokio::spawn(follow::follow(http, uri, state, news)).abort_handle()
            });
        }
        answer
    }

    /// `POST /carry` to the pod that takes the count in; its new count.
    async fn carry_one(&self, ask: &CarryAsk, port: i32) -> Answer {
        let body = json!({"key": ask.key, "visits": ask.visits}).to_string();
        self.request(&ask.address, port, "/carry", Some(body)).await
    }

    /// A GET of `path` (or a POST of `body`) to a pod, answered with a count.
    async fn request(&self, ip: &str, port: i32, path: &str, body: Option<String>) -> Answer {
        let request = hyper::Request::builder()
            .uri(pod_http::uri(ip, port, path))
            .method(if body.is_some() { "POST" } else { "GET" })
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| format!("bad address {ip}: {e}"))?;
        let asked = async {
            let response = self
                .http
                .request(request)
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
                return Err(format!("answered {path} with {status}"));
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
    use k8s_openapi::api::core::v1::PodCondition;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::children::tests::app;

    fn pod(name: &str, instance: &str, ip: Option<&str>, ready: bool) -> SlimPod {
        SlimPod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            instance: Some(instance.to_owned()),
            ip: ip.map(str::to_owned),
            ready: Some(PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }),
            ..SlimPod::default()
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
        let targets = pod_targets(&web, "web", pods.iter());
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
    fn the_two_pods_of_an_ordinal_under_blue_green_count_once_by_the_larger() {
        let now = Time(Timestamp::from_second(10).unwrap());
        let status = visits_status(
            vec![
                ("web-0".into(), Ok(7)),
                ("web-1".into(), Ok(4)),
                ("web-green-0".into(), Ok(9)),
                ("web-green-1".into(), Err("not ready".into())),
            ],
            now,
        );
        assert_eq!(
            status.total, 13,
            "web-0's 7 are within web-green-0's 9; web-1's 4 alone"
        );
        assert!(!status.complete);
    }

    #[test]
    fn each_answer_of_the_carry_s_source_goes_to_the_ready_pod_of_its_ordinal() {
        let mut web = app("web", serde_json::json!({}));
        let carry: crate::resource::RolloutStatus = serde_json::from_value(serde_json::json!({
            "blueGreen": {"serving": "web", "previewService": "web-preview",
                          "carry": {"from": "web", "to": "web-green", "key": "0-abc"}}
        }))
        .unwrap();
        let answers = vec![
            ("web-0".to_owned(), Ok(7)),
            ("web-1".to_owned(), Err("not ready".to_owned())),
            ("web-2".to_owned(), Ok(3)),
            ("web-green-0".to_owned(), Ok(1)),
        ];
        let addresses = HashMap::from([("web-green-0".to_owned(), "10.0.0.5".to_owned())]);
        assert!(carries(&web, &answers, &addresses).is_empty(), "no carry in the status");
        web.status = Some(crate::resource::VisitCounterAppStatus {
            rollout: Some(carry),
            ..Default::default()
        });
        assert_eq!(
            carries(&web, &answers, &addresses),
            [CarryAsk {
                pod: "web-green-0".into(),
                address: "10.0.0.5".into(),
                key: "web-0@0-abc".into(),
                visits: 7,
            }],
            "web-1 did not answer, web-green-2 is not ready"
        );
    }

    #[test]
    fn a_blue_green_app_is_asked_afresh_while_the_pods_it_carries_from_are_there() {
        let mut web = app("web", serde_json::json!({}));
        let target = |name: &str| PodTarget {
            name: name.into(),
            address: Some("10.0.0.1".into()),
            uid: None,
        };
        let both = [
            (0, 8080, target("web-0"), false),
            (0, 8080, target("web-green-0"), false),
        ];
        assert_eq!(afresh(&[Arc::new(web.clone())], &both), [false], "no carry");
        let rollout: crate::resource::RolloutStatus = serde_json::from_value(serde_json::json!({
            "blueGreen": {"serving": "web-green", "previewService": "web-preview",
                          "carry": {"from": "web", "to": "web-green", "key": "0-abc"}}
        }))
        .unwrap();
        web.status = Some(crate::resource::VisitCounterAppStatus {
            rollout: Some(rollout),
            ..Default::default()
        });
        let web = [Arc::new(web)];
        assert_eq!(afresh(&web, &both), [true], "web-0 is still there");
        assert_eq!(
            afresh(&web, &[(0, 8080, target("web-green-0"), false)]),
            [false],
            "the previous pods are gone"
        );
    }

    #[test]
    fn an_app_is_quiet_when_no_pod_of_it_was_asked() {
        let answered = |app, pod: &str, asked, streamed, shadow| Answered {
            app,
            pod: pod.into(),
            answer: if asked { Ok(3) } else { Err(NOT_ASKED.into()) },
            asked,
            streamed,
            shadow,
        };
        let by = by_app(
            3,
            vec![
                answered(0, "web-0", true, true, false),
                answered(0, "web-1", false, false, false),
                answered(1, "api-0", true, true, false),
                answered(1, "api-shadow-0", true, false, true),
                answered(2, "db-0", false, false, false),
            ],
        );
        assert_eq!(by.quiet, [true, false, true], "api's shadow pod was asked");
        assert_eq!(by.streamed_of[0], HashMap::from([("web-0".to_owned(), 3)]));
        assert_eq!(by.asked_any, [true, true, false]);
        assert_eq!(by.answers_of[1].len(), 1);
        assert_eq!(by.shadow_answers_of[1][0].0, "api-shadow-0");
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
    fn counts_are_summed_by_revision_only_while_two_run() {
        let status = summed(
            vec![
                PodVisits {
                    name: "web-0".into(),
                    visits: Some(4),
                    ..PodVisits::default()
                },
                PodVisits {
                    name: "web-1".into(),
                    visits: Some(6),
                    ..PodVisits::default()
                },
                PodVisits {
                    name: "web-2".into(),
                    error: Some("not ready".into()),
                    ..PodVisits::default()
                },
            ],
            None,
        );
        let revisions = |of: &[(&str, &str)]| -> HashMap<String, String> {
            of.iter().map(|(p, r)| (p.to_string(), r.to_string())).collect()
        };
        let two = revisions(&[("web-0", "web-a"), ("web-1", "web-b"), ("web-2", "web-b")]);
        let sums = by_revision(&status, &two);
        let sums: Vec<(&str, i64, i32)> = sums.iter().map(|r| (r.revision.as_str(), r.visits, r.pods)).collect();
        assert_eq!(sums, [("web-a", 4, 1), ("web-b", 6, 2)]);
        let one = revisions(&[("web-0", "web-a"), ("web-1", "web-a"), ("web-2", "web-a")]);
        assert_eq!(by_revision(&status, &one), []);
    }

    #[test]
    fn a_shadow_counts_apart_and_only_while_it_has_pods() {
        assert_eq!(shadow_visits(Vec::new()), None);
        let shadow = shadow_visits(vec![
            ("web-shadow-0".into(), Ok(5)),
            ("web-shadow-1".into(), Err("not ready".into())),
        ])
        .unwrap();
        assert_eq!((shadow.total, shadow.complete, shadow.pods.len()), (5, false, 2));
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
