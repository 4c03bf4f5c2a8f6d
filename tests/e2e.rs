//! End to end on a real Kubernetes API server: the control plane that
//! `scripts/cluster.sh up` starts (kube-apiserver, kube-controller-manager,
//! kube-scheduler and etcd from the Kubernetes Go modules, kwok's simulated
//! nodes), or any cluster named by `KUBECONFIG` (kind, k3d).
//!
//! `scripts/test.sh` runs it; by hand, after `eval "$(scripts/cluster.sh env)"`:
//! `cargo test --test e2e -- --ignored`. It is `#[ignore]`d otherwise, so a
//! plain `cargo test` reports it as ignored rather than passed.
//!
//! It installs the CRD, runs the operator in-process (with its own client and
//! User-Agent) for one temporary namespace that enforces the `restricted` Pod
//! Security profile, and deletes the namespace at the end, pass or fail.
//! Writes are counted from the API server's audit log when
//! `VISITCOUNTER_AUDIT_LOG` names it (`scripts/cluster.sh env` does).

mod fault_proxy;

use std::{
    collections::BTreeMap,
    io::{BufRead, Seek},
    panic::AssertUnwindSafe,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use futures::FutureExt;
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, Service},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use visitcounter::{
    build::DEFAULT_APP_IMAGE,
    controller::{ControllerSettings, Metrics},
    crd,
    operator::{Operator, OperatorSettings, USER_AGENT},
    resource::{API_VERSION, KIND, PAUSED_ANNOTATION, VisitCounterApp},
};

const WAIT: Duration = Duration::from_secs(90);
/// An image whose pods never become ready on the test control plane's
/// simulated nodes (tests/cluster/kwok-pod-stages.yaml).
const NEVER_READY_IMAGE: &str = "example.invalid/never-ready:v1";

struct Env {
    client: Client,
    ns: String,
}

