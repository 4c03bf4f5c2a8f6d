//! HTTP probes, sent from inside the node's network namespace as a kubelet
//! sends them from its host.

use std::{
    io::{Read, Write},
    net::SocketAddr,
    time::Duration,
};

use k8s_openapi::{api::core::v1::Probe, apimachinery::pkg::util::intstr::IntOrString};

use crate::net::connect_in;

/// A probe's settings, with a kubelet's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpCheck {
    pub path: String,
    pub port: u16,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

impl HttpCheck {
    /// The HTTP GET of `probe`; `ports` resolves a named port.
    pub fn from_probe(probe: &Probe, ports: &[(String, u16)]) -> Option<Self> {
        let get = probe.http_get.as_ref()?;
        let port = match &get.port {
            IntOrString::Int(n) => u16::try_from(*n).ok()?,
            IntOrString::String(name) => ports.iter().find(|(n, _)| n == name)?.1,
        };
        let seconds = |v: Option<i32>, default: u64| Duration::from_secs(v.map_or(default, |s| s.max(0) as u64));
        Some(Self {
            path: get.path.clone().unwrap_or_else(|| "/".into()),
            port,
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10),
            timeout: seconds(probe.timeout_seconds, 1),
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
        })
    }

    /// One GET: a 2xx or 3xx answer within the timeout passes.
    pub async fn passes(&self, netns: &str, ip: std::net::Ipv4Addr) -> bool {
        let (netns, check) = (netns.to_owned(), self.clone());
        tokio::task::spawn_blocking(move || get(&netns, SocketAddr::from((ip, check.port)), &check))
            .await
            .unwrap_or(false)
    }
}

fn get(netns: &str, addr: SocketAddr, check: &HttpCheck) -> bool {
    let Ok(mut stream) = connect_in(netns, addr, check.timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(check.timeout));
    let _ = stream.set_write_timeout(Some(check.timeout));
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.36\r\nConnection: close\r\n\r\n",
        check.path
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    status_passes(&head[..read])
}

/// Whether an HTTP response starting with `head` has a 2xx or 3xx status.
pub fn status_passes(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
    code.is_some_and(|c| (200..400).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_probe_on_a_named_port_with_kubelet_defaults() {
        let probe: Probe = serde_json::from_value(json!({"httpGet": {"path": "/readyz", "port": "http"}})).unwrap();
        let check = HttpCheck::from_probe(&probe, &[("http".into(), 8080)]).unwrap();
        assert_eq!((check.port, check.path.as_str()), (8080, "/readyz"));
        assert_eq!((check.period, check.failure_threshold), (Duration::from_secs(10), 3));
        assert_eq!(HttpCheck::from_probe(&probe, &[]), None, "an unknown port name");
    }

    #[test]
    fn two_and_three_hundreds_pass() {
        assert!(status_passes(b"HTTP/1.1 200 OK\r\n"));
        assert!(status_passes(b"HTTP/1.1 302 Found\r\n"));
        assert!(!status_passes(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(!status_passes(b""));
    }
}
