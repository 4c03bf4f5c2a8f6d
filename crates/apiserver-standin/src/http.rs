//! The REST and watch protocol: paths, verbs, content types, `Status`
//! answers, and watch streams of JSON lines.

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::{
    Shared,
    resources::{Target, parse},
    store::{ApiError, Change, Key, Write},
};

/// One request the stand-in answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub dry_run: bool,
    /// The `Impersonate-User` the client sent (`kube::Config`'s
    /// `auth_info.impersonate`), which tells the operator's requests from a
    /// test's.
    pub user: Option<String>,
}

/// What RBAC checks for one request: API group, resource (with
/// `/subresource`), verb.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    pub group: &'static str,
    pub resource: String,
    pub verb: &'static str,
}

impl RecordedRequest {
    /// A request that changes (or tried to change) stored state.
    pub fn is_write(&self) -> bool {
        !self.dry_run && matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }

    /// The RBAC checks the API server makes for this request, as the real
    /// one does: `list` or `watch` for a collection, and a server-side apply
    /// that creates its object needs `create` besides `patch`.
    pub fn accesses(&self) -> Vec<Access> {
        let Some(target) = parse(&self.path) else {
            return Vec::new();
        };
        let watching = self.query.split('&').any(|p| p == "watch=true" || p == "watch=1");
        let verbs: &[&'static str] = match (self.method.as_str(), target.name.is_some()) {
            ("GET", true) => &["get"],
            ("GET", false) if watching => &["watch"],
            ("GET", false) => &["list"],
            ("POST", _) => &["create"],
            ("PUT", _) => &["update"],
            ("PATCH", _) if self.status == 201 => &["patch", "create"],
            ("PATCH", _) => &["patch"],
            ("DELETE", true) => &["delete"],
            ("DELETE", false) => &["deletecollection"],
            _ => &[],
        };
        let resource = match &target.subresource {
            Some(sub) => format!("{}/{sub}", target.rt.plural),
            None => target.rt.plural.to_owned(),
        };
        verbs
            .iter()
            .map(|verb| Access {
                group: target.rt.group,
                resource: resource.clone(),
                verb,
            })
            .collect()
    }

    /// The resource's plural, from the path.
    pub fn plural(&self) -> Option<&'static str> {
        parse(&self.path).map(|t| t.rt.plural)
    }
}

/// A failure the next matching requests get instead of an answer.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: Option<Method>,
    pub path_contains: String,
    pub status: u16,
    pub times: usize,
}

pub async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query_string = request.uri().query().unwrap_or_default().to_owned();
    let query: HashMap<String, String> = form_pairs(&query_string);
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
    let user = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = answer(&shared, &method, &path, &query, &headers, &body).await;
    shared.requests.lock().expect("request log").push(RecordedRequest {
        method: method.to_string(),
        path,
        query: query_string,
        status: response.status().as_u16(),
        dry_run,
        user,
    });
    response
}