impl Env {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn apply_app(&self, name: &str, spec: Value) {
        let app = json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec});
        self.apply_object(app).await;
    }

    async fn apply_object(&self, app: Value) {
        let name = app["metadata"]["name"].as_str().unwrap().to_owned();
        self.api::<VisitCounterApp>()
            .patch(&name, &PatchParams::apply("e2e").force(), &Patch::Apply(&app))
            .await
            .expect("the app is admitted");
    }

    async fn condition(&self, name: &str, type_: &str) -> Option<(String, String)> {
        let app = self.api::<VisitCounterApp>().get(name).await.ok()?;
        let c = app.status?.conditions.into_iter().find(|c| c.type_ == type_)?;
        Some((c.status, c.reason))
    }

    /// Whether the app says Ready and each of its pods is Ready.
    async fn ready_with_pods(&self, name: &str, replicas: usize) -> bool {
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
    async fn config_map_name(&self, app: &str) -> Option<String> {
        let sts = self.api::<StatefulSet>().get(app).await.ok()?;
        let volumes = sts.spec?.template.spec?.volumes?;
        volumes.into_iter().find_map(|v| Some(v.config_map?.name))
    }

    /// The ConfigMap the app's StatefulSet names.
    async fn config_map(&self, app: &str) -> Option<ConfigMap> {
        let name = self.config_map_name(app).await?;
        self.api::<ConfigMap>().get_opt(&name).await.ok().flatten()
    }

    /// The names of the app's ConfigMaps, found by its label.
    async fn config_map_names(&self, app: &str) -> Vec<String> {
        let list = self
            .api::<ConfigMap>()
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={app}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        list.into_iter().filter_map(|c| c.metadata.name).collect()
    }

    /// `kubectl` against the same cluster, as a user types it.
    fn kubectl(&self, args: &[&str]) -> String {
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

    async fn claim_uids(&self, app: &str) -> BTreeMap<String, String> {
        let claims = self
            .api::<PersistentVolumeClaim>()
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={app}")))
            .await
            .unwrap();
        claims
            .items
            .into_iter()
            .map(|c| (c.metadata.name.unwrap_or_default(), c.metadata.uid.unwrap_or_default()))
            .collect()
    }

    async fn pod_uids(&self, app: &str) -> BTreeMap<String, String> {
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
fn feature_enabled(env: &Env, gate: &str) -> bool {
    let metrics = env.kubectl(&["get", "--raw", "/metrics"]);
    metrics
        .lines()
        .any(|l| l.starts_with(&format!("kubernetes_feature_enabled{{name=\"{gate}\"")) && l.ends_with(" 1"))
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Polls `check` every 250 ms until it returns true.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < WAIT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The API server's audit log, read from where it ended when this was made.
struct AuditLog {
    path: PathBuf,
    offset: u64,
}

impl AuditLog {
    fn from_env() -> Option<Self> {
        let path = PathBuf::from(std::env::var_os("VISITCOUNTER_AUDIT_LOG")?);
        let offset = std::fs::metadata(&path).ok()?.len();
        Some(Self { path, offset })
    }

    /// `verb resource/subresource name` of every write the operator's
    /// User-Agent made in `namespace` since this log was opened.
    fn operator_writes(&self, namespace: &str) -> Vec<String> {
        let mut file = std::fs::File::open(&self.path).expect("the audit log is readable");
        file.seek(std::io::SeekFrom::Start(self.offset)).unwrap();
        std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
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

    /// Every request the operator made, whatever its namespace.
    fn operator_user_agents(&self) -> usize {
        let file = std::fs::File::open(&self.path).expect("the audit log is readable");
        std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|line| line.contains(&format!("\"userAgent\":\"{USER_AGENT}")))
            .count()
    }
}

#[tokio::test]
#[ignore = "needs a cluster: scripts/test.sh starts one and runs this"]
async fn end_to_end_against_a_real_cluster() {
    let client = Client::try_default().await.expect("a cluster from KUBECONFIG");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "visitcounterapps.visitcounter.dev",
        &PatchParams::apply("visitcounter-e2e").force(),
        &Patch::Apply(crd::definition()),
    )
    .await
    .expect("the API server accepts the CRD");
    eventually("the CRD is established", || async {
        crds.get("visitcounterapps.visitcounter.dev").await.is_ok_and(|c| {
            c.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
    })
    .await;
    let ns = format!("visitcounter-e2e-{}", fastrand::u32(..));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}}))
            .unwrap(),
        )
        .await
        .expect("the namespace is created");
    let env = Env {
        client: client.clone(),
        ns: ns.clone(),
    };
    let outcome = AssertUnwindSafe(scenarios(&env)).catch_unwind().await;
    if outcome.is_err() {
        for sts in env
            .api::<StatefulSet>()
            .list(&ListParams::default())
            .await
            .into_iter()
            .flat_map(|l| l.items)
        {
            eprintln!("StatefulSet {:?}: {:?}", sts.metadata.name, sts.status);
        }
        for app in env
            .api::<VisitCounterApp>()
            .list(&ListParams::default())
            .await
            .into_iter()
            .flat_map(|l| l.items)
        {
            eprintln!("VisitCounterApp {:?}: {:?}", app.metadata.name, app.status);
        }
        let pods = Command::new("kubectl")
            .args(["--namespace", &ns, "get", "pods,events", "-o", "wide"])
            .output();
        if let Ok(pods) = pods {
            eprintln!("{}", String::from_utf8_lossy(&pods.stdout));
        }
    }
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenarios(env: &Env) {
    let audit = AuditLog::from_env();
    let settings = OperatorSettings {
        controller: ControllerSettings {
            namespace: Some(env.ns.clone()),
            resync: Duration::from_secs(2),
            instance: Some("e2e".into()),
            // Pod IPs are not reachable from outside the cluster, where this
            // test runs; and the resync check below counts every write.
            visits_interval: None,
            stuck_after: Duration::from_secs(3),
            ..ControllerSettings::default()
        },
        admin_address: None,
        lease: None,
    };
    // The operator's own client, as `visitcounter operator` builds it. Its
    // start checks the CRD the API server stores against the built-in one.
    let client = visitcounter::operator::client()
        .await
        .expect("a client from KUBECONFIG");
    let operator = Operator::new(client, settings);
    let metrics: std::sync::Arc<Metrics> = operator.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(operator.run(async move {
        let _ = stopped.await;
    }));

    examples_reach_ready(env).await;
    pods_not_created(env).await;
    web(env, &metrics, audit.as_ref()).await;
    stuck_rollout(env).await;
    storage_growth(env).await;
    deletion_keeps_claims(env).await;

    if let Some(audit) = &audit {
        assert!(
            audit.operator_user_agents() > 0,
            "no request in the audit log carries the User-Agent {USER_AGENT}"
        );
    }
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    crd_check_on_the_stored_crd(env).await;
    leader_election_failure_exits(env).await;
    config_revisions(env).await;
    failures_are_retried(env).await;
}

/// The faults a real API server does not give on demand, a 500 and a 429,
/// injected by a proxy in front of it (`fault_proxy`): the operator,
/// talking through the proxy, retries, says so in an Event, and gets the
/// app Ready with nothing left Degraded.
async fn failures_are_retried(env: &Env) {
    use axum::http::Method;
    let proxy = fault_proxy::FaultProxy::start(env.client.clone()).await;
    proxy.fail(Some(Method::PATCH), "/statefulsets/faulty", 500, 2);
    proxy.fail(Some(Method::PATCH), "/configmaps/faulty-config-", 429, 2);
    let settings = OperatorSettings {
        controller: ControllerSettings {
            namespace: Some(env.ns.clone()),
            instance: Some("e2e-faults".into()),
            visits_interval: None,
            ..ControllerSettings::default()
        },
        admin_address: None,
        lease: None,
    };
    let client = Client::try_from(proxy.config(&env.ns)).unwrap();
    let operator = Operator::new(client, settings);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(operator.run(async move {
        let _ = stopped.await;
    }));
    env.apply_app("faulty", json!({"replicas": 2})).await;
    eventually("faulty is Ready with its pods despite the failures", || {
        env.ready_with_pods("faulty", 2)
    })
    .await;
    assert_eq!(proxy.pending_faults(), 0, "every injected failure was hit");
    let failed = env.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=faulty,reason=ApplyFailed,type=Warning",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        failed.contains("500") || failed.contains("injected"),
        "an ApplyFailed Event says why: {failed}"
    );
    assert_eq!(
        env.condition("faulty", "Degraded").await.map(|c| c.0).as_deref(),
        Some("False")
    );
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

/// A kubeconfig for the ServiceAccount `account` of the test namespace, with a
/// token from the TokenRequest API, for the same API server.
fn service_account_kubeconfig(env: &Env, account: &str) -> tempfile::NamedTempFile {
    let token = env.kubectl(&["create", "token", account, "--duration=10m"]);
    let mut config: Value = serde_json::from_str(&env.kubectl(&["config", "view", "--minify", "--raw", "-o", "json"]))
        .expect("kubectl prints the kubeconfig as JSON");
    config["users"] = json!([{"name": account, "user": {"token": token.trim()}}]);
    config["contexts"][0]["context"]["user"] = json!(account);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), config.to_string()).unwrap();
    file
}

