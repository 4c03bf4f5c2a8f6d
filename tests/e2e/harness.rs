//! The run of one scenario: its own namespace (under the `restricted` Pod
//! Security profile), the operator in-process for it when the scenario wants
//! one, what the cluster held if the scenario failed, and the namespace
//! deleted afterwards, pass or fail.

use std::{future::Future, panic::AssertUnwindSafe, pin::Pin, process::Command, sync::Arc, time::Duration};

use futures::FutureExt;
use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Namespace},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;
use visitcounter::{
    controller::ControllerSettings,
    crd,
    operator::{Operator, OperatorSettings},
    resource::VisitCounterApp,
};

use crate::env::{Env, eventually, install_crd};

pub type Scenario = for<'a> fn(&'a Env) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Whether a scenario runs beside the operator this harness starts, or
/// starts (or refuses to start) its own.
#[derive(Clone, Copy)]
pub enum Beside {
    TheOperator,
    ItsOwnOperator,
}

/// Runs `scenario` on a runtime of its own; a panic fails it.
pub fn run(name: &str, beside: Beside, scenario: Scenario) {
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
    runtime.block_on(run_async(name, beside, scenario));
    // Tasks the scenario left (watches of an operator it stopped) go with it.
    runtime.shutdown_timeout(Duration::from_secs(5));
}

async fn run_async(name: &str, beside: Beside, scenario: Scenario) {
    let client = Client::try_default().await.expect("a cluster from KUBECONFIG");
    crd_established(&client).await;
    let mut env = Env {
        client: client.clone(),
        ns: namespace(&client, name).await,
        metrics: None,
    };
    let running = match beside {
        Beside::TheOperator => Some(start_operator(&mut env).await),
        Beside::ItsOwnOperator => None,
    };
    let outcome = AssertUnwindSafe(scenario(&env)).catch_unwind().await;
    if outcome.is_err() {
        print_what_the_namespace_holds(&env).await;
    }
    if let Some((stop, running)) = running {
        let _ = stop.send(());
        let stopped = running.await;
        if outcome.is_ok() {
            stopped.expect("the operator task").expect("the operator stops cleanly");
        }
    }
    let _ = Api::<Namespace>::all(client)
        .delete(&env.ns, &DeleteParams::default())
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The CRD as this build defines it, applied and Established. Every
/// scenario starts from it, whatever an earlier one did to it.
async fn crd_established(client: &Client) {
    install_crd(client, crd::definition()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
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
}

/// A new namespace for the scenario `name`, enforcing `restricted`.
async fn namespace(client: &Client, name: &str) -> String {
    let short: String = name
        .rsplit("::")
        .next()
        .unwrap_or(name)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let ns = format!("e2e-{}-{:05}", short.trim_end_matches('-'), fastrand::u32(..100_000));
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
                "visitcounter.dev/e2e": "true",
            }}}))
            .unwrap(),
        )
        .await
        .expect("the namespace is created");
    ns
}

type Stop = tokio::sync::oneshot::Sender<()>;
type Running = tokio::task::JoinHandle<Result<(), visitcounter::operator::OperatorError>>;

/// The operator for the scenario's namespace, with its own client and
/// User-Agent as `visitcounter operator` builds them, resyncing every 2 s.
async fn start_operator(env: &mut Env) -> (Stop, Running) {
    let settings = OperatorSettings {
        controller: ControllerSettings {
            namespace: Some(env.ns.clone()),
            resync: Duration::from_secs(2),
            instance: Some("e2e".into()),
            // Pod IPs are not reachable from outside the cluster, where this
            // test runs; and the resync checks count every write.
            visits_interval: None,
            stuck_after: Duration::from_secs(3),
            ..ControllerSettings::default()
        },
        admin_address: None,
        lease: None,
    };
    // Its start checks the CRD the API server stores against the built-in one.
    let client = visitcounter::operator::client()
        .await
        .expect("a client from KUBECONFIG");
    let operator = Operator::new(client, settings);
    env.metrics = Some(Arc::clone(&operator.metrics()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(operator.run(async move {
        let _ = stopped.await;
    }));
    (stop, running)
}

async fn print_what_the_namespace_holds(env: &Env) {
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
    let listed = Command::new("kubectl")
        .args(["--namespace", &env.ns, "get", "pods,events", "-o", "wide"])
        .output();
    if let Ok(listed) = listed {
        eprintln!("{}", String::from_utf8_lossy(&listed.stdout));
    }
}