fn form_pairs(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.to_string(),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(error: &ApiError) -> Response {
    let mut response = json_response(error.code, &error.body());
    if error.code == 429 {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

async fn answer(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    if let Some(status) = shared.take_fault(method, path) {
        let reason = match status {
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            _ => "Unknown",
        };
        return error_response(&ApiError::new(status, reason, format!("injected failure {status}")));
    }
    let Some(target) = parse(path) else {
        return error_response(&ApiError::new(
            404,
            "NotFound",
            format!("the server could not find {path}"),
        ));
    };
    let result = match (method.clone(), &target.name) {
        (Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            return watch(shared, &target, query);
        }
        (Method::GET, None) => Ok(list(shared, &target, query)),
        (Method::GET, Some(name)) => get(shared, &target, name),
        (Method::POST, None) => parse_body(body).and_then(|object| {
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            if name.is_empty() {
                return Err(ApiError::new(422, "Invalid", "metadata.name: Required value"));
            }
            let mut store = shared.store.lock().expect("store");
            if store.objects.contains_key(&Key::new(target.rt, &target.namespace, &name)) {
                return Err(ApiError::new(
                    409,
                    "AlreadyExists",
                    format!("{}.{} \"{name}\" already exists", target.rt.plural, target.rt.group),
                ));
            }
            store
                .write(
                    target.rt,
                    &target.namespace,
                    &name,
                    None,
                    Write::Update { object },
                    &manager(query),
                    dry_run(query),
                )
                .map(|o| (201, o))
        }),
        (Method::PUT, Some(name)) => parse_body(body).and_then(|object| {
            let mut store = shared.store.lock().expect("store");
            let current = store
                .objects
                .get(&Key::new(target.rt, &target.namespace, name))
                .map(|e| e.object["metadata"]["resourceVersion"].clone());
            match (&current, object["metadata"].get("resourceVersion")) {
                (None, _) => return Err(ApiError::not_found(target.rt, name)),
                (Some(now), Some(sent)) if now != sent => {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                            target.rt.plural, target.rt.group
                        ),
                    ));
                }
                _ => {}
            }
            store
                .write(
                    target.rt,
                    &target.namespace,
                    name,
                    target.subresource.as_deref(),
                    Write::Update { object },
                    &manager(query),
                    dry_run(query),
                )
                .map(|o| (200, o))
        }),
        (Method::PATCH, Some(name)) => patch(shared, &target, name, query, headers, body),
        (Method::DELETE, Some(name)) => {
            let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let policy = options["propagationPolicy"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| query.get("propagationPolicy").cloned());
            let uid = options["preconditions"]["uid"].as_str();
            let mut store = shared.store.lock().expect("store");
            let deleted = store.delete(
                target.rt,
                &target.namespace,
                name,
                policy.as_deref() == Some("Orphan"),
                uid,
            );
            // The StatefulSet controller watches its pods and replaces one that
            // goes.
            if let Ok(pod) = &deleted
                && target.rt.kind == "Pod"
                && let Some(owner) = pod["metadata"]["ownerReferences"]
                    .as_array()
                    .and_then(|refs| refs.iter().find(|r| r["kind"] == "StatefulSet"))
                    .and_then(|r| r["name"].as_str())
                && let Some(sts) = crate::resources::find("apps", "statefulsets")
            {
                let key = Key::new(sts, &target.namespace, owner);
                crate::sim::run_statefulset_controller(&mut store, &key);
            }
            deleted.map(|o| (200, o))
        }
        _ => Err(ApiError::new(405, "MethodNotAllowed", format!("{method} is not supported on {path}"))),
    };
    match result {
        Ok((status, object)) => json_response(status, &object),
        Err(error) => error_response(&error),
    }
}

fn manager(query: &HashMap<String, String>) -> String {
    query.get("fieldManager").cloned().unwrap_or_else(|| "unknown".into())
}

fn dry_run(query: &HashMap<String, String>) -> bool {
    query.get("dryRun").is_some_and(|v| v == "All")
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::new(400, "BadRequest", format!("the body is not JSON: {e}")))
}

fn get(shared: &Shared, target: &Target, name: &str) -> Result<(u16, Value), ApiError> {
    let store = shared.store.lock().expect("store");
    let object = &store
        .objects
        .get(&Key::new(target.rt, &target.namespace, name))
        .ok_or_else(|| ApiError::not_found(target.rt, name))?
        .object;
    match target.subresource.as_deref() {
        None | Some("status") => Ok((200, object.clone())),
        Some(_) => Err(ApiError::not_found(target.rt, name)),
    }
}

fn patch(
    shared: &Shared,
    target: &Target,
    name: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(u16, Value), ApiError> {
    let patch = parse_body(body)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut store = shared.store.lock().expect("store");
    let key = Key::new(target.rt, &target.namespace, name);
    let sub = target.subresource.as_deref();
    if content_type.starts_with("application/apply-patch") {
        if !query.contains_key("fieldManager") {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let force = query.get("force").is_some_and(|f| f == "true");
        let created = !store.objects.contains_key(&key);
        return store
            .write(
                target.rt,
                &target.namespace,
                name,
                sub,
                Write::Apply { config: &patch, force },
                &manager(query),
                dry_run(query),
            )
            .map(|o| (if created { 201 } else { 200 }, o));
    }
    let current = store
        .objects
        .get(&key)
        .map(|e| e.object.clone())
        .ok_or_else(|| ApiError::not_found(target.rt, name))?;
    let mut object = current;
    if content_type.starts_with("application/json-patch") {
        let ops: json_patch::Patch = serde_json::from_value(patch)
            .map_err(|e| ApiError::new(400, "BadRequest", format!("not a JSON patch: {e}")))?;
        json_patch::patch(&mut object, &ops).map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
    } else {
        // Merge patch; a strategic merge patch is read as one, so lists are replaced.
        json_patch::merge(&mut object, &patch);
    }
    store
        .write(
            target.rt,
            &target.namespace,
            name,
            sub,
            Write::Update { object },
            &manager(query),
            dry_run(query),
        )
        .map(|o| (200, o))
}

/// A label selector of `key=value`, `key!=value`, `key` and `!key` terms.
fn matches_labels(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    let labels = &object["metadata"]["labels"];
    selector.split(',').all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once('=') {
            labels[k.trim()].as_str() == Some(v.trim_start_matches('=').trim())
        } else if let Some(k) = term.strip_prefix('!') {
            labels.get(k.trim()).is_none()
        } else {
            labels.get(term.trim()).is_some()
        }
    })
}