/// Run as a ServiceAccount that may read the CRD but not the Lease,
/// `visitcounter operator` says why in its log and exits non-zero, so its
/// pod restarts and `kubectl logs` tells the story.
async fn leader_election_failure_exits(env: &Env) {
    let reader = format!("{}-crd-reader", env.ns);
    env.kubectl(&["create", "serviceaccount", "no-lease"]);
    env.kubectl(&[
        "create",
        "clusterrole",
        &reader,
        "--verb=get",
        "--resource=customresourcedefinitions.apiextensions.k8s.io",
    ]);
    env.kubectl(&[
        "create",
        "clusterrolebinding",
        &reader,
        &format!("--clusterrole={reader}"),
        &format!("--serviceaccount={}:no-lease", env.ns),
    ]);
    let kubeconfig = service_account_kubeconfig(env, "no-lease");
    let started = Instant::now();
    let mut operator = Command::new(env!("CARGO_BIN_EXE_visitcounter"))
        .args(["operator", "--namespace", &env.ns, "--leader-election", "true"])
        .args(["--lease-namespace", &env.ns, "--admin-address", "127.0.0.1:0"])
        .env("KUBECONFIG", kubeconfig.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = operator.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = operator.kill();
            panic!("the operator did not exit by itself when leader election failed");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut operator.stderr.take().unwrap(), &mut log).unwrap();
    let _ = Command::new("kubectl")
        .args(["delete", "clusterrolebinding,clusterrole", &reader])
        .output();
    assert!(!status.success(), "exit status {status:?}\n{log}");
    assert!(
        log.contains("leader election failed") && log.contains("forbidden"),
        "the log says why:\n{log}"
    );
    println!("leader election refused: exited in {:?}", started.elapsed());
}

/// The operator started, so the CRD as the API server stores it passed the
/// check. An older CRD (without a field) and a newer one (with one more) are
/// refused, each with what to do.
async fn crd_check_on_the_stored_crd(env: &Env) {
    use visitcounter::operator::{CrdProblem, crd_check::check_installed};
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let install = |crd: CustomResourceDefinition| {
        let crds = crds.clone();
        async move {
            crds.patch(
                "visitcounterapps.visitcounter.dev",
                &PatchParams::apply("visitcounter-e2e").force(),
                &Patch::Apply(crd),
            )
            .await
            .expect("the API server takes the CRD");
        }
    };
    let with_spec_fields = |change: &dyn Fn(&mut std::collections::BTreeMap<String, _>)| {
        let mut crd = crd::definition();
        change(crd::spec_fields_mut(&mut crd).unwrap());
        crd
    };
    assert_eq!(check_installed(&env.client).await, Ok(()));
    install(with_spec_fields(&|fields| {
        fields.remove("createServiceAccount");
    }))
    .await;
    let older = check_installed(&env.client).await.unwrap_err();
    assert!(
        matches!(&older, CrdProblem::Outdated { path, .. } if path.contains("createServiceAccount")),
        "{older}"
    );
    install(with_spec_fields(&|fields| {
        let copy = fields["createServiceAccount"].clone();
        fields.insert("someFutureField".into(), copy);
    }))
    .await;
    let newer = check_installed(&env.client).await.unwrap_err();
    assert!(
        matches!(&newer, CrdProblem::Newer { path, .. } if path.contains("someFutureField")),
        "{newer}"
    );
    install(crd::definition()).await;
    assert_eq!(check_installed(&env.client).await, Ok(()));
}

/// The seed's two apps and `examples/minimal.yaml`, admitted under the
/// `restricted` Pod Security profile, reach Ready with every pod Ready. The
/// seed's apps run under the ServiceAccount the operator creates for them.
async fn examples_reach_ready(env: &Env) {
    let mut replicas = Vec::new();
    for example in ["minimal", "app-python", "app-go"] {
        let path = format!("{}/examples/{example}.yaml", env!("CARGO_MANIFEST_DIR"));
        let object: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        replicas.push((example, object["spec"]["replicas"].as_u64().unwrap_or(1) as usize));
        env.apply_object(object).await;
    }
    for (example, replicas) in replicas {
        eventually(&format!("{example} is Ready with {replicas} pods Ready"), || {
            env.ready_with_pods(example, replicas)
        })
        .await;
    }
    let account = env.kubectl(&["get", "pod", "app-go-0", "-o", "jsonpath={.spec.serviceAccountName}"]);
    assert_eq!(account, "internal-app");
    // The environment holds what config.env and config.jsonEnvVar say, and
    // not the ConfigMap's config.json key as a variable.
    let container = |path: &str| {
        env.kubectl(&[
            "get",
            "pod",
            "app-go-0",
            "-o",
            &format!("jsonpath={{.spec.containers[0].{path}}}"),
        ])
    };
    assert_eq!(container("envFrom"), "");
    assert_eq!(
        container("env[*].name"),
        "VISITCOUNTER_POD_NAME VISITCOUNTER_PORT VISITCOUNTER_DATA_DIR VISITCOUNTER_CONFIG APP_LANGUAGE LAB12_KEY"
    );
}

