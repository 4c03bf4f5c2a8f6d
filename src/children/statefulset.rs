//! The StatefulSet `<app>`: one pod per replica, each with its own volume claim.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{
            RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
            StatefulSetSpec, StatefulSetUpdateStrategy,
        },
        core::v1::{
            Capabilities, ConfigMap, ConfigMapKeySelector, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
            EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
            PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
            SeccompProfile, SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{
    BuildError, BuildSettings, CONFIG_JSON_KEY, app_name, child_meta, common_labels, headless_service_name,
    selector_labels, service_account_name,
};
use crate::resource::{
    ComputeResources, HttpProbe, LIVENESS_PATH, READINESS_PATH, UpdateStrategyType, VisitCounterApp,
};

/// Where `config.json` is mounted in the container.
pub const CONFIG_MOUNT_PATH: &str = "/config.json";
const CONFIG_VOLUME: &str = "config";
/// The non-root user and group the app runs as, and that owns its volume.
const APP_UID: i64 = 65532;
/// The app's StatefulSet, whose pod template names `config_map`, the app's
/// desired ConfigMap: its name carries the hash of the config, so a new
/// config rolls the pods and an unchanged one never does.
pub fn desired_statefulset(
    app: &VisitCounterApp,
    settings: &BuildSettings,
    config_map: &ConfigMap,
) -> Result<StatefulSet, BuildError> {
    let name = app_name(app)?;
    let spec = &app.spec;
    let rolling_update = spec.update_strategy.rolling_update.as_ref();
    let update_strategy = StatefulSetUpdateStrategy {
        type_: Some(spec.update_strategy.type_.statefulset_type().into()),
        rolling_update: match spec.update_strategy.type_ {
            UpdateStrategyType::OnDelete
            | UpdateStrategyType::Recreate
            | UpdateStrategyType::BlueGreen
            | UpdateStrategyType::Shadow => None,
            // A partition the spec leaves unset is not written, so the operator
            // does not own it and another rollout tool may drive it.
            UpdateStrategyType::RollingUpdate => rolling_update
                .map(|r| RollingUpdateStatefulSetStrategy {
                    partition: r.partition_for(spec.replicas),
                    max_unavailable: r.max_unavailable.clone(),
                })
                .filter(|r| r.partition.is_some() || r.max_unavailable.is_some()),
        },
    };
    let retention = &spec.persistent_volume_claim_retention_policy;
    Ok(StatefulSet {
        metadata: child_meta(app, name.to_owned())?,
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(headless_service_name(name)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(name)),
                ..LabelSelector::default()
            },
            pod_management_policy: Some(spec.pod_management_policy.as_str().into()),
            update_strategy: Some(update_strategy),
            min_ready_seconds: Some(spec.min_ready_seconds),
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(retention.when_deleted.as_str().into()),
                when_scaled: Some(retention.when_scaled.as_str().into()),
            }),
            revision_history_limit: Some(spec.revision_history_limit),
            template: pod_template(
                app,
                settings,
                name,
                config_map.metadata.name.as_deref().unwrap_or_default(),
            ),
            volume_claim_templates: Some(vec![volume_claim_template(app, name)]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

fn pod_template(app: &VisitCounterApp, settings: &BuildSettings, name: &str, config_map: &str) -> PodTemplateSpec {
    let spec = &app.spec;
    let mut labels = spec.pod_labels.clone();
    labels.extend(common_labels(name));
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: Some(spec.pod_annotations.clone()).filter(|a| !a.is_empty()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: service_account_name(name, spec),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(APP_UID),
                run_as_group: Some(APP_UID),
                fs_group: Some(APP_UID),
                fs_group_change_policy: Some("OnRootMismatch".into()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            containers: vec![container(app, settings, name, config_map)],
            volumes: Some(vec![Volume {
                name: CONFIG_VOLUME.into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: config_map.into(),
                    items: Some(vec![KeyToPath {
                        key: CONFIG_JSON_KEY.into(),
                        path: CONFIG_JSON_KEY.into(),
                        ..KeyToPath::default()
                    }]),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        }),
    }
}

fn container(app: &VisitCounterApp, settings: &BuildSettings, name: &str, config_map: &str) -> Container {
    let spec = &app.spec;
    let probes = &spec.probes;
    Container {
        name: name.to_owned(),
        image: Some(spec.image.clone().unwrap_or_else(|| settings.default_image.clone())),
        image_pull_policy: Some(spec.image_pull_policy.as_str().into()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: spec.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(env(app, config_map)),
        resources: Some(ResourceRequirements {
            requests: quantities(&spec.resources.requests),
            limits: quantities(&spec.resources.limits),
            ..ResourceRequirements::default()
        }),
        liveness_probe: http_probe(&probes.liveness, LIVENESS_PATH),
        readiness_probe: http_probe(&probes.readiness, READINESS_PATH),
        // A container that crashes says why in its status (the end of its
        // log), which the app's `Degraded` condition repeats.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: spec.storage.claim_template_name.clone(),
                mount_path: spec.storage.mount_path.clone(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: CONFIG_VOLUME.into(),
                mount_path: CONFIG_MOUNT_PATH.into(),
                sub_path: Some(CONFIG_JSON_KEY.into()),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The variables `visitcounter serve` reads, each of `config.env` from its
/// key in the ConfigMap, and the one that carries `config.json` when the spec
/// names it: exactly these. (`envFrom` over the ConfigMap would also export
/// its `config.json` key, which clusters since 1.32 accept as a variable name.)
fn env(app: &VisitCounterApp, config_map: &str) -> Vec<EnvVar> {
    let spec = &app.spec;
    let plain = |key: &str, value: String| EnvVar {
        name: key.into(),
        value: Some(value),
        ..EnvVar::default()
    };
    let mut env = vec![
        EnvVar {
            name: "VISITCOUNTER_POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        plain("VISITCOUNTER_PORT", spec.port.to_string()),
        plain("VISITCOUNTER_DATA_DIR", spec.storage.mount_path.clone()),
        plain("VISITCOUNTER_CONFIG", CONFIG_MOUNT_PATH.into()),
    ];
    let from_config_map = |var: &str, key: &str| EnvVar {
        name: var.into(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: config_map.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    env.extend(spec.config.env.iter().map(|e| from_config_map(&e.name, &e.name)));
    if let Some(var) = &spec.config.json_env_var {
        env.push(from_config_map(var, CONFIG_JSON_KEY));
    }
    env
}

fn quantities(resources: &ComputeResources) -> Option<BTreeMap<String, Quantity>> {
    let map: BTreeMap<String, Quantity> = [("cpu", &resources.cpu), ("memory", &resources.memory)]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), v.clone()?)))
        .collect();
    (!map.is_empty()).then_some(map)
}

fn http_probe(probe: &HttpProbe, default_path: &str) -> Option<Probe> {
    probe.enabled.then(|| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(probe.path.clone().unwrap_or_else(|| default_path.into())),
            port: IntOrString::String("http".into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(probe.initial_delay_seconds),
        period_seconds: Some(probe.period_seconds),
        timeout_seconds: Some(probe.timeout_seconds),
        failure_threshold: Some(probe.failure_threshold),
        success_threshold: Some(probe.success_threshold),
        ..Probe::default()
    })
}

/// The claim template. k8s-openapi writes its `apiVersion` and `kind`, without
/// which Argo CD shows the StatefulSet out of sync forever.
fn volume_claim_template(app: &VisitCounterApp, name: &str) -> PersistentVolumeClaim {
    let storage = &app.spec.storage;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(storage.claim_template_name.clone()),
            labels: Some(selector_labels(name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(storage.access_modes.iter().map(|m| m.as_str().to_owned()).collect()),
            storage_class_name: storage.storage_class_name.clone(),
            volume_mode: Some("Filesystem".into()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), storage.size.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::{desired_config_map, tests::app};
    use serde_json::json;

    /// The StatefulSet as `desired_children` builds it.
    fn built(app: &VisitCounterApp, settings: &BuildSettings) -> StatefulSetSpec {
        let config_map = desired_config_map(app).unwrap();
        desired_statefulset(app, settings, &config_map).unwrap().spec.unwrap()
    }

    fn sts(spec: serde_json::Value) -> StatefulSetSpec {
        built(&app("web", spec), &BuildSettings::default())
    }

    fn container_of(spec: &StatefulSetSpec) -> &Container {
        &spec.template.spec.as_ref().unwrap().containers[0]
    }

    #[test]
    fn selector_holds_only_stable_labels_even_with_pod_labels() {
        let spec = sts(json!({"podLabels": {"version": "1.2.3"}}));
        assert_eq!(spec.selector.match_labels, Some(selector_labels("web")));
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["version"], "1.2.3");
        assert_eq!(labels["app.kubernetes.io/instance"], "web");
    }

    #[test]
    fn names_its_headless_service_and_claims() {
        let spec = sts(json!({}));
        assert_eq!(spec.service_name.as_deref(), Some("web-headless"));
        let claims = spec.volume_claim_templates.unwrap();
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        let claim = serde_json::to_value(&claims[0]).unwrap();
        assert_eq!(claim["apiVersion"], "v1");
        assert_eq!(claim["kind"], "PersistentVolumeClaim");
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
        assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    }

    #[test]
    fn policy_and_partition_come_from_the_spec() {
        let spec = sts(json!({
            "replicas": 3,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2, "maxUnavailable": "50%"}}
        }));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let rolling = spec.update_strategy.unwrap().rolling_update.unwrap();
        assert_eq!(rolling.partition, Some(2));
        assert_eq!(rolling.max_unavailable, Some(IntOrString::String("50%".into())));
    }

    #[test]
    fn a_canary_sets_the_partition_below_the_top_ordinals() {
        let partition = |replicas: i32, canary: i32| {
            sts(json!({"replicas": replicas, "updateStrategy": {"rollingUpdate": {"canaryReplicas": canary}}}))
                .update_strategy
                .unwrap()
                .rolling_update
                .unwrap()
                .partition
        };
        assert_eq!(partition(5, 1), Some(4));
        assert_eq!(partition(5, 0), Some(5));
        assert_eq!(partition(2, 3), Some(0));
    }

    #[test]
    fn replace_stuck_pods_alone_writes_no_rolling_update() {
        let strategy = sts(json!({"updateStrategy": {"rollingUpdate": {"replaceStuckPods": true}}}))
            .update_strategy
            .unwrap();
        assert_eq!(strategy.rolling_update, None);
    }

    #[test]
    fn an_unset_partition_is_not_written() {
        let strategy = sts(json!({})).update_strategy.unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        assert_eq!(strategy.rolling_update, None);
    }

    #[test]
    fn recreate_is_on_delete_underneath() {
        let strategy = sts(json!({"updateStrategy": {"type": "Recreate"}}))
            .update_strategy
            .unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("OnDelete"));
        assert!(strategy.rolling_update.is_none());
    }

    #[test]
    fn on_delete_has_no_rolling_update() {
        let strategy = sts(json!({"updateStrategy": {"type": "OnDelete"}}))
            .update_strategy
            .unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("OnDelete"));
        assert_eq!(strategy.rolling_update, None);
    }

    #[test]
    fn mounts_config_json_and_data_and_takes_env_from_the_config_map() {
        let spec_json = || {
            json!({"config": {"jsonEnvVar": "LAB12_KEY", "env": [{"name": "GREETING", "value": "hi"}]},
                   "storage": {"mountPath": "/var/counter"}})
        };
        let spec = sts(spec_json());
        let c = container_of(&spec);
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert_eq!(mounts[0].mount_path, "/var/counter");
        assert_eq!(mounts[1].mount_path, "/config.json");
        assert_eq!(mounts[1].sub_path.as_deref(), Some("config.json"));
        // Exactly the variables the spec and the app need: no envFrom, which
        // would export the ConfigMap's config.json key too.
        assert_eq!(c.env_from, None);
        let env = c.env.as_ref().unwrap();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "VISITCOUNTER_POD_NAME",
                "VISITCOUNTER_PORT",
                "VISITCOUNTER_DATA_DIR",
                "VISITCOUNTER_CONFIG",
                "GREETING",
                "LAB12_KEY"
            ]
        );
        let greeting = env.iter().find(|e| e.name == "GREETING").unwrap();
        let selector = greeting
            .value_from
            .as_ref()
            .unwrap()
            .config_map_key_ref
            .as_ref()
            .unwrap();
        let config_map = desired_config_map(&app("web", spec_json()))
            .unwrap()
            .metadata
            .name
            .unwrap();
        assert_eq!(
            (selector.name.as_str(), selector.key.as_str()),
            (config_map.as_str(), "GREETING")
        );
        let key = env.iter().find(|e| e.name == "LAB12_KEY").unwrap();
        let selector = key.value_from.as_ref().unwrap().config_map_key_ref.as_ref().unwrap();
        assert_eq!(
            (selector.name.as_str(), selector.key.as_str()),
            (config_map.as_str(), "config.json")
        );
        let data_dir = env.iter().find(|e| e.name == "VISITCOUNTER_DATA_DIR").unwrap();
        assert_eq!(data_dir.value.as_deref(), Some("/var/counter"));
    }

    #[test]
    fn probes_use_their_own_paths_on_the_named_port() {
        let spec = sts(json!({"probes": {"liveness": {"periodSeconds": 5}}}));
        let c = container_of(&spec);
        let live = c.liveness_probe.as_ref().unwrap();
        assert_eq!(live.period_seconds, Some(5));
        let get = live.http_get.as_ref().unwrap();
        assert_eq!(
            (get.path.as_deref(), &get.port),
            (Some("/healthz"), &IntOrString::String("http".into()))
        );
        let ready = c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
    }

    #[test]
    fn a_disabled_probe_is_left_out() {
        let spec = sts(json!({"probes": {"readiness": {"enabled": false}}}));
        assert_eq!(container_of(&spec).readiness_probe, None);
    }

    #[test]
    fn image_falls_back_to_the_operator_default() {
        let settings = BuildSettings {
            default_image: "example/counter:9".into(),
        };
        let spec = built(&app("web", json!({})), &settings);
        assert_eq!(container_of(&spec).image.as_deref(), Some("example/counter:9"));
        let spec = sts(json!({"image": "lnsfna/app_go:latest"}));
        assert_eq!(container_of(&spec).image.as_deref(), Some("lnsfna/app_go:latest"));
    }

    #[test]
    fn the_template_names_the_config_map_of_this_config_in_its_volume_and_variables() {
        let app = app(
            "web",
            json!({"config": {"json": {"a": 1}, "env": [{"name": "K", "value": "v"}], "jsonEnvVar": "APP_CONFIG"},
                   "podAnnotations": {"team": "x"}}),
        );
        let config_map = desired_config_map(&app).unwrap().metadata.name.unwrap();
        let spec = built(&app, &BuildSettings::default());
        let template = spec.template.clone();
        assert_eq!(template.metadata.unwrap().annotations.unwrap()["team"], "x");
        let pod = template.spec.unwrap();
        let volume = pod.volumes.unwrap()[0].config_map.clone().unwrap();
        assert_eq!(volume.name, config_map);
        let from_config_map: Vec<_> = pod.containers[0]
            .env
            .iter()
            .flatten()
            .filter_map(|e| e.value_from.as_ref()?.config_map_key_ref.as_ref())
            .map(|r| (r.name.as_str(), r.key.as_str()))
            .collect();
        assert_eq!(
            from_config_map,
            [(config_map.as_str(), "K"), (config_map.as_str(), "config.json")]
        );
        assert_eq!(spec.revision_history_limit, Some(10), "the StatefulSet's own default");
    }

    #[test]
    fn runs_restricted_by_default() {
        let spec = sts(json!({}));
        let pod = spec.template.spec.as_ref().unwrap();
        let pod_sc = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        assert_eq!(pod_sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let sc = pod.containers[0].security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop, Some(vec!["ALL".to_owned()]));
    }

    #[test]
    fn resources_carry_requests_and_limits() {
        let spec = sts(json!({"resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "256Mi"}}}));
        let resources = container_of(&spec).resources.as_ref().unwrap();
        assert_eq!(resources.requests.as_ref().unwrap()["cpu"], Quantity("50m".into()));
        assert!(!resources.requests.as_ref().unwrap().contains_key("memory"));
        assert_eq!(resources.limits.as_ref().unwrap()["memory"], Quantity("256Mi".into()));
    }
}
