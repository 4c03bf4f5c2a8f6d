//! A fault-injecting proxy in front of a real API server, for the faults a
//! real server cannot be made to give on demand: a 500, a 429, a 404, and a
//! watch whose resource version has expired (410 Gone, sent as the server
//! sends it: an ERROR event in the watch's stream). Everything else is
//! answered by the real server. It listens on 127.0.0.1 (plain HTTP) and forwards each request
//! through an admin client of the real server, so a client of the proxy needs
//! no credentials.

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{Method, Response, StatusCode, header},
};
use kube::{Client, Config};

/// Which requests: those whose method is `method` (any when `None`) and
/// whose path and query contain each of `parts`.
struct Requests {
    method: Option<Method>,
    parts: Vec<String>,
}

impl Requests {
    fn new(method: Option<Method>, parts: &[&str]) -> Self {
        let parts = parts.iter().map(|p| (*p).to_owned()).collect();
        Self { method, parts }
    }

    fn include(&self, method: &Method, target: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && self.parts.iter().all(|p| target.contains(p))
    }
}

/// Requests to fail: the next `left` of `requests`, answered with `status`.
struct Fault {
    requests: Requests,
    status: u16,
    left: usize,
}

struct Inner {
    upstream: Client,
    faults: Mutex<Vec<Fault>>,
    /// Requests never answered.
    held: Mutex<Vec<Requests>>,
    /// `METHOD path?query` of every request, in order.
    seen: Mutex<Vec<String>>,
}

impl Inner {
    fn take_fault(&self, method: &Method, target: &str) -> Option<u16> {
        self.seen.lock().unwrap().push(format!("{method} {target}"));
        let mut faults = self.faults.lock().unwrap();
        let fault = faults
            .iter_mut()
            .find(|f| f.left > 0 && f.requests.include(method, target))?;
        fault.left -= 1;
        Some(fault.status)
    }

    fn holds(&self, method: &Method, target: &str) -> bool {
        self.held.lock().unwrap().iter().any(|r| r.include(method, target))
    }
}

pub struct FaultProxy {
    url: String,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts the proxy in front of the server `upstream` talks to.
    pub async fn start(upstream: Client) -> Self {
        let inner = Arc::new(Inner {
            upstream,
            faults: Mutex::default(),
            held: Mutex::default(),
            seen: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = Router::new().fallback(forward).with_state(inner.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { url, inner, server }
    }

    /// Fails the next `times` requests that match with `status`.
    pub fn fail(&self, method: Option<Method>, parts: &[&str], status: u16, times: usize) {
        self.inner.faults.lock().unwrap().push(Fault {
            requests: Requests::new(method, parts),
            status,
            left: times,
        });
    }

    /// Never answers the requests from now on whose method is `method` (any
    /// when `None`) and whose path and query contain each of `parts`: a
    /// server that hangs.
    pub fn hold(&self, method: Option<Method>, parts: &[&str]) {
        self.inner.held.lock().unwrap().push(Requests::new(method, parts));
    }

    /// A kubeconfig file, in `dir`, whose server is the proxy.
    pub fn kubeconfig(&self, dir: &std::path::Path, namespace: &str) -> std::path::PathBuf {
        let path = dir.join("fault-proxy.kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: proxy, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: anonymous, user: {{}}}}]\n\
             contexts: [{{name: proxy, context: {{cluster: proxy, user: anonymous, namespace: {namespace}}}}}]\n\
             current-context: proxy\n",
            self.url
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// How many injected failures have not been hit yet.
    pub fn pending_faults(&self) -> usize {
        self.inner.faults.lock().unwrap().iter().map(|f| f.left).sum()
    }

    /// How many requests so far had `method` and each of `parts` in their
    /// path and query, failed or not.
    pub fn requests(&self, method: &Method, parts: &[&str]) -> usize {
        let seen = self.inner.seen.lock().unwrap();
        seen.iter()
            .filter_map(|r| r.strip_prefix(method.as_str())?.strip_prefix(' '))
            .filter(|target| parts.iter().all(|p| target.contains(p)))
            .count()
    }

    /// A client configuration that talks to the real server through the proxy.
    pub fn config(&self, namespace: &str) -> Config {
        let mut config = Config::new(self.url.parse().unwrap());
        config.default_namespace = namespace.to_owned();
        config
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Answers with an injected failure, or forwards to the real server and
/// streams its answer back (watches included).
async fn forward(State(inner): State<Arc<Inner>>, request: Request) -> Response<Body> {
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    if let Some(status) = inner.take_fault(request.method(), &target) {
        return injected(status, target.contains("watch=true"));
    }
    if inner.holds(request.method(), &target) {
        std::future::pending::<()>().await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else {
        return status_only(StatusCode::BAD_REQUEST);
    };
    let mut upstream = axum::http::Request::builder()
        .method(parts.method)
        .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    for name in [header::CONTENT_TYPE, header::ACCEPT, header::USER_AGENT] {
        if let Some(value) = parts.headers.get(&name) {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream.body(kube::client::Body::from(bytes.to_vec())).unwrap();
    match inner.upstream.send(upstream).await {
        Ok(answer) => {
            let (parts, body) = answer.into_parts();
            Response::from_parts(parts, Body::new(body))
        }
        Err(_) => status_only(StatusCode::BAD_GATEWAY),
    }
}

/// The answer of an injected failure: a `Status` of `code`; for an expired
/// watch, the `ERROR` event the API server sends in the stream of a watch
/// from a resource version it no longer has.
fn injected(code: u16, watch: bool) -> Response<Body> {
    let reason = match code {
        404 => "NotFound",
        410 => "Expired",
        429 => "TooManyRequests",
        _ => "InternalError",
    };
    let status = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("injected by the fault proxy: {code}"),
        "reason": reason, "code": code,
    });
    let (code, body) = if code == 410 && watch {
        (
            200,
            serde_json::json!({"type": "ERROR", "object": status}).to_string() + "\n",
        )
    } else {
        (code, status.to_string())
    };
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::RETRY_AFTER, "1")
        .body(Body::from(body))
        .unwrap()
}

fn status_only(status: StatusCode) -> Response<Body> {
    Response::builder().status(status).body(Body::empty()).unwrap()
}
