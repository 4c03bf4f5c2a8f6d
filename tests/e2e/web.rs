//! One app through a day of changes, a taken node port, the gated
//! maxUnavailable, and resyncs that write nothing.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Service},
};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use visitcounter::{
    operator::USER_AGENT,
    resource::{PAUSED_ANNOTATION, VisitCounterApp},
};

use crate::env::{AuditLog, Env, eventually, feature_enabled, image};

/// One app through a day of changes: scale, image, config rollouts, another
/// field manager's partition, pause, canary, a refused shrink, a policy change
/// and drift; then resyncs write nothing, and every request carried the
/// operator's User-Agent.
pub async fn a_day_of_changes(env: &Env) {
    let audit = AuditLog::from_env();
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

    let image = image();
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

    quiet_on_resync(env, &[("web", 3)]).await;
    if let Some(audit) = audit {
        assert!(
            audit.operator_user_agents() > 0,
            "no request in the audit log carries the User-Agent {USER_AGENT}"
        );
    }
}

/// Of two apps asking for one node port, the second gets none of its
/// children and says why.
pub async fn a_taken_node_port_gives_no_child(env: &Env) {
    let apps = env.api::<VisitCounterApp>();
    let port = env.free_node_port().await;
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
    let children = env.kubectl(&[
        "get",
        "sts,svc,sa,cm,pvc,pods",
        "-l",
        "app.kubernetes.io/instance=second",
        "-o",
        "name",
    ]);
    assert_eq!(children.trim(), "", "a refused app got part of its children");
    eventually("the first app is Ready", || env.ready_with_pods("first", 1)).await;
}

/// maxUnavailable needs a feature gate that is off by default in 1.34 and
/// 1.36: where the API server drops it, the operator keeps to it itself on an
/// OnDelete StatefulSet, and the status says who does. Either way the field
/// has its effect.
pub async fn max_unavailable_with_the_gate_on_or_off(env: &Env) {
    let apps = env.api::<VisitCounterApp>();
    env.apply_app(
        "gated",
        json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}}),
    )
    .await;
    let gate_on = feature_enabled(env, "MaxUnavailableStatefulSet");
    let (by, underneath) = if gate_on {
        ("StatefulSet", "RollingUpdate")
    } else {
        ("Operator", "OnDelete")
    };
    eventually("gated says who keeps maxUnavailable", || async {
        let app = apps.get("gated").await.unwrap();
        app.status
            .and_then(|s| s.rollout)
            .and_then(|r| r.max_unavailable_by)
            .as_deref()
            == Some(by)
    })
    .await;
    let strategy = env.kubectl(&[
        "get",
        "statefulset",
        "gated",
        "-o",
        "jsonpath={.spec.updateStrategy.type}",
    ]);
    assert_eq!(strategy, underneath, "the gate is on: {gate_on}");
    assert_eq!(
        env.condition("gated", "UnsupportedSpec").await,
        None,
        "maxUnavailable has its effect either way"
    );

    eventually("gated is Ready", || env.ready_with_pods("gated", 1)).await;
}

/// Converged apps of several shapes cost no write over resyncs (every 2 s
/// here), as the operator's metrics and the API server's audit log count.
pub async fn converged_apps_cost_no_write_on_resync(env: &Env) {
    env.apply_app("minimal", json!({})).await;
    env.apply_app(
        "configured",
        json!({"replicas": 2, "podManagementPolicy": "Parallel", "config": {"json": {"color": "teal"}},
               "service": {"type": "NodePort"}}),
    )
    .await;
    env.apply_app(
        "held",
        json!({"replicas": 2, "updateStrategy": {"rollingUpdate": {"canaryReplicas": 1}}}),
    )
    .await;
    env.apply_app("recreated", json!({"updateStrategy": {"type": "Recreate"}}))
        .await;
    env.apply_app(
        "stepped",
        json!({"replicas": 2, "updateStrategy": {"rollingUpdate": {"steps": [{"replicas": 1}, {"pauseSeconds": 5}]}}}),
    )
    .await;
    env.apply_app(
        "budgeted",
        json!({"replicas": 2, "updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}}),
    )
    .await;
    quiet_on_resync(
        env,
        &[
            ("minimal", 1),
            ("configured", 2),
            ("held", 2),
            ("recreated", 1),
            ("budgeted", 2),
            ("stepped", 2),
        ],
    )
    .await;
}

/// Once every app of `apps` (name, replicas) is Ready, 8 s of resyncs write
/// nothing.
async fn quiet_on_resync(env: &Env, apps: &[(&str, usize)]) {
    let metrics = env.metrics.as_ref().expect("run beside the operator");
    for (app, replicas) in apps {
        eventually(&format!("{app} is Ready with {replicas} pods"), || {
            env.ready_with_pods(app, *replicas)
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = metrics.total_writes();
    let reconciles = metrics.reconciles();
    let window = AuditLog::from_env();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(metrics.reconciles() > reconciles + 3, "no resync happened");
    if let Some(window) = window {
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
