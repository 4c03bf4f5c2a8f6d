//! The objects, their resourceVersions and the change log watches replay.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::Arc,
};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::{
    fields::{Conflict, Ownership},
    resources::ResourceType,
    sim,
};

/// How many changes watches can replay; older resourceVersions get 410 Gone.
const LOG_CAPACITY: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub plural: &'static str,
    pub group: &'static str,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(rt: ResourceType, namespace: &str, name: &str) -> Self {
        Self {
            plural: rt.plural,
            group: rt.group,
            namespace: if rt.namespaced {
                namespace.to_owned()
            } else {
                String::new()
            },
            name: name.to_owned(),
        }
    }
}

pub struct Entry {
    pub rt: ResourceType,
    pub object: Value,
    pub ownership: Ownership,
}

/// One change, as a watch event.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub key: Key,
    pub kind: &'static str,
    pub object: Value,
}

/// An answer other than success, in the API server's `Status` form.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn not_found(rt: ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{}.{} \"{name}\" not found", rt.plural, rt.group),
        )
    }

    pub fn invalid(rt: ResourceType, name: &str, detail: impl std::fmt::Display) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{}.{} \"{name}\" is invalid: {detail}", rt.kind, rt.group),
        )
    }

    pub fn body(&self) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        })
    }
}

/// Admission for one resource type: returns the object as stored (defaults
/// applied) or why it is refused.
pub type Validator = Arc<dyn Fn(&Value, Option<&Value>) -> Result<Value, String> + Send + Sync>;

/// How a write reached the server.
pub enum Write<'a> {
    /// POST, or PUT: the whole object.
    Update { object: Value },
    /// Server-side apply.
    Apply { config: &'a Value, force: bool },
}

pub struct Store {
    pub rv: u64,
    pub objects: BTreeMap<Key, Entry>,
    log: VecDeque<Arc<Change>>,
    /// Watches from before this resourceVersion get 410 Gone.
    pub compacted: u64,
    pub changes: broadcast::Sender<Arc<Change>>,
    pub validators: HashMap<&'static str, Validator>,
    pub pods: sim::Pods,
    /// Pods whose container has one of these images never become ready.
    pub broken_images: HashSet<String>,
    /// The pod template of each StatefulSet revision (ControllerRevisions).
    pub revisions: HashMap<String, Value>,
    next_uid: u64,
}

impl Store {
    pub fn new() -> Self {
        Self {
            rv: 1000,
            objects: BTreeMap::new(),
            log: VecDeque::new(),
            compacted: 0,
            changes: broadcast::channel(65_536).0,
            validators: HashMap::new(),
            pods: sim::Pods::Ready,
            broken_images: HashSet::new(),
            revisions: HashMap::new(),
            next_uid: 1,
        }
    }

    /// Changes after `rv`, or `None` when they are no longer kept.
    pub fn changes_since(&self, rv: u64) -> Option<Vec<Arc<Change>>> {
        let oldest_kept = self.log.front().map_or(self.rv + 1, |c| c.rv);
        if rv < self.compacted || (rv < self.rv && rv + 1 < oldest_kept) {
            return None;
        }
        Some(self.log.iter().filter(|c| c.rv > rv).cloned().collect())
    }

    fn record(&mut self, key: Key, kind: &'static str, object: Value) {
        let change = Arc::new(Change {
            rv: self.rv,
            key,
            kind,
            object,
        });
        if self.log.len() == LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(change.clone());
        let _ = self.changes.send(change);
    }

    /// Creates or changes one object. `subresource` is `Some("status")` for
    /// status writes. With `dry_run` nothing is stored.
    #[allow(clippy::too_many_arguments)] // one per part of a request
    pub fn write(
        &mut self,
        rt: ResourceType,
        namespace: &str,
        name: &str,
        subresource: Option<&str>,
        write: Write<'_>,
        manager: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if subresource.is_some_and(|s| s != "status" || !rt.status) {
            return Err(ApiError::not_found(rt, name));
        }
        let key = Key::new(rt, namespace, name);
        let existing = self.objects.get(&key);
        let old = existing.map(|e| e.object.clone());
        let mut ownership = existing.map(|e| e.ownership.clone()).unwrap_or_default();
        if subresource.is_some() && old.is_none() {
            return Err(ApiError::not_found(rt, name));
        }
        let before = old.clone().unwrap_or_else(|| json!({}));
        let applying = matches!(write, Write::Apply { .. });
        let mut object = match write {
            Write::Update { object } => object,
            Write::Apply { config, force } => ownership
                .apply(&before, config, manager, force)
                .map_err(|c| conflict_error(rt, name, &c))?,
        };
        self.normalize(rt, namespace, name, &mut object, old.as_ref(), subresource)?;
        if let Some(validate) = self.validators.get(rt.plural).filter(|_| subresource.is_none()) {
            object = validate(&object, old.as_ref()).map_err(|m| ApiError::invalid(rt, name, m))?;
        }
        if old.as_ref() == Some(&object) {
            return Ok(object);
        }
        // An applier owns what it applied, not the defaults the server filled
        // in around it (a partition of 0, say), as on the real API server.
        if !applying {
            ownership.update(&before, &object, manager);
        }
        if let Some(old) = &old {
            let spec_changed = old.get("spec") != object.get("spec");
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            if object.get("spec").is_some() {
                object["metadata"]["generation"] = json!(generation + i64::from(spec_changed));
            }
        }
        if dry_run {
            return Ok(object);
        }
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        self.objects.insert(
            key.clone(),
            Entry {
                rt,
                object: object.clone(),
                ownership,
            },
        );
        self.record(key.clone(), kind, object.clone());
        if rt.kind == "StatefulSet" && subresource.is_none() {
            sim::run_statefulset_controller(self, &key);
        }
        Ok(object)
    }

