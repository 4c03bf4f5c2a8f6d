//! The ConfigMap `<app>-config`: `config.json` plus the plain env keys.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

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
}
