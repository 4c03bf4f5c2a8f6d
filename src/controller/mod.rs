//! The controller. For one `VisitCounterApp` a reconcile runs
//! `validate -> build -> plan -> apply -> status`:
//!
//! - validate (pure): the CRD's own rules, for objects stored before them;
//! - build (pure, `crate::build`): the desired children;
//! - plan (pure, [`plan`]): each child against its cached live object;
//! - apply (I/O, [`apply`]): a dry run of every change, then server-side
//!   apply in order (ConfigMap, Services, StatefulSet);
//! - status (pure computation in [`status`], one write when it changed).
//!
//! Children are read from watch caches, never fetched, so a converged app
//! costs no request on a resync.

pub mod apply;
pub mod cache;
pub mod error;
pub mod metrics;
pub mod old_configs;
pub mod plan;
pub mod pod_creation;
mod reconcile;
pub mod rollout;
pub mod status;
pub mod storage;
pub mod visits;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Service, ServiceAccount},
};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::Config as ControllerConfig,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;

use cache::{Compact, SlimPod};
pub use error::Error;
pub use metrics::Metrics;

use crate::{
    admission::Admission,
    build::{BuildSettings, INSTANCE_LABEL, MANAGED_BY},
    resource::{VisitCounterApp, VisitCounterAppStatus},
};

/// The field manager of every write, and the Events' reporting controller.
pub const FIELD_MANAGER: &str = "visitcounter-operator";

/// How long a write of ours may take to show in the watch cache; within it
/// the same write is not sent again.
const CACHE_LAG_WINDOW: Duration = Duration::from_secs(5);

/// How long a StatefulSet its controller has not seen counts as unseen.
const STATEFULSET_FORGET_AFTER: Duration = Duration::from_secs(600);

/// Objects per page of a watch's list. Smaller than client-go's 500: a page
/// is held in memory whole while it is decoded, and the peak stays.
const LIST_PAGE_SIZE: u32 = 100;

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// Namespace to watch; all when `None`.
    pub namespace: Option<String>,
    /// Apps reconciled at once.
    pub concurrency: u16,
    /// Every app is reconciled again this long after its last reconcile.
    pub resync: Duration,
    pub build: BuildSettings,
    /// This replica's name in Events (its pod name).
    pub instance: Option<String>,
    /// How often each app's pods are asked for their visits; never when `None`.
    pub visits_interval: Option<Duration>,
    /// How long a pod may stay not ready, during a rollout, before the rollout
    /// counts as stuck (see `rollout.rs`).
    pub stuck_after: Duration,
    /// Reconcile requests within this window after the last one for an app
    /// are merged into one.
    pub debounce: Duration,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            namespace: None,
            concurrency: 4,
            resync: Duration::from_secs(300),
            build: BuildSettings::default(),
            instance: None,
            visits_interval: Some(Duration::from_secs(30)),
            stuck_after: Duration::from_secs(300),
            debounce: Duration::ZERO,
        }
    }
}

/// The watch caches of the children.
#[derive(Clone)]
pub struct ChildCaches {
    pub stateful_sets: Store<Compact<StatefulSet>>,
    pub services: Store<Compact<Service>>,
    pub config_maps: Store<ConfigMap>,
    /// Only the ServiceAccounts the operator created (by label).
    pub service_accounts: Store<ServiceAccount>,
    /// The apps' pods, stripped to what the rollout check and the visits
    /// poller read.
    pub pods: Store<SlimPod>,
}

impl ChildCaches {
    /// Waits until every cache holds its first full list.
    pub async fn ready(&self) {
        while !self.is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether every cache holds its first full list. Polled rather than
    /// awaited: a store's readiness wakes only one of several waiters.
    pub fn is_ready(&self) -> bool {
        store_ready(&self.stateful_sets)
            && store_ready(&self.services)
            && store_ready(&self.config_maps)
            && store_ready(&self.service_accounts)
            && store_ready(&self.pods)
    }

    /// The cached child of `kind`, as JSON.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<serde_json::Value> {
        match kind {
            "StatefulSet" => self
                .stateful_sets
                .get(&ObjectRef::new(name).within(namespace))
                .map(|s| s.to_json()),
            "Service" => self
                .services
                .get(&ObjectRef::new(name).within(namespace))
                .map(|s| s.to_json()),
            "ConfigMap" => self
                .config_maps
                .get(&ObjectRef::new(name).within(namespace))
                .and_then(|c| serde_json::to_value(c.as_ref()).ok()),
            "ServiceAccount" => self
                .service_accounts
                .get(&ObjectRef::new(name).within(namespace))
                .and_then(|a| serde_json::to_value(a.as_ref()).ok()),
            _ => None,
        }
    }

