//! Runs `visitcounter serve` as a child process on 127.0.0.1 and talks HTTP to it.

#![allow(dead_code)] // each test binary uses its own part of this

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A port free on 127.0.0.1 at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A data directory and a config file for one server.
pub struct Fixture {
    pub root: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("data")).unwrap();
        std::fs::write(root.path().join("config.json"), r#"{"greeting": "hi"}"#).unwrap();
        Self { root }
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }
    pub fn config(&self) -> PathBuf {
        self.root.path().join("config.json")
    }
    pub fn visits_file(&self) -> PathBuf {
        self.data_dir().join("visits.json")
    }
    /// The count on disk; panics when the file does not parse.
    pub fn count_on_disk(&self) -> u64 {
        let text = std::fs::read_to_string(self.visits_file()).unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("visits.json does not parse ({e}): {text:?}"));
        value["visits"].as_u64().unwrap_or_else(|| panic!("no count in {text}"))
    }
}

/// `visitcounter serve` with the given data dir and config, stderr captured.
pub fn serve_command(data_dir: &Path, config: &Path, port: u16, extra: &[&str]) -> Command {
    serve_command_at("127.0.0.1", data_dir, config, port, extra)
}

/// `visitcounter serve` listening on `host` (any of 127.0.0.0/8 on Linux).
pub fn serve_command_at(host: &str, data_dir: &Path, config: &Path, port: u16, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_visitcounter"));
    command
        .args(["serve", "--listen", host, "--port", &port.to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(config)
        .args(["--pod-name", "web-0"])
        .args(extra)
        .env_remove("VISITCOUNTER_PORT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// A running server.
pub struct Server {
    pub child: Child,
    pub host: String,
    pub port: u16,
}

impl Server {
    pub async fn start(fixture: &Fixture) -> Self {
        Self::start_with(fixture, &[]).await
    }

    pub async fn start_with(fixture: &Fixture, extra: &[&str]) -> Self {
        let port = free_port();
        let child = serve_command(&fixture.data_dir(), &fixture.config(), port, extra)
            .spawn()
            .unwrap();
        let server = Self {
            child,
            host: "127.0.0.1".into(),
            port,
        };
        server.wait_ready().await;
        server
    }

    /// A server on `host:port`, as a pod at that IP would be.
    pub async fn start_at(fixture: &Fixture, host: &str, port: u16) -> Self {
        let child = serve_command_at(host, &fixture.data_dir(), &fixture.config(), port, &[])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self {
            child,
            host: host.into(),
            port,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = get_at(&client, &self.host, self.port, "/readyz").await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server on port {} never became ready",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.wait().unwrap()
    }

    /// kill -9, and reap.
    pub fn crash(mut self) {
        self.signal(libc::SIGKILL);
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path`; the status and body.
pub async fn get(client: &HttpClient, port: u16, path: &str) -> Result<(u16, String), String> {
    get_at(client, "127.0.0.1", port, path).await
}

/// GET `path` from `host:port`; the status and body.
pub async fn get_at(client: &HttpClient, host: &str, port: u16, path: &str) -> Result<(u16, String), String> {
    let uri: hyper::Uri = format!("http://{host}:{port}{path}").parse().unwrap();
    let response = client.get(uri).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The visit number on a `GET /` page.
pub fn visit_number(page: &str) -> u64 {
    let start = page.find("<h1>Visits: ").expect("a visit page") + "<h1>Visits: ".len();
    let end = start + page[start..].find('<').unwrap();
    page[start..end].parse().unwrap()
}

/// POST `body` (JSON) to `path` on 127.0.0.1, over a plain connection that
/// closes after the answer; the status and body.
pub fn post_json(port: u16, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
