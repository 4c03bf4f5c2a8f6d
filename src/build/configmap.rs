//! The ConfigMap `<app>-config`: `config.json` plus the plain env keys.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use super::{BuildError, app_name, child_meta, config_map_name};
use crate::resource::VisitCounterApp;

/// ConfigMap key that holds the app's `config.json`.
pub const CONFIG_JSON_KEY: &str = "config.json";

/// The app's ConfigMap. `config.json` is pretty-printed with sorted keys, so the
/// same config always gives the same bytes.
pub fn desired_config_map(app: &VisitCounterApp) -> Result<ConfigMap, BuildError> {
    let config = &app.spec.config;
    if !config.json.is_object() {
        return Err(BuildError::ConfigNotAnObject);
    }
    // serde_json's map is a BTreeMap (no preserve_order), so keys come out sorted.
    let mut json = serde_json::to_string_pretty(&config.json).map_err(|_| BuildError::ConfigNotAnObject)?;
    json.push('\n');
    let mut data = BTreeMap::from([(CONFIG_JSON_KEY.to_owned(), json)]);
    data.extend(config.env.iter().map(|e| (e.name.clone(), e.value.clone())));
    Ok(ConfigMap {
        metadata: child_meta(app, config_map_name(app_name(app)?))?,
        data: Some(data),
        ..ConfigMap::default()
    })
}

/// SHA-256 of a ConfigMap's data, as `sha256:<hex>`: the pod template carries
/// it, so a change of the config rolls the pods and an unchanged config never
/// does. Each key and value is length-prefixed, so no two different maps give
/// the same input.
pub fn config_checksum(config_map: &ConfigMap) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in config_map.data.iter().flatten() {
        for part in [key, value] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::app;
    use serde_json::json;

    #[test]
    fn holds_config_json_and_env_keys() {
        let app = app(
            "web",
            json!({"config": {"json": {"b": 1, "a": {"x": true}}, "env": [{"name": "GREETING", "value": "hi"}]}}),
        );
        let cm = desired_config_map(&app).unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("web-config"));
        let data = cm.data.unwrap();
        assert_eq!(
            data["config.json"],
            "{\n  \"a\": {\n    \"x\": true\n  },\n  \"b\": 1\n}\n"
        );
        assert_eq!(data["GREETING"], "hi");
        assert_eq!(data.len(), 2);
    }

    #[test]
    fn an_empty_config_is_an_empty_object() {
        let data = desired_config_map(&app("web", json!({}))).unwrap().data.unwrap();
        assert_eq!(data["config.json"], "{}\n");
    }

    #[test]
    fn a_config_that_is_not_an_object_is_refused() {
        let mut app = app("web", json!({}));
        app.spec.config.json = json!([1, 2]);
        assert_eq!(desired_config_map(&app), Err(BuildError::ConfigNotAnObject));
    }

    #[test]
    fn the_checksum_follows_the_config_and_only_the_config() {
        let base = json!({"replicas": 2, "config": {"json": {"a": 1}, "env": [{"name": "K", "value": "v"}]}});
        let checksum = |spec: serde_json::Value| config_checksum(&desired_config_map(&app("web", spec)).unwrap());
        let first = checksum(base.clone());
        assert!(first.starts_with("sha256:") && first.len() == 7 + 64, "{first}");
        let mut scaled = base.clone();
        scaled["replicas"] = json!(5);
        scaled["image"] = json!("other:1");
        assert_eq!(checksum(scaled), first, "only the config counts");
        let mut json_changed = base.clone();
        json_changed["config"]["json"]["a"] = json!(2);
        assert_ne!(checksum(json_changed), first);
        let mut env_changed = base.clone();
        env_changed["config"]["env"][0]["value"] = json!("w");
        assert_ne!(checksum(env_changed), first);
        let mut env_renamed = base;
        env_renamed["config"]["env"][0]["name"] = json!("K2");
        assert_ne!(checksum(env_renamed), first);
    }

    #[test]
    fn keys_and_values_cannot_run_together() {
        let map = |pairs: &[(&str, &str)]| ConfigMap {
            data: Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..ConfigMap::default()
        };
        assert_ne!(
            config_checksum(&map(&[("ab", "c")])),
            config_checksum(&map(&[("a", "bc")]))
        );
    }
}
