//! A Helm release of the report's shape moved over: refused until the app
//! says to adopt it, then taken over with its claims and its node port.

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use visitcounter::resource::VisitCounterApp;

use crate::env::{Env, eventually, image};

/// The report's chart, as Helm leaves it: a StatefulSet nothing controls
/// with its own claim template and labels, and a NodePort Service.
async fn install_chart(env: &Env, port: i32) {
    let labels = json!({"app.kubernetes.io/instance": "chart", "app.kubernetes.io/managed-by": "Helm"});
    let helm = json!({"meta.helm.sh/release-name": "chart", "meta.helm.sh/release-namespace": env.ns});
    let restricted = json!({"runAsNonRoot": true, "runAsUser": 65532, "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}});
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "chart", "labels": labels, "annotations": helm},
        "spec": {"replicas": 2, "podManagementPolicy": "Parallel", "serviceName": "chart",
                 "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "app", "image": image(),
                                  "ports": [{"containerPort": 8080}], "securityContext": restricted,
                                  "volumeMounts": [{"name": "counter-data", "mountPath": "/data"}]}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "counter-data"},
                     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "62Mi"}}}}]}}))
    .unwrap();
    env.api::<StatefulSet>()
        .create(&PostParams::default(), &sts)
        .await
        .expect("the chart's StatefulSet is created");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "chart", "labels": labels, "annotations": helm},
        "spec": {"type": "NodePort", "selector": labels,
                 "ports": [{"port": 8080, "targetPort": 8080, "nodePort": port}]}}))
    .unwrap();
    env.api::<Service>()
        .create(&PostParams::default(), &service)
        .await
        .expect("the chart's Service is created");
}

/// `visitcounter adopt --from-statefulset`, as a user runs it.
fn printed_app(env: &Env) -> Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_visitcounter"))
        .args(["adopt", "--from-statefulset", "chart", "--namespace", &env.ns])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_saphyr::from_str(&String::from_utf8(output.stdout).unwrap()).unwrap()
}

/// The printed app, applied without its adopt annotation, is refused and
/// changes nothing; applied as printed, it takes the chart's StatefulSet
/// and Service over: the same claims (by uid, and no new one), the same
/// node port, the app's own pods Ready.
pub async fn a_helm_release_is_refused_then_adopted_with_its_claims(env: &Env) {
    let port = env.free_node_port().await;
    install_chart(env, port).await;
    eventually("the chart's two pods are Ready", || async {
        env.api::<StatefulSet>()
            .get("chart")
            .await
            .is_ok_and(|s| s.status.is_some_and(|s| s.ready_replicas == Some(2)))
    })
    .await;
    let chart_uid = env.api::<StatefulSet>().get("chart").await.unwrap().metadata.uid;
    let claims = env.claims(&ListParams::default()).await;
    let names: Vec<&str> = claims.keys().map(String::as_str).collect();
    assert_eq!(names, ["counter-data-chart-0", "counter-data-chart-1"]);

    let app = printed_app(env);
    assert_eq!(app["spec"]["storage"]["claimTemplateName"], "counter-data");
    assert_eq!(app["spec"]["service"]["nodePort"], port);
    let mut without_consent = app.clone();
    without_consent["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    env.apply_object(without_consent).await;
    eventually("the app is Degraded: ChildNotAdopted", || async {
        env.condition("chart", "Degraded").await == Some(("True".into(), "ChildNotAdopted".into()))
    })
    .await;
    let status = env.api::<VisitCounterApp>().get("chart").await.unwrap().status.unwrap();
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert!(
        degraded.message.contains("StatefulSet chart (Helm release chart)")
            && degraded.message.contains("Service chart (Helm release chart)")
            && degraded.message.contains("visitcounter.dev/adopt=true"),
        "{}",
        degraded.message
    );
    let untouched = env.api::<StatefulSet>().get("chart").await.unwrap();
    assert_eq!(
        untouched.metadata.uid, chart_uid,
        "a refused app changed the chart's StatefulSet"
    );
    assert_eq!(untouched.metadata.owner_references, None);

    env.apply_object(app).await;
    eventually("the app is Ready with its own 2 pods", || {
        env.ready_with_pods("chart", 2)
    })
    .await;
    let taken = env.api::<StatefulSet>().get("chart").await.unwrap();
    assert_ne!(
        taken.metadata.uid, chart_uid,
        "the StatefulSet was not re-created as the app's"
    );
    assert_eq!(
        taken.metadata.owner_references.unwrap_or_default()[0].kind,
        "VisitCounterApp"
    );
    assert_eq!(
        env.claims(&ListParams::default()).await,
        claims,
        "a claim was replaced or added"
    );
    let service = env.api::<Service>().get("chart").await.unwrap();
    assert_eq!(
        service.spec.unwrap().ports.unwrap()[0].node_port,
        Some(port),
        "the node port changed"
    );
    assert_eq!(
        service.metadata.owner_references.unwrap_or_default()[0].kind,
        "VisitCounterApp"
    );
    let replaced = env.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=LeftoverPodsReplaced",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        replaced.contains("chart-0") && replaced.contains("chart-1"),
        "{replaced:?}"
    );
}
