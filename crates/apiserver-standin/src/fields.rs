//! Field ownership, the part of server-side apply a controller depends on:
//! who owns which field, conflicts between managers, and removal of the
//! fields an applier stopped sending.
//!
//! Ownership is tracked per leaf (a scalar, a list or an empty map). Lists
//! are atomic, which is coarser than the real API server's list-map merge:
//! an apply replaces a whole list. Every list the operator applies is one it
//! owns outright, so the difference does not show.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// A path of map keys from the object's root to a leaf.
pub type FieldPath = Vec<String>;

/// Who owns which leaf of one object, and what each applier last applied.
#[derive(Clone, Debug, Default)]
pub struct Ownership {
    owners: BTreeMap<FieldPath, String>,
    applied: BTreeMap<String, BTreeSet<FieldPath>>,
}

/// Fields the server sets, which no manager owns.
fn server_owned(path: &[String]) -> bool {
    match path {
        [root] => root == "apiVersion" || root == "kind",
        [meta, field, ..] if meta == "metadata" => matches!(
            field.as_str(),
            "name" | "namespace" | "uid" | "resourceVersion" | "generation" | "creationTimestamp" | "managedFields"
        ),
        _ => false,
    }
}

/// Every leaf path of `value` that a manager can own.
pub fn leaves(value: &Value) -> BTreeSet<FieldPath> {
    fn walk(value: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    path.push(key.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {
                if !path.is_empty() && !server_owned(path) {
                    out.insert(path.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

pub fn get<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.as_object()?.get(key))
}

fn set(value: &mut Value, path: &[String], leaf: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cursor = value;
    for key in parents {
        if !cursor.is_object() {
            *cursor = Value::Object(Map::new());
        }
        let map = cursor.as_object_mut().expect("made an object above");
        cursor = map.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
    }
    if !cursor.is_object() {
        *cursor = Value::Object(Map::new());
    }
    cursor
        .as_object_mut()
        .expect("made an object above")
        .insert(last.clone(), leaf);
}

/// Removes the leaf at `path`, and each map above it that it leaves empty:
/// those held only that leaf, so they were the applier's too.
fn remove(value: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(map) = value.as_object_mut() else {
        return;
    };
    if rest.is_empty() {
        map.remove(first);
        return;
    }
    if let Some(child) = map.get_mut(first) {
        remove(child, rest);
        if child.as_object().is_some_and(Map::is_empty) {
            map.remove(first);
        }
    }
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub path: FieldPath,
}

impl Ownership {
    /// Server-side apply of `config` by `manager` onto `live` (an empty
    /// object on create). Returns the merged object, or the conflicts when
    /// `force` is false and another manager owns a field with another value.
    pub fn apply(&mut self, live: &Value, config: &Value, manager: &str, force: bool) -> Result<Value, Vec<Conflict>> {
        let wanted = leaves(config);
        let conflicts: Vec<Conflict> = wanted
            .iter()
            .filter_map(|path| {
                let owner = self.owners.get(path)?;
                (owner != manager && get(live, path) != get(config, path)).then(|| Conflict {
                    manager: owner.clone(),
                    path: path.clone(),
                })
            })
            .collect();
        if !conflicts.is_empty() && !force {
            return Err(conflicts);
        }
        let mut merged = live.clone();
        let previously = self.applied.remove(manager).unwrap_or_default();
        for dropped in previously.difference(&wanted) {
            if self.owners.get(dropped).map(String::as_str) == Some(manager) {
                self.owners.remove(dropped);
                remove(&mut merged, dropped);
            }
        }
        for path in &wanted {
            let value = get(config, path).cloned().unwrap_or(Value::Null);
            set(&mut merged, path, value);
            self.take(path, manager);
        }
        self.applied.insert(manager.to_owned(), wanted);
        Ok(merged)
    }

    /// Records an update (create, replace or patch) by `manager`: it owns
    /// every leaf it changed or added; leaves that disappeared have no owner.
    pub fn update(&mut self, before: &Value, after: &Value, manager: &str) {
        let old = leaves(before);
        let new = leaves(after);
        for gone in old.difference(&new) {
            self.owners.remove(gone);
            for set in self.applied.values_mut() {
                set.remove(gone);
            }
        }
        for path in &new {
            if get(before, path) != get(after, path) {
                self.take(path, manager);
            }
        }
    }

    fn take(&mut self, path: &FieldPath, manager: &str) {
        if let Some(previous) = self.owners.insert(path.clone(), manager.to_owned())
            && previous != manager
            && let Some(set) = self.applied.get_mut(&previous)
        {
            set.remove(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn apply_conflicts_with_another_manager_unless_forced() {
        let mut own = Ownership::default();
        let live = own
            .apply(&json!({}), &json!({"spec": {"holder": "a"}}), "a", false)
            .unwrap();
        let err = own
            .apply(&live, &json!({"spec": {"holder": "b"}}), "b", false)
            .unwrap_err();
        assert_eq!(err[0].manager, "a");
        let forced = own.apply(&live, &json!({"spec": {"holder": "b"}}), "b", true).unwrap();
        assert_eq!(forced["spec"]["holder"], "b");
    }

    #[test]
    fn apply_removes_fields_the_applier_stopped_sending_but_keeps_others() {
        let mut own = Ownership::default();
        let live = own.apply(&json!({}), &json!({"a": 1, "b": 2}), "op", false).unwrap();
        let mut edited = live.clone();
        edited["c"] = json!(3);
        own.update(&live, &edited, "kubectl");
        let after = own.apply(&edited, &json!({"a": 1}), "op", false).unwrap();
        assert_eq!(after, json!({"a": 1, "c": 3}));
        // A map left empty goes with its last field.
        let nested = own
            .apply(&after, &json!({"a": 1, "n": {"m": {"x": 1}}}), "op", false)
            .unwrap();
        assert_eq!(
            own.apply(&nested, &json!({"a": 1}), "op", false).unwrap(),
            json!({"a": 1, "c": 3})
        );
    }

    #[test]
    fn an_update_takes_ownership_so_a_later_forced_apply_restores() {
        let mut own = Ownership::default();
        let live = own.apply(&json!({}), &json!({"replicas": 3}), "op", false).unwrap();
        let edited = json!({"replicas": 5});
        own.update(&live, &edited, "kubectl");
        assert!(own.apply(&edited, &json!({"replicas": 3}), "op", false).is_err());
        assert_eq!(
            own.apply(&edited, &json!({"replicas": 3}), "op", true).unwrap()["replicas"],
            3
        );
    }
}
