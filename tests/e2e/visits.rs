//! The visits poller against real pods' addresses: kwok gives each pod an IP
//! in the loopback range (scripts/cluster.sh), where `visitcounter serve`
//! stands in for a pod's container. The counts are summed into the app's
//! status; a pod that does not answer is reported as such and never counted
//! as zero. A pod that answered is followed: its counts come on a stream.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use visitcounter::{
    controller::ControllerSettings,
    operator::{Operator, OperatorSettings},
    resource::VisitCounterApp,
};

use crate::{
    env::{Env, eventually},
    support::{Fixture, Server, client, free_port, get_at},
};

fn seeded(count: u64) -> Fixture {
    let fixture = Fixture::new();
    std::fs::write(fixture.visits_file(), format!("{{\"visits\": {count}}}")).unwrap();
    fixture
}

/// The operator with a visits poller every 200 ms: its metrics, the sender
/// that stops it, and its run.
async fn start_polling(
    env: &Env,
) -> (
    std::sync::Arc<visitcounter::controller::Metrics>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), visitcounter::operator::OperatorError>>,
) {
    let settings = OperatorSettings {
        controller: ControllerSettings {
            namespace: Some(env.ns.clone()),
            instance: Some("e2e-visits".into()),
            visits_interval: Some(Duration::from_millis(200)),
            ..ControllerSettings::default()
        },
        admin_address: None,
        lease: None,
    };
    let operator = Operator::new(visitcounter::operator::client().await.unwrap(), settings);
    let metrics = operator.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(operator.run(async move {
        let _ = stopped.await;
    }));
    (metrics, stop, running)
}

/// Stops the operator `start_polling` started, and deletes the app `count`.
async fn stop_polling(
    env: &Env,
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<Result<(), visitcounter::operator::OperatorError>>,
) {
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    env.api::<VisitCounterApp>()
        .delete("count", &Default::default())
        .await
        .unwrap();
}

/// The app's server on each pod's address, each on its fixture.
async fn serve_at(fixtures: &[Fixture], ips: &[String], port: u16) -> Vec<Server> {
    let mut servers = Vec::new();
    for (fixture, ip) in fixtures.iter().zip(ips) {
        servers.push(Server::start_at(fixture, ip, port).await);
    }
    servers
}

/// Makes the app `count` of 3 pods on `port`; their (loopback) addresses.
async fn three_pods(env: &Env, port: u16) -> Vec<String> {
    env.apply_app("count", json!({"replicas": 3, "port": port})).await;
    eventually("count is Ready with 3 pods", || env.ready_with_pods("count", 3)).await;
    let pods = env.api::<Pod>();
    let mut ips = Vec::new();
    for pod in ["count-0", "count-1", "count-2"] {
        let ip = pods.get(pod).await.unwrap().status.and_then(|s| s.pod_ip);
        let ip = ip.expect("a Ready pod has an IP");
        assert!(ip.starts_with("127."), "kwok gives loopback pod IPs: {pod} has {ip}");
        ips.push(ip);
    }
    ips
}

/// The app `count`'s `status.visits`, as JSON.
async fn visits_of(env: &Env) -> Value {
    let app = env.api::<VisitCounterApp>().get("count").await.unwrap();
    serde_json::to_value(app.status.and_then(|s| s.visits)).unwrap()
}

pub async fn summed_and_a_silent_pod_is_not_zero(env: &Env) {
    let (metrics, stop, running) = start_polling(env).await;
    let port = free_port();
    let ips = three_pods(env, port).await;
    let visits = || visits_of(env);
    let (fixture_0, fixture_1, fixture_2) = (seeded(5), seeded(7), seeded(100));
    let _pod_0 = Server::start_at(&fixture_0, &ips[0], port).await;
    let _pod_1 = Server::start_at(&fixture_1, &ips[1], port).await;

    // count-2 does not answer: reported as such, and left out of the total.
    eventually("two pods counted", || async { visits().await["total"] == 12 }).await;
    let status = visits().await;
    assert_eq!(status["complete"], false, "{status}");
    assert_eq!(status["pods"][0], json!({"name": "count-0", "visits": 5}));
    assert_eq!(status["pods"][1], json!({"name": "count-1", "visits": 7}));
    assert_eq!(status["pods"][2]["name"], "count-2");
    assert!(
        status["pods"][2].get("visits").is_none(),
        "not counted as zero: {status}"
    );
    let error = status["pods"][2]["error"].as_str().unwrap();
    assert!(error.contains(&format!("unreachable at {}:{port}", ips[2])), "{error}");

    // Visits to a pod show up at a later poll.
    let http = client();
    for _ in 0..3 {
        assert_eq!(get_at(&http, &ips[0], port, "/").await.unwrap().0, 200);
    }
    eventually("the new visits are counted", || async { visits().await["total"] == 15 }).await;

    // Once count-2 answers, the count is complete.
    let _pod_2 = Server::start_at(&fixture_2, &ips[2], port).await;
    eventually("every pod answered", || async {
        let status: Value = visits().await;
        status["complete"] == true && status["total"] == 115
    })
    .await;
    let exported = metrics.encode();
    let labels = format!("namespace=\"{}\",app=\"count\"", env.ns);
    assert!(
        exported.contains(&format!("visitcounter_operator_app_visits{{{labels}}} 115"))
            && exported.contains(&format!("visitcounter_operator_app_visits_complete{{{labels}}} 1")),
        "{exported}"
    );
    let asks = sample(&exported, "visitcounter_operator_visits_asks_total");
    assert!(
        asks >= 3.0,
        "each of the three pods was asked at least once: {exported}"
    );

    // Unchanged counts are not written again (five polls), and a
    // reconcile's own status write keeps them.
    let resource_version = || async {
        let app = env.api::<VisitCounterApp>().get("count").await.unwrap();
        app.metadata.resource_version
    };
    let before = resource_version().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(resource_version().await, before, "polls of the same counts wrote");
    env.apply_app("count", json!({"replicas": 3, "port": port, "minReadySeconds": 1}))
        .await;
    eventually("the new generation is Ready", || async {
        let app = env.api::<VisitCounterApp>().get("count").await.unwrap();
        let status = app.status.unwrap_or_default();
        status.observed_generation == app.metadata.generation && env.ready_with_pods("count", 3).await
    })
    .await;
    assert_eq!(visits().await["total"], 115, "the reconcile kept status.visits");

    stop_polling(env, stop, running).await;
}

