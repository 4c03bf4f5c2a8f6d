//! What every scenario uses: the test namespace, waiting, the audit log, and
//! the operator binary run as its Deployment runs it.

use std::{
    collections::BTreeMap,
    io::{BufRead, Seek},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, PersistentVolumeClaim, Pod},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use visitcounter::{
    children::DEFAULT_APP_IMAGE,
    operator::USER_AGENT,
    resource::{API_VERSION, KIND, VisitCounterApp},
};

pub const WAIT: Duration = Duration::from_secs(90);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(250);
/// An image whose pods never become ready on the test control plane's
/// simulated nodes (tests/cluster/kwok-pod-stages.yaml).
pub const NEVER_READY_IMAGE: &str = "example.invalid/never-ready:v1";

/// The image of the apps' pods: any image does on the simulated nodes; on a
/// real cluster's nodes, one they can pull (`VISITCOUNTER_E2E_IMAGE`).
pub fn image() -> String {
    std::env::var("VISITCOUNTER_E2E_IMAGE").unwrap_or_else(|_| DEFAULT_APP_IMAGE.to_owned())
}

/// Applies `crd` as the VisitCounterApp CRD, with the e2e's field manager.
pub async fn install_crd(client: &Client, crd: impl serde::Serialize + std::fmt::Debug) {
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch(
            "visitcounterapps.visitcounter.dev",
            &PatchParams::apply("visitcounter-e2e").force(),
            &Patch::Apply(crd),
        )
        .await
        .expect("the API server takes the CRD");
}

pub struct Env {
    pub client: Client,
    pub ns: String,
    /// The in-process operator's metrics, for the scenarios run beside it.
    pub metrics: Option<std::sync::Arc<visitcounter::controller::Metrics>>,
}

