//! The faults a round injects, and the operator and control plane they hit.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};

use crate::{cut::CutProxy, env::Env};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// kill -9 of the operator, started again at once as its Deployment would.
    KillOperator,
    /// kube-apiserver stopped as an upgrade stops it, and started again.
    RestartApiServer,
    /// etcd stopped (SIGSTOP) for 10 s.
    PauseEtcd,
    /// The operator's connections cut at the TCP level, new ones refused for 5 s.
    CutConnection,
    /// A pod deleted with no grace.
    DeletePod,
    /// kill -9 of a pod's process, on a node whose pods run: its container
    /// restarts, as under a crash.
    KillPodProcess,
}

impl Fault {
    /// The faults of a control plane whose pods do not run (kwok).
    pub const SIMULATED: [Fault; 5] = [
        Fault::KillOperator,
        Fault::RestartApiServer,
        Fault::PauseEtcd,
        Fault::CutConnection,
        Fault::DeletePod,
    ];
    /// The faults of a control plane whose pods run.
    pub const REAL: [Fault; 6] = [
        Fault::KillOperator,
        Fault::RestartApiServer,
        Fault::PauseEtcd,
        Fault::CutConnection,
        Fault::DeletePod,
        Fault::KillPodProcess,
    ];
}

/// How the operator binary is run.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The test namespace, the one it watches.
    pub ns: String,
    /// It reaches the API server through this, whose connections a
    /// [`CutProxy`] can cut.
    pub kubeconfig: PathBuf,
    /// The network namespace to run in (`ip netns exec`), where it can
    /// reach the pods' addresses; the host's when `None`.
    pub netns: Option<String>,
    /// How often it asks the pods for their visits; never when 0.
    pub visits_seconds: u64,
}

/// The operator binary, started again after a kill.
pub struct Operator {
    child: Child,
    launch: Launch,
}

impl Operator {
    pub fn start(launch: Launch) -> Self {
        let binary = env!("CARGO_BIN_EXE_visitcounter");
        let mut command = match &launch.netns {
            // `ip netns exec` enters the namespace and execs: the child is
            // the operator itself, for kill -9.
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, binary]);
                command
            }
            None => Command::new(binary),
        };
        let child = command
            .env("KUBECONFIG", &launch.kubeconfig)
            .args(["operator", "--namespace", &launch.ns, "--leader-election", "false"])
            .args(["--admin-address", "127.0.0.1:0", "--resync-seconds", "5"])
            .args(["--visits-interval-seconds", &launch.visits_seconds.to_string()])
            .env("RUST_LOG", "warn,visitcounter=info")
            .stdout(Stdio::null())
            .stderr(operator_log())
            .spawn()
            .expect("the visitcounter binary starts");
        Self { child, launch }
    }

    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = Self::start(self.launch.clone());
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the operator writes its log, across restarts: beside the control
/// plane's, so a broken round can show what the operator did.
pub fn operator_log_path() -> PathBuf {
    cluster_state().join("logs").join("chaos-operator.log")
}

fn operator_log() -> std::fs::File {
    let path = operator_log_path();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes a line into the operator's log, so a round's part is found.
pub fn mark_operator_log(line: &str) {
    use std::io::Write;
    let _ = writeln!(operator_log(), "---- chaos {line}");
}

/// The last `lines` lines of the operator's log.
pub fn operator_log_tail(lines: usize) -> String {
    let log = std::fs::read_to_string(operator_log_path()).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The state directory of the local control plane: `scripts/cluster.sh`
/// keeps the kubeconfig in it.
pub fn cluster_state() -> PathBuf {
    let kubeconfig = PathBuf::from(std::env::var("KUBECONFIG").expect("KUBECONFIG names the local control plane"));
    kubeconfig.parent().expect("a kubeconfig in a directory").to_owned()
}

/// The etcd of the local control plane, from the pids `scripts/cluster.sh`
/// keeps.
pub fn etcd_pid() -> i32 {
    let path = cluster_state().join("pids").join("etcd.pid");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: the chaos test needs scripts/cluster.sh's control plane",
                path.display()
            )
        })
        .trim()
        .parse()
        .expect("a pid")
}

