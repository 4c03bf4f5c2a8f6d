//! Change to first write: from a patch of one app's replicas to the
//! operator's first write of that app's StatefulSet, both as the API
//! server's audit log times them, for apps patched one after another among
//! all the converged ones.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use visitcounter::resource::VisitCounterApp;

use crate::{NAMESPACES, audit::AuditLog};

/// Apps patched, one after another.
pub const SAMPLES: usize = 40;

/// The latencies of the samples.
pub struct Latencies {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latencies {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let at = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
        Self {
            p50: at(0.50),
            p99: at(0.99),
            max: *samples.last().unwrap(),
        }
    }

    pub fn text(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!("{:.0} / {:.0} / {:.0} ms", ms(self.p50), ms(self.p99), ms(self.max))
    }
}

/// Patches `SAMPLES` of the `count` apps (each app once: all of them when
/// there are fewer) to `replicas`, one at a time, each once the operator
/// wrote the one before's StatefulSet. `audit` makes a reader of the audit
/// log from where it ends now.
pub async fn change_to_first_write(
    client: &Client,
    audit: impl Fn() -> AuditLog,
    count: usize,
    replicas: i32,
) -> Latencies {
    let apps = SAMPLES.min(count);
    let mut samples = Vec::with_capacity(apps);
    for k in 0..apps {
        let i = k * count / apps;
        let (namespace, name) = (format!("bench-{}", i % NAMESPACES), format!("app-{i:04}"));
        let log = audit();
        Api::<VisitCounterApp>::namespaced(client.clone(), &namespace)
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .unwrap();
        samples.push(wait_for_write(&log, &namespace, &name).await);
    }
    Latencies::of(samples)
}

/// From the patch of the app to the operator's first StatefulSet write, as
/// the audit log has them.
async fn wait_for_write(log: &AuditLog, namespace: &str, name: &str) -> Duration {
    let asked = Instant::now();
    loop {
        let events: Vec<Value> = log.events().filter(|e| e["stage"] == "ResponseComplete").collect();
        let of = |resource: &str, e: &&Value| {
            let object = &e["objectRef"];
            object["resource"] == resource
                && object["namespace"] == namespace
                && object["name"] == name
                && object["subresource"].is_null()
                && e["verb"] == "patch"
                && !e["requestURI"].as_str().unwrap_or_default().contains("dryRun=")
        };
        let patched = events.iter().find(|e| of("visitcounterapps", e));
        let written = events
            .iter()
            .find(|e| of("statefulsets", e) && log.peer.is_agent(e["userAgent"].as_str().unwrap_or_default()));
        if let (Some(patched), Some(written)) = (patched, written) {
            let at = |e: &Value, field: &str| e[field].as_str().unwrap().parse::<Timestamp>().unwrap();
            // The patch is stored (and watchers told) by its response; the
            // write starts when the server receives it.
            let from = at(patched, "stageTimestamp");
            let to = at(written, "requestReceivedTimestamp");
            return Duration::try_from(to.duration_since(from)).unwrap_or_default();
        }
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "{namespace}/{name}: no StatefulSet write 30 s after its patch"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
