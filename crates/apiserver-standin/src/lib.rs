//! An in-process stand-in for the Kubernetes API server, for testing a
//! controller with an unmodified `kube::Client` where no control plane can
//! run.
//!
//! It honours what a controller depends on: resourceVersions, list and
//! watch (with 410 Gone after a compaction), create/replace/patch and
//! server-side apply with field managers and conflicts, dry runs, the status
//! subresource, 404/409/422 answers, refusal of immutable StatefulSet
//! fields, nodePort allocation, and owner-reference cascade or orphaning on
//! delete. A small StatefulSet controller creates pods and claims and
//! reports status. Tests can inject failures, read every request it
//! answered, and look at what it stores.

mod fields;
mod http;
mod resources;
mod sim;
mod store;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
};

use axum::http::Method;
use serde_json::Value;
use tokio::sync::watch;

pub use http::{Access, Fault, RecordedRequest};
pub use sim::Pods;
use store::{Key, Store, Write};

pub struct Shared {
    store: Mutex<Store>,
    requests: Mutex<Vec<RecordedRequest>>,
    faults: Mutex<Vec<Fault>>,
    compactions: watch::Sender<u64>,
}

impl Shared {
    fn take_fault(&self, method: &Method, path: &str) -> Option<u16> {
        let mut faults = self.faults.lock().expect("faults");
        let fault = faults.iter_mut().find(|f| {
            f.times > 0 && f.method.as_ref().is_none_or(|m| m == method) && path.contains(&f.path_contains)
        })?;
        fault.times -= 1;
        Some(fault.status)
    }
}

/// A running stand-in, listening on 127.0.0.1.
pub struct StandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Validates and defaults one kind of object on create and update; returns
/// the object to store or the message of a 422.
pub type Validator = store::Validator;

impl StandIn {
    pub async fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            compactions: watch::channel(0).0,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().fallback(http::handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { shared, addr, server })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client for the stand-in, as `Client::try_default` would build one
    /// from a kubeconfig.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config()).expect("a client for a plain HTTP server")
    }

    /// A client whose requests carry `Impersonate-User: user`, so they can be
    /// told apart in `requests()`.
    pub fn client_as(&self, user: &str) -> kube::Client {
        let mut config = self.config();
        config.auth_info.impersonate = Some(user.into());
        kube::Client::try_from(config).expect("a client for a plain HTTP server")
    }

    fn config(&self) -> kube::Config {
        let uri = self.url().parse().expect("a valid URL");
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".into();
        config
    }

    /// Writes a kubeconfig for the stand-in, for a program run as a process.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\n\
             contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n    namespace: default\n\
             current-context: standin\nusers:\n- name: standin\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(path, config)
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().expect("request log").clone()
    }

    /// Requests that changed stored state (not dry runs), of one resource.
    pub fn writes_to(&self, plural: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_write() && r.plural() == Some(plural))
            .collect()
    }

    /// Gives the next `times` requests whose method is `method` (any when
    /// `None`) and whose path contains `path_contains` the status `status`.
    pub fn fail(&self, method: Option<Method>, path_contains: &str, status: u16, times: usize) {
        self.shared.faults.lock().expect("faults").push(Fault {
            method,
            path_contains: path_contains.into(),
            status,
            times,
        });
    }

    /// How many injected failures are still to be given.
    pub fn pending_faults(&self) -> usize {
        self.shared.faults.lock().expect("faults").iter().map(|f| f.times).sum()
    }

    /// Validates objects of the resource `plural` with `validator`.
    pub fn validate_with(&self, plural: &'static str, validator: Validator) {
        self.shared
            .store
            .lock()
            .expect("store")
            .validators
            .insert(plural, validator);
    }

    /// Whether the pods StatefulSets create become ready.
    pub fn set_pods(&self, pods: Pods) {
        self.shared.store.lock().expect("store").pods = pods;
    }

    /// Pods whose container runs `image` never become ready, as with an image
    /// that crashes on start.
    pub fn break_image(&self, image: &str) {
        self.shared
            .store
            .lock()
            .expect("store")
            .broken_images
            .insert(image.into());
    }

    /// One stored object, by group ("" for core) and plural.
    pub fn get(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let rt = resources::find(group, plural)?;
        let store = self.shared.store.lock().expect("store");
        store
            .objects
            .get(&Key::new(rt, namespace, name))
            .map(|e| e.object.clone())
    }

    /// Every stored object of a resource.
    pub fn list(&self, group: &str, plural: &str) -> Vec<Value> {
        let store = self.shared.store.lock().expect("store");
        store
            .objects
            .iter()
            .filter(|(k, _)| k.group == group && k.plural == plural)
            .map(|(_, e)| e.object.clone())
            .collect()
    }

    /// Stores an object without validation, as if written before a rule
    /// existed. Returns it as stored.
    pub fn insert_unchecked(&self, group: &str, plural: &str, object: Value) -> Result<Value, String> {
        let rt = resources::find(group, plural).ok_or_else(|| format!("{plural} is not served"))?;
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let mut store = self.shared.store.lock().expect("store");
        let validator = store.validators.remove(rt.plural);
        let result = store.write(rt, &namespace, &name, None, Write::Update { object }, "test", false);
        if let Some(v) = validator {
            store.validators.insert(rt.plural, v);
        }
        result.map_err(|e| e.message)
    }

    /// Gives a pod an IP, as the kubelet does once its sandbox runs.
    pub fn set_pod_ip(&self, namespace: &str, name: &str, ip: &str) -> Result<Value, String> {
        let mut store = self.shared.store.lock().expect("store");
        sim::update_pod_status(&mut store, namespace, name, |status| {
            status["podIP"] = Value::String(ip.into());
        })
        .map_err(|e| e.message)
    }

    /// Forgets the change log, as etcd compaction does: open watches end
    /// with 410 Gone and watchers must list again.
    pub fn compact(&self) {
        let rv = {
            let mut store = self.shared.store.lock().expect("store");
            store.compacted = store.rv;
            store.rv
        };
        self.shared.compactions.send_replace(rv);
    }
}
