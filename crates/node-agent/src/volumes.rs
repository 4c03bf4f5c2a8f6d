//! A pod's volumes as directories on this machine, as a kubelet makes
//! them: ConfigMap keys as files, a claim's volume as its PersistentVolume's
//! directory (which outlives the pod), an emptyDir, and the projected
//! ServiceAccount token, CA and namespace.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{
        ConfigMap, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, ServiceAccount, Volume, VolumeProjection,
    },
};
use kube::{Api, Client, ResourceExt, api::PostParams};

use crate::Error;

/// Makes every volume of `pod` under `dir` (claims: their own directory),
/// and returns each volume's directory by name.
pub async fn prepare(client: &Client, pod: &Pod, dir: &Path) -> Result<BTreeMap<String, PathBuf>, Error> {
    let namespace = pod.namespace().unwrap_or_default();
    let spec = pod.spec.as_ref().ok_or(Error::Config("the pod has no spec".into()))?;
    let mut paths = BTreeMap::new();
    for volume in spec.volumes.iter().flatten() {
        let path = dir.join(&volume.name);
        let path = prepare_one(client, pod, &namespace, volume, path).await?;
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

async fn prepare_one(
    client: &Client,
    pod: &Pod,
    namespace: &str,
    volume: &Volume,
    path: PathBuf,
) -> Result<PathBuf, Error> {
    if let Some(source) = &volume.config_map {
        let config_map = config_map(client, namespace, &source.name).await?;
        write_files(&path, &config_map_files(&config_map, source.items.as_deref())?)?;
        return Ok(path);
    }
    if let Some(source) = &volume.persistent_volume_claim {
        let claim: PersistentVolumeClaim = Api::namespaced(client.clone(), namespace)
            .get(&source.claim_name)
            .await
            .map_err(|e| Error::Config(format!("claim {}: {e}", source.claim_name)))?;
        let volume_name = claim
            .spec
            .and_then(|s| s.volume_name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::Config(format!("claim {} is not bound yet", source.claim_name)))?;
        let pv: PersistentVolume = Api::all(client.clone())
            .get(&volume_name)
            .await
            .map_err(|e| Error::Config(format!("volume {volume_name}: {e}")))?;
        let host = pv
            .spec
            .and_then(|s| s.host_path)
            .map(|h| PathBuf::from(h.path))
            .ok_or_else(|| Error::Config(format!("volume {volume_name} is not a hostPath volume")))?;
        // As a kubelet does, fsGroup is not applied: hostPath volumes do
        // not support ownership management. The directory is as its
        // provisioner made it.
        std::fs::create_dir_all(&host)?;
        return Ok(host);
    }
    if volume.empty_dir.is_some() {
        std::fs::create_dir_all(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
        return Ok(path);
    }
    if let Some(projected) = &volume.projected {
        let mut files = BTreeMap::new();
        for source in projected.sources.iter().flatten() {
            files.extend(projection(client, pod, namespace, source).await?);
        }
        write_files(&path, &files)?;
        return Ok(path);
    }
    Err(Error::Config(format!(
        "volume {}: only configMap, persistentVolumeClaim, emptyDir and projected volumes are supported",
        volume.name
    )))
}

async fn config_map(client: &Client, namespace: &str, name: &str) -> Result<ConfigMap, Error> {
    Api::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| Error::Config(format!("configmap \"{name}\" not found: {e}")))
}

/// The files of a ConfigMap volume: every key, or the listed items at
/// their paths.
pub fn config_map_files(
    config_map: &ConfigMap,
    items: Option<&[KeyToPath]>,
) -> Result<BTreeMap<String, String>, Error> {
    let data = config_map.data.clone().unwrap_or_default();
    match items {
        None => Ok(data),
        Some(items) => items
            .iter()
            .map(|item| {
                let value = data.get(&item.key).ok_or_else(|| {
                    Error::Config(format!("configmap {} has no key {}", config_map.name_any(), item.key))
                })?;
                Ok((item.path.clone(), value.clone()))
            })
            .collect(),
    }
}

async fn projection(
    client: &Client,
    pod: &Pod,
    namespace: &str,
    source: &VolumeProjection,
) -> Result<BTreeMap<String, String>, Error> {
    if let Some(token) = &source.service_account_token {
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: token.audience.clone().into_iter().collect(),
                expiration_seconds: token.expiration_seconds,
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..TokenRequest::default()
        };
        let granted = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
            .create_token_request(&account, &PostParams::default(), &request)
            .await
            .map_err(|e| Error::Config(format!("a token for ServiceAccount {account}: {e}")))?;
        let token_value = granted.status.map(|s| s.token).unwrap_or_default();
        return Ok(BTreeMap::from([(token.path.clone(), token_value)]));
    }
    if let Some(source) = &source.config_map {
        let config_map = config_map(client, namespace, &source.name).await?;
        return config_map_files(&config_map, source.items.as_deref());
    }
    if let Some(source) = &source.downward_api {
        let pod_json = serde_json::to_value(pod).unwrap_or_default();
        return source
            .items
            .iter()
            .flatten()
            .map(|item| {
                let path = item
                    .field_ref
                    .as_ref()
                    .map(|f| crate::container::field_path(&pod_json, &f.field_path))
                    .transpose()?
                    .unwrap_or_default();
                Ok((item.path.clone(), path))
            })
            .collect();
    }
    Err(Error::Config(
        "a projected source other than a token, a ConfigMap or the downward API".into(),
    ))
}

/// Writes `files` under `dir` (made afresh), readable by every user.
fn write_files(dir: &Path, files: &BTreeMap<String, String>) -> Result<(), Error> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for (name, content) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_config_map_volume_holds_every_key_or_the_listed_items() {
        let config_map: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "web-config-1"}, "data": {"config.json": "{}", "K": "v"}}),
        )
        .unwrap();
        let all = config_map_files(&config_map, None).unwrap();
        assert_eq!(all.len(), 2);
        let items = [KeyToPath {
            key: "config.json".into(),
            path: "app/config.json".into(),
            ..KeyToPath::default()
        }];
        let listed = config_map_files(&config_map, Some(&items)).unwrap();
        assert_eq!(
            listed,
            BTreeMap::from([("app/config.json".to_owned(), "{}".to_owned())])
        );
        let missing = [KeyToPath {
            key: "nope".into(),
            path: "x".into(),
            ..KeyToPath::default()
        }];
        assert!(config_map_files(&config_map, Some(&missing)).is_err());
    }

    #[test]
    fn files_are_written_fresh_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("config");
        write_files(&target, &BTreeMap::from([("a/b".to_owned(), "1".to_owned())])).unwrap();
        write_files(&target, &BTreeMap::from([("c".to_owned(), "2".to_owned())])).unwrap();
        assert!(!target.join("a/b").exists(), "an old file stays");
        assert_eq!(std::fs::read_to_string(target.join("c")).unwrap(), "2");
    }
}
