//! A stand-in cluster with the CRD installed, and the operator run in-process
//! against it through an unmodified `kube::Client`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use apiserver_standin::StandIn;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};
use visitcounter::{
    admission::Admission,
    controller::{ControllerSettings, Metrics},
    crd,
    operator::{Health, LeaseSettings, Operator, OperatorError, OperatorSettings},
    resource::{API_VERSION, KIND, VisitCounterApp},
};

pub const NS: &str = "shop";
/// Who the operator's requests come as, like the chart's service account.
pub const OPERATOR_USER: &str = "system:serviceaccount:visitcounter-system:visitcounter-operator";

pub struct Cluster {
    pub standin: StandIn,
    pub client: Client,
}

pub struct RunningOperator {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), OperatorError>>,
}

impl RunningOperator {
    /// Asks the operator to stop, and waits for it.
    pub async fn stop(mut self) -> Result<(), OperatorError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("the operator task does not panic")
    }
}

pub fn settings() -> OperatorSettings {
    OperatorSettings {
        controller: ControllerSettings {
            instance: Some("test".into()),
            ..ControllerSettings::default()
        },
        admin_address: None,
        lease: None,
    }
}

pub fn lease(identity: &str) -> LeaseSettings {
    LeaseSettings {
        name: "visitcounter-operator".into(),
        namespace: "default".into(),
        identity: identity.into(),
        duration: Duration::from_secs(2),
        grace: Duration::from_secs(1),
    }
}

impl Cluster {
    /// A stand-in that admits apps with the CRD's own rules, with the CRD installed.
    pub async fn start() -> Self {
        let cluster = Self::without_crd().await;
        let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
        crds.create(&PostParams::default(), &crd::definition())
            .await
            .expect("the CRD installs");
        cluster
    }

    pub async fn without_crd() -> Self {
        let standin = StandIn::start().await.expect("the stand-in starts");
        let admission = Arc::new(Admission::new());
        standin.validate_with(
            "visitcounterapps",
            Arc::new(move |object: &Value, old: Option<&Value>| {
                let app = admission.admit_update(object, old).map_err(|r| r.to_string())?;
                let mut admitted = serde_json::to_value(app).map_err(|e| e.to_string())?;
                // Admission checks what a user writes; the stored status is kept.
                if let Some(status) = object.get("status") {
                    admitted["status"] = status.clone();
                }
                Ok(admitted)
            }),
        );
        let client = standin.client();
        Self { standin, client }
    }

    pub fn start_operator(&self, settings: OperatorSettings) -> RunningOperator {
        let operator = Operator::new(self.standin.client_as(OPERATOR_USER), settings);
        let metrics = operator.metrics();
        let health = operator.health();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(operator.run(async move {
            let _ = stopped.await;
        }));
        RunningOperator {
            metrics,
            health,
            stop: Some(stop),
            task,
        }
    }

    pub fn apps(&self, namespace: &str) -> Api<VisitCounterApp> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Applies an app as `kubectl apply --server-side` would.
    pub async fn apply_app(&self, name: &str, spec: Value) {
        let app = json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec});
        self.apps(NS)
            .patch(name, &PatchParams::apply("kubectl"), &Patch::Apply(&app))
            .await
            .expect("the app is admitted");
    }

    /// Changes part of an app's spec, as `kubectl patch --type merge` would.
    pub async fn patch_spec(&self, name: &str, spec: Value) {
        self.apps(NS)
            .patch(name, &PatchParams::default(), &Patch::Merge(&json!({"spec": spec})))
            .await
            .expect("the patch is admitted");
    }

    pub fn get(&self, group: &str, plural: &str, name: &str) -> Option<Value> {
        self.standin.get(group, plural, NS, name)
    }

    /// The app's ConfigMaps (`<app>-config-<hash>`), found by its label.
    pub fn config_maps(&self, app: &str) -> Vec<Value> {
        self.standin
            .list("", "configmaps")
            .into_iter()
            .filter(|c| c["metadata"]["labels"]["app.kubernetes.io/instance"] == app)
            .collect()
    }

    /// The ConfigMap the app's StatefulSet names.
    pub fn config_map(&self, app: &str) -> Option<Value> {
        let sts = self.sts(app)?;
        let name = sts["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"].as_str()?;
        self.get("", "configmaps", name)
    }

    pub fn sts(&self, name: &str) -> Option<Value> {
        self.get("apps", "statefulsets", name)
    }

    pub fn app(&self, name: &str) -> Value {
        self.get("visitcounter.dev", "visitcounterapps", name)
            .unwrap_or_else(|| panic!("app {name} exists"))
    }

    /// `(status, reason, message)` of one condition of an app.
    pub fn condition(&self, name: &str, type_: &str) -> Option<(String, String, String)> {
        let app = self.app(name);
        let found = app["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)?
            .clone();
        Some((
            found["status"].as_str()?.to_owned(),
            found["reason"].as_str()?.to_owned(),
            found["message"].as_str()?.to_owned(),
        ))
    }

    pub fn is_ready(&self, name: &str) -> bool {
        let app = self.app(name);
        let generation = &app["metadata"]["generation"];
        self.condition(name, "Ready").is_some_and(|c| c.0 == "True")
            && app["status"]["observedGeneration"] == *generation
    }

    /// Events about app `name`, as (type, reason, note).
    pub fn events(&self, name: &str) -> Vec<(String, String, String)> {
        self.standin
            .list("events.k8s.io", "events")
            .into_iter()
            .filter(|e| e["regarding"]["name"] == name)
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_owned(),
                    e["reason"].as_str().unwrap_or_default().to_owned(),
                    e["note"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Write requests to the children and apps, the operator's own work
    /// (Lease renewals and Events are counted apart).
    pub fn child_writes(&self) -> usize {
        ["configmaps", "services", "statefulsets", "visitcounterapps"]
            .iter()
            .map(|p| self.standin.writes_to(p).len())
            .sum()
    }
}

/// The operator's requests since request number `from`, as "METHOD path"
/// without the namespace prefix: its writes and one-off reads, not its
/// watches, status writes, Events or Lease.
pub fn operator_calls(cluster: &Cluster, from: usize) -> Vec<String> {
    cluster.standin.requests()[from..]
        .iter()
        .filter(|r| r.user.as_deref() == Some(OPERATOR_USER) && !r.dry_run)
        .filter(|r| !r.query.contains("watch=") && !r.path.contains("/events") && !r.path.contains("/leases"))
        .filter(|r| !r.path.ends_with("/status"))
        .map(|r| format!("{} {}", r.method, r.path.replace(&format!("/namespaces/{NS}"), "")))
        .collect()
}

/// Polls `check` every 20 ms until it holds, or fails the test after `timeout`
/// saying what it waited for.
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const WAIT: Duration = Duration::from_secs(15);
