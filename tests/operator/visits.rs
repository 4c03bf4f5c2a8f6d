//! One visit count: `visitcounter serve` processes on 127.0.0.x stand in for
//! the pods, at the IPs the stand-in's pods report.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    harness::{Cluster, WAIT, settings, wait_until},
    support::{Fixture, Server, client, free_port, get_at},
};

fn visits(cluster: &Cluster) -> Value {
    cluster.app("web")["status"]["visits"].clone()
}

fn seeded(count: u64) -> Fixture {
    let fixture = Fixture::new();
    std::fs::write(fixture.visits_file(), format!("{{\"visits\": {count}}}")).unwrap();
    fixture
}

#[tokio::test]
async fn the_pods_visits_are_summed_and_a_silent_pod_is_never_counted_as_zero() {
    let cluster = Cluster::start().await;
    let mut settings = settings();
    settings.controller.visits_interval = Some(Duration::from_millis(200));
    let operator = cluster.start_operator(settings);
    let port = free_port();
    cluster.apply_app("web", json!({"replicas": 3, "port": port})).await;
    wait_until("web is ready", WAIT, || cluster.is_ready("web")).await;
    for (pod, ip) in [("web-0", "127.0.0.2"), ("web-1", "127.0.0.3"), ("web-2", "127.0.0.4")] {
        cluster.standin.set_pod_ip("shop", pod, ip).unwrap();
    }
    let (fixture_0, fixture_1, fixture_2) = (seeded(5), seeded(7), seeded(100));
    let _web_0 = Server::start_at(&fixture_0, "127.0.0.2", port).await;
    let _web_1 = Server::start_at(&fixture_1, "127.0.0.3", port).await;

    // web-2 does not answer: reported as such, and left out of the total.
    wait_until("two pods counted", WAIT, || visits(&cluster)["total"] == 12).await;
    let status = visits(&cluster);
    assert_eq!(status["complete"], false, "{status}");
    assert_eq!(status["pods"][0], json!({"name": "web-0", "visits": 5}));
    assert_eq!(status["pods"][1], json!({"name": "web-1", "visits": 7}));
    assert_eq!(status["pods"][2]["name"], "web-2");
    assert!(
        status["pods"][2].get("visits").is_none(),
        "not counted as zero: {status}"
    );
    let error = status["pods"][2]["error"].as_str().unwrap();
    assert!(error.contains("unreachable at 127.0.0.4"), "{error}");

    // Visits to a pod show up at the next poll.
    let http = client();
    for _ in 0..3 {
        assert_eq!(get_at(&http, "127.0.0.2", port, "/").await.unwrap().0, 200);
    }
    wait_until("the new visits are counted", WAIT, || visits(&cluster)["total"] == 15).await;

    // Once web-2 answers, the count is complete.
    let _web_2 = Server::start_at(&fixture_2, "127.0.0.4", port).await;
    wait_until("every pod answered", WAIT, || {
        visits(&cluster)["complete"] == true && visits(&cluster)["total"] == 115
    })
    .await;
    let metrics = operator.metrics.encode();
    assert!(
        metrics.contains("visitcounter_operator_app_visits{namespace=\"shop\",app=\"web\"} 115"),
        "{metrics}"
    );
    assert!(metrics.contains("visitcounter_operator_app_visits_complete{namespace=\"shop\",app=\"web\"} 1"));

    // Unchanged counts are not written again, and a reconcile's own status
    // write keeps them.
    let status_writes = || {
        cluster
            .standin
            .writes_to("visitcounterapps")
            .iter()
            .filter(|r| r.path.ends_with("/status"))
            .count()
    };
    let before = status_writes();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(status_writes(), before, "five polls of the same counts wrote nothing");
    cluster.patch_spec("web", json!({"minReadySeconds": 1})).await;
    wait_until("the new generation is ready", WAIT, || cluster.is_ready("web")).await;
    assert_eq!(visits(&cluster)["total"], 115, "the reconcile kept status.visits");
    operator.stop().await.unwrap();
}