    /// The cached pods of the StatefulSet `name` with ordinals below `replicas`.
    pub fn pods_of(&self, namespace: &str, name: &str, replicas: i32) -> Vec<Arc<SlimPod>> {
        (0..replicas.max(0))
            .filter_map(|ordinal| {
                self.pods
                    .get(&ObjectRef::new(&format!("{name}-{ordinal}")).within(namespace))
            })
            .collect()
    }
}

fn store_ready<K>(store: &Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: ControllerSettings,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub admission: Admission,
    pub caches: ChildCaches,
    apps: Store<VisitCounterApp>,
    /// Our recent writes, by child key: the hash applied and when.
    recent_applies: Mutex<HashMap<String, (String, Instant)>>,
    /// The status we last wrote, by app key.
    recent_status: Mutex<HashMap<String, (VisitCounterAppStatus, Instant)>>,
    /// Consecutive failures, by app key, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Each app's StatefulSet with pods missing, by app key: its pod count,
    /// since when it has stood still, and the looks at its Events since.
    pods_missing_since: Mutex<HashMap<String, Stall>>,
    /// What the last look for old ConfigMaps saw, by app key: a digest of
    /// the candidates and the StatefulSet's revisions, and when.
    old_configs_checked: Mutex<HashMap<String, (u64, Instant)>>,
    /// StatefulSets written and not yet seen by their controller, by child
    /// key, with when they were written.
    statefulsets_unseen: Mutex<HashMap<String, Instant>>,
}

/// A StatefulSet whose pod count stands still with pods missing.
struct Stall {
    replicas: i32,
    since: Instant,
    /// Looks at its Events since its pod count last moved, and the last one.
    looks: u32,
    looked: Option<Instant>,
}

impl Stall {
    fn new(replicas: i32) -> Self {
        Self {
            replicas,
            since: Instant::now(),
            looks: 0,
            looked: None,
        }
    }
}

impl Context {
    /// How long the app's StatefulSet has had pods missing without its pod
    /// count moving (`replicas` is that count), as this operator has seen it;
    /// `None` (and forgotten) when none is missing.
    fn pod_creation_stalled_for(&self, key: &str, missing: bool, replicas: i32) -> Option<Duration> {
        let mut stalls = self.pods_missing_since.lock().expect("pods missing since");
        if !missing {
            stalls.remove(key);
            return None;
        }
        let stall = stalls.entry(key.to_owned()).or_insert_with(|| Stall::new(replicas));
        if stall.replicas != replicas {
            *stall = Stall::new(replicas);
        }
        Some(stall.since.elapsed())
    }

    /// How long until the app's StatefulSet Events may be read again: zero
    /// before the first look, then `pod_creation::look_interval` after each.
    fn pod_creation_next_look_in(&self, key: &str) -> Duration {
        let stalls = self.pods_missing_since.lock().expect("pods missing since");
        match stalls.get(key) {
            Some(Stall {
                looks,
                looked: Some(at),
                ..
            }) => pod_creation::look_interval(*looks).saturating_sub(at.elapsed()),
            _ => Duration::ZERO,
        }
    }

    /// Records a look at the app's StatefulSet Events.
    fn pod_creation_looked(&self, key: &str) {
        if let Some(stall) = self.pods_missing_since.lock().expect("pods missing since").get_mut(key) {
            stall.looks += 1;
            stall.looked = Some(Instant::now());
        }
    }

    /// Whether old ConfigMaps are worth looking for: not when the last look
    /// saw the same `digest` (the same candidates, the same revisions) less
    /// than a resync period ago. Records this look.
    fn old_configs_worth_a_look(&self, key: &str, digest: u64) -> bool {
        let mut checked = self.old_configs_checked.lock().expect("old configs checked");
        if checked
            .get(key)
            .is_some_and(|(d, at)| *d == digest && at.elapsed() < self.settings.resync)
        {
            return false;
        }
        checked.insert(key.to_owned(), (digest, Instant::now()));
        true
    }

    fn recently_applied(&self, key: &str, hash: &str) -> bool {
        let recent = self.recent_applies.lock().expect("recent applies");
        recent
            .get(key)
            .is_some_and(|(h, at)| h == hash && at.elapsed() < CACHE_LAG_WINDOW)
    }

    /// Records a StatefulSet written that its controller has not seen yet.
    fn statefulset_written(&self, key: &str) {
        let mut unseen = self.statefulsets_unseen.lock().expect("statefulsets unseen");
        // A StatefulSet deleted before it was seen is not waited on forever.
        unseen.retain(|_, at| at.elapsed() < STATEFULSET_FORGET_AFTER);
        unseen.entry(key.to_owned()).or_insert_with(Instant::now);
    }

