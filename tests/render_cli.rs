//! `visitcounter render` through the real binary: good input prints the
//! children; bad input exits non-zero, prints nothing on stdout, and names the
//! field and the rule on stderr.

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

fn render_stdin(input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_visitcounter"))
        .args(["render", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Asserts the render failed cleanly and returns its stderr.
fn refused(input: &str) -> String {
    let output = render_stdin(input);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!output.status.success(), "accepted:\n{input}");
    assert!(
        output.stdout.is_empty(),
        "printed on stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

const HEAD: &str = "apiVersion: visitcounter.dev/v1alpha1\nkind: VisitCounterApp\nmetadata:\n  name: web\n";

#[test]
fn renders_a_file_and_stdin_alike() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal.yaml");
    let from_file = Command::new(env!("CARGO_BIN_EXE_visitcounter"))
        .args(["render", "-f", path])
        .output()
        .unwrap();
    assert!(
        from_file.status.success(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    let from_stdin = render_stdin(&std::fs::read_to_string(path).unwrap());
    assert!(from_stdin.status.success());
    assert_eq!(from_file.stdout, from_stdin.stdout);
    let text = String::from_utf8(from_file.stdout).unwrap();
    let kinds: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("kind: ")).collect();
    assert_eq!(kinds, ["ConfigMap", "Service", "Service", "StatefulSet"]);
    assert_eq!(text.matches("\n---\n").count(), 3);
}

#[test]
fn renders_every_app_of_a_stream() {
    let input = format!("{HEAD}spec: {{}}\n---\n{}spec: {{}}\n", HEAD.replace("web", "shop"));
    let output = render_stdin(&input);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(text.matches("kind: StatefulSet").count(), 2);
    assert!(text.contains("name: shop-headless"));
}

#[test]
fn partition_above_replicas_names_the_field_and_the_rule() {
    let stderr = refused(&format!(
        "{HEAD}spec:\n  replicas: 3\n  updateStrategy:\n    rollingUpdate:\n      partition: 5\n"
    ));
    assert!(
        stderr.contains("spec.updateStrategy.rollingUpdate.partition: 5 is greater than spec.replicas (3)"),
        "{stderr}"
    );
}

#[test]
fn a_step_above_the_replicas_names_the_field_as_the_api_server_does() {
    let stderr = refused(&format!(
        "{HEAD}spec:\n  replicas: 3\n  updateStrategy:\n    rollingUpdate:\n      steps:\n      - replicas: 4\n"
    ));
    assert!(
        stderr.contains("spec.updateStrategy.rollingUpdate.steps: a step asks for more pods than spec.replicas (3)"),
        "{stderr}"
    );
}

#[test]
fn unknown_fields_are_refused() {
    let stderr = refused(&format!("{HEAD}spec:\n  replica: 3\n  storage:\n    sise: 1Gi\n"));
    assert!(stderr.contains("spec.replica: unknown field"), "{stderr}");
    assert!(stderr.contains("spec.storage.sise: unknown field"), "{stderr}");
}

#[test]
fn text_that_is_not_yaml_is_refused() {
    let stderr = refused("spec: [unclosed\n  - {\n");
    assert!(stderr.contains("<stdin>: not valid YAML"), "{stderr}");
}

#[test]
fn another_kind_is_refused() {
    let stderr = refused("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n");
    assert!(
        stderr.contains("apiVersion: expected visitcounter.dev/v1alpha1, found apps/v1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("kind: expected VisitCounterApp, found Deployment"),
        "{stderr}"
    );
}

#[test]
fn a_scalar_or_empty_input_is_refused() {
    assert!(refused("just some words\n").contains("expected a VisitCounterApp object, found a string"));
    assert!(refused("").contains("no VisitCounterApp found"));
}

#[test]
fn type_and_range_errors_name_their_field() {
    let stderr = refused(&format!("{HEAD}spec:\n  replicas: three\n  port: 70000\n"));
    assert!(
        stderr.contains("spec.replicas: \"three\" is not of type \"integer\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("spec.port: 70000 is greater than the maximum of 65535"),
        "{stderr}"
    );
}

#[test]
fn one_bad_app_in_a_stream_prints_nothing_at_all() {
    let input = format!(
        "{HEAD}spec: {{}}\n---\n{}spec:\n  replicas: -1\n",
        HEAD.replace("web", "shop")
    );
    let stderr = refused(&input);
    assert!(stderr.contains("document 2 (\"shop\")"), "{stderr}");
    assert!(
        stderr.contains("spec.replicas: -1 is less than the minimum of 0"),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_visitcounter"))
        .args(["render", "-f", "/nonexistent/app.yaml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("cannot read /nonexistent/app.yaml"), "{stderr}");
}

#[test]
fn prints_the_route_and_the_services_per_version_of_a_weighted_app() {
    let input = format!(
        "{HEAD}spec:\n  traffic:\n    parentRef: {{name: edge, namespace: gateways}}\n    hostnames: [shop.example.com]\n    canaryWeight: 10\n"
    );
    let output = render_stdin(&input);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let kinds: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("kind: ")).collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Service",
            "Service",
            "Service",
            "Service",
            "HTTPRoute",
            "StatefulSet"
        ]
    );
    let route = text.split("---\n").find(|d| d.contains("kind: HTTPRoute")).unwrap();
    let route: serde_json::Value = serde_saphyr::from_str(route).unwrap();
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(route["spec"]["parentRefs"][0]["name"], "edge");
    assert_eq!(route["spec"]["parentRefs"][0]["namespace"], "gateways");
    assert_eq!(route["spec"]["hostnames"][0], "shop.example.com");
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"][0]["name"], "web",
        "at rest, the app's Service"
    );
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["weight"], 100);
}

#[test]
fn refuses_a_canary_weight_under_shadow_and_out_of_range() {
    let shadow = format!(
        "{HEAD}spec:\n  updateStrategy: {{type: Shadow}}\n  traffic:\n    parentRef: {{name: edge}}\n    canaryWeight: 10\n"
    );
    let stderr = refused(&shadow);
    assert!(stderr.contains("spec.traffic.canaryWeight"), "{stderr}");
    assert!(stderr.contains("under Shadow"), "{stderr}");
    // Under BlueGreen it is the preview's share before the switch.
    let blue_green = format!(
        "{HEAD}spec:\n  updateStrategy: {{type: BlueGreen}}\n  traffic:\n    parentRef: {{name: edge}}\n    canaryWeight: 10\n"
    );
    let output = render_stdin(&blue_green);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let too_much = format!("{HEAD}spec:\n  traffic:\n    parentRef: {{name: edge}}\n    canaryWeight: 101\n");
    assert!(refused(&too_much).contains("canaryWeight"));
    let relative = format!("{HEAD}spec:\n  traffic:\n    parentRef: {{name: edge}}\n    path: shop\n");
    assert!(refused(&relative).contains("traffic.path"));
}

#[test]
fn refuses_an_ab_test_with_two_matches_and_says_where() {
    let both = format!(
        "{HEAD}spec:\n  traffic:\n    parentRef: {{name: edge}}\n    abTest:\n      match:\n        header: {{name: X-Variant, value: b}}\n        cookie: {{name: variant, value: b}}\n"
    );
    let stderr = refused(&both);
    assert!(stderr.contains("spec.traffic.abTest.match"), "{stderr}");
    assert!(stderr.contains("exactly one of header and cookie"), "{stderr}");
    let one = format!(
        "{HEAD}spec:\n  traffic:\n    parentRef: {{name: edge}}\n    abTest:\n      match:\n        header: {{name: X-Variant, value: b}}\n"
    );
    let output = render_stdin(&one);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    for service in ["name: web-stable", "name: web-canary", "kind: HTTPRoute"] {
        assert!(text.contains(service), "an A/B app renders {service}:\n{text}");
    }
}

#[test]
fn prints_the_shadow_service_and_refuses_a_shadow_without_a_route() {
    let shadow =
        format!("{HEAD}spec:\n  updateStrategy: {{type: Shadow}}\n  traffic:\n    parentRef: {{name: edge}}\n");
    let output = render_stdin(&shadow);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let service = text
        .split("---\n")
        .find(|d| d.contains("name: web-shadow"))
        .expect("the shadow Service");
    assert!(service.contains("app.kubernetes.io/instance: web-shadow"), "{service}");
    let stderr = refused(&format!("{HEAD}spec:\n  updateStrategy: {{type: Shadow}}\n"));
    assert!(stderr.contains("spec.updateStrategy.type"), "{stderr}");
    assert!(stderr.contains("set spec.traffic"), "{stderr}");
}