fn matches_fields(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| match term.split_once('=') {
        Some(("metadata.name", v)) => object["metadata"]["name"] == v.trim_start_matches('='),
        Some(("metadata.namespace", v)) => object["metadata"]["namespace"] == v.trim_start_matches('='),
        _ => true,
    })
}

fn selected(target: &Target, key: &Key, object: &Value, query: &HashMap<String, String>) -> bool {
    key.plural == target.rt.plural
        && key.group == target.rt.group
        && (target.namespace.is_empty() || key.namespace == target.namespace)
        && matches_labels(object, query.get("labelSelector"))
        && matches_fields(object, query.get("fieldSelector"))
}

/// A list, in pages of `limit` when asked, with a `continue` token.
fn list(shared: &Shared, target: &Target, query: &HashMap<String, String>) -> (u16, Value) {
    let store = shared.store.lock().expect("store");
    let skip: usize = query.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let matching: Vec<&Value> = store
        .objects
        .iter()
        .filter(|(k, e)| selected(target, k, &e.object, query))
        .map(|(_, e)| &e.object)
        .collect();
    let items: Vec<Value> = matching.iter().skip(skip).take(limit).map(|o| (*o).clone()).collect();
    let mut metadata = json!({"resourceVersion": store.rv.to_string()});
    let next = skip.saturating_add(items.len());
    if next < matching.len() {
        metadata["continue"] = json!(next.to_string());
        metadata["remainingItemCount"] = json!(matching.len() - next);
    }
    (
        200,
        json!({
            "apiVersion": target.rt.api_version(),
            "kind": format!("{}List", target.rt.kind),
            "metadata": metadata,
            "items": items,
        }),
    )
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn gone_line() -> Bytes {
    let error = ApiError::new(410, "Expired", "too old resource version");
    event_line("ERROR", &error.body())
}

/// A watch: the changes after `resourceVersion` (every object as ADDED when
/// none is given), then live changes, until the timeout, a compaction, or
/// the client goes away.
fn watch(shared: &Arc<Shared>, target: &Target, query: &HashMap<String, String>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(1024);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1800u64);
    let since = query
        .get("resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0);
    let mut compactions = shared.compactions.subscribe();
    let (backlog, mut live) = {
        let store = shared.store.lock().expect("store");
        let live = store.changes.subscribe();
        let backlog: Option<Vec<Bytes>> = match since {
            Some(rv) => store.changes_since(rv).map(|changes| {
                changes
                    .iter()
                    .filter(|c| selected(target, &c.key, &c.object, query))
                    .map(|c| event_line(c.kind, &c.object))
                    .collect()
            }),
            None => Some(
                store
                    .objects
                    .iter()
                    .filter(|(k, e)| selected(target, k, &e.object, query))
                    .map(|(_, e)| event_line("ADDED", &e.object))
                    .collect(),
            ),
        };
        (backlog, live)
    };
    let target = target.clone();
    let query = query.clone();
    tokio::spawn(async move {
        let Some(backlog) = backlog else {
            let _ = tx.send(Ok(gone_line())).await;
            return;
        };
        for line in backlog {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        loop {
            let change: Arc<Change> = tokio::select! {
                _ = &mut deadline => return,
                _ = compactions.changed() => {
                    let _ = tx.send(Ok(gone_line())).await;
                    return;
                }
                _ = tx.closed() => return,
                change = live.recv() => match change {
                    Ok(change) => change,
                    Err(RecvError::Lagged(_)) => {
                        let _ = tx.send(Ok(gone_line())).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
            };
            if since.is_some_and(|rv| change.rv <= rv) || !selected(&target, &change.key, &change.object, &query) {
                continue;
            }
            if tx.send(Ok(event_line(change.kind, &change.object))).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_match_equality_inequality_and_existence() {
        let object = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        assert!(matches_labels(&object, Some(&"a=1,b".into())));
        assert!(matches_labels(&object, Some(&"a==1,c!=3,!c".into())));
        assert!(!matches_labels(&object, Some(&"a=2".into())));
        assert!(!matches_labels(&object, Some(&"c".into())));
    }

    #[test]
    fn query_strings_are_decoded() {
        let q = form_pairs("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dx&watch=true");
        assert_eq!(q["labelSelector"], "app.kubernetes.io/managed-by=x");
        assert_eq!(q["watch"], "true");
    }
}
