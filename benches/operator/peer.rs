//! The operators a run can measure: visitcounter's release binary, and
//! issue 15's peer, a kopf operator (`kopf_peer/peer.py`).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use visitcounter::operator::USER_AGENT;

use crate::RESYNC_SECONDS;

/// Which operator a run measures.
#[derive(Clone, Copy, PartialEq)]
pub enum Peer {
    Visitcounter,
    /// The kopf operator of `kopf_peer/peer.py` (issue 15's peer).
    Kopf,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Visitcounter => "visitcounter",
            Peer::Kopf => "kopf peer",
        }
    }

    /// The User-Agents its requests carry: kopf's own client is `kopf/<version>`,
    /// the peer's `kubernetes` client `kopf-peer`.
    pub fn is_agent(self, agent: &str) -> bool {
        match self {
            Peer::Visitcounter => agent.starts_with(USER_AGENT),
            Peer::Kopf => agent.starts_with("kopf"),
        }
    }

    /// Starts it against the cluster of `kubeconfig`; with the address of
    /// its metrics, when it serves them.
    pub fn start(self, kubeconfig: &Path) -> (Child, Option<String>) {
        self.start_with(kubeconfig, &[])
    }

    /// As `start`, with `extra` arguments for visitcounter's operator.
    pub fn start_with(self, kubeconfig: &Path, extra: &[&str]) -> (Child, Option<String>) {
        self.start_binary(Path::new(env!("CARGO_BIN_EXE_visitcounter")), kubeconfig, extra)
    }

    /// As `start_with`, visitcounter's operator from `binary` (another
    /// build, for a side-by-side run).
    pub fn start_binary(self, binary: &Path, kubeconfig: &Path, extra: &[&str]) -> (Child, Option<String>) {
        let mut metrics = None;
        let mut command = match self {
            Peer::Visitcounter => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let mut command = Command::new(binary);
                command
                    .args(["operator", "--leader-election=false", "--admin-address"])
                    .arg(format!("127.0.0.1:{port}"))
                    .args(extra)
                    .env("RUST_LOG", "warn");
                if !extra.contains(&"--resync-seconds") {
                    command.args(["--resync-seconds", &RESYNC_SECONDS.to_string()]);
                }
                metrics = Some(format!("127.0.0.1:{port}"));
                command
            }
            Peer::Kopf => {
                // Installed by `install_kopf` before any run's clock starts.
                let mut command = Command::new(kopf_venv().join("bin/kopf"));
                command
                    .args(["run", "--standalone", "--all-namespaces", "--quiet"])
                    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/operator/kopf_peer/peer.py"));
                command
            }
        };
        let child = command
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        (child, metrics)
    }
}

/// The virtual environment with the peer's requirements.
fn kopf_venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kopf-peer")
}

/// Makes `kopf_venv()` unless it holds the peer's requirements already.
pub fn install_kopf() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = &kopf_venv();
    let requirements = root.join("benches/operator/kopf_peer/requirements.txt");
    let stamp = venv.join(".requirements");
    if std::fs::read(&stamp).ok() != std::fs::read(&requirements).ok() {
        let run = |command: &mut Command| assert!(command.status().is_ok_and(|s| s.success()), "{command:?} failed");
        run(Command::new("python3").arg("-m").arg("venv").arg(venv));
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements));
        std::fs::copy(&requirements, &stamp).unwrap();
    }
}