/// Pods the StatefulSet controller cannot create (here: their ServiceAccount
/// does not exist) make the app Degraded with the controller's own message;
/// once the account exists, the pods come and the app is Ready.
async fn pods_not_created(env: &Env) {
    env.apply_app("lonely", json!({"serviceAccountName": "nobody"})).await;
    eventually("lonely is Degraded: its pods cannot be created", || async {
        let Ok(app) = env.api::<VisitCounterApp>().get("lonely").await else {
            return false;
        };
        let conditions = app.status.map(|s| s.conditions).unwrap_or_default();
        let degraded = conditions.iter().find(|c| c.type_ == "Degraded");
        let progressing = conditions.iter().find(|c| c.type_ == "Progressing");
        degraded.is_some_and(|c| {
            c.status == "True"
                && c.reason == "PodsNotCreated"
                && c.message.contains("serviceaccount \"nobody\" not found")
        }) && progressing.is_some_and(|c| c.status == "False" && c.reason == "PodsNotCreated")
    })
    .await;
    env.kubectl(&["create", "serviceaccount", "nobody"]);
    eventually("with its ServiceAccount, lonely is Ready", || {
        env.ready_with_pods("lonely", 1)
    })
    .await;
    env.api::<VisitCounterApp>()
        .delete("lonely", &DeleteParams::default())
        .await
        .unwrap();
}