/// The API server's address, where the cut proxy forwards to.
pub fn api_server_address() -> std::net::SocketAddr {
    let port = std::fs::read_to_string(cluster_state().join("api-port")).expect("scripts/cluster.sh keeps api-port");
    format!("127.0.0.1:{}", port.trim()).parse().unwrap()
}

/// A copy of the admin kubeconfig, in `dir`, whose server is `proxy` (the
/// API server's certificate names 127.0.0.1 and the node's address).
pub fn kubeconfig_through(proxy: &CutProxy, dir: &Path) -> PathBuf {
    let server = format!("https://{}", api_server_address());
    let admin = std::fs::read_to_string(cluster_state().join("admin.kubeconfig")).unwrap();
    assert!(admin.contains(&server), "the admin kubeconfig names {server}");
    let path = dir.join("through-the-cut-proxy.kubeconfig");
    std::fs::write(&path, admin.replace(&server, &format!("https://{}", proxy.address))).unwrap();
    path
}

/// Stops kube-apiserver as an upgrade does and starts it again, through
/// `scripts/cluster.sh restart`, which waits until it is ready.
pub fn restart_api_server() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh");
    let output = Command::new(&script)
        .args(["restart", "kube-apiserver"])
        .env("VISITCOUNTER_CLUSTER_DIR", cluster_state())
        .output()
        .expect("scripts/cluster.sh runs");
    assert!(
        output.status.success(),
        "cluster.sh restart kube-apiserver: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) on a process of the local control plane.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid} {signal}");
}

/// One of the app's pods, at random; `None` when it has none.
pub async fn a_pod(env: &Env, app: &str, rng: &mut fastrand::Rng) -> Option<Pod> {
    let mut pods = env
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={app}")))
        .await
        .unwrap()
        .items;
    (!pods.is_empty()).then(|| pods.swap_remove(rng.usize(..pods.len())))
}

/// Deletes one of the app's pods with no grace; whether one was deleted.
pub async fn delete_a_pod(env: &Env, app: &str, rng: &mut fastrand::Rng) -> bool {
    let Some(pod) = a_pod(env, app, rng).await else {
        return false;
    };
    let name = pod.metadata.name.unwrap_or_default();
    env.api::<Pod>()
        .delete(&name, &DeleteParams::default().grace_period(0))
        .await
        .is_ok()
}

/// kill -9 of the process of one of the app's running pods: its
/// container's, as the node's containerd lists it (`ctr task ls`, pointed at
/// the node by `scripts/cluster.sh env --real-pods`). Whether a process was
/// killed: a pod that is only starting may have none yet.
pub async fn kill_a_pod_process(env: &Env, app: &str, rng: &mut fastrand::Rng) -> bool {
    // A pod between containers (one just created in a rollout) has none
    // running: ask again for up to 3 s.
    for _ in 0..15 {
        let Some(pod) = a_pod(env, app, rng).await else {
            return false;
        };
        let container = pod
            .status
            .and_then(|s| s.container_statuses?.into_iter().next()?.container_id);
        let output = Command::new("ctr").args(["task", "ls"]).output().expect("ctr runs");
        let tasks = String::from_utf8_lossy(&output.stdout);
        let pid = container.and_then(|c| running_task_pid(&tasks, c.trim_start_matches("containerd://")));
        if let Some(pid) = pid {
            // The process may have ended since ctr listed it.
            // SAFETY: kill(2) on the process of a pod of the test's node.
            return unsafe { libc::kill(pid, libc::SIGKILL) == 0 };
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    false
}

/// The process id of `container` in `ctr task ls`'s table (TASK PID STATUS),
/// while it runs.
fn running_task_pid(tasks: &str, container: &str) -> Option<i32> {
    tasks.lines().skip(1).find_map(|line| {
        let mut words = line.split_whitespace();
        let (task, pid, status) = (words.next()?, words.next()?, words.next()?);
        (task == container && status == "RUNNING")
            .then(|| pid.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::running_task_pid;

    #[test]
    fn a_running_task_is_found_by_its_container() {
        let tasks = "TASK    PID     STATUS\nabc     4242    RUNNING\ndef     0       STOPPED\n";
        assert_eq!(running_task_pid(tasks, "abc"), Some(4242));
        assert_eq!(running_task_pid(tasks, "def"), None);
        assert_eq!(running_task_pid(tasks, "ghi"), None);
    }
}
