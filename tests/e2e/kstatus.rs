//! What kstatus (sigs.k8s.io/cli-utils), the library Flux and kpt wait
//! with, says of an app: never Current before the operator has acted and
//! every pod is Ready, and Failed when a rollout passed its deadline. The
//! library itself judges, through `tests/kstatus`, built here with Go.

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use serde_json::{Value, json};

use crate::env::{Env, NEVER_READY_IMAGE, OperatorProcess, eventually, image};

/// A new app reads InProgress while no operator runs, Current only once its
/// pods are Ready; an app whose pods never get Ready reads InProgress, then
/// Failed once `progressDeadlineSeconds` pass.
pub async fn in_progress_until_the_operator_acted_and_the_pods_are_ready(env: &Env) {
    env.apply_app("waited", json!({"replicas": 2, "image": image()})).await;
    env.apply_app(
        "never",
        json!({"image": NEVER_READY_IMAGE, "progressDeadlineSeconds": 6}),
    )
    .await;
    // Nobody is told the apps are fine while the operator is down.
    for _ in 0..3 {
        for app in ["waited", "never"] {
            let (status, message) = kstatus(env, app);
            assert_eq!(status, "InProgress", "{app} with no operator: {message}");
            assert_eq!(observed_generation(env, app), json!(-1), "{app}: the default status");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let operator = OperatorProcess::start(env);
    eventually(
        "kstatus reads waited as Current, and only once its pods are Ready",
        || async {
            let (status, message) = kstatus(env, "waited");
            let ready = env.ready_with_pods("waited", 2).await;
            assert!(
                status != "Current" || ready,
                "kstatus read Current before every pod was Ready: {message}"
            );
            status == "Current"
        },
    )
    .await;
    eventually("the operator has seen never", || async {
        observed_generation(env, "never") == json!(1)
    })
    .await;
    let (status, message) = kstatus(env, "never");
    assert_eq!(status, "InProgress", "never, observed, pods not Ready: {message}");
    eventually("kstatus reads never as Failed past its deadline", || async {
        kstatus(env, "never").0 == "Failed"
    })
    .await;
    operator.stop();
}

fn observed_generation(env: &Env, app: &str) -> Value {
    let object: Value = serde_json::from_str(&env.kubectl(&["get", "vca", app, "-o", "json"])).unwrap();
    object["status"]["observedGeneration"].clone()
}

/// kstatus' status and message for the app `name`, as the API server
/// serves it now.
fn kstatus(env: &Env, name: &str) -> (String, String) {
    let object: Value = serde_json::from_str(&env.kubectl(&["get", "vca", name, "-o", "json"])).unwrap();
    let mut child = Command::new(kstatus_binary())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tests/kstatus runs");
    writeln!(child.stdin.take().unwrap(), "{object}").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "tests/kstatus failed on {object}");
    let line = String::from_utf8(output.stdout).unwrap();
    let (status, message) = line.trim().split_once(": ").expect("Status: message");
    (status.to_owned(), message.to_owned())
}

/// `tests/kstatus`, built once per run into `target/`.
fn kstatus_binary() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let binary = root.join("target/kstatus");
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(".")
            .current_dir(root.join("tests/kstatus"))
            .env("GOFLAGS", "-mod=readonly")
            .status()
            .expect("go is on PATH (scripts/cluster.sh builds the control plane with it)");
        assert!(status.success(), "tests/kstatus does not build");
        binary
    })
}
