//! Prometheus metrics of the operator.

use std::{sync::atomic::AtomicI64, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub namespace: String,
    pub app: String,
}

/// The operator's metrics, in their own registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<ReasonLabel, Counter>,
    duration: Histogram,
    /// Apps in the watched namespaces.
    pub apps: Gauge<i64, AtomicI64>,
    /// Write requests the operator sent, by kind of object.
    pub writes: Family<KindLabel, Counter>,
    /// 1 while this replica holds the lease and reconciles.
    pub leader: Gauge<i64, AtomicI64>,
    /// Each app's visits, summed over the pods that answered.
    visits: Family<AppLabels, Gauge<i64, AtomicI64>>,
    /// 1 when every pod of the app answered, so `visits` is the whole count.
    visits_complete: Family<AppLabels, Gauge<i64, AtomicI64>>,
    /// Pods the visits poller asked, answered or not.
    visits_asks: Counter,
    /// Pods whose counts come on a stream (`observe::follow`).
    visits_followed: Gauge<i64, AtomicI64>,
    /// Apps whose counts a visits round built (`observe::quiet`).
    visits_polled: Counter,
    /// Visits rounds left out whole (`observe::rest`).
    visits_rested: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("visitcounter_operator");
        let reconciles = Counter::default();
        let errors = Family::<ReasonLabel, Counter>::default();
        // 1ms .. ~16s
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let apps = Gauge::<i64, AtomicI64>::default();
        let writes = Family::<KindLabel, Counter>::default();
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed, by reason", errors.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        registry.register("apps", "VisitCounterApps managed", apps.clone());
        registry.register(
            "write_requests",
            "Create, patch and delete requests sent to the API server, by kind",
            writes.clone(),
        );
        registry.register("leader", "1 while this replica holds the lease", leader.clone());
        let visits = Family::<AppLabels, Gauge<i64, AtomicI64>>::default();
        let visits_complete = Family::<AppLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "app_visits",
            "Visits of an app, summed over the pods that answered /visits",
            visits.clone(),
        );
        registry.register(
            "app_visits_complete",
            "1 when every pod of the app answered, so app_visits is its whole count",
            visits_complete.clone(),
        );
        let visits_asks = Counter::default();
        registry.register(
            "visits_asks",
            "Pods asked for their visits (GET /visits), whether they answered or not",
            visits_asks.clone(),
        );
        let visits_followed = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "visits_followed_pods",
            "Pods whose visits come on a stream they send, so they are not asked",
            visits_followed.clone(),
        );
        let visits_polled = Counter::default();
        registry.register(
            "visits_apps_polled",
            "Apps whose visits a round of the poller built; those nothing of which changed since a round \
             that asked none of their pods are left out",
            visits_polled.clone(),
        );
        let visits_rested = Counter::default();
        registry.register(
            "visits_rounds_at_rest",
            "Rounds of the visits poller left out whole: no app, pod or stream changed since a round that \
             built no app",
            visits_rested.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            apps,
            writes,
            leader,
            visits,
            visits_complete,
            visits_asks,
            visits_followed,
            visits_polled,
            visits_rested,
        }
    }

    pub fn reconciled(&self, took: Duration, error_reason: Option<&str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(reason) = error_reason {
            self.errors.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
        }
    }

    pub fn wrote(&self, kind: &str) {
        self.writes.get_or_create(&KindLabel { kind: kind.into() }).inc();
    }

    pub fn set_visits(&self, namespace: &str, app: &str, total: i64, complete: bool) {
        let labels = AppLabels {
            namespace: namespace.into(),
            app: app.into(),
        };
        self.visits.get_or_create(&labels).set(total);
        self.visits_complete.get_or_create(&labels).set(i64::from(complete));
    }

    /// The visits poller asked a pod for its count.
    pub fn asked_for_visits(&self) {
        self.visits_asks.inc();
    }

    /// A round of the visits poller built the counts of `apps` apps.
    pub fn polled_for_visits(&self, apps: usize) {
        self.visits_polled.inc_by(u64::try_from(apps).unwrap_or(u64::MAX));
    }

    /// A round of the visits poller was left out, as nothing changed.
    pub fn rested_for_visits(&self) {
        self.visits_rested.inc();
    }

    /// The pods whose counts came on their streams at the end of a round.
    pub fn followed_for_visits(&self, pods: usize) {
        self.visits_followed.set(i64::try_from(pods).unwrap_or(i64::MAX));
    }

    /// Drops the visit gauges of an app that is gone.
    pub fn forget_visits(&self, namespace: &str, app: &str) {
        let labels = AppLabels {
            namespace: namespace.into(),
            app: app.into(),
        };
        self.visits.remove(&labels);
        self.visits_complete.remove(&labels);
    }

    pub fn reconciles(&self) -> u64 {
        self.reconciles.get()
    }

    /// All write requests sent so far.
    pub fn total_writes(&self) -> u64 {
        [
            "ServiceAccount",
            "ConfigMap",
            "Service",
            "StatefulSet",
            "VisitCounterApp",
            "Event",
        ]
        .iter()
        .map(|k| self.writes.get_or_create(&KindLabel { kind: (*k).into() }).get())
        .sum()
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
