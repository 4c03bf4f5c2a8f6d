//! Apps from creation: the examples, pods the StatefulSet controller cannot
//! create, and a spec stored past the CRD's rules.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use visitcounter::{crd, resource::VisitCounterApp};

use crate::env::{Env, eventually, install_crd};

/// The seed's two apps and `examples/minimal.yaml`, admitted under the
/// `restricted` Pod Security profile, reach Ready with every pod Ready. The
/// seed's apps run under the ServiceAccount the operator creates for them.
pub async fn examples_reach_ready(env: &Env) {
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
pub async fn pods_not_created(env: &Env) {
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

/// The CRD's rules with every CEL validation taken out, as an older CRD
/// might have had them.
fn without_cel_rules(crd: CustomResourceDefinition) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("x-kubernetes-validations");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut crd = serde_json::to_value(crd).unwrap();
    strip(&mut crd);
    crd
}

/// A spec stored past today's rules (partition above replicas, admitted
/// while the CRD lacked the rule, as after an upgrade of the CRD) makes the
/// app Degraded/InvalidSpec with a Warning Event naming the field, and
/// builds no child.
pub async fn invalid_stored_spec(env: &Env) {
    let bad = json!({"replicas": 1, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 5}}});
    // The operator compares the stored CRD with its own once, as it starts:
    // it must be past that before the CRD is loosened, or it refuses to run.
    env.apply_app("first", json!({"replicas": 0})).await;
    eventually("the operator has started and reconciles", || async {
        env.condition("first", "Ready").await.is_some()
    })
    .await;
    install_crd(&env.client, without_cel_rules(crd::definition())).await;
    // The API server serves the new schema within a moment.
    eventually("the loosened CRD admits partition 5 of 1", || async {
        env.api::<VisitCounterApp>()
            .patch(
                "bad",
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(
                    json!({"apiVersion": "visitcounter.dev/v1alpha1", "kind": "VisitCounterApp",
                                     "metadata": {"name": "bad"}, "spec": bad}),
                ),
            )
            .await
            .is_ok()
    })
    .await;
    install_crd(&env.client, crd::definition()).await;

    eventually("bad is Degraded: InvalidSpec", || async {
        env.condition("bad", "Degraded")
            .await
            .is_some_and(|c| c.0 == "True" && c.1 == "InvalidSpec")
    })
    .await;
    let app = env.api::<VisitCounterApp>().get("bad").await.unwrap();
    let conditions = app.status.unwrap().conditions;
    let degraded = conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert!(
        degraded.message.contains("partition"),
        "the message names the field: {}",
        degraded.message
    );
    assert!(
        conditions.iter().any(|c| c.type_ == "Ready" && c.status == "False"),
        "{conditions:?}"
    );
    env.wait_for_event(
        "involvedObject.name=bad,reason=InvalidSpec,type=Warning",
        "a Warning Event says why",
        |m| m.contains("partition"),
    )
    .await;
    let children = env.kubectl(&[
        "get",
        "svc,sa,cm,sts",
        "-l",
        "app.kubernetes.io/instance=bad",
        "-o",
        "name",
    ]);
    assert_eq!(children.trim(), "", "a child of an invalid spec was created");
    env.api::<VisitCounterApp>()
        .delete("bad", &DeleteParams::default())
        .await
        .unwrap();
}
