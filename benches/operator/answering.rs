//! Pods that answer, for `--idle --state answering`. kwok gives each pod an
//! address on loopback (`--cidr=127.64.0.0/12` in `scripts/cluster.sh`) but
//! runs nothing there, so under `--state ready` the visits poller meets
//! refused connections and asks those pods less and less often. Here the
//! bench runs the app's own server (`visitcounter::serve::serve`, what every
//! pod runs by default) at each pod's address and port as soon as the pod
//! has an address, each with a data directory of its own: the poller asks
//! pods that answer and keep their connections alive, as on a real node.
//! The servers run in the bench's process, so the operator's CPU and memory
//! are measured apart from them.

use std::{collections::HashSet, net::IpAddr, path::PathBuf};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use tokio::task::JoinSet;
use visitcounter::serve::{CommitMode, ServeSettings, serve};

/// The app's servers at the pods' addresses; they stop when this is dropped.
pub struct AnsweringPods {
    watch: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
}

impl AnsweringPods {
    /// Serves `port` at the address of every pod of an app, now and as
    /// pods get addresses.
    pub fn start(client: &Client, port: u16) -> Self {
        let data = tempfile::tempdir().expect("a directory for the pods' data");
        let root = data.path().to_owned();
        std::fs::write(root.join("config.json"), "{}").expect("the pods' config file");
        let pods: Api<Pod> = Api::all(client.clone());
        let selector = watcher::Config::default().labels("app.kubernetes.io/instance");
        let watch = tokio::spawn(async move {
            // Dropped with this task, and with them every server.
            let mut servers = JoinSet::new();
            let mut served = HashSet::new();
            let mut pods = watcher(pods, selector).applied_objects().boxed();
            while let Some(pod) = pods.next().await {
                let Some((name, ip)) = pod.ok().as_ref().and_then(name_and_ip) else {
                    continue;
                };
                if served.insert(ip) {
                    let dir = root.join(served.len().to_string());
                    servers.spawn(serve_pod(name, ip, port, dir, root.join("config.json")));
                }
            }
        });
        Self { watch, _data: data }
    }
}

impl Drop for AnsweringPods {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

fn name_and_ip(pod: &Pod) -> Option<(String, IpAddr)> {
    let ip = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    Some((pod.metadata.name.clone()?, ip))
}

/// The app's server for one pod, until aborted; a server that cannot start
/// says why, and the pod stays unanswered, which the bench's wait reports.
async fn serve_pod(name: String, ip: IpAddr, port: u16, data_dir: PathBuf, config: PathBuf) {
    if let Err(error) = std::fs::create_dir_all(&data_dir) {
        eprintln!("pod {name}: cannot make {}: {error}", data_dir.display());
        return;
    }
    let settings = ServeSettings {
        listen: ip,
        port,
        data_dir,
        config,
        pod_name: name.clone(),
        commit: CommitMode::Group,
    };
    if let Err(error) = serve(settings, std::future::pending()).await {
        eprintln!("pod {name}: the app's server at {ip}:{port} stopped: {error}");
    }
}
