//! End to end against a real cluster (kind, k3d, ...): `VISITCOUNTER_E2E=1
//! cargo test --test e2e`, with `KUBECONFIG` naming the cluster. Skipped, and
//! says so, otherwise.
//!
//! It installs the CRD, runs the operator in-process for one temporary
//! namespace, and deletes the namespace at the end, pass or fail. Everything
//! that needs no running pod passes on a control plane with no nodes; the
//! checks that need ready pods run only when a node can take them.

use std::{
    panic::AssertUnwindSafe,
    time::{Duration, Instant},
};

use futures::FutureExt;
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, Namespace, Node, PersistentVolumeClaim, Service},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use visitcounter::{
    build::{CONFIG_CHECKSUM_ANNOTATION, DEFAULT_APP_IMAGE},
    controller::{ControllerSettings, Metrics},
    crd,
    operator::{Operator, OperatorSettings},
    resource::{API_VERSION, KIND, PAUSED_ANNOTATION, VisitCounterApp},
};

const WAIT: Duration = Duration::from_secs(90);

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

    async fn apply_app(&self, name: &str, spec: serde_json::Value) {
        let app = json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec});
        self.api::<VisitCounterApp>()
            .patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&app))
            .await
            .expect("the app is admitted");
    }

    async fn condition(&self, name: &str, type_: &str) -> Option<(String, String)> {
        let app = self.api::<VisitCounterApp>().get(name).await.ok()?;
        let c = app.status?.conditions.into_iter().find(|c| c.type_ == type_)?;
        Some((c.status, c.reason))
    }
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

async fn schedulable_nodes(client: &Client) -> bool {
    let nodes: Api<Node> = Api::all(client.clone());
    let Ok(list) = nodes.list(&ListParams::default()).await else {
        return false;
    };
    list.items.iter().any(|n| {
        let spec = n.spec.clone().unwrap_or_default();
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let tainted = spec
            .taints
            .unwrap_or_default()
            .iter()
            .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute");
        ready && !spec.unschedulable.unwrap_or(false) && !tainted
    })
}