    fn statefulset_seen(&self, key: &str) {
        self.statefulsets_unseen
            .lock()
            .expect("statefulsets unseen")
            .remove(key);
    }

    /// Whether the StatefulSet controller is behind: a StatefulSet written
    /// longer than `STATEFULSET_SEEN_WAIT` ago is not seen yet (a controller
    /// manager busy with hundreds of new StatefulSets at its client rate).
    fn statefulset_controller_behind(&self) -> bool {
        let unseen = self.statefulsets_unseen.lock().expect("statefulsets unseen");
        unseen.values().any(|at| {
            let ago = at.elapsed();
            ago > reconcile::STATEFULSET_SEEN_WAIT && ago < STATEFULSET_FORGET_AFTER
        })
    }

    /// How long ago the operator wrote the child `key`, if within the
    /// cache-lag window.
    fn applied_ago(&self, key: &str) -> Option<Duration> {
        let recent = self.recent_applies.lock().expect("recent applies");
        recent
            .get(key)
            .map(|(_, at)| at.elapsed())
            .filter(|ago| *ago < CACHE_LAG_WINDOW)
    }

    fn remember_apply(&self, key: String, hash: String) {
        let mut recent = self.recent_applies.lock().expect("recent applies");
        recent.retain(|_, (_, at)| at.elapsed() < CACHE_LAG_WINDOW);
        recent.insert(key, (hash, Instant::now()));
    }

    fn recently_written_status(&self, key: &str, status: &VisitCounterAppStatus) -> bool {
        let recent = self.recent_status.lock().expect("recent status");
        recent
            .get(key)
            .is_some_and(|(s, at)| status::same_status(s, status) && at.elapsed() < CACHE_LAG_WINDOW)
    }

    /// How long ago the operator last wrote the app's status, if within the
    /// cache-lag window.
    fn status_written_ago(&self, key: &str) -> Option<Duration> {
        let recent = self.recent_status.lock().expect("recent status");
        recent.get(key).map(|(_, at)| at.elapsed())
    }

    fn remember_status(&self, key: String, status: VisitCounterAppStatus) {
        let mut recent = self.recent_status.lock().expect("recent status");
        recent.retain(|_, (_, at)| at.elapsed() < CACHE_LAG_WINDOW);
        recent.insert(key, (status, Instant::now()));
    }

    /// Forgets what is kept per app for apps that are gone (deleted apps
    /// are never reconciled again to forget it themselves).
    fn forget_deleted_apps(&self) {
        let keys: std::collections::HashSet<String> = self
            .apps
            .state()
            .iter()
            .map(|a| format!("{}/{}", a.namespace().unwrap_or_default(), a.name_any()))
            .collect();
        self.pods_missing_since
            .lock()
            .expect("pods missing since")
            .retain(|k, _| keys.contains(k));
        self.old_configs_checked
            .lock()
            .expect("old configs checked")
            .retain(|k, _| keys.contains(k));
        self.failures.lock().expect("failures").retain(|k, _| keys.contains(k));
        self.statefulsets_unseen
            .lock()
            .expect("statefulsets unseen")
            .retain(|k, _| k.strip_prefix("StatefulSet/").is_some_and(|app| keys.contains(app)));
    }

    /// Counts a failure and returns how many in a row.
    fn failed(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().expect("failures");
        let count = failures.entry(key.to_owned()).or_default();
        *count += 1;
        *count
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failures").remove(key);
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A reflector over the operator's children of type `K`: the cache and the
/// stream of touched objects that triggers their owner's reconcile.
fn child_watch<K>(
    client: &Client,
    namespace: Option<&str>,
    mut strip: impl FnMut(&mut K) + Send + 'static,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default()
        .labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"))
        .page_size(LIST_PAGE_SIZE);
    // managedFields are never read; on a real API server they are a large
    // part of every object.
    let stream = reflector::reflector(
        writer,
        watcher(scoped::<K>(client, namespace), config).modify(move |object| {
            object.meta_mut().managed_fields = None;
            strip(object);
        }),
    )
    .default_backoff()
    .touched_objects();
    (reader, without_errors(stream))
}

/// Logs watch errors and keeps them from the controller. The watcher
/// already retries with its own backoff; an error reaching the controller
/// would also pause every trigger stream with the controller's backoff, so
/// one routine 410 Gone per watch (after an etcd compaction) would stall
/// all reconciles for seconds.
fn without_errors<K: Send + 'static>(
    stream: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    stream.filter_map(|event| {
        futures::future::ready(match event {
            Ok(object) => Some(Ok(object)),
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                tracing::debug!("a watch expired (410 Gone); listing again");
                None
            }
            Err(error) => {
                tracing::warn!(%error, "watch failed; retrying with backoff");
                None
            }
        })
    })
}

