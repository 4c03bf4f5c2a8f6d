//! What a container is to run: its command and arguments (the image's
//! entrypoint is this project's binary), its environment, its mounts and
//! its user. Pure apart from the ConfigMaps that variables name.

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::Error;

/// Where the image keeps its binary: its entrypoint.
pub const ENTRYPOINT: &str = "/usr/local/bin/visitcounter";
/// The image's default arguments (its CMD).
const DEFAULT_ARGS: &[&str] = &["serve"];

/// One bind mount into the container.
#[derive(Clone, Debug, PartialEq)]
pub struct Mount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// Everything `spawn` needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub read_only_root: bool,
}

/// The value at a downward-API field path (`metadata.name`,
/// `metadata.labels['x']`, `status.podIP`, ...).
pub fn field_path(pod: &Value, path: &str) -> Result<String, Error> {
    if let Some(rest) = path
        .strip_prefix("metadata.labels['")
        .or(path.strip_prefix("metadata.annotations['"))
    {
        let key = rest.trim_end_matches("']");
        let map = if path.starts_with("metadata.labels") {
            "labels"
        } else {
            "annotations"
        };
        return Ok(pod["metadata"][map][key].as_str().unwrap_or_default().to_owned());
    }
    let value = path.split('.').fold(pod, |v, part| &v[part]);
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Err(Error::Config(format!("field path {path} is not supported or not set"))),
        other => Ok(other.to_string()),
    }
}

/// The container's launch, given its volumes' directories and the pod's IP.
pub async fn launch(
    client: &Client,
    pod: &Pod,
    container: &Container,
    volumes: &BTreeMap<String, PathBuf>,
    pod_ip: Ipv4Addr,
    node_ip: Ipv4Addr,
) -> Result<Launch, Error> {
    let namespace = pod.namespace().unwrap_or_default();
    let mut pod_json = serde_json::to_value(pod).unwrap_or_default();
    pod_json["status"]["podIP"] = Value::String(pod_ip.to_string());
    pod_json["status"]["hostIP"] = Value::String(node_ip.to_string());
    let mut config_maps: BTreeMap<String, ConfigMap> = BTreeMap::new();
    let mut config_map = async |name: &str| -> Result<ConfigMap, Error> {
        if let Some(found) = config_maps.get(name) {
            return Ok(found.clone());
        }
        let found: ConfigMap = Api::namespaced(client.clone(), &namespace)
            .get(name)
            .await
            .map_err(|e| Error::Config(format!("configmap \"{name}\" not found: {e}")))?;
        config_maps.insert(name.to_owned(), found.clone());
        Ok(found)
    };
    // What a kubelet gives every container: the API server's address.
    let mut env = vec![
        ("KUBERNETES_SERVICE_HOST".to_owned(), node_ip.to_string()),
        ("KUBERNETES_SERVICE_PORT".to_owned(), "443".to_owned()),
    ];
    for source in container.env_from.iter().flatten() {
        if let Some(reference) = &source.config_map_ref {
            let data = config_map(&reference.name).await?.data.unwrap_or_default();
            let prefix = source.prefix.clone().unwrap_or_default();
            env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => var.value.clone().unwrap_or_default(),
            Some(from) => {
                if let Some(field) = &from.field_ref {
                    field_path(&pod_json, &field.field_path)?
                } else if let Some(key) = &from.config_map_key_ref {
                    let data = config_map(&key.name).await?.data.unwrap_or_default();
                    match data.get(&key.key) {
                        Some(value) => value.clone(),
                        None if key.optional == Some(true) => continue,
                        None => {
                            return Err(Error::Config(format!(
                                "couldn't find key {} in ConfigMap {}/{}",
                                key.key, namespace, key.name
                            )));
                        }
                    }
                } else {
                    return Err(Error::Config(format!(
                        "variable {}: only values, field and ConfigMap references are supported",
                        var.name
                    )));
                }
            }
        };
        env.retain(|(k, _)| *k != var.name);
        env.push((var.name.clone(), value));
    }
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let source = volumes
            .get(&mount.name)
            .ok_or_else(|| Error::Config(format!("volume mount {} names no volume", mount.name)))?;
        let source = match mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
            Some(sub) => source.join(sub),
            None => source.clone(),
        };
        mounts.push(Mount {
            source,
            target: mount.mount_path.clone(),
            read_only: mount.read_only.unwrap_or(false),
        });
    }
    let pod_context = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let context = container.security_context.clone().unwrap_or_default();
    let uid = context.run_as_user.or(pod_context.run_as_user).unwrap_or(0);
    let gid = context.run_as_group.or(pod_context.run_as_group).unwrap_or(uid);
    let groups = pod_context
        .fs_group
        .into_iter()
        .chain(pod_context.supplemental_groups.into_iter().flatten());
    let id = |n: i64| u32::try_from(n).map_err(|_| Error::Config(format!("user or group {n}")));
    let (program, args) = command_line(container);
    Ok(Launch {
        program,
        args,
        env,
        mounts,
        uid: id(uid)?,
        gid: id(gid)?,
        groups: groups.map(id).collect::<Result<_, _>>()?,
        read_only_root: context.read_only_root_filesystem.unwrap_or(false),
    })
}

/// `command` replaces the image's entrypoint and `args` its CMD, as in a
/// kubelet.
pub fn command_line(container: &Container) -> (String, Vec<String>) {
    let mut line: Vec<String> = match &container.command {
        Some(command) if !command.is_empty() => command.clone(),
        _ => vec![ENTRYPOINT.to_owned()],
    };
    match &container.args {
        Some(args) => line.extend(args.iter().cloned()),
        None if container.command.as_ref().is_none_or(|c| c.is_empty()) => {
            line.extend(DEFAULT_ARGS.iter().map(|a| (*a).to_owned()));
        }
        None => {}
    }
    let program = line.remove(0);
    (program, line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn args_replace_the_images_cmd_and_command_its_entrypoint() {
        let container = |c: Value| -> Container { serde_json::from_value(c).unwrap() };
        assert_eq!(
            command_line(&container(json!({"name": "a"}))),
            (ENTRYPOINT.to_owned(), vec!["serve".to_owned()])
        );
        assert_eq!(
            command_line(&container(json!({"name": "a", "args": ["operator", "--x"]}))),
            (ENTRYPOINT.to_owned(), vec!["operator".to_owned(), "--x".to_owned()])
        );
        assert_eq!(
            command_line(&container(json!({"name": "a", "command": ["/bin/other"]}))),
            ("/bin/other".to_owned(), vec![])
        );
    }

    #[test]
    fn field_paths_of_the_downward_api() {
        let pod = json!({"metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"}},
                         "status": {"podIP": "10.244.0.2"}});
        assert_eq!(field_path(&pod, "metadata.name").unwrap(), "web-0");
        assert_eq!(field_path(&pod, "status.podIP").unwrap(), "10.244.0.2");
        assert_eq!(field_path(&pod, "metadata.labels['app']").unwrap(), "web");
        assert!(field_path(&pod, "spec.nope").is_err());
    }
}