    /// Sets what the server owns and applies the server's defaults and checks.
    fn normalize(
        &mut self,
        rt: ResourceType,
        namespace: &str,
        name: &str,
        object: &mut Value,
        old: Option<&Value>,
        subresource: Option<&str>,
    ) -> Result<(), ApiError> {
        if !object.is_object() {
            return Err(ApiError::new(400, "BadRequest", "the body is not a JSON object"));
        }
        if let Some(body_name) = object["metadata"]["name"].as_str()
            && body_name != name
        {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!("the name of the object ({body_name}) does not match the name on the URL ({name})"),
            ));
        }
        match (subresource, old) {
            (Some(_), Some(old)) => {
                let status = object.get("status").cloned();
                *object = old.clone();
                match status {
                    Some(status) => object["status"] = status,
                    None => {
                        object.as_object_mut().map(|o| o.remove("status"));
                    }
                }
            }
            (None, Some(old)) if rt.status => match old.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => {
                    object.as_object_mut().map(|o| o.remove("status"));
                }
            },
            (None, None) if rt.status => {
                object.as_object_mut().map(|o| o.remove("status"));
            }
            _ => {}
        }
        object["apiVersion"] = json!(rt.api_version());
        object["kind"] = json!(rt.kind);
        let meta = object["metadata"]
            .as_object_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        object["metadata"] = Value::Object(meta);
        object["metadata"]["name"] = json!(name);
        if rt.namespaced {
            object["metadata"]["namespace"] = json!(namespace);
        }
        match old {
            Some(old) => {
                for field in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
                    match old["metadata"].get(field) {
                        Some(v) => object["metadata"][field] = v.clone(),
                        None => {
                            object["metadata"].as_object_mut().map(|m| m.remove(field));
                        }
                    }
                }
            }
            None => {
                object["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.next_uid));
                self.next_uid += 1;
                object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                object["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
                if object.get("spec").is_some() {
                    object["metadata"]["generation"] = json!(1);
                }
            }
        }
        sim::default(rt, object);
        sim::check(self, rt, namespace, name, object, old)
    }

    /// Deletes an object, then its dependents: their owner reference is
    /// removed when `orphan`, otherwise they are deleted too.
    pub fn delete(
        &mut self,
        rt: ResourceType,
        namespace: &str,
        name: &str,
        orphan: bool,
        precondition_uid: Option<&str>,
    ) -> Result<Value, ApiError> {
        let key = Key::new(rt, namespace, name);
        let Some(entry) = self.objects.get(&key) else {
            return Err(ApiError::not_found(rt, name));
        };
        let uid = entry.object["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
        if let Some(expected) = precondition_uid
            && expected != uid
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {}.{} \"{name}\": Precondition failed: UID in precondition: {expected}, UID in object meta: {uid}",
                    rt.plural, rt.group
                ),
            ));
        }
        let entry = self.objects.remove(&key).expect("looked up above");
        self.rv += 1;
        let mut object = entry.object;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(key, "DELETED", object.clone());
        let dependents: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, e)| owner_uids(&e.object).any(|u| u == uid))
            .map(|(k, _)| k.clone())
            .collect();
        for dep in dependents {
            let Some(dep_entry) = self.objects.get(&dep) else {
                continue;
            };
            let dep_rt = dep_entry.rt;
            if orphan {
                let mut changed = dep_entry.object.clone();
                if let Some(refs) = changed["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"] != uid.as_str());
                }
                let _ = self.write(
                    dep_rt,
                    &dep.namespace,
                    &dep.name,
                    None,
                    Write::Update { object: changed },
                    "garbage-collector",
                    false,
                );
            } else {
                let _ = self.delete(dep_rt, &dep.namespace, &dep.name, false, None);
            }
        }
        Ok(object)
    }
}

pub fn owner_uids(object: &Value) -> impl Iterator<Item = &str> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

fn conflict_error(rt: ResourceType, name: &str, conflicts: &[Conflict]) -> ApiError {
    let list: Vec<String> = conflicts
        .iter()
        .map(|c| format!("conflict with \"{}\": .{}", c.manager, c.path.join(".")))
        .collect();
    ApiError::new(
        409,
        "Conflict",
        format!(
            "Apply failed with {} conflict(s) on {}.{} \"{name}\": {}",
            conflicts.len(),
            rt.plural,
            rt.group,
            list.join("; ")
        ),
    )
}