/// Runs the controller until `shutdown` resolves (in-flight reconciles
/// finish first). `ready` turns true once every watch has listed.
pub async fn run(
    client: Client,
    settings: ControllerSettings,
    metrics: Arc<Metrics>,
    ready: impl Fn(bool) + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let namespace = settings.namespace.clone();
    let ns = namespace.as_deref();
    let (apps, app_writer) = reflector::store();
    let app_stream = reflector::reflector(
        app_writer,
        watcher(
            scoped::<VisitCounterApp>(&client, ns),
            watcher::Config::default().page_size(LIST_PAGE_SIZE),
        )
        .modify(|app| app.metadata.managed_fields = None),
    )
    .default_backoff()
    .applied_objects();
    let app_stream = without_errors(app_stream);
    let (stateful_sets, sts_stream) = child_watch::<Compact<StatefulSet>>(&client, ns, |_| {});
    let (services, svc_stream) = child_watch::<Compact<Service>>(&client, ns, |_| {});
    let (config_maps, cm_stream) = child_watch::<ConfigMap>(&client, ns, |_| {});
    let (service_accounts, sa_stream) = child_watch::<ServiceAccount>(&client, ns, |_| {});
    // Pods are cached slim (`SlimPod`): metadata, IP and conditions. The
    // rollout check and the visits poller read no annotations or owners.
    let (pods, pod_stream) = child_watch::<SlimPod>(&client, ns, |SlimPod(pod)| {
        pod.metadata.annotations = None;
        pod.metadata.owner_references = None;
    });
    // A pod's readiness or revision can block a rollout; nothing else of a pod
    // is worth a reconcile.
    let pod_stream = pod_stream.predicate_filter(pod_rollout_state, Default::default());
    let caches = ChildCaches {
        stateful_sets,
        services,
        config_maps,
        service_accounts,
        pods,
    };
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: settings.instance.clone(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        metrics,
        admission: Admission::new(),
        caches: caches.clone(),
        apps: apps.clone(),
        recent_applies: Mutex::default(),
        recent_status: Mutex::default(),
        failures: Mutex::default(),
        pods_missing_since: Mutex::default(),
        old_configs_checked: Mutex::default(),
        statefulsets_unseen: Mutex::default(),
        settings,
    });
    let visits = ctx.settings.visits_interval.map(|interval| {
        let poller = visits::Poller::new(
            ctx.client.clone(),
            apps.clone(),
            caches.pods.clone(),
            ctx.metrics.clone(),
        );
        tokio::spawn(poller.run(interval))
    });
    let ready = Arc::new(ready);
    let readiness = {
        let (apps, caches, ready) = (apps.clone(), caches.clone(), ready.clone());
        tokio::spawn(async move {
            while !(store_ready(&apps) && caches.is_ready()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tracing::info!("watches have listed; reconciling");
            ready(true);
        })
    };
    let concurrency = ctx.settings.concurrency;
    // kube-runtime's runner ends only once the apps' store is ready, even in
    // a graceful shutdown: stopped before its first list (a SIGTERM or a lost
    // Lease at start), it would wait forever. Nothing has been reconciled
    // then, so there is nothing to finish.
    let shutdown = shutdown.shared();
    let stopped_before_listing = {
        let (shutdown, apps) = (shutdown.clone(), apps.clone());
        async move {
            shutdown.await;
            if store_ready(&apps) {
                std::future::pending::<()>().await;
            }
        }
    };
    let controller = Controller::for_stream(app_stream, apps)
        .owns_stream(sts_stream)
        .owns_stream(svc_stream)
        .owns_stream(cm_stream)
        .owns_stream(sa_stream)
        .watches_stream(pod_stream, |pod| {
            let app = pod.labels().get(INSTANCE_LABEL)?.clone();
            Some(ObjectRef::new(&app).within(&pod.namespace()?))
        })
        .with_config(
            ControllerConfig::default()
                .concurrency(concurrency)
                .debounce(ctx.settings.debounce),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((app, _)) => tracing::debug!(app = %app, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(error, app)) => {
                    tracing::debug!(app = %app, %error, "reconcile failed");
                }
                Err(error) => tracing::warn!(%error, "controller"),
            }
        });
    tokio::select! {
        () = controller => {}
        () = stopped_before_listing => tracing::info!("stopped before the watches had listed"),
    }
    readiness.abort();
    if let Some(visits) = visits {
        visits.abort();
    }
    ready(false);
}

/// The parts of a pod that can change a rollout's state: its readiness, its
/// revision, and whether it is going away.
fn pod_rollout_state(SlimPod(pod): &SlimPod) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    rollout::ready_condition(pod).map(|c| &c.status).hash(&mut hasher);
    pod.labels().get(rollout::REVISION_LABEL).hash(&mut hasher);
    pod.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}
