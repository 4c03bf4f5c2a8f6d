//! The node's two ways in: every NodePort Service answers on
//! `127.0.0.1:<nodePort>` (as `minikube service` gives the seed's user),
//! forwarded to a ready endpoint of the Service's EndpointSlices; and the
//! API server answers pods at the node's address, port 443 (their
//! `KUBERNETES_SERVICE_HOST`), forwarded to where it listens on loopback.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, reflector, reflector::Store, watcher},
};
use tokio::{net::TcpListener, net::TcpStream, task::JoinHandle};

use crate::net::{connect_in, listen_in};

/// Accepts on `listener` and pipes each connection to what `target` opens.
fn serve<F, Fut>(listener: TcpListener, target: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<TcpStream>> + Send,
{
    let target = Arc::new(target);
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let target = target.clone();
            tokio::spawn(async move {
                match target().await {
                    Ok(mut outbound) => {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    Err(error) => tracing::debug!(%error, "no connection to forward to"),
                }
            });
        }
    })
}

/// A connection opened inside the node's network namespace.
async fn connect_from_node(netns: String, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = tokio::task::spawn_blocking(move || connect_in(&netns, addr, Duration::from_secs(3))).await??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

/// The API server, for pods: `<node ip>:443` in the node's namespace to
/// `api_server` on loopback.
pub fn api_server(netns: &str, node_ip: Ipv4Addr, api_server: SocketAddr) -> std::io::Result<JoinHandle<()>> {
    let listener = listen_in(netns, SocketAddr::from((node_ip, 443)))?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    Ok(serve(listener, move || TcpStream::connect(api_server)))
}

/// The ready endpoints of a Service port: (address, port).
pub fn ready_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port_name: Option<&str>,
) -> Vec<SocketAddr> {
    let mut found = Vec::new();
    for slice in slices {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name.unwrap_or(""))
            .and_then(|p| p.port)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
            for address in endpoint.addresses.iter().filter(|_| ready) {
                if let Ok(ip) = address.parse::<Ipv4Addr>() {
                    found.push(SocketAddr::from((ip, port as u16)));
                }
            }
        }
    }
    found.sort();
    found
}

/// Keeps a listener on `127.0.0.1:<nodePort>` for every NodePort of every
/// Service, forwarding round-robin to its ready endpoints.
pub async fn node_ports(client: Client, netns: String) {
    let (services, writer) = reflector::store::<Service>();
    let service_watch = reflector::reflector(writer, watcher(Api::all(client.clone()), watcher::Config::default()))
        .default_backoff()
        .for_each(|_| async {});
    let (slices, writer) = reflector::store::<EndpointSlice>();
    let slice_watch = reflector::reflector(writer, watcher(Api::all(client), watcher::Config::default()))
        .default_backoff()
        .for_each(|_| async {});
    tokio::spawn(service_watch);
    tokio::spawn(slice_watch);
    let mut listening: BTreeMap<i32, (String, JoinHandle<()>)> = BTreeMap::new();
    loop {
        let mut wanted: BTreeMap<i32, (String, String, Option<String>)> = BTreeMap::new();
        for service in services.state() {
            let spec = service.spec.clone().unwrap_or_default();
            if !matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")) {
                continue;
            }
            for port in spec.ports.iter().flatten() {
                if let Some(node_port) = port.node_port {
                    wanted.insert(
                        node_port,
                        (
                            service.namespace().unwrap_or_default(),
                            service.name_any(),
                            port.name.clone(),
                        ),
                    );
                }
            }
        }
        listening.retain(|port, (key, task)| {
            let keep = wanted
                .get(port)
                .is_some_and(|(ns, name, port_name)| *key == format!("{ns}/{name}/{port_name:?}"));
            if !keep {
                task.abort();
            }
            keep
        });
        for (node_port, (namespace, name, port_name)) in wanted {
            if listening.contains_key(&node_port) {
                continue;
            }
            let key = format!("{namespace}/{name}/{port_name:?}");
            let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, node_port as u16)).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(node_port, %error, "cannot listen for a NodePort");
                    continue;
                }
            };
            tracing::info!(service = %format!("{namespace}/{name}"), node_port, "listening on 127.0.0.1");
            let (slices, netns, next) = (slices.clone(), netns.clone(), Arc::new(AtomicUsize::new(0)));
            let task = serve(listener, move || {
                let endpoints = endpoints_of(&slices, &namespace, &name, port_name.as_deref());
                let (netns, next) = (netns.clone(), next.clone());
                async move {
                    if endpoints.is_empty() {
                        return Err(std::io::Error::other("no ready endpoint"));
                    }
                    let addr = endpoints[next.fetch_add(1, Ordering::Relaxed) % endpoints.len()];
                    connect_from_node(netns, addr).await
                }
            });
            listening.insert(node_port, (key, task));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn endpoints_of(slices: &Store<EndpointSlice>, namespace: &str, service: &str, port: Option<&str>) -> Vec<SocketAddr> {
    let state = slices.state();
    let of_service = state.iter().map(|s| s.as_ref()).filter(|s| {
        s.namespace().as_deref() == Some(namespace)
            && s.labels().get("kubernetes.io/service-name").map(String::as_str) == Some(service)
    });
    ready_endpoints(of_service, port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_ready_endpoints_of_the_named_port() {
        let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-abc"}, "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": ["10.244.0.3"], "conditions": {"ready": true}},
            {"addresses": ["10.244.0.2"], "conditions": {"ready": true}},
            {"addresses": ["10.244.0.4"], "conditions": {"ready": false}},
        ]}))
        .unwrap();
        assert_eq!(
            ready_endpoints([&slice], Some("http")),
            [
                "10.244.0.2:8080".parse().unwrap(),
                "10.244.0.3:8080".parse::<SocketAddr>().unwrap()
            ]
        );
        assert!(ready_endpoints([&slice], Some("metrics")).is_empty());
    }
}
