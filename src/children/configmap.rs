//! The ConfigMap `<app>-config-<hash>`: `config.json` plus the plain env
//! keys, immutable, named by a hash of its content (the pattern of
//! Kustomize's configMapGenerator). Each config gets its own ConfigMap and
//! the pod template names it, so every StatefulSet revision keeps the config
//! it was built with: pods a partition holds back, restarted or replaced,
//! start with their revision's config, not the newest.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use super::{BuildError, app_name, child_meta};
use crate::resource::VisitCounterApp;

/// ConfigMap key that holds the app's `config.json`.
pub const CONFIG_JSON_KEY: &str = "config.json";

/// Hex digits of the content hash in a ConfigMap's name.
const NAME_HASH_LEN: usize = 10;

/// The app's ConfigMap. `config.json` is pretty-printed with sorted keys, so the
/// same config always gives the same bytes, and so the same name.
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
    let name = config_map_name(app_name(app)?, &data_hash(&data));
    Ok(ConfigMap {
        metadata: child_meta(app, name)?,
        data: Some(data),
        immutable: Some(true),
        ..ConfigMap::default()
    })
}

/// Name of the app's ConfigMap for the data whose hash is `hash`.
fn config_map_name(app: &str, hash: &str) -> String {
    format!("{app}-config-{}", &hash[..NAME_HASH_LEN])
}

/// Whether `name` is one of the app's config ConfigMaps by its form
/// (`<app>-config-<hash>`), or the single mutable `<app>-config` that
/// operators before 0.2 kept.
pub fn is_config_map_of(app: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(app).and_then(|r| r.strip_prefix("-config")) else {
        return false;
    };
    rest.is_empty()
        || rest
            .strip_prefix('-')
            .is_some_and(|h| h.len() == NAME_HASH_LEN && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// SHA-256 of a ConfigMap's data, in hex. Each key and value is
/// length-prefixed, so no two different maps give the same input.
fn data_hash(data: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in data {
        for part in [key, value] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::tests::app;
    use serde_json::json;

    #[test]
    fn holds_config_json_and_env_keys() {
        let app = app(
            "web",
            json!({"config": {"json": {"b": 1, "a": {"x": true}}, "env": [{"name": "GREETING", "value": "hi"}]}}),
        );
        let cm = desired_config_map(&app).unwrap();
        let name = cm.metadata.name.clone().unwrap();
        assert!(is_config_map_of("web", &name), "{name}");
        assert_eq!(cm.immutable, Some(true));
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
    fn the_name_follows_the_config_and_only_the_config() {
        let base = json!({"replicas": 2, "config": {"json": {"a": 1}, "env": [{"name": "K", "value": "v"}]}});
        let checksum = |spec: serde_json::Value| desired_config_map(&app("web", spec)).unwrap().metadata.name.unwrap();
        let first = checksum(base.clone());
        assert!(
            first.starts_with("web-config-") && first.len() == "web-config-".len() + 10,
            "{first}"
        );
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
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        assert_ne!(data_hash(&map(&[("ab", "c")])), data_hash(&map(&[("a", "bc")])));
    }

    #[test]
    fn knows_the_apps_config_maps_by_name() {
        assert!(is_config_map_of("web", "web-config-0123456789"));
        assert!(is_config_map_of("web", "web-config"), "the one of operators before 0.2");
        assert!(!is_config_map_of("web", "web-config-extra"));
        assert!(!is_config_map_of("web", "web-2-config-0123456789"));
        assert!(!is_config_map_of("web", "webshop-config-0123456789"));
        assert!(!is_config_map_of("web", "web-config-01234567890"));
    }
}
