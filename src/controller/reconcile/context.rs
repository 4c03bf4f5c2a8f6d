//! What every reconcile shares: the client, the caches, and the operator's
//! memory of its own recent writes, which the watch caches may not show yet.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::{
    Client, ResourceExt,
    runtime::{
        events::{EventType, Recorder, Reporter},
        reflector::Store,
    },
};

use super::apply::{delete_pod, record};
use crate::{
    admission::Admission,
    controller::{
        observe::pod_creation::PodCreationStalls,
        runtime::{cache::ChildCaches, metrics::Metrics, settings::ControllerSettings},
        status::same_status,
    },
    resource::{VisitCounterApp, VisitCounterAppStatus},
};

/// How long a write of ours may take to show in the watch cache; within it
/// the same write is not sent again.
pub const CACHE_LAG_WINDOW: Duration = Duration::from_secs(5);

/// How long a StatefulSet its controller has not seen counts as unseen.
const STATEFULSET_FORGET_AFTER: Duration = Duration::from_secs(600);

/// How long after writing a StatefulSet the app's status waits for the
/// StatefulSet controller to see it (see `reconcile::status_wait_left`).
pub const STATEFULSET_SEEN_WAIT: Duration = Duration::from_secs(1);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: ControllerSettings,
    pub metrics: Arc<Metrics>,
    /// Warnings go through one recorder, whose cache makes a warning
    /// repeated within 6 minutes one Event series (`Context::recorder`).
    warnings: Recorder,
    reporter: Reporter,
    pub admission: Admission,
    pub caches: ChildCaches,
    apps: Store<VisitCounterApp>,
    /// Our recent writes, by child key: the hash applied and when.
    recent_applies: Mutex<HashMap<String, (String, Instant)>>,
    /// The status we last wrote, by app key.
    recent_status: Mutex<HashMap<String, (VisitCounterAppStatus, Instant)>>,
    /// Consecutive failures, by app key, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Each app's StatefulSet with pods missing, by app key.
    pub pod_creation: PodCreationStalls,
    /// Whether the API server keeps a StatefulSet's `maxUnavailable`, once
    /// asked (`strategy::keeps_max_unavailable`).
    pub cluster_keeps_max_unavailable: tokio::sync::OnceCell<bool>,
    /// What the last look for old ConfigMaps saw, by app key: a digest of
    /// the candidates and the StatefulSet's revisions, and when.
    old_configs_checked: Mutex<HashMap<String, (u64, Instant)>>,
    /// StatefulSets written and not yet seen by their controller, by child
    /// key, with when they were written.
    statefulsets_unseen: Mutex<HashMap<String, Instant>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: ControllerSettings,
        metrics: Arc<Metrics>,
        reporter: Reporter,
        caches: ChildCaches,
        apps: Store<VisitCounterApp>,
    ) -> Self {
        Self {
            warnings: Recorder::new(client.clone(), reporter.clone()),
            client,
            settings,
            metrics,
            reporter,
            admission: Admission::new(),
            caches,
            apps,
            recent_applies: Mutex::default(),
            recent_status: Mutex::default(),
            failures: Mutex::default(),
            pod_creation: PodCreationStalls::default(),
            cluster_keeps_max_unavailable: tokio::sync::OnceCell::new(),
            old_configs_checked: Mutex::default(),
            statefulsets_unseen: Mutex::default(),
        }
    }

    /// The recorder for an Event of `type_`. kube's recorder keeps every
    /// Event it published for 6 minutes, to count a repeat as one series
    /// (with the first words only). A warning repeats while its cause
    /// lasts, so warnings share one recorder. A Normal Event tells of one
    /// change the operator made, in its own words: it gets a recorder of
    /// its own, and nothing is kept (at 1,000 apps, about 2.5 MiB held for
    /// the 6 minutes after they converged).
    fn recorder(&self, type_: &EventType) -> Recorder {
        match type_ {
            EventType::Warning => self.warnings.clone(),
            EventType::Normal => Recorder::new(self.client.clone(), self.reporter.clone()),
        }
    }

    /// Records an Event about the app, and logs it in the same words.
    pub async fn event(&self, app: &VisitCounterApp, type_: EventType, reason: &str, message: String) {
        record(&self.recorder(&type_), app, type_, reason, message, None, &self.metrics).await;
    }

    /// Records an Event about the app that names another object too (its
    /// `related`): Events of one reason about one app are otherwise one
    /// series, which keeps the first words only.
    pub async fn event_about(
        &self,
        app: &VisitCounterApp,
        reason: &str,
        message: String,
        related: k8s_openapi::api::core::v1::ObjectReference,
    ) {
        record(
            &self.recorder(&EventType::Normal),
            app,
            EventType::Normal,
            reason,
            message,
            Some(related),
            &self.metrics,
        )
        .await;
    }

    /// Whether we deleted the pod `name` with `uid` moments ago: the cache
    /// may still hold it, as if nothing happened.
    pub fn pod_deleted_lately(&self, namespace: &str, name: &str, uid: &str) -> bool {
        self.recently_applied(&format!("Pod/{namespace}/{name}"), uid)
    }

    /// Deletes the pod `name` by its `uid`, unless we did moments ago;
    /// whether it did.
    pub async fn delete_pod_once(&self, namespace: &str, name: &str, uid: &str) -> Result<bool, kube::Error> {
        if self.pod_deleted_lately(namespace, name, uid) {
            return Ok(false);
        }
        delete_pod(&self.client, namespace, name, uid, &self.metrics).await?;
        self.remember_apply(format!("Pod/{namespace}/{name}"), uid.to_owned());
        Ok(true)
    }

    /// How many apps the watch cache holds.
    pub(super) fn app_count(&self) -> usize {
        self.apps.len()
    }

    /// Forgets the last look for old ConfigMaps, so the next reconcile looks
    /// again (after a failed delete).
    pub(super) fn old_configs_forget(&self, key: &str) {
        self.old_configs_checked
            .lock()
            .expect("old configs checked")
            .remove(key);
    }

    /// Whether old ConfigMaps are worth looking for: not when the last look
    /// saw the same `digest` (the same candidates, the same revisions) less
    /// than a resync period ago. Records this look.
    pub(super) fn old_configs_worth_a_look(&self, key: &str, digest: u64) -> bool {
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

    pub(super) fn recently_applied(&self, key: &str, hash: &str) -> bool {
        let recent = self.recent_applies.lock().expect("recent applies");
        recent
            .get(key)
            .is_some_and(|(h, at)| h == hash && at.elapsed() < CACHE_LAG_WINDOW)
    }

    /// Records a StatefulSet written that its controller has not seen yet.
    pub(super) fn statefulset_written(&self, key: &str) {
        let mut unseen = self.statefulsets_unseen.lock().expect("statefulsets unseen");
        // A StatefulSet deleted before it was seen is not waited on forever.
        unseen.retain(|_, at| at.elapsed() < STATEFULSET_FORGET_AFTER);
        unseen.entry(key.to_owned()).or_insert_with(Instant::now);
    }

    pub(super) fn statefulset_seen(&self, key: &str) {
        self.statefulsets_unseen
            .lock()
            .expect("statefulsets unseen")
            .remove(key);
    }

    /// Whether the StatefulSet controller is behind: a StatefulSet written
    /// longer than `STATEFULSET_SEEN_WAIT` ago is not seen yet (a controller
    /// manager busy with hundreds of new StatefulSets at its client rate).
    pub(super) fn statefulset_controller_behind(&self) -> bool {
        let unseen = self.statefulsets_unseen.lock().expect("statefulsets unseen");
        unseen.values().any(|at| {
            let ago = at.elapsed();
            ago > STATEFULSET_SEEN_WAIT && ago < STATEFULSET_FORGET_AFTER
        })
    }

    /// How long ago the operator wrote the child `key`, if within the
    /// cache-lag window.
    pub(super) fn applied_ago(&self, key: &str) -> Option<Duration> {
        let recent = self.recent_applies.lock().expect("recent applies");
        recent
            .get(key)
            .map(|(_, at)| at.elapsed())
            .filter(|ago| *ago < CACHE_LAG_WINDOW)
    }

    pub(super) fn remember_apply(&self, key: String, hash: String) {
        let mut recent = self.recent_applies.lock().expect("recent applies");
        recent.retain(|_, (_, at)| at.elapsed() < CACHE_LAG_WINDOW);
        recent.insert(key, (hash, Instant::now()));
    }

    pub(super) fn recently_written_status(&self, key: &str, status: &VisitCounterAppStatus) -> bool {
        let recent = self.recent_status.lock().expect("recent status");
        recent
            .get(key)
            .is_some_and(|(s, at)| same_status(s, status) && at.elapsed() < CACHE_LAG_WINDOW)
    }

    /// How long ago the operator last wrote the app's status, if within the
    /// cache-lag window.
    pub(super) fn status_written_ago(&self, key: &str) -> Option<Duration> {
        let recent = self.recent_status.lock().expect("recent status");
        recent.get(key).map(|(_, at)| at.elapsed())
    }

    pub(super) fn remember_status(&self, key: String, status: VisitCounterAppStatus) {
        let mut recent = self.recent_status.lock().expect("recent status");
        recent.retain(|_, (_, at)| at.elapsed() < CACHE_LAG_WINDOW);
        recent.insert(key, (status, Instant::now()));
    }

    /// Forgets what is kept per app for apps that are gone (deleted apps
    /// are never reconciled again to forget it themselves).
    pub(super) fn forget_deleted_apps(&self) {
        let keys: HashSet<String> = self
            .apps
            .state()
            .iter()
            .map(|a| format!("{}/{}", a.namespace().unwrap_or_default(), a.name_any()))
            .collect();
        self.pod_creation.retain(|k| keys.contains(k));
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
    pub(super) fn failed(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().expect("failures");
        let count = failures.entry(key.to_owned()).or_default();
        *count += 1;
        *count
    }

    /// How many failures in a row, without counting one.
    pub(super) fn failures(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .expect("failures")
            .get(key)
            .copied()
            .unwrap_or_default()
    }

    pub(super) fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failures").remove(key);
    }
}