impl Env {
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn apply_app(&self, name: &str, spec: Value) {
        let app = json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec});
        self.apply_object(app).await;
    }

    pub async fn apply_object(&self, app: Value) {
        let name = app["metadata"]["name"].as_str().unwrap().to_owned();
        self.api::<VisitCounterApp>()
            .patch(&name, &PatchParams::apply("e2e").force(), &Patch::Apply(&app))
            .await
            .expect("the app is admitted");
    }

    pub async fn condition(&self, name: &str, type_: &str) -> Option<(String, String)> {
        let app = self.api::<VisitCounterApp>().get(name).await.ok()?;
        let c = app.status?.conditions.into_iter().find(|c| c.type_ == type_)?;
        Some((c.status, c.reason))
    }

    /// Whether the app says Ready and each of its pods is Ready.
    pub async fn ready_with_pods(&self, name: &str, replicas: usize) -> bool {
        if self.condition(name, "Ready").await.is_none_or(|c| c.0 != "True") {
            return false;
        }
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        pods.len() == replicas && pods.iter().all(pod_ready)
    }

    /// The name of the ConfigMap the app's StatefulSet names in its pod
    /// template.
    pub async fn config_map_name(&self, app: &str) -> Option<String> {
        let sts = self.api::<StatefulSet>().get(app).await.ok()?;
        let volumes = sts.spec?.template.spec?.volumes?;
        volumes.into_iter().find_map(|v| Some(v.config_map?.name))
    }

    /// The ConfigMap the app's StatefulSet names.
    pub async fn config_map(&self, app: &str) -> Option<ConfigMap> {
        let name = self.config_map_name(app).await?;
        self.api::<ConfigMap>().get_opt(&name).await.ok().flatten()
    }

    /// The names of the app's ConfigMaps, found by its label.
    pub async fn config_map_names(&self, app: &str) -> Vec<String> {
        let list = self
            .api::<ConfigMap>()
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={app}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        list.into_iter().filter_map(|c| c.metadata.name).collect()
    }

    /// `kubectl` against the same cluster, as a user types it.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let output = Command::new("kubectl")
            .args(["--namespace", &self.ns])
            .args(args)
            .output()
            .expect("kubectl is on PATH (scripts/cluster.sh env puts it there)");
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The messages of the namespace's Events that `selector` (a field
    /// selector, such as `reason=X,involvedObject.name=Y`) picks.
    pub fn event_messages(&self, selector: &str) -> Vec<String> {
        let out = self.kubectl(&[
            "get",
            "events",
            "--field-selector",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ]);
        out.lines().map(str::to_owned).collect()
    }

    /// Waits until an Event that `selector` picks has a message `wanted`
    /// accepts. The operator records an Event once the change it tells of
    /// is made, so a test that has just seen the change may look a moment
    /// before the Event is there. Fails naming `what` and the messages found.
    pub async fn wait_for_event(&self, selector: &str, what: &str, wanted: impl Fn(&str) -> bool) {
        let started = Instant::now();
        loop {
            let messages = self.event_messages(selector);
            if messages.iter().any(|m| wanted(m)) {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "timed out waiting until {what}; the Events {selector} picks say: {messages:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The app's claims, found by its label: name to uid.
    pub async fn claim_uids(&self, app: &str) -> BTreeMap<String, String> {
        self.claims(&ListParams::default().labels(&format!("app.kubernetes.io/instance={app}")))
            .await
    }

    /// The namespace's claims that `params` selects: name to uid.
    pub async fn claims(&self, params: &ListParams) -> BTreeMap<String, String> {
        let claims = self.api::<PersistentVolumeClaim>().list(params).await.unwrap();
        claims
            .items
            .into_iter()
            .map(|c| (c.metadata.name.unwrap_or_default(), c.metadata.uid.unwrap_or_default()))
            .collect()
    }

    /// A node port no Service of the cluster holds yet.
    pub async fn free_node_port(&self) -> i32 {
        let taken: std::collections::BTreeSet<i32> =
            Api::<k8s_openapi::api::core::v1::Service>::all(self.client.clone())
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .flat_map(|s| s.spec.iter().flat_map(|spec| spec.ports.iter().flatten()))
                .filter_map(|p| p.node_port)
                .collect();
        std::iter::repeat_with(|| 30000 + fastrand::i32(0..2700))
            .find(|p| !taken.contains(p))
            .unwrap()
    }

    pub async fn pod_uids(&self, app: &str) -> BTreeMap<String, String> {
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={app}")))
            .await
            .unwrap();
        pods.items
            .into_iter()
            .map(|p| (p.metadata.name.unwrap_or_default(), p.metadata.uid.unwrap_or_default()))
            .collect()
    }
}

/// Whether the API server has the feature gate `gate` on, from its metrics.
pub fn feature_enabled(env: &Env, gate: &str) -> bool {
    let metrics = env.kubectl(&["get", "--raw", "/metrics"]);
    metrics
        .lines()
        .any(|l| l.starts_with(&format!("kubernetes_feature_enabled{{name=\"{gate}\"")) && l.ends_with(" 1"))
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Polls `check` every 250 ms until it returns true.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < WAIT, "timed out waiting until {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// The API server's audit log, read from where it ended when this was made.
pub struct AuditLog {
    path: PathBuf,
    offset: u64,
}

/// Set to `1` when the cluster keeps no audit log: the checks that read it
/// are then left out, and say so. Unset, a missing log fails the check.
pub const NO_AUDIT_LOG: &str = "VISITCOUNTER_E2E_NO_AUDIT_LOG";

impl AuditLog {
    /// The log `VISITCOUNTER_AUDIT_LOG` names, from its end now. `None` only
    /// when the run says its cluster has none.
    pub fn from_env() -> Option<Self> {
        let Some(path) = std::env::var_os("VISITCOUNTER_AUDIT_LOG") else {
            assert!(
                std::env::var(NO_AUDIT_LOG).is_ok_and(|v| v == "1"),
                "VISITCOUNTER_AUDIT_LOG is unset, so the writes this check counts cannot be read; \
                 `eval \"$(scripts/cluster.sh env)\"` sets it, or set {NO_AUDIT_LOG}=1 for a cluster without one"
            );
            eprintln!("not checked: the cluster has no audit log ({NO_AUDIT_LOG}=1)");
            return None;
        };
        let path = PathBuf::from(path);
        let offset = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("the audit log {}: {e}", path.display()))
            .len();
        Some(Self { path, offset })
    }

    fn lines_since_opened(&self) -> impl Iterator<Item = String> {
        let mut file = std::fs::File::open(&self.path).expect("the audit log is readable");
        file.seek(std::io::SeekFrom::Start(self.offset)).unwrap();
        std::io::BufReader::new(file).lines().map_while(Result::ok)
    }

    /// `verb resource/subresource name` of every write the operator's
    /// User-Agent made in `namespace` since this log was opened.
    pub fn operator_writes(&self, namespace: &str) -> Vec<String> {
        self.lines_since_opened()
            .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
            .filter(|e| {
                e["stage"] == "ResponseComplete"
                    && e["userAgent"].as_str().is_some_and(|a| a.starts_with(USER_AGENT))
                    && e["objectRef"]["namespace"] == namespace
                    && matches!(
                        e["verb"].as_str(),
                        Some("create" | "update" | "patch" | "delete" | "deletecollection")
                    )
            })
            .map(|e| {
                let o = &e["objectRef"];
                format!(
                    "{} {}/{} {}",
                    e["verb"].as_str().unwrap_or_default(),
                    o["resource"].as_str().unwrap_or_default(),
                    o["subresource"].as_str().unwrap_or_default(),
                    o["name"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }

    /// Every request the operator made since this log was opened, whatever
    /// its namespace.
    pub fn operator_user_agents(&self) -> usize {
        self.lines_since_opened()
            .filter(|line| line.contains(&format!("\"userAgent\":\"{USER_AGENT}")))
            .count()
    }
}

/// A kubeconfig for the ServiceAccount `account` of the test namespace, with a
/// token from the TokenRequest API, for the same API server.
pub fn service_account_kubeconfig(env: &Env, account: &str) -> tempfile::NamedTempFile {
    let token = env.kubectl(&["create", "token", account, "--duration=10m"]);
    let mut config: Value = serde_json::from_str(&env.kubectl(&["config", "view", "--minify", "--raw", "-o", "json"]))
        .expect("kubectl prints the kubeconfig as JSON");
    config["users"] = json!([{"name": account, "user": {"token": token.trim()}}]);
    config["contexts"][0]["context"]["user"] = json!(account);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), config.to_string()).unwrap();
    file
}

/// The operator binary, as its Deployment runs it, for the test namespace,
/// with its log going to a file. Stopped with SIGTERM by `stop`.
pub struct OperatorProcess {
    child: std::process::Child,
    log: tempfile::NamedTempFile,
}

impl OperatorProcess {
    pub fn start(env: &Env) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_visitcounter"))
            .args(["operator", "--namespace", &env.ns, "--leader-election", "false"])
            .args(["--admin-address", "127.0.0.1:0", "--resync-seconds", "2"])
            .args(["--visits-interval-seconds", "0", "--stuck-pod-seconds", "3"])
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("the visitcounter binary starts");
        Self { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for OperatorProcess {
    /// A scenario that failed before `stop` leaves no operator running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
