//! `visitcounter serve`: the visit-counter web app every app runs by default.
//!
//! `GET /` counts a visit and answers only once the new count is on disk;
//! concurrent visits share one write and one fsync ([`commit`]). The count
//! lives in `<data dir>/visits.json` ([`store`]).

pub mod commit;
pub mod follow;
mod http;
pub mod metrics;
pub mod store;

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use serde_json::Value;

pub use commit::CommitMode;
pub use store::{Store, StoreError};

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    pub listen: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub pod_name: String,
    pub commit: CommitMode,
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("config file {path} cannot be read: {source}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not a JSON object: {reason}")]
    ConfigInvalid { path: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Runs the server until `shutdown` resolves, then stops accepting, answers
/// and commits every visit in flight, and returns.
pub async fn serve(
    settings: ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let config = read_config(&settings.config)?;
    let (store, count) = Store::open(&settings.data_dir)?;
    let addr = SocketAddr::new(settings.listen, settings.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(ServeError::Serve)?;

    let metrics = Arc::new(metrics::Metrics::new());
    let (committer, committer_task) = commit::Committer::start(store, count, settings.commit, Arc::clone(&metrics));
    let stopping = Arc::new(AtomicBool::new(false));
    let state = http::AppState {
        committer,
        metrics,
        config: Arc::new(config),
        pod_name: settings.pod_name.into(),
        stopping: Arc::clone(&stopping),
    };
    tracing::info!(%local, data_dir = %settings.data_dir.display(), count, "visit counter listening");

    let app = http::router(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopping.store(true, Ordering::Release);
            tracing::info!("stopping: finishing the visits in flight");
        })
        .await;
    // The router, and with it every Committer, is gone: the committer drains
    // what was queued and ends.
    let _ = committer_task.await;
    served.map_err(ServeError::Serve)?;
    tracing::info!("stopped");
    Ok(())
}

fn read_config(path: &Path) -> Result<Value, ServeError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServeError::ConfigRead {
        path: path.into(),
        source,
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|e| ServeError::ConfigInvalid {
        path: path.into(),
        reason: e.to_string(),
    })?;
    if !value.is_object() {
        return Err(ServeError::ConfigInvalid {
            path: path.into(),
            reason: "it is valid JSON but not an object".into(),
        });
    }
    Ok(value)
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed at
/// the call, not at the first poll: a server's shutdown future is first
/// polled by a task of its own, and a signal sent once the server answers
/// but before that task ran would otherwise take the default action and
/// kill the process instead of stopping it gracefully.
pub fn stop_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        match handlers {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            // Without signal handlers the process still stops on the default
            // action of the signal; there is nothing graceful to wait for.
            _ => std::future::pending().await,
        }
    }
}