/// One app through a day of changes: scale, image, config rollouts, another
/// field manager's partition, pause, canary, a refused shrink, a policy change,
/// drift, a taken node port, and resyncs that write nothing.
async fn web(env: &Env, metrics: &Metrics, audit: Option<&AuditLog>) {
    env.apply_app("web", json!({"replicas": 2})).await;
    let stateful_sets = env.api::<StatefulSet>();
    eventually("the children exist", || async {
        stateful_sets.get_opt("web").await.ok().flatten().is_some()
            && env.api::<Service>().get_opt("web").await.ok().flatten().is_some()
            && env
                .api::<Service>()
                .get_opt("web-headless")
                .await
                .ok()
                .flatten()
                .is_some()
            && env.config_map("web").await.is_some()
    })
    .await;
    eventually("web is Ready with 2 pods Ready", || env.ready_with_pods("web", 2)).await;

    // kubectl scale goes through the scale subresource to the StatefulSet.
    env.kubectl(&["scale", "vca/web", "--replicas=3"]);
    eventually("kubectl scale reaches the StatefulSet and the pods", || async {
        stateful_sets
            .get("web")
            .await
            .is_ok_and(|s| s.spec.unwrap_or_default().replicas == Some(3))
            && env.ready_with_pods("web", 3).await
    })
    .await;

    let moved = "example.invalid/visitcounter:e2e";
    env.apply_app("web", json!({"replicas": 3, "image": moved})).await;
    eventually("scale and image reach the StatefulSet", || async {
        stateful_sets.get("web").await.is_ok_and(|s| {
            let spec = s.spec.unwrap_or_default();
            spec.replicas == Some(3)
                && spec.template.spec.unwrap_or_default().containers[0].image.as_deref() == Some(moved)
        })
    })
    .await;

    let image = std::env::var("VISITCOUNTER_E2E_IMAGE").unwrap_or_else(|_| DEFAULT_APP_IMAGE.to_owned());
    env.apply_app(
        "web",
        json!({"replicas": 3, "image": image, "config": {"json": {"color": "teal"}}}),
    )
    .await;
    let config_maps = env.api::<ConfigMap>();
    eventually("the config reaches the ConfigMap the template names", || async {
        env.config_map("web").await.is_some_and(|c| {
            c.data
                .unwrap_or_default()
                .get("config.json")
                .is_some_and(|j| j.contains("teal"))
        })
    })
    .await;

    // Day 2: a new config, in a ConfigMap of its own, rolls the pods; a
    // re-apply does not.
    let checksum = || env.config_map_name("web");
    let teal = checksum().await;
    env.apply_app(
        "web",
        json!({"replicas": 3, "image": image, "config": {"json": {"color": "teal"}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(checksum().await, teal, "the same config changed the template");
    env.apply_app(
        "web",
        json!({"replicas": 3, "image": image, "config": {"json": {"color": "plum"}}}),
    )
    .await;
    eventually("a new config changes the checksum", || async {
        checksum().await != teal
    })
    .await;
    eventually("the config rollout reaches every pod", || env.ready_with_pods("web", 3)).await;

    // A partition another field manager sets is left alone.
    stateful_sets
        .patch(
            "web",
            &PatchParams::apply("rollout-tool"),
            &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}})),
        )
        .await
        .expect("no conflict: the operator does not own an unset partition");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let partition = stateful_sets
        .get("web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .update_strategy
        .unwrap();
    assert_eq!(partition.rolling_update.and_then(|r| r.partition), Some(2));

    // Paused: spec changes wait for the annotation to go.
    let apps = env.api::<VisitCounterApp>();
    let annotate = |value: Value| {
        let apps = apps.clone();
        async move {
            apps.patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {PAUSED_ANNOTATION: value}}})),
            )
            .await
            .unwrap();
        }
    };
    annotate(json!("true")).await;
    eventually("the status says paused", || async {
        env.condition("web", "Paused").await.is_some_and(|c| c.0 == "True")
    })
    .await;
    env.apply_app(
        "web",
        json!({"replicas": 4, "image": image, "config": {"json": {"color": "plum"}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stateful_sets.get("web").await.unwrap().spec.unwrap().replicas, Some(3));
    annotate(Value::Null).await;
    eventually("resumed, the scale goes through", || async {
        stateful_sets
            .get("web")
            .await
            .is_ok_and(|s| s.spec.unwrap_or_default().replicas == Some(4))
    })
    .await;
    env.apply_app(
        "web",
        json!({"replicas": 3, "image": image, "config": {"json": {"color": "teal"}}}),
    )
    .await;

    // A canary of 2 pods: partition 1 (taken over from the rollout tool
    // above), so the new template reaches web-1 and web-2 only; removing it
    // leaves the partition to the API server's default and promotes.
    let partition = || async {
        stateful_sets
            .get("web")
            .await
            .ok()
            .and_then(|s| s.spec?.update_strategy?.rolling_update?.partition)
    };
    let canary = |replicas: Value| {
        json!({"replicas": 3, "image": image, "config": {"json": {"color": "amber"}},
               "updateStrategy": {"rollingUpdate": {"canaryReplicas": replicas}}})
    };
    env.apply_app("web", canary(json!(2))).await;
    eventually("the canary sets the partition and holds", || async {
        partition().await == Some(1)
            && env
                .condition("web", "Progressing")
                .await
                .is_some_and(|c| c.0 == "False" && c.1 == "RolloutHeld")
    })
    .await;
    let status = apps.get("web").await.unwrap().status.unwrap();
    assert_eq!(status.updated_replicas, 2, "{status:?}");
    env.apply_app(
        "web",
        json!({"replicas": 3, "image": image, "config": {"json": {"color": "amber"}}}),
    )
    .await;
    eventually("promoted: the partition is back to 0, every pod updated", || async {
        partition().await.unwrap_or(0) == 0
            && apps
                .get("web")
                .await
                .is_ok_and(|a| a.status.is_some_and(|s| s.updated_replicas == 3))
            && env.ready_with_pods("web", 3).await
    })
    .await;

    // A smaller volume is refused by the API server itself, with the reason.
    let shrink = json!({"apiVersion": "visitcounter.dev/v1alpha1", "kind": "VisitCounterApp",
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "image": image, "config": {"json": {"color": "amber"}}, "storage": {"size": "512Mi"}}});
    let refused = apps
        .patch("web", &PatchParams::apply("e2e"), &Patch::Apply(shrink))
        .await
        .expect_err("a smaller storage.size is refused");
    assert!(
        refused
            .to_string()
            .contains("storage.size cannot shrink from 1Gi to 512Mi"),
        "{refused}"
    );

    // A new pod management policy re-creates the StatefulSet; its pods and
    // claims are the same objects afterwards.
    let claims_before = env.claim_uids("web").await;
    let pods_before = env.pod_uids("web").await;
    // web-3's claim stays from the scale to 4: a scale-down keeps claims.
    assert_eq!(claims_before.len(), 4, "{claims_before:?}");
    let old_uid = stateful_sets.get("web").await.unwrap().metadata.uid;
    env.apply_app(
        "web",
        json!({"replicas": 3, "image": image, "config": {"json": {"color": "amber"}}, "podManagementPolicy": "Parallel"}),
    )
    .await;
    eventually("the StatefulSet is re-created with the new policy", || async {
        stateful_sets.get("web").await.is_ok_and(|s| {
            s.metadata.uid != old_uid && s.spec.unwrap_or_default().pod_management_policy.as_deref() == Some("Parallel")
        })
    })
    .await;
    eventually("web is Ready again", || env.ready_with_pods("web", 3)).await;
    assert_eq!(env.claim_uids("web").await, claims_before, "a claim was replaced");
    assert_eq!(env.pod_uids("web").await, pods_before, "a pod was replaced");
    // The re-create waited for the orphaning delete: no apply was refused
    // on the terminating StatefulSet.
    let refused = env.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=RecreateFailed",
        "-o",
        "name",
    ]);
    assert!(refused.is_empty(), "the re-create failed first: {refused}");

    let current_config = env.config_map_name("web").await.unwrap();
    config_maps
        .delete(&current_config, &DeleteParams::default())
        .await
        .unwrap();
    stateful_sets
        .patch(
            "web",
            &PatchParams::apply("someone").force(),
            &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    eventually("the deleted and the edited child are put back", || async {
        config_maps.get_opt(&current_config).await.ok().flatten().is_some()
            && stateful_sets
                .get("web")
                .await
                .is_ok_and(|s| s.spec.unwrap_or_default().replicas == Some(3))
    })
    .await;

    // Of two apps asking for one node port, the second gets none of its
    // children and says why.
    // A node port no Service of the cluster holds yet.
    let taken: std::collections::BTreeSet<i32> = Api::<Service>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .flat_map(|s| s.spec.iter().flat_map(|spec| spec.ports.iter().flatten()))
        .filter_map(|p| p.node_port)
        .collect();
    let port = std::iter::repeat_with(|| 30000 + fastrand::i32(0..2700))
        .find(|p| !taken.contains(p))
        .unwrap();
    env.apply_app("first", json!({"service": {"nodePort": port}})).await;
    eventually("the first app holds the port", || async {
        apps.get("first")
            .await
            .is_ok_and(|a| a.status.and_then(|s| s.node_port) == Some(port))
    })
    .await;
    env.apply_app("second", json!({"service": {"nodePort": port}})).await;
    eventually("the app whose port is taken is Degraded", || async {
        env.condition("second", "Degraded")
            .await
            .is_some_and(|c| c.0 == "True" && c.1 == "ChildRejected")
    })
    .await;
    assert_eq!(
        env.config_map_names("second").await,
        Vec::<String>::new(),
        "a refused app got part of its children"
    );
    apps.delete("second", &DeleteParams::default()).await.unwrap();

    // A StatefulSet a cluster's admission policy refuses, after the Services,
    // the ServiceAccount and the ConfigMap were created: they are deleted
    // again, and the app says why.
    refused_statefulset_leaves_nothing(env).await;

    // maxUnavailable needs a feature gate that is off by default in 1.36:
    // the API server drops it, and the app says so instead of re-applying it.
    env.apply_app(
        "gated",
        json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}}),
    )
    .await;
    let gate_on = feature_enabled(env, "MaxUnavailableStatefulSet");
    if gate_on {
        println!("MaxUnavailableStatefulSet is on in this cluster: maxUnavailable is kept");
    } else {
        eventually("gated says maxUnavailable has no effect", || async {
            env.condition("gated", "UnsupportedSpec")
                .await
                .is_some_and(|c| c.0 == "True" && c.1 == "DroppedByAPIServer")
        })
        .await;
        let events = env.kubectl(&["get", "events", "--field-selector", "reason=FieldDropped", "-o", "name"]);
        assert_eq!(events.lines().count(), 1, "one FieldDropped Event: {events}");
    }

    // Converged: resyncs every 2 s cost no write, as the API server counts.
    eventually("every app is Ready", || async {
        env.ready_with_pods("web", 3).await
            && env.ready_with_pods("first", 1).await
            && env.ready_with_pods("minimal", 1).await
            && env.ready_with_pods("app-python", 3).await
            && env.ready_with_pods("app-go", 3).await
            && env.ready_with_pods("gated", 1).await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = metrics.total_writes();
    let reconciles = metrics.reconciles();
    let window = AuditLog::from_env();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(metrics.reconciles() > reconciles + 3, "no resync happened");
    if let (Some(window), Some(_)) = (window, audit) {
        let writes = window.operator_writes(&env.ns);
        assert!(
            writes.is_empty(),
            "the audit log shows writes over resyncs: {writes:#?}"
        );
    }
    assert_eq!(
        metrics.total_writes(),
        writes,
        "a converged app was written on a resync"
    );
}

/// A pod of a broken image never becomes ready: the rollout is reported
/// stuck; reverting the image alone leaves it stuck under OrderedReady
/// (kubernetes#67250), and `replaceStuckPods` gets it going again.
async fn stuck_rollout(env: &Env) {
    let spec = |image: &str| {
        json!({"replicas": 3, "image": image,
               "updateStrategy": {"rollingUpdate": {"replaceStuckPods": true}}})
    };
    env.apply_app("stuck", spec(DEFAULT_APP_IMAGE)).await;
    eventually("stuck is Ready with 3 pods", || env.ready_with_pods("stuck", 3)).await;
    env.apply_app("stuck", spec(NEVER_READY_IMAGE)).await;
    let apps = env.api::<VisitCounterApp>();
    eventually("the stuck pod is reported", || async {
        let Ok(app) = apps.get("stuck").await else { return false };
        let stuck = app.status.as_ref().and_then(|s| s.rollout.as_ref()?.stuck_pod.clone());
        stuck.is_some_and(|p| p.name == "stuck-2")
            && env
                .condition("stuck", "Progressing")
                .await
                .is_some_and(|c| c.0 == "False" && c.1 == "RolloutStuck")
    })
    .await;
    env.apply_app("stuck", spec(DEFAULT_APP_IMAGE)).await;
    eventually("reverted, the stuck pod is replaced and every pod is Ready", || async {
        env.ready_with_pods("stuck", 3).await
            && apps.get("stuck").await.is_ok_and(|a| {
                a.status
                    .is_some_and(|s| s.rollout.is_none_or(|r| r.stuck_pod.is_none()))
            })
    })
    .await;
    apps.delete("stuck", &DeleteParams::default()).await.unwrap();
}

/// A larger volume grows every claim in place (the test cluster's default
/// StorageClass allows expansion) and re-creates the StatefulSet around the
/// same pods and claims.
async fn storage_growth(env: &Env) {
    let spec = |size: &str| json!({"replicas": 2, "storage": {"size": size}});
    env.apply_app("grow", spec("1Gi")).await;
    eventually("grow is Ready with 2 pods", || env.ready_with_pods("grow", 2)).await;
    let claims_before = env.claim_uids("grow").await;
    let pods_before = env.pod_uids("grow").await;
    env.apply_app("grow", spec("2Gi")).await;
    let claims = env.api::<PersistentVolumeClaim>();
    eventually("every claim has grown to 2Gi", || async {
        let Ok(list) = claims
            .list(&ListParams::default().labels("app.kubernetes.io/instance=grow"))
            .await
        else {
            return false;
        };
        list.items.len() == 2
            && list.items.iter().all(|c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.capacity.as_ref()?.get("storage").cloned())
                    .is_some_and(|q| q.0 == "2Gi")
            })
    })
    .await;
    let stateful_sets = env.api::<StatefulSet>();
    eventually("the StatefulSet asks for 2Gi and grow is Ready", || async {
        stateful_sets.get("grow").await.is_ok_and(|s| {
            let template = &s.spec.unwrap_or_default().volume_claim_templates.unwrap_or_default()[0];
            template
                .spec
                .as_ref()
                .and_then(|t| t.resources.as_ref()?.requests.as_ref()?.get("storage").cloned())
                .is_some_and(|q| q.0 == "2Gi")
        }) && env.ready_with_pods("grow", 2).await
    })
    .await;
    assert_eq!(env.claim_uids("grow").await, claims_before, "a claim was replaced");
    assert_eq!(env.pod_uids("grow").await, pods_before, "a pod was replaced");
}

