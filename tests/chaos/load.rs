//! Visits under load, on a node whose pods run: a client that visits the
//! app through its NodePort all along and counts the visits each pod
//! answered (the page names the pod), the counts in the pods' own files,
//! read from their claims' volumes, and the counts in `status.visits`.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Service};
use kube::api::ListParams;

use crate::{env::Env, support};

/// Visits answered, by the pod that answered.
pub type Answered = BTreeMap<String, u64>;

/// A client visiting `GET /` through the NodePort, one visit after another.
pub struct Load {
    answered: Arc<Mutex<Answered>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub async fn start(env: &Env, app: &str) -> Self {
        let service = env.api::<Service>().get(app).await.expect("the app's Service");
        let port = service
            .spec
            .and_then(|s| s.ports?.first()?.node_port)
            .expect("the app's Service has a node port") as u16;
        let answered: Arc<Mutex<Answered>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        // NodePorts answer at the node's address (scripts/cluster.sh env).
        let node = std::env::var("VISITCOUNTER_NODE_ADDRESS").expect("VISITCOUNTER_NODE_ADDRESS names the node");
        let task = tokio::spawn(visit_until_stopped(node, port, answered.clone(), stop.clone()));
        Self { answered, stop, task }
    }

    /// The visits answered so far, by pod: each was durable before its
    /// answer.
    pub fn answered(&self) -> Answered {
        self.answered.lock().unwrap().clone()
    }

    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let answered = self.answered.clone();
        let _ = self.task.await;
        answered.lock().unwrap().values().sum()
    }
}

async fn visit_until_stopped(node: String, port: u16, answered: Arc<Mutex<Answered>>, stop: Arc<AtomicBool>) {
    let http = support::client();
    while !stop.load(Ordering::SeqCst) {
        let visit = tokio::time::timeout(Duration::from_secs(2), support::get_at(&http, &node, port, "/")).await;
        match visit {
            // Only a page that names the count and the pod is an answered visit.
            Ok(Ok((200, body))) if body.contains("<h1>Visits: ") => match served_by(&body) {
                Some(pod) => *answered.lock().unwrap().entry(pod.to_owned()).or_default() += 1,
                None => panic!("an answer that names no pod: {body}"),
            },
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The pod a page names: "Served by pod <code>NAME</code>".
fn served_by(page: &str) -> Option<&str> {
    page.split("<code>").nth(1)?.split("</code>").next()
}

/// Each claim's count, from `visits.json` on its volume (a claim whose pod
/// never wrote has none): `{claim: visits}`.
pub async fn visits_on_disk(env: &Env, app: &str) -> Result<BTreeMap<String, u64>, String> {
    let claims = env
        .api::<PersistentVolumeClaim>()
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={app}")))
        .await
        .map_err(|e| format!("cannot list the claims: {e}"))?
        .items;
    let mut counts = BTreeMap::new();
    for claim in claims {
        let name = claim.metadata.name.unwrap_or_default();
        let Some(volume) = claim.spec.and_then(|s| s.volume_name) else {
            counts.insert(name, 0);
            continue;
        };
        let volume = kube::Api::<PersistentVolume>::all(env.client.clone())
            .get(&volume)
            .await
            .map_err(|e| format!("cannot read volume {volume}: {e}"))?;
        let path = volume
            .spec
            .and_then(|s| s.host_path)
            .map(|h| PathBuf::from(h.path).join("visits.json"))
            .ok_or_else(|| format!("volume of {name} is not a hostPath"))?;
        let visits = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["visits"].as_u64())
                .ok_or_else(|| format!("{}: not a count: {text}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        counts.insert(name, visits);
    }
    Ok(counts)
}
