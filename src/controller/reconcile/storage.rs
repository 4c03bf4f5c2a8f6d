//! Growing the app's volumes when `storage.size` goes up.
//!
//! A StatefulSet's claim template cannot change in place, and changing it
//! would not touch the claims that exist. So, before the StatefulSet is
//! re-created with the new template (pods and claims orphaned, then
//! adopted), every existing claim of the app that is smaller is patched to the
//! new size, which the volume's driver then grows. That needs each claim's
//! StorageClass to allow volume expansion; if one does not, nothing is
//! changed and the app says so.
//!
//! `claims_to_grow` and `expansion_refusals` are pure; `expand_claims` does
//! the I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::{core::v1::PersistentVolumeClaim, storage::v1::StorageClass};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

use crate::controller::runtime::diff::quantity_value;
use crate::controller::runtime::{FIELD_MANAGER, error::Error, metrics::Metrics};

/// The claims of the StatefulSet `name` from its claim template `template`
/// (`<template>-<name>-<ordinal>`, whether or not a pod still uses them)
/// that ask for less than `size`.
pub fn claims_to_grow<'a>(
    template: &str,
    name: &str,
    size: &str,
    claims: impl IntoIterator<Item = &'a PersistentVolumeClaim>,
) -> Vec<&'a PersistentVolumeClaim> {
    let wanted = quantity_value(&json!(size)).unwrap_or(0.0);
    let prefix = format!("{template}-{name}-");
    claims
        .into_iter()
        .filter(|c| {
            c.name_any()
                .strip_prefix(&prefix)
                .is_some_and(|ordinal| ordinal.parse::<u32>().is_ok())
        })
        .filter(|c| {
            let requested = c
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .and_then(|q| quantity_value(&json!(q.0)));
            requested.is_some_and(|r| r < wanted)
        })
        .collect()
}

/// Why each claim cannot grow: its StorageClass is unknown (`None` in
/// `classes`), does not allow expansion, or the claim has none.
pub fn expansion_refusals(
    claims: &[&PersistentVolumeClaim],
    classes: &BTreeMap<String, Option<StorageClass>>,
) -> Vec<String> {
    claims
        .iter()
        .filter_map(|claim| {
            let name = claim.name_any();
            let class_name = claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref());
            match class_name {
                None | Some("") => Some(format!(
                    "claim {name} has no StorageClass, and only dynamically provisioned claims can grow"
                )),
                Some(class) => match classes.get(class) {
                    Some(Some(sc)) if sc.allow_volume_expansion == Some(true) => None,
                    Some(Some(_)) => Some(format!(
                        "claim {name} uses StorageClass {class}, which does not allow volume expansion"
                    )),
                    _ => Some(format!("claim {name} uses StorageClass {class}, which does not exist")),
                },
            }
        })
        .collect()
}

/// Patches every claim of `name` that asks for less than `size` to `size`,
/// after checking that all of them can grow (so either all are patched or
/// none). Returns the names of the claims patched.
pub async fn expand_claims(
    client: &Client,
    namespace: &str,
    (template, name): (&str, &str),
    size: &str,
    metrics: &Metrics,
) -> Result<Vec<String>, Error> {
    let failed = |source: kube::Error| Error::ExpandVolumes {
        name: name.to_owned(),
        size: size.to_owned(),
        source: Box::new(source),
    };
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    // By name, not by the app's labels: claims a chart made before the app
    // took them over carry the chart's labels.
    let listed = claims_api.list(&ListParams::default()).await.map_err(failed)?;
    let claims = claims_to_grow(template, name, size, &listed.items);
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let classes_api: Api<StorageClass> = Api::all(client.clone());
    let mut classes: BTreeMap<String, Option<StorageClass>> = BTreeMap::new();
    for class in claims
        .iter()
        .filter_map(|c| c.spec.as_ref().and_then(|s| s.storage_class_name.clone()))
    {
        if let std::collections::btree_map::Entry::Vacant(entry) = classes.entry(class) {
            let found = classes_api.get_opt(entry.key()).await.map_err(failed)?;
            entry.insert(found);
        }
    }
    let refusals = expansion_refusals(&claims, &classes);
    if !refusals.is_empty() {
        return Err(Error::VolumeExpansionNotAllowed {
            size: size.to_owned(),
            claims: refusals,
        });
    }
    let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let mut grown = Vec::new();
    for claim in claims {
        let claim_name = claim.name_any();
        metrics.wrote("PersistentVolumeClaim");
        claims_api
            .patch(&claim_name, &params, &Patch::Merge(&patch))
            .await
            .map_err(failed)?;
        grown.push(claim_name);
    }
    Ok(grown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, size: &str, class: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"storageClassName": class, "resources": {"requests": {"storage": size}}},
        }))
        .unwrap()
    }

    fn class(name: &str, expands: Option<bool>) -> (String, Option<StorageClass>) {
        let sc = serde_json::from_value(json!({
            "metadata": {"name": name}, "provisioner": "x", "allowVolumeExpansion": expands,
        }))
        .unwrap();
        (name.to_owned(), Some(sc))
    }

    #[test]
    fn only_the_apps_smaller_claims_grow() {
        let claims = [
            claim("data-web-0", "1Gi", Some("fast")),
            claim("data-web-1", "2048Mi", Some("fast")),
            claim("data-web-7", "1Gi", Some("fast")),
            claim("data-web-canary-0", "1Gi", Some("fast")),
            claim("data-webs-0", "1Gi", Some("fast")),
            claim("other-web-0", "1Gi", Some("fast")),
        ];
        let names: Vec<String> = claims_to_grow("data", "web", "2Gi", &claims)
            .iter()
            .map(|c| c.name_any())
            .collect();
        // data-web-1 is already 2Gi; a retained claim above the replicas grows too.
        assert_eq!(names, ["data-web-0", "data-web-7"]);
    }

    #[test]
    fn every_claim_whose_class_cannot_expand_is_named() {
        let claims = [
            claim("data-web-0", "1Gi", Some("fast")),
            claim("data-web-1", "1Gi", Some("slow")),
            claim("data-web-2", "1Gi", None),
            claim("data-web-3", "1Gi", Some("gone")),
        ];
        let refs: Vec<&PersistentVolumeClaim> = claims.iter().collect();
        let classes: BTreeMap<_, _> = [
            class("fast", Some(true)),
            class("slow", None),
            ("gone".to_owned(), None),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            expansion_refusals(&refs, &classes),
            [
                "claim data-web-1 uses StorageClass slow, which does not allow volume expansion",
                "claim data-web-2 has no StorageClass, and only dynamically provisioned claims can grow",
                "claim data-web-3 uses StorageClass gone, which does not exist",
            ]
        );
        assert!(expansion_refusals(&refs[..1], &classes).is_empty());
    }
}
