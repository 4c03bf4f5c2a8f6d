//! The HTTP client the visits poller asks pods with.
//!
//! It keeps no connection open once a pod has answered. The poller asks each
//! pod every 30 s, and hyper's pool would keep each connection for 90 s, so
//! with pods that answer the operator held one open connection per pod, each
//! with its buffers. At 1,000 apps of 2 pods that was 72.9 MiB at rest
//! against 34.2 MiB without, for 0.18 against 0.34 CPU seconds a minute to
//! connect anew (`cargo bench --bench operator -- --apps 1000 --idle --state
//! answering`): the memory grew with every pod, the CPU saved was small.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

pub type PodClient = Client<HttpConnector, Full<Bytes>>;

/// A followed pod's connection stays quiet while its count stands: TCP
/// keepalive probes it after this long without traffic, so a peer gone
/// without a word (a network cut, a node lost) ends the stream within about
/// a minute, in the kernel, at no CPU cost to the operator.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

/// A client that gives up connecting after `connect_timeout`, closes each
/// connection once its answer is read, and probes idle ones (a followed
/// pod's stream).
pub fn client(connect_timeout: Duration) -> PodClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_keepalive(Some(KEEPALIVE_IDLE));
    connector.set_keepalive_interval(Some(KEEPALIVE_INTERVAL));
    connector.set_keepalive_retries(Some(KEEPALIVE_PROBES));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// The URI of `path` on a pod at `ip` (v4 or v6) and `port`.
pub fn uri(ip: &str, port: i32, path: &str) -> String {
    match ip.contains(':') {
        true => format!("http://[{ip}]:{port}{path}"),
        false => format!("http://{ip}:{port}{path}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use http_body_util::BodyExt;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// A listener that answers every request on every connection it accepts
    /// and keeps each open, as the app's server does; it counts connections.
    pub(crate) async fn counting_server() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while socket.read(&mut buffer).await.is_ok_and(|n| n > 0) {
                        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n{\"visits\":1}\n";
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (address, accepted)
    }

    #[test]
    fn a_v6_address_is_bracketed() {
        assert_eq!(uri("10.0.0.1", 8080, "/visits"), "http://10.0.0.1:8080/visits");
        assert_eq!(uri("fd00::1", 8080, "/visits"), "http://[fd00::1]:8080/visits");
    }

    #[tokio::test]
    async fn each_ask_opens_a_connection_of_its_own() {
        let (address, accepted) = counting_server().await;
        let client = client(Duration::from_secs(2));
        for _ in 0..2 {
            let request = hyper::Request::get(format!("http://{address}/visits"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = client.request(request).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"{\"visits\":1}\n");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the second ask reused no connection"
        );
    }
}
