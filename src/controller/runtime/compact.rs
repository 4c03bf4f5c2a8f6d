//! A child kept small: its JSON text, LZ4-compressed against a dictionary
//! (`Packed`, what the cache holds), and, while the watch hands it to the
//! controller, the few fields of its metadata the controller reads
//! (`Compact`). Typed, a StatefulSet takes about 45 KiB
//! of memory and a Service 9 KiB (`cargo bench --bench cache`); kept typed
//! with only its spec as text, its metadata's two maps took 544 bytes each
//! however few their entries.
//!
//! The children of one operator's apps are near copies of each other: the
//! same keys, labels and pod template, with other names, uids and times.
//! So the dictionary of a kind is the first object of that kind this
//! process decoded, and every later one is kept as what differs from it
//! (a StatefulSet of 3.3 KB of text in about 300 bytes). Each object holds
//! its dictionary (shared), so it always unpacks with the one it was
//! packed with.

use std::{
    collections::HashMap,
    marker::PhantomData,
    sync::{Arc, Mutex, OnceLock},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use serde_json::Value;

/// The most of a first object kept as its kind's dictionary. LZ4 looks
/// back at most 64 KiB; an object is rarely a tenth of that.
const DICTIONARY_MOST: usize = 16 * 1024;

/// The fields of the metadata kept typed, decoded alone: the rest (labels,
/// annotations and all) is in the text, and is not decoded at each watch
/// event only to be dropped.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeptMetadata {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
}

/// `K` as compressed JSON text, without its managedFields: all the cache
/// keeps of it.
pub struct Packed<K> {
    bytes: Box<[u8]>,
    dictionary: Arc<[u8]>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Packed<K> {
    fn clone(&self) -> Self {
        Self {
            bytes: self.bytes.clone(),
            dictionary: self.dictionary.clone(),
            kind: PhantomData,
        }
    }
}

/// `K` as the watch hands it on: packed, with the metadata the controller
/// maps it to its app by.
pub struct Compact<K> {
    /// Name, namespace, uid, resourceVersion (the watch resumes from it)
    /// and owner references (the controller maps a child to its app by
    /// them); the rest of the metadata is in the text only.
    pub metadata: ObjectMeta,
    pub packed: Packed<K>,
}

impl<K> Clone for Compact<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            packed: self.packed.clone(),
        }
    }
}

impl<K> std::fmt::Debug for Compact<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compact")
            .field("metadata", &self.metadata)
            .field("packed_bytes", &self.packed.bytes.len())
            .finish_non_exhaustive()
    }
}

impl<K: k8s_openapi::Resource> k8s_openapi::Resource for Compact<K> {
    const API_VERSION: &'static str = K::API_VERSION;
    const GROUP: &'static str = K::GROUP;
    const KIND: &'static str = K::KIND;
    const VERSION: &'static str = K::VERSION;
    const URL_PATH_SEGMENT: &'static str = K::URL_PATH_SEGMENT;
    type Scope = K::Scope;
}

impl<K: k8s_openapi::Resource> k8s_openapi::Metadata for Compact<K> {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// (Watch events are decoded through serde's buffered form, which
/// `RawValue` cannot come from, so the object is decoded once and written
/// back as text.)
impl<'de, K: k8s_openapi::Resource> Deserialize<'de> for Compact<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::pack(Value::deserialize(deserializer)?, |text| dictionary_of(K::KIND, text))
            .map_err(serde::de::Error::custom)
    }
}

impl<K> Compact<K> {
    /// What the cache keeps of it: its text.
    pub fn kept(&self) -> Packed<K> {
        self.packed.clone()
    }

    /// `object` without its managedFields, packed against the dictionary
    /// `dictionary` gives for its text.
    fn pack(mut object: Value, dictionary: impl FnOnce(&str) -> Arc<[u8]>) -> Result<Self, serde_json::Error> {
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("managedFields");
        }
        let kept = match object.get("metadata") {
            Some(metadata) => KeptMetadata::deserialize(metadata)?,
            None => KeptMetadata::default(),
        };
        let text = object.to_string();
        let dictionary = dictionary(&text);
        Ok(Self {
            metadata: ObjectMeta {
                name: kept.name,
                namespace: kept.namespace,
                uid: kept.uid,
                resource_version: kept.resource_version,
                owner_references: kept.owner_references,
                ..ObjectMeta::default()
            },
            packed: Packed {
                bytes: lz4_flex::block::compress_prepend_size_with_dict(text.as_bytes(), &dictionary).into(),
                dictionary,
                kind: PhantomData,
            },
        })
    }
}

impl<K> Packed<K> {
    /// The object's text. It was packed by this process from valid JSON,
    /// so it unpacks (an empty text would read as no object).
    fn text(&self) -> Vec<u8> {
        lz4_flex::block::decompress_size_prepended_with_dict(&self.bytes, &self.dictionary).unwrap_or_default()
    }

    /// The object as JSON, apart from its managedFields, for planning.
    pub fn to_json(&self) -> Value {
        serde_json::from_slice(&self.text()).unwrap_or(Value::Null)
    }