#[tokio::test]
async fn end_to_end_against_a_real_cluster() {
    if std::env::var("VISITCOUNTER_E2E").as_deref() != Ok("1") {
        println!("e2e skipped: set VISITCOUNTER_E2E=1 (and KUBECONFIG) to run it against a real cluster");
        return;
    }
    let client = Client::try_default().await.expect("a cluster from KUBECONFIG");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "visitcounterapps.visitcounter.dev",
        &PatchParams::apply("visitcounter-e2e").force(),
        &Patch::Apply(crd::definition()),
    )
    .await
    .expect("the CRD installs");
    let ns = format!("visitcounter-e2e-{}", fastrand::u32(..));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
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
    }
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenarios(env: &Env) {
    let settings = OperatorSettings {
        controller: ControllerSettings {
            namespace: Some(env.ns.clone()),
            resync: Duration::from_secs(2),
            instance: Some("e2e".into()),
            // Pod IPs are not reachable from outside the cluster, where this
            // test runs; and the resync check below counts every write.
            visits_interval: None,
            ..ControllerSettings::default()
        },
        admin_address: None,
        lease: None,
    };
    let operator = Operator::new(env.client.clone(), settings);
    let metrics: std::sync::Arc<Metrics> = operator.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(operator.run(async move {
        let _ = stopped.await;
    }));

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
            && env
                .api::<ConfigMap>()
                .get_opt("web-config")
                .await
                .ok()
                .flatten()
                .is_some()
    })
    .await;
    eventually("the status is written", || async {
        env.condition("web", "Degraded").await.is_some_and(|c| c.0 == "False")
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

    // Back to an image that runs `visitcounter serve` (load it into the
    // cluster first, e.g. `kind load docker-image`), with a new config.
    let image = std::env::var("VISITCOUNTER_E2E_IMAGE").unwrap_or_else(|_| DEFAULT_APP_IMAGE.to_owned());
    env.apply_app(
        "web",
        json!({"replicas": 3, "image": image, "config": {"json": {"color": "teal"}}}),
    )
    .await;
    let config_maps = env.api::<ConfigMap>();
    eventually("the config reaches the ConfigMap", || async {
        config_maps.get("web-config").await.is_ok_and(|c| {
            c.data
                .unwrap_or_default()
                .get("config.json")
                .is_some_and(|j| j.contains("teal"))
        })
    })
    .await;

    // Day 2: the config's checksum rolls the pods; a re-apply does not.
    let checksum = || async {
        stateful_sets.get("web").await.ok().and_then(|s| {
            s.spec?
                .template
                .metadata?
                .annotations?
                .get(CONFIG_CHECKSUM_ANNOTATION)
                .cloned()
        })
    };
    eventually("the template carries the new config's checksum", || async {
        checksum().await.is_some()
    })
    .await;
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
    let annotate = |value: serde_json::Value| {
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
    annotate(serde_json::Value::Null).await;
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
    // above); removing it leaves the partition to the API server's default.
    let partition = || async {
        stateful_sets
            .get("web")
            .await
            .ok()
            .and_then(|s| s.spec?.update_strategy?.rolling_update?.partition)
    };
    let canary = |replicas: serde_json::Value| {
        json!({"replicas": 3, "image": image, "config": {"json": {"color": "teal"}},
               "updateStrategy": {"rollingUpdate": {"canaryReplicas": replicas}}})
    };
    env.apply_app("web", canary(json!(2))).await;
    eventually("the canary sets the partition", || async {
        partition().await == Some(1)
    })
    .await;
    env.apply_app(
        "web",
        json!({"replicas": 3, "image": image, "config": {"json": {"color": "teal"}}}),
    )
    .await;
    eventually("promoted, the partition is back to 0", || async {
        partition().await.unwrap_or(0) == 0
    })
    .await;

    // A smaller volume is refused by the API server itself, with the reason.
    let shrink = json!({"apiVersion": "visitcounter.dev/v1alpha1", "kind": "VisitCounterApp",
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "image": image, "config": {"json": {"color": "teal"}}, "storage": {"size": "512Mi"}}});
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

    // A new pod management policy re-creates the StatefulSet; its claims
    // (however many the StatefulSet controller made without running pods)
    // are the same objects afterwards.
    let claims = env.api::<PersistentVolumeClaim>();
    let claim_uids = || async {
        let listed = claims
            .list(&ListParams::default().labels("app.kubernetes.io/instance=web"))
            .await
            .unwrap();
        listed
            .items
            .into_iter()
            .map(|c| (c.metadata.name.unwrap_or_default(), c.metadata.uid.unwrap_or_default()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let before = claim_uids().await;
    let old_uid = stateful_sets.get("web").await.unwrap().metadata.uid;
    env.apply_app(
        "web",
        json!({"replicas": 3, "image": image, "config": {"json": {"color": "teal"}}, "podManagementPolicy": "Parallel"}),
    )
    .await;
    eventually("the StatefulSet is re-created with the new policy", || async {
        stateful_sets.get("web").await.is_ok_and(|s| {
            s.metadata.uid != old_uid && s.spec.unwrap_or_default().pod_management_policy.as_deref() == Some("Parallel")
        })
    })
    .await;
    let after = claim_uids().await;
    for (name, uid) in &before {
        assert_eq!(after.get(name), Some(uid), "claim {name} was kept");
    }

    config_maps
        .delete("web-config", &DeleteParams::default())
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
        config_maps.get_opt("web-config").await.ok().flatten().is_some()
            && stateful_sets
                .get("web")
                .await
                .is_ok_and(|s| s.spec.unwrap_or_default().replicas == Some(3))
    })
    .await;

    let port = 30000 + fastrand::i32(..2700);
    env.apply_app("first", json!({"service": {"nodePort": port}})).await;
    env.apply_app("second", json!({"service": {"nodePort": port}})).await;
    eventually("the app whose port is taken is Degraded", || async {
        env.condition("second", "Degraded")
            .await
            .is_some_and(|c| c.0 == "True" && c.1 == "ChildRejected")
    })
    .await;
    assert!(
        config_maps.get_opt("second-config").await.unwrap().is_none(),
        "a refused app got part of its children"
    );
    env.api::<VisitCounterApp>()
        .delete("second", &DeleteParams::default())
        .await
        .unwrap();

    // Converged: resyncs every 2 s cost no writes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes = metrics.total_writes();
    let reconciles = metrics.reconciles();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(metrics.reconciles() > reconciles, "no resync happened");
    assert_eq!(
        metrics.total_writes(),
        writes,
        "a converged app was written on a resync"
    );

    if schedulable_nodes(&env.client).await {
        eventually("web is Ready with running pods", || async {
            env.condition("web", "Ready").await.is_some_and(|c| c.0 == "True")
        })
        .await;
    } else {
        println!("no schedulable node: the checks that need running pods were skipped");
    }
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
