//! The resource types the stand-in serves, and how a request path names one.

/// One served resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Has a `status` subresource: writes to the object keep its status, and
    /// writes to `/status` change nothing else.
    pub status: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const fn rt(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
) -> ResourceType {
    ResourceType {
        group,
        version,
        plural,
        kind,
        namespaced,
        status,
    }
}

pub const TYPES: &[ResourceType] = &[
    rt("", "v1", "configmaps", "ConfigMap", true, false),
    rt("", "v1", "serviceaccounts", "ServiceAccount", true, false),
    rt("", "v1", "services", "Service", true, true),
    rt("", "v1", "pods", "Pod", true, true),
    rt("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", true, true),
    rt("", "v1", "namespaces", "Namespace", false, true),
    rt("", "v1", "events", "Event", true, false),
    rt("apps", "v1", "statefulsets", "StatefulSet", true, true),
    rt("coordination.k8s.io", "v1", "leases", "Lease", true, false),
    rt("storage.k8s.io", "v1", "storageclasses", "StorageClass", false, false),
    rt("events.k8s.io", "v1", "events", "Event", true, false),
    rt(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        true,
    ),
    rt(
        "visitcounter.dev",
        "v1alpha1",
        "visitcounterapps",
        "VisitCounterApp",
        true,
        true,
    ),
];

/// Looks a resource type up by group and plural.
pub fn find(group: &str, plural: &str) -> Option<ResourceType> {
    TYPES.iter().copied().find(|t| t.group == group && t.plural == plural)
}

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub rt: ResourceType,
    /// Empty for cluster-scoped types and for lists across all namespaces.
    pub namespace: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/<group>/<version>/...`.
pub fn parse(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (ns.to_string(), rest),
        _ => (String::new(), rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return None,
    };
    let rt = find(group, plural).filter(|t| t.version == version)?;
    Some(Target {
        rt,
        namespace,
        name,
        subresource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaced_cluster_and_subresource_paths() {
        let t = parse("/apis/apps/v1/namespaces/shop/statefulsets/web/status").unwrap();
        assert_eq!(t.rt.kind, "StatefulSet");
        assert_eq!(t.namespace, "shop");
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let all = parse("/apis/visitcounter.dev/v1alpha1/visitcounterapps").unwrap();
        assert_eq!(all.namespace, "");
        assert_eq!(all.name, None);
        let ns = parse("/api/v1/namespaces/shop").unwrap();
        assert_eq!(ns.rt.kind, "Namespace");
        assert_eq!(ns.name.as_deref(), Some("shop"));
        assert!(parse("/apis/nope/v1/things").is_none());
    }
}