    /// How many bytes it keeps packed.
    #[cfg(test)]
    fn packed_len(&self) -> usize {
        self.bytes.len()
    }
}

impl<K: DeserializeOwned> Packed<K> {
    /// The typed object.
    pub fn typed(&self) -> Option<K> {
        serde_json::from_slice(&self.text()).ok()
    }
}

/// Each kind's dictionary.
type Dictionaries = Mutex<HashMap<&'static str, Arc<[u8]>>>;

/// The dictionary of `kind`: the first text of that kind seen, up to
/// `DICTIONARY_MOST` bytes.
fn dictionary_of(kind: &'static str, text: &str) -> Arc<[u8]> {
    static DICTIONARIES: OnceLock<Dictionaries> = OnceLock::new();
    let mut dictionaries = DICTIONARIES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    dictionaries
        .entry(kind)
        .or_insert_with(|| text.as_bytes()[..text.len().min(DICTIONARY_MOST)].into())
        .clone()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::ConfigMap};

    use super::*;
    use crate::children::INSTANCE_LABEL;

    fn config_map(name: &str, uid: &str) -> Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "shop", "uid": uid, "resourceVersion": "7",
                         "labels": {INSTANCE_LABEL: "web"}, "annotations": {"a": "b"},
                         "ownerReferences": [{"apiVersion": "visitcounter.dev/v1alpha1", "kind": "VisitCounterApp",
                                              "name": "web", "uid": "u0", "controller": true}],
                         "managedFields": [{"manager": "visitcounter"}]},
            "data": {"MODE": "a", "GREETING": "hello from the visit counter"},
        })
    }

    /// `object` as it should come out of the cache.
    fn without_managed_fields(mut object: Value) -> Value {
        object["metadata"].as_object_mut().unwrap().remove("managedFields");
        object
    }

    #[test]
    fn keeps_a_statefulset_whole_including_through_a_watch_event() {
        let json = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "shop", "generation": 2},
            "spec": {"replicas": 3, "serviceName": "web-headless"},
            "status": {"replicas": 3, "observedGeneration": 2},
        });
        let cached: Compact<StatefulSet> = serde_json::from_str(&json.to_string()).unwrap();
        assert_eq!(cached.packed.to_json(), json);
        assert_eq!(
            cached.packed.typed().unwrap().status.unwrap().observed_generation,
            Some(2)
        );
        // Watch events arrive through serde's buffered form.
        #[derive(Deserialize)]
        #[serde(tag = "type", content = "object")]
        enum Event {
            #[serde(rename = "ADDED")]
            Added(Compact<StatefulSet>),
        }
        let event = serde_json::json!({"type": "ADDED", "object": json});
        let Event::Added(from_event) = serde_json::from_str(&event.to_string()).unwrap();
        assert_eq!(from_event.packed.to_json(), json);
    }

    #[test]
    fn a_cached_child_is_its_text_without_managed_fields_and_a_metadata_of_five_fields() {
        let json = config_map("web-config-1", "u1");
        let cached: Compact<ConfigMap> = serde_json::from_value(json.clone()).unwrap();
        let without_managed_fields = without_managed_fields(json);
        assert_eq!(cached.packed.to_json(), without_managed_fields);
        assert_eq!(cached.packed.typed().unwrap().data.unwrap()["MODE"], "a");
        // The store, the watch and the controller's owner mapping read these.
        let meta = &cached.metadata;
        assert_eq!(
            (
                meta.name.as_deref(),
                meta.namespace.as_deref(),
                meta.uid.as_deref(),
                meta.resource_version.as_deref()
            ),
            (Some("web-config-1"), Some("shop"), Some("u1"), Some("7"))
        );
        assert_eq!(meta.owner_references.as_ref().unwrap()[0].uid, "u0");
        assert_eq!(
            (&meta.labels, &meta.annotations),
            (&None, &None),
            "kept in the text only"
        );
    }

    #[test]
    fn a_child_like_the_dictionary_is_kept_as_what_differs() {
        let dictionary: Arc<[u8]> = config_map("web-config-1", "u1").to_string().as_bytes().into();
        let other_json = config_map("shop-config-2", "a-uid-of-another-config-map");
        let other = Compact::<ConfigMap>::pack(other_json.clone(), |_| dictionary.clone()).unwrap();
        let without_managed_fields = without_managed_fields(other_json);
        assert_eq!(other.packed.to_json(), without_managed_fields);
        let text = other.packed.to_json().to_string().len();
        assert!(
            other.packed.packed_len() * 4 < text,
            "{} bytes packed of {text} of text",
            other.packed.packed_len()
        );
    }

    #[test]
    fn the_first_object_of_a_kind_is_its_dictionary_for_good() {
        let first = dictionary_of("KindOfThisTestOnly", "the first");
        assert_eq!(&*first, b"the first");
        assert!(Arc::ptr_eq(&dictionary_of("KindOfThisTestOnly", "a later one"), &first));
    }
}
