//! A watch cache of the operator's own, by namespace and name, holding what
//! `keep` makes of each object.
//!
//! kube's reflector store keys each object by an `ObjectRef` that copies its
//! name, namespace, uid and resourceVersion, and holds the object itself,
//! whose type must carry a whole `ObjectMeta` (360 bytes before any field is
//! filled). Here the key is one string and the value is what the operator
//! reads: a packed child keeps its text and nothing else
//! (`compact::Packed`). The watch stream still hands the controller the
//! object with its owner references, for the moment it takes to map it to
//! its app.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use kube::{Resource, runtime::watcher};

/// What the cache holds, and whether it has listed once.
struct Held<V> {
    objects: HashMap<String, Arc<V>>,
    /// The objects of a list under way, swapped in when it ends.
    listing: Option<HashMap<String, Arc<V>>>,
    listed: bool,
}

/// The cache: cloned handles share it.
pub struct ChildStore<V> {
    held: Arc<RwLock<Held<V>>>,
}

impl<V> Clone for ChildStore<V> {
    fn clone(&self) -> Self {
        Self {
            held: self.held.clone(),
        }
    }
}

impl<V> Default for ChildStore<V> {
    fn default() -> Self {
        Self {
            held: Arc::new(RwLock::new(Held {
                objects: HashMap::new(),
                listing: None,
                listed: false,
            })),
        }
    }
}

/// The key of the object `name` in `namespace` (names hold no `/`).
fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The key of `object`, from its metadata.
fn key_of<K: Resource>(object: &K) -> String {
    let meta = object.meta();
    key(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

impl<V> ChildStore<V> {
    /// The object `name` in `namespace`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<V>> {
        self.read().objects.get(&key(namespace, name)).cloned()
    }

    /// The objects of `namespace` whose name `wanted` accepts.
    pub fn named_in(&self, namespace: &str, wanted: impl Fn(&str) -> bool) -> Vec<Arc<V>> {
        let prefix = key(namespace, "");
        self.read()
            .objects
            .iter()
            .filter_map(|(key, object)| key.strip_prefix(&prefix).filter(|n| wanted(n)).map(|_| object.clone()))
            .collect()
    }

    /// Every object.
    pub fn state(&self) -> Vec<Arc<V>> {
        self.read().objects.values().cloned().collect()
    }

    /// Whether the cache holds its first full list.
    pub fn is_ready(&self) -> bool {
        self.read().listed
    }

    /// Applies a watch event, keeping `keep(object)` of each object.
    pub fn apply<K: Resource>(&self, event: &watcher::Event<K>, keep: impl Fn(&K) -> V) {
        let mut held = self.held.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            watcher::Event::Apply(object) => {
                held.objects.insert(key_of(object), Arc::new(keep(object)));
            }
            watcher::Event::Delete(object) => {
                held.objects.remove(&key_of(object));
            }
            watcher::Event::Init => held.listing = Some(HashMap::new()),
            watcher::Event::InitApply(object) => {
                let kept = Arc::new(keep(object));
                held.listing.get_or_insert_default().insert(key_of(object), kept);
            }
            watcher::Event::InitDone => {
                held.objects = held.listing.take().unwrap_or_default();
                held.listed = true;
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Held<V>> {
        self.held.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use watcher::Event;

    use super::*;

    fn config_map(namespace: &str, name: &str, mode: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            data: Some([("MODE".to_owned(), mode.to_owned())].into()),
            ..ConfigMap::default()
        }
    }

    /// What the tests keep of a ConfigMap: its mode.
    fn mode(config_map: &ConfigMap) -> String {
        config_map.data.as_ref().unwrap()["MODE"].clone()
    }

    fn modes(objects: Vec<Arc<String>>) -> Vec<String> {
        let mut modes: Vec<String> = objects.iter().map(|m| m.to_string()).collect();
        modes.sort();
        modes
    }

    #[test]
    fn a_list_is_seen_whole_once_it_ends_and_then_the_cache_is_ready() {
        let store = ChildStore::default();
        store.apply(&Event::Init, mode);
        store.apply(&Event::InitApply(config_map("shop", "web-a", "a")), mode);
        assert!(!store.is_ready(), "the list is under way");
        assert_eq!(store.get("shop", "web-a"), None, "a list is seen only whole");
        store.apply(&Event::InitDone, mode);
        assert!(store.is_ready());
        assert_eq!(store.get("shop", "web-a").as_deref().map(String::as_str), Some("a"));
    }

    #[test]
    fn a_second_list_replaces_the_first_and_drops_what_it_lacks() {
        let store = ChildStore::default();
        for event in [
            Event::Init,
            Event::InitApply(config_map("shop", "web-a", "a")),
            Event::InitDone,
            Event::Init,
            Event::InitApply(config_map("shop", "web-b", "b")),
        ] {
            store.apply(&event, mode);
        }
        assert_eq!(
            modes(store.state()),
            ["a"],
            "the first list holds until the second ends"
        );
        store.apply(&Event::InitDone, mode);
        assert_eq!(modes(store.state()), ["b"]);
        assert!(store.is_ready());
    }

    #[test]
    fn applied_objects_are_replaced_by_name_and_deleted() {
        let store = ChildStore::default();
        for event in [
            Event::Apply(config_map("shop", "web-a", "a")),
            Event::Apply(config_map("shop", "web-a", "b")),
            Event::Apply(config_map("books", "web-a", "c")),
        ] {
            store.apply(&event, mode);
        }
        assert_eq!(store.get("shop", "web-a").as_deref().map(String::as_str), Some("b"));
        store.apply(&Event::Delete(config_map("shop", "web-a", "b")), mode);
        assert_eq!(store.get("shop", "web-a"), None);
        assert_eq!(modes(store.state()), ["c"], "another namespace's is another object");
    }

    #[test]
    fn names_are_looked_at_within_their_namespace() {
        let store = ChildStore::default();
        for (namespace, name, value) in [
            ("shop", "web-a", "1"),
            ("shop", "api-a", "2"),
            ("shopping", "web-b", "3"),
        ] {
            store.apply(&Event::Apply(config_map(namespace, name, value)), mode);
        }
        let web = store.named_in("shop", |name| name.starts_with("web-"));
        assert_eq!(modes(web), ["1"]);
    }
}
