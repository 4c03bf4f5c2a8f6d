//! What the strategies the operator drives from the StatefulSet's own
//! annotations share: the hash of the pod template it was last written
//! with, whether a template is new to it, and times in whole seconds.

use k8s_openapi::{api::apps::v1::StatefulSet, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use serde_json::Value;

use crate::controller::runtime::diff::{contains, content_hash};

/// The annotation on the StatefulSet with the hash of the pod template it
/// was last written with. A template a webhook mutates on its way in then
/// does not count as a new template, over and over.
pub const TEMPLATE_HASH_ANNOTATION: &str = "visitcounter.dev/template-hash";

/// A pod template, as JSON, and its hash.
pub struct Template {
    pub json: Value,
    pub hash: String,
}

impl Template {
    /// The template of `desired`, which this stamps with its hash.
    pub fn stamp(desired: &mut StatefulSet) -> Self {
        let json = serde_json::to_value(desired.spec.as_ref().map(|s| &s.template)).unwrap_or_default();
        let hash = content_hash(&json);
        desired
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(TEMPLATE_HASH_ANNOTATION.into(), hash.clone());
        Self { json, hash }
    }

    /// Whether it is new to the live StatefulSet: another hash than the one
    /// that was written with or, written before it carried one (the app was
    /// switched to a strategy the operator drives), another template than
    /// the live one.
    pub fn is_new_to(&self, live: &Value) -> bool {
        match live
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(TEMPLATE_HASH_ANNOTATION))
            .and_then(Value::as_str)
        {
            Some(written) => written != self.hash,
            None => !contains(&live["spec"]["template"], &self.json, "template"),
        }
    }
}

/// `now` in whole seconds, as the status writes times: a reconcile within
/// the second before the cache shows a write then writes the same.
pub fn whole_seconds(now: &Time) -> Time {
    Time(Timestamp::from_second(now.0.as_second()).unwrap_or(now.0))
}