/// Deleting an app lets the garbage collector take its children, and keeps
/// its claims: the visit counts live on them.
async fn deletion_keeps_claims(env: &Env) {
    let claims_before = env.claim_uids("grow").await;
    env.api::<VisitCounterApp>()
        .delete("grow", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the garbage collector removes the StatefulSet and its pods", || async {
        env.api::<StatefulSet>().get_opt("grow").await.ok().flatten().is_none() && env.pod_uids("grow").await.is_empty()
    })
    .await;
    assert_eq!(env.claim_uids("grow").await, claims_before, "a claim was deleted");
}

/// The operator binary, as its Deployment runs it, for the test namespace,
/// with its log going to a file. Stopped with SIGTERM by `stop`.
struct OperatorProcess {
    child: std::process::Child,
    log: tempfile::NamedTempFile,
}

impl OperatorProcess {
    fn start(env: &Env) -> Self {
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.log()
    }
}

/// The ConfigMaps a pod's volumes and variables name.
fn pod_config_maps(pod: &Pod) -> std::collections::BTreeSet<String> {
    let Some(spec) = &pod.spec else {
        return Default::default();
    };
    let volumes = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| Some(v.config_map.as_ref()?.name.clone()));
    let variables = spec
        .containers
        .iter()
        .flat_map(|c| c.env.iter().flatten())
        .filter_map(|e| Some(e.value_from.as_ref()?.config_map_key_ref.as_ref()?.name.clone()));
    volumes.chain(variables).collect()
}

