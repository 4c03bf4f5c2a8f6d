//! Rollouts on the real StatefulSet controller: a stuck one, `OnDelete`, and
//! a config change under a canary.

use std::{collections::BTreeMap, panic::AssertUnwindSafe};

use futures::FutureExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams};
use serde_json::{Value, json};
use visitcounter::resource::VisitCounterApp;

use crate::env::{Env, NEVER_READY_IMAGE, OperatorProcess, eventually, image, pod_ready};

/// A pod of a broken image never becomes ready: the rollout is reported
/// stuck; reverting the image alone leaves it stuck under OrderedReady
/// (kubernetes#67250), as a control app without `replaceStuckPods` shows,
/// and `replaceStuckPods` gets it going again with a new pod.
pub async fn stuck_rollout(env: &Env) {
    let spec = |image: &str, replace: bool| {
        json!({"replicas": 3, "image": image,
               "updateStrategy": {"rollingUpdate": {"replaceStuckPods": replace}}})
    };
    let apps = env.api::<VisitCounterApp>();
    let both = [("stuck", true), ("control", false)];
    for (name, replace) in both {
        env.apply_app(name, spec(&image(), replace)).await;
    }
    for (name, _) in both {
        eventually(&format!("{name} is Ready with 3 pods"), || env.ready_with_pods(name, 3)).await;
    }
    for (name, replace) in both {
        env.apply_app(name, spec(NEVER_READY_IMAGE, replace)).await;
    }
    for (name, _) in both {
        eventually(&format!("the stuck pod of {name} is reported"), || async {
            let Ok(app) = apps.get(name).await else { return false };
            let stuck = app.status.as_ref().and_then(|s| s.rollout.as_ref()?.stuck_pod.clone());
            stuck.is_some_and(|p| p.name == format!("{name}-2"))
                && env
                    .condition(name, "Progressing")
                    .await
                    .is_some_and(|c| c.0 == "False" && c.1 == "RolloutStuck")
        })
        .await;
    }
    let stuck_uids = env.pod_uids("stuck").await;
    let control_uids = env.pod_uids("control").await;
    for (name, replace) in both {
        env.apply_app(name, spec(&image(), replace)).await;
    }
    let reverted = std::time::Instant::now();
    eventually("reverted, the stuck pod is replaced and every pod is Ready", || async {
        env.ready_with_pods("stuck", 3).await
            && apps.get("stuck").await.is_ok_and(|a| {
                a.status
                    .is_some_and(|s| s.rollout.is_none_or(|r| r.stuck_pod.is_none()))
            })
    })
    .await;
    let now = env.pod_uids("stuck").await;
    assert_ne!(now["stuck-2"], stuck_uids["stuck-2"], "stuck-2 is the same pod");
    // The control: the revert alone, for well past the 3 s after which a
    // pod counts as stuck, leaves the broken pod in place and not Ready.
    tokio::time::sleep(std::time::Duration::from_secs(10).saturating_sub(reverted.elapsed())).await;
    assert_eq!(
        env.pod_uids("control").await["control-2"],
        control_uids["control-2"],
        "without replaceStuckPods the stuck pod was replaced"
    );
    assert!(
        !env.ready_with_pods("control", 3).await,
        "the control app got unstuck by itself"
    );
    for (name, _) in both {
        apps.delete(name, &DeleteParams::default()).await.unwrap();
    }
}

/// Under `OnDelete` a new template replaces no pod by itself: the app
/// reports the new revision and its pods stay; a deleted pod comes back with
/// the new template; back to a rolling update, every pod is replaced.
pub async fn on_delete(env: &Env) {
    let spec = |mode: &str, strategy: Value| {
        json!({"replicas": 2, "image": image(), "updateStrategy": strategy,
               "config": {"env": [{"name": "MODE", "value": mode}]}})
    };
    let apps = env.api::<VisitCounterApp>();
    let update_revision = || async {
        let app = apps.get("ondelete").await.ok()?;
        app.status?.update_revision
    };
    let pod_revisions = || async {
        let pods = env
            .api::<Pod>()
            .list(&ListParams::default().labels("app.kubernetes.io/instance=ondelete"))
            .await
            .unwrap();
        pods.items
            .into_iter()
            .map(|p| {
                (
                    p.metadata.name.unwrap_or_default(),
                    p.metadata
                        .labels
                        .unwrap_or_default()
                        .remove("controller-revision-hash")
                        .unwrap_or_default(),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    env.apply_app("ondelete", spec("a", json!({"type": "OnDelete"}))).await;
    eventually("ondelete is Ready with 2 pods", || env.ready_with_pods("ondelete", 2)).await;
    let first = update_revision().await.expect("the app reports its revision");
    let pods_before = env.pod_uids("ondelete").await;

    env.apply_app("ondelete", spec("b", json!({"type": "OnDelete"}))).await;
    eventually("the new revision is reported", || async {
        update_revision().await.is_some_and(|r| r != first)
    })
    .await;
    let second = update_revision().await.unwrap();
    // Several resyncs of the operator (every 2 s here) pass.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(
        env.pod_uids("ondelete").await,
        pods_before,
        "OnDelete replaced a pod by itself"
    );
    assert!(
        pod_revisions().await.values().all(|r| *r == first),
        "{:?}",
        pod_revisions().await
    );
    assert!(
        env.ready_with_pods("ondelete", 2).await,
        "old pods under OnDelete are Ready"
    );

    env.api::<Pod>()
        .delete("ondelete-1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted pod comes back with the new template", || async {
        pod_revisions().await.get("ondelete-1") == Some(&second) && env.ready_with_pods("ondelete", 2).await
    })
    .await;

    env.apply_app("ondelete", spec("c", json!({"type": "RollingUpdate"})))
        .await;
    eventually("a rolling update replaces every pod", || async {
        let Some(third) = update_revision().await.filter(|r| *r != second) else {
            return false;
        };
        pod_revisions().await.values().all(|r| *r == third) && env.ready_with_pods("ondelete", 2).await
    })
    .await;
    apps.delete("ondelete", &DeleteParams::default()).await.unwrap();
}

/// The ConfigMaps a pod's volumes and variables name.
pub fn pod_config_maps(pod: &Pod) -> std::collections::BTreeSet<String> {
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
pub async fn config_revisions(env: &Env) {
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
    let image = image();
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
    // The operator logs the deletion once the API server has answered it, so
    // the log may lag what the test just listed.
    let deleted = format!("deleted ConfigMap {blue}");
    eventually("the operator's log tells of the deleted ConfigMap", || async {
        operator.log().contains(&deleted)
    })
    .await;
    [red, blue]
}