/// The value of the metric `name` (without labels) in `exported`; 0 when
/// it is not there.
fn sample(exported: &str, name: &str) -> f64 {
    exported
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_default()
}

/// Once each pod answered, its new counts come on a stream it sends
/// (`observe::follow`): visits are counted with no more asks, and while
/// none comes, rounds leave the app out, then leave themselves out whole
/// (`observe::rest`) until a count comes on a stream. A pod killed
/// is asked again, reported as not answering, and followed once it is back.
pub async fn counts_come_on_streams_without_asks(env: &Env) {
    let (metrics, stop, running) = start_polling(env).await;
    let port = free_port();
    let ips = three_pods(env, port).await;
    let fixtures = [seeded(5), seeded(7), seeded(100)];
    let mut servers = serve_at(&fixtures, &ips, port).await;
    let followed = || sample(&metrics.encode(), "visitcounter_operator_visits_followed_pods");
    eventually("all three pods followed", || async { followed() == 3.0 }).await;
    // At rest, rounds build nothing of the app (`observe::quiet`); a
    // count on a stream brings it back in.
    let polled = || sample(&metrics.encode(), "visitcounter_operator_visits_apps_polled_total");
    eventually("rounds leave the app at rest out", || async {
        let before = polled();
        tokio::time::sleep(Duration::from_secs(1)).await;
        before > 0.0 && polled() == before
    })
    .await;
    let rested = || sample(&metrics.encode(), "visitcounter_operator_visits_rounds_at_rest_total");
    let at_rest = rested();
    eventually("whole rounds are left out at rest", || async { rested() > at_rest }).await;
    let asks = || sample(&metrics.encode(), "visitcounter_operator_visits_asks_total");
    let asked = asks();
    let http = client();
    for _ in 0..4 {
        assert_eq!(get_at(&http, &ips[1], port, "/").await.unwrap().0, 200);
    }
    eventually("the new visits are counted", || async {
        visits_of(env).await["total"] == 116
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(asks(), asked, "pods were asked while their counts came on streams");

    let killed = servers.remove(0);
    killed.crash();
    eventually("the killed pod is reported as not answering", || async {
        let status = visits_of(env).await;
        status["complete"] == false && status["pods"][0]["error"].is_string()
    })
    .await;
    assert!(asks() > asked, "the killed pod was not asked");
    servers.insert(0, Server::start_at(&fixtures[0], &ips[0], port).await);
    eventually("the pod back is counted and followed again", || async {
        visits_of(env).await["complete"] == true && followed() == 3.0
    })
    .await;
    assert_eq!(visits_of(env).await["total"], 116);
    let asked = asks();
    assert_eq!(get_at(&http, &ips[0], port, "/").await.unwrap().0, 200);
    eventually("a visit to the pod back is counted", || async {
        visits_of(env).await["total"] == 117
    })
    .await;
    assert_eq!(asks(), asked, "the pod back was asked, not followed");

    stop_polling(env, stop, running).await;
    drop(servers);
}

/// A scale-down keeps the visits of the pods it removes in the count: their
/// claims keep them, so the status lists each with its last count, marked
/// `retained`, in the total.
pub async fn a_scale_down_keeps_the_counts_of_the_pods_it_removes(env: &Env) {
    let (_metrics, stop, running) = start_polling(env).await;
    let port = free_port();
    let ips = three_pods(env, port).await;
    let fixtures = [seeded(5), seeded(7), seeded(100)];
    let servers = serve_at(&fixtures, &ips, port).await;
    eventually("every pod counted", || async {
        let status = visits_of(env).await;
        status["complete"] == true && status["total"] == 112
    })
    .await;

    env.apply_app("count", json!({"replicas": 1, "port": port})).await;
    eventually("count is down to one pod", || env.ready_with_pods("count", 1)).await;
    // What the poller wrote after both pods were gone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = visits_of(env).await;
    assert_eq!(
        status["total"], 112,
        "the scale-down took visits out of the count: {status}"
    );
    assert_eq!(status["complete"], true, "{status}");
    assert_eq!(
        status["pods"],
        json!([
            {"name": "count-0", "visits": 5},
            {"name": "count-1", "visits": 7, "retained": true},
            {"name": "count-2", "visits": 100, "retained": true},
        ])
    );

    stop_polling(env, stop, running).await;
    drop(servers);
}