/// A config change under a canary: each revision keeps its own immutable
/// ConfigMap, so held pods (even re-created) keep the old config while the
/// canary runs the new; reverting and promoting move the pods; a ConfigMap
/// no revision needs any more is deleted; and the operator's log tells each
/// step in the words of its Events.
async fn config_revisions(env: &Env) {
    let operator = OperatorProcess::start(env);
    let outcome = AssertUnwindSafe(config_revision_steps(env, &operator))
        .catch_unwind()
        .await;
    let log = operator.stop();
    match outcome {
        Ok(names) => {
            let app = format!("app={}/canary", env.ns);
            let logged = |words: &str| {
                log.lines()
                    .any(|l| l.contains(" INFO ") && l.contains(&app) && l.contains(words))
            };
            for line in log.lines().filter(|l| l.contains(&app)) {
                println!("operator log: {line}");
            }
            for words in [
                format!("created ConfigMap {}", names[0]),
                format!("created ConfigMap {}", names[1]),
                "updated StatefulSet canary (spec.template.spec.containers[0].env[4].valueFrom.configMapKeyRef.name"
                    .to_owned(),
                "held: 1 of 3 pods run revision".to_owned(),
                "promoted: the partition went from 2 to 0, so canary-0 to canary-1 are no longer held".to_owned(),
                format!("deleted ConfigMap {}", names[1]),
            ] {
                assert!(logged(&words), "the log says {words:?} at info level:\n{log}");
            }
        }
        Err(panic) => {
            eprintln!("operator log:\n{log}");
            std::panic::resume_unwind(panic);
        }
    }
}

