//! A fault-injecting proxy in front of a real API server: what the
//! in-process stand-in did for the faults a real server cannot be made to
//! give on demand (a 500, a 429), with everything else answered by the real
//! server. It listens on 127.0.0.1 (plain HTTP) and forwards each request
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

/// Requests to fail: the next `left` whose method is `method` (any when
/// `None`) and whose path contains `path`, answered with `status`.
struct Fault {
    method: Option<Method>,
    path: String,
    status: u16,
    left: usize,
}

struct Inner {
    upstream: Client,
    faults: Mutex<Vec<Fault>>,
}

impl Inner {
    fn take_fault(&self, method: &Method, path: &str) -> Option<u16> {
        let mut faults = self.faults.lock().unwrap();
        let fault = faults
            .iter_mut()
            .find(|f| f.left > 0 && f.method.as_ref().is_none_or(|m| m == method) && path.contains(&f.path))?;
        fault.left -= 1;
        Some(fault.status)
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
    pub fn fail(&self, method: Option<Method>, path: &str, status: u16, times: usize) {
        self.inner.faults.lock().unwrap().push(Fault {
            method,
            path: path.to_owned(),
            status,
            left: times,
        });
    }

    /// How many injected failures have not been hit yet.
    pub fn pending_faults(&self) -> usize {
        self.inner.faults.lock().unwrap().iter().map(|f| f.left).sum()
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
    let path = request.uri().path().to_owned();
    if let Some(status) = inner.take_fault(request.method(), &path) {
        let reason = if status == 429 {
            "TooManyRequests"
        } else {
            "InternalError"
        };
        let body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("injected by the fault proxy: {status}"),
            "reason": reason, "code": status,
        });
        return Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::RETRY_AFTER, "1")
            .body(Body::from(body.to_string()))
            .unwrap();
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

fn status_only(status: StatusCode) -> Response<Body> {
    Response::builder().status(status).body(Body::empty()).unwrap()
}
