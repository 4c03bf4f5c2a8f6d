//! `visitcounter-node`: a node of the test control plane whose pods really
//! run. It registers a Node, keeps its Lease, and runs each pod scheduled to
//! it whose image is this project's as a process of the `visitcounter`
//! binary, in a network namespace and a mount namespace of its own, as a
//! kubelet would (see `pod.rs`). Every NodePort answers on 127.0.0.1.
//!
//! Runs as root (namespaces and mounts). `scripts/cluster.sh up --real-pods`
//! starts it; it needs a kubeconfig with the rights of a node and more
//! (it reads ConfigMaps and claims, asks for ServiceAccount tokens).

mod container;
mod forward;
mod net;
mod node;
mod pod;
mod probe;
mod spawn;
mod status;
mod volumes;

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, sync::Arc};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::watch;

use pod::{Node, Stop};

/// Why a pod cannot start, or the node cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(String),
    #[error("API: {0}")]
    Api(String),
}

#[derive(Parser)]
struct Args {
    /// The Node's name.
    #[arg(long, default_value = "visitcounter-node")]
    node_name: String,
    /// Where pods' directories go.
    #[arg(long)]
    state_dir: PathBuf,
    /// The binary that is the image's entrypoint (`visitcounter`).
    #[arg(long)]
    binary: PathBuf,
    /// The image repository this node runs; pods of any other image wait in
    /// ImagePullBackOff.
    #[arg(long, default_value = "visitcounter/visitcounter")]
    image: String,
    /// Where the API server listens on loopback, for pods' in-cluster access.
    #[arg(long)]
    api_server: SocketAddr,
    /// The /24 of pod addresses (inside the node's namespaces only).
    #[arg(long, default_value = "10.244.0")]
    subnet: String,
    /// The version the Node reports.
    #[arg(long, default_value = "v1.36.3")]
    version: String,
}

fn subnet(text: &str) -> Result<[u8; 3], String> {
    let parts: Vec<u8> = text
        .split('.')
        .map(|p| p.parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    parts
        .try_into()
        .map_err(|_| format!("--subnet {text}: three numbers, as 10.244.0"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "stopping");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Error> {
    let subnet = subnet(&args.subnet).map_err(Error::Config)?;
    let client = Client::try_default().await.map_err(|e| Error::Api(e.to_string()))?;
    let network = net::Network::create(&args.node_name, subnet)?;
    let node_ip = network.node_ip();
    let node = Arc::new(Node {
        client: client.clone(),
        name: args.node_name.clone(),
        state_dir: args.state_dir.clone(),
        binary: args.binary.canonicalize()?,
        image: args.image.clone(),
        network,
    });
    node::register(&client, &node.name, node_ip, &args.version).await?;
    tokio::spawn(node::heartbeat(
        client.clone(),
        node.name.clone(),
        node_ip,
        args.version.clone(),
    ));
    let _api = forward::api_server(&node.network.node_namespace(), node_ip, args.api_server)?;
    tokio::spawn(forward::node_ports(client.clone(), node.network.node_namespace()));
    tracing::info!(node = %node.name, %node_ip, "ready");

    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", node.name));
    let mut events = watcher(pods, config).default_backoff().boxed();
    let mut running: HashMap<String, watch::Sender<Stop>> = HashMap::new();
    let mut signal = std::pin::pin!(tokio::signal::ctrl_c());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = &mut signal => None,
            _ = term.recv() => None,
        };
        let Some(event) = event else { break };
        let pods = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => vec![(pod, false)],
            Ok(watcher::Event::Delete(pod)) => vec![(pod, true)],
            Ok(_) => continue,
            Err(error) => {
                tracing::warn!(%error, "watching pods");
                continue;
            }
        };
        for (pod, deleted) in pods {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let finished = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Succeeded" || p == "Failed");
            let stop = if deleted {
                Stop::Gone
            } else if pod.metadata.deletion_timestamp.is_some() {
                Stop::Graceful(pod.metadata.deletion_grace_period_seconds.unwrap_or(30))
            } else {
                Stop::Running
            };
            match running.get(&uid) {
                Some(sender) => {
                    if stop != Stop::Running {
                        let _ = sender.send(stop);
                    }
                    if deleted {
                        running.remove(&uid);
                    }
                }
                None if stop == Stop::Running && !finished => {
                    let (sender, receiver) = watch::channel(Stop::Running);
                    running.insert(uid, sender);
                    tokio::spawn(pod::supervise(node.clone(), pod, receiver));
                }
                None if stop != Stop::Running && !deleted => {
                    // Deleted before it ever ran here (or before a restart
                    // of the agent): nothing to stop.
                    let (sender, receiver) = watch::channel(stop);
                    running.insert(uid, sender);
                    tokio::spawn(pod::supervise(node.clone(), pod, receiver));
                }
                None => {}
            }
        }
    }
    tracing::info!("stopping every pod");
    for sender in running.values() {
        let _ = sender.send(Stop::Gone);
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    node.network.remove_all();
    Ok(())
}