/// The steps of `config_revisions`; returns the names of the ConfigMaps of
/// the first two configs.
async fn config_revision_steps(env: &Env, operator: &OperatorProcess) -> [String; 2] {
    let image = std::env::var("VISITCOUNTER_E2E_IMAGE").unwrap_or_else(|_| DEFAULT_APP_IMAGE.to_owned());
    let spec = |color: &str, mode: &str, canary: Option<i32>| {
        let mut spec = json!({"replicas": 3, "image": image, "revisionHistoryLimit": 1,
            "config": {"json": {"color": color}, "env": [{"name": "MODE", "value": mode}]}});
        if let Some(canary) = canary {
            spec["updateStrategy"] = json!({"rollingUpdate": {"canaryReplicas": canary}});
        }
        spec
    };
    let pods = env.api::<Pod>();
    let config_maps = env.api::<ConfigMap>();
    // Each pod's ConfigMaps, by pod name.
    let pod_configs = || async {
        pods.list(&ListParams::default().labels("app.kubernetes.io/instance=canary"))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .iter()
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), pod_config_maps(p)))
            .collect::<BTreeMap<_, _>>()
    };
    let on = |names: &[&str], config: &str| {
        let config = std::collections::BTreeSet::from([config.to_owned()]);
        names
            .iter()
            .map(|n| (n.to_string(), config.clone()))
            .collect::<BTreeMap<_, _>>()
    };

    env.apply_app("canary", spec("red", "a", None)).await;
    eventually("canary is Ready with 3 pods", || env.ready_with_pods("canary", 3)).await;
    let red = env.config_map_name("canary").await.unwrap();
    assert_eq!(pod_configs().await, on(&["canary-0", "canary-1", "canary-2"], &red));

    // A new config under a canary of one pod: a ConfigMap of its own.
    env.apply_app("canary", spec("blue", "b", Some(1))).await;
    eventually("the canary holds two pods at the old revision", || async {
        env.condition("canary", "Progressing")
            .await
            .is_some_and(|c| c.1 == "RolloutHeld")
    })
    .await;
    let blue = env.config_map_name("canary").await.unwrap();
    assert_ne!(blue, red, "a new config gets a new ConfigMap");
    let mut expected = on(&["canary-0", "canary-1"], &red);
    expected.extend(on(&["canary-2"], &blue));
    assert_eq!(pod_configs().await, expected, "held pods keep the old config");
    for (name, color) in [(&red, "red"), (&blue, "blue")] {
        let config_map = config_maps.get(name).await.unwrap();
        assert_eq!(config_map.immutable, Some(true), "{name}");
        let data = config_map.data.unwrap_or_default();
        assert!(data["config.json"].contains(color), "{name}: {data:?}");
    }
    let before = pods.get("canary-0").await.unwrap().metadata.uid;
    pods.delete("canary-0", &DeleteParams::default()).await.unwrap();
    eventually("the deleted held pod comes back, ready", || async {
        pods.get("canary-0")
            .await
            .is_ok_and(|p| p.metadata.uid != before && pod_ready(&p))
    })
    .await;
    assert_eq!(
        pod_configs().await,
        expected,
        "a re-created held pod mounts its revision's config, not the canary's"
    );

    // Reverting the config and removing the canary: every pod on the old
    // config again, the canary pod too.
    env.apply_app("canary", spec("red", "a", None)).await;
    eventually("every pod is back on the old config, the rollout complete", || async {
        pod_configs().await == on(&["canary-0", "canary-1", "canary-2"], &red)
            && env.ready_with_pods("canary", 3).await
            && env
                .condition("canary", "Progressing")
                .await
                .is_some_and(|c| c.1 == "RolloutComplete")
    })
    .await;
    assert_eq!(env.config_map_name("canary").await.as_deref(), Some(red.as_str()));

    // A third config under a canary, then promoted.
    env.apply_app("canary", spec("green", "c", Some(1))).await;
    eventually("the new canary holds", || async {
        env.condition("canary", "Progressing")
            .await
            .is_some_and(|c| c.1 == "RolloutHeld")
    })
    .await;
    let green = env.config_map_name("canary").await.unwrap();
    env.apply_app("canary", spec("green", "c", None)).await;
    eventually("promoted: every pod on the new config", || async {
        pod_configs().await == on(&["canary-0", "canary-1", "canary-2"], &green)
            && env.ready_with_pods("canary", 3).await
    })
    .await;
    // revisionHistoryLimit 1 keeps one revision besides the current: the
    // red one, re-used last. Nothing refers to the blue ConfigMap.
    eventually("the ConfigMap no revision needs is deleted", || async {
        let mut names = env.config_map_names("canary").await;
        names.sort();
        let mut wanted = vec![red.clone(), green.clone()];
        wanted.sort();
        names == wanted
    })
    .await;
    assert!(
        operator.log().contains(&format!("deleted ConfigMap {blue}")),
        "{}",
        operator.log()
    );
    [red, blue]
}

/// A ValidatingAdmissionPolicy (in-tree CEL admission) refuses StatefulSets
/// of 7 replicas in the test namespace; an app of 7 gets no child at all.
async fn refused_statefulset_leaves_nothing(env: &Env) {
    use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
    let name = format!("{}-no-seven", env.ns);
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(env.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(env.client.clone());
    let params = PatchParams::apply("e2e").force();
    policies
        .patch(
            &name,
            &params,
            &Patch::Apply(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {"failurePolicy": "Fail",
                     "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                         "operations": ["CREATE", "UPDATE"], "resources": ["statefulsets"]}]},
                     "validations": [{"expression": "object.spec.replicas != 7",
                                      "message": "this cluster allows no StatefulSet of 7 replicas"}]}})),
        )
        .await
        .expect("the policy is created");
    bindings
        .patch(&name, &params, &Patch::Apply(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"],
                     "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": env.ns}}}}})))
        .await
        .expect("the binding is created");
    // The API server loads a new policy within a second or so.
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.apply_app("seven", json!({"replicas": 7, "createServiceAccount": true}))
        .await;
    eventually("seven is Degraded by the refused StatefulSet", || async {
        env.condition("seven", "Degraded")
            .await
            .is_some_and(|c| c.0 == "True" && c.1 == "ChildRejected")
    })
    .await;
    let app = env.api::<VisitCounterApp>().get("seven").await.unwrap();
    let degraded = app
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert!(degraded.message.contains("7 replicas"), "{}", degraded.message);
    eventually("every child created before the refusal is deleted again", || async {
        let left = env.kubectl(&[
            "get",
            "svc,sa,cm,sts",
            "-l",
            "app.kubernetes.io/instance=seven",
            "-o",
            "name",
        ]);
        left.trim().is_empty()
    })
    .await;
    let rolled_back = env.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=RolledBack",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        rolled_back.contains("since StatefulSet seven was refused"),
        "a RolledBack Event says what was removed: {rolled_back}"
    );
    env.api::<VisitCounterApp>()
        .delete("seven", &DeleteParams::default())
        .await
        .unwrap();
    let _ = bindings.delete(&name, &DeleteParams::default()).await;
    let _ = policies.delete(&name, &DeleteParams::default()).await;
}
