//! Prometheus metrics of the visit counter.

use std::{sync::atomic::AtomicI64, time::Duration};

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// The metrics, registered once in their own registry.
pub struct Metrics {
    registry: Registry,
    /// Visits counted since start.
    pub visits: Counter,
    /// The durable count.
    pub count: Gauge<i64, AtomicI64>,
    commit_batches: Counter,
    commit_latency: Histogram,
    commit_batch_size: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("visitcounter");
        let visits = Counter::default();
        let count = Gauge::<i64, AtomicI64>::default();
        let commit_batches = Counter::default();
        // 50µs .. ~1.6s
        let commit_latency = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        let commit_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register("visits", "Visits counted since the server started", visits.clone());
        registry.register("count", "The visit count on disk", count.clone());
        registry.register(
            "commit_batches",
            "Writes of the count to disk, each fsynced once",
            commit_batches.clone(),
        );
        registry.register(
            "commit_latency_seconds",
            "Time to write and fsync one batch of visits",
            commit_latency.clone(),
        );
        registry.register(
            "commit_batch_size",
            "Visits made durable by one write",
            commit_batch_size.clone(),
        );
        Self {
            registry,
            visits,
            count,
            commit_batches,
            commit_latency,
            commit_batch_size,
        }
    }

    pub fn observe_commit(&self, took: Duration, visits: usize) {
        self.commit_batches.inc();
        self.commit_latency.observe(took.as_secs_f64());
        self.commit_batch_size.observe(visits as f64);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
