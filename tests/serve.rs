//! `visitcounter serve` through the real binary on 127.0.0.1.

mod support;

use std::collections::BTreeSet;

use support::{Fixture, Server, client, get, post_json, serve_command, visit_number};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_visits_are_each_counted_once() {
    const CLIENTS: u64 = 16;
    const VISITS: u64 = 25;
    let fixture = Fixture::new();
    let server = Server::start(&fixture).await;
    let port = server.port;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(async move {
                let client = client();
                let mut numbers = Vec::new();
                for _ in 0..VISITS {
                    let (status, page) = get(&client, port, "/").await.unwrap();
                    assert_eq!(status, 200, "{page}");
                    numbers.push(visit_number(&page));
                }
                numbers
            })
        })
        .collect();
    let mut numbers = BTreeSet::new();
    for task in tasks {
        for n in task.await.unwrap() {
            assert!(numbers.insert(n), "visit number {n} given twice");
        }
    }
    let expected: BTreeSet<u64> = (1..=CLIENTS * VISITS).collect();
    assert_eq!(numbers, expected);
    let (_, body) = get(&client(), port, "/visits").await.unwrap();
    assert_eq!(body, format!("{{\"visits\":{}}}", CLIENTS * VISITS));
    assert_eq!(fixture.count_on_disk(), CLIENTS * VISITS);
    // Grouping happened: fewer fsynced writes than visits.
    let (_, metrics) = get(&client(), port, "/metrics").await.unwrap();
    let batches: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("visitcounter_commit_batches_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..CLIENTS * VISITS).contains(&batches),
        "{batches} writes for {} visits",
        CLIENTS * VISITS
    );
    assert!(server.stop().success());
}

#[tokio::test]
async fn probes_reads_and_metrics_never_count() {
    let fixture = Fixture::new();
    let server = Server::start(&fixture).await;
    let client = client();
    for path in ["/healthz", "/readyz", "/visits", "/config", "/metrics"] {
        for _ in 0..10 {
            let (status, _) = get(&client, server.port, path).await.unwrap();
            assert_eq!(status, 200, "{path}");
        }
    }
    assert_eq!(get(&client, server.port, "/visits").await.unwrap().1, r#"{"visits":0}"#);
    assert_eq!(
        get(&client, server.port, "/config").await.unwrap().1,
        r#"{"greeting":"hi"}"#
    );
    let (_, page) = get(&client, server.port, "/").await.unwrap();
    assert_eq!(visit_number(&page), 1);
    assert!(page.contains("web-0"), "{page}");
    assert_eq!(get(&client, server.port, "/visits").await.unwrap().1, r#"{"visits":1}"#);
    assert!(server.stop().success());
}

#[tokio::test]
async fn a_restart_keeps_the_count() {
    let fixture = Fixture::new();
    let server = Server::start(&fixture).await;
    let client = client();
    for _ in 0..7 {
        get(&client, server.port, "/").await.unwrap();
    }
    let status = server.stop();
    assert!(status.success(), "SIGTERM exit: {status}");
    let server = Server::start(&fixture).await;
    assert_eq!(get(&client, server.port, "/visits").await.unwrap().1, r#"{"visits":7}"#);
    let (_, page) = get(&client, server.port, "/").await.unwrap();
    assert_eq!(visit_number(&page), 8);
    assert!(server.stop().success());
}

/// A blue/green rollout's carry: the first carry under a key takes the
/// other pod's count when it is larger, later ones add only what that pod
/// counted since, and the record survives a restart, so a carry repeated
/// after it adds nothing twice.
#[tokio::test]
async fn carried_counts_join_the_count_once() {
    let fixture = Fixture::new();
    let server = Server::start(&fixture).await;
    let client = client();
    for _ in 0..2 {
        get(&client, server.port, "/").await.unwrap();
    }
    let carry = |port, seen: u64| post_json(port, "/carry", &format!(r#"{{"key":"web-0@1-abc","visits":{seen}}}"#));
    assert_eq!(carry(server.port, 40), (200, r#"{"visits":40}"#.into()));
    let (_, page) = get(&client, server.port, "/").await.unwrap();
    assert_eq!(visit_number(&page), 41);
    assert_eq!(carry(server.port, 45), (200, r#"{"visits":46}"#.into()));
    assert!(server.stop().success());
    let server = Server::start(&fixture).await;
    assert_eq!(
        carry(server.port, 45),
        (200, r#"{"visits":46}"#.into()),
        "nothing twice"
    );
    assert_eq!(carry(server.port, 47), (200, r#"{"visits":48}"#.into()));
    let (status, _) = post_json(server.port, "/carry", r#"{"visits":"many"}"#);
    assert_eq!(status, 422, "a body that is not a carry is refused");
    assert_eq!(fixture.count_on_disk(), 48);
    assert!(server.stop().success());
}

/// The seed Go app's `{"visits":"513"}` is adopted: read as 513 and left as it
/// is until the first visit writes the app's own number form.
#[tokio::test]
async fn the_seed_go_apps_string_count_is_adopted() {
    const GO: &str = r#"{"visits":"513"}"#;
    let fixture = Fixture::new();
    std::fs::write(fixture.visits_file(), GO).unwrap();
    let server = Server::start(&fixture).await;
    let client = client();
    assert_eq!(
        get(&client, server.port, "/visits").await.unwrap().1,
        r#"{"visits":513}"#
    );
    assert_eq!(std::fs::read_to_string(fixture.visits_file()).unwrap(), GO);
    let (status, page) = get(&client, server.port, "/").await.unwrap();
    assert_eq!(status, 200, "{page}");
    assert_eq!(visit_number(&page), 514);
    let text = std::fs::read_to_string(fixture.visits_file()).unwrap();
    let on_disk: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(on_disk, serde_json::json!({ "visits": 514 }), "{text}");
    assert!(on_disk["visits"].is_u64(), "{text}");
    assert!(server.stop().success());
}

/// Each bad start: non-zero exit, a message naming the path and the problem,
/// and `visits.json` byte for byte as it was.
#[test]
fn bad_starts_are_clear_errors_that_touch_nothing() {
    struct Case {
        name: &'static str,
        visits: Option<&'static str>,
        data_dir: Option<&'static str>,
        config: Option<&'static str>,
        expect: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "count is a negative string",
            visits: Some(r#"{"visits":"-5"}"#),
            data_dir: None,
            config: None,
            expect: &["visits.json holds {\"visits\":\"-5\"}", "refusing to start"],
        },
        Case {
            name: "count is a string that is not all digits",
            visits: Some(r#"{"visits":"12a"}"#),
            data_dir: None,
            config: None,
            expect: &["visits.json holds {\"visits\":\"12a\"}", "whole number"],
        },
        Case {
            name: "negative count",
            visits: Some(r#"{"visits": -3}"#),
            data_dir: None,
            config: None,
            expect: &["visits.json holds {\"visits\":-3}", "at least 0"],
        },
        Case {
            name: "fractional count",
            visits: Some(r#"{"visits": 2.5}"#),
            data_dir: None,
            config: None,
            expect: &["visits.json holds", "whole number"],
        },
        Case {
            name: "not JSON",
            visits: Some("{\"visits\": 12"),
            data_dir: None,
            config: None,
            expect: &["visits.json is not valid JSON", "refusing to start"],
        },
        Case {
            name: "missing data dir",
            visits: None,
            data_dir: Some("missing"),
            config: None,
            expect: &["data directory", "missing does not exist"],
        },
        Case {
            // /proc refuses new files even to root.
            name: "unwritable data dir",
            visits: None,
            data_dir: Some("/proc"),
            config: None,
            expect: &["data directory /proc is not writable"],
        },
        Case {
            name: "missing config",
            visits: Some(r#"{"visits": 5}"#),
            data_dir: None,
            config: Some("absent.json"),
            expect: &["config file", "absent.json cannot be read"],
        },
        Case {
            name: "config not JSON",
            visits: Some(r#"{"visits": 5}"#),
            data_dir: None,
            config: Some("{broken"),
            expect: &["config file", "is not a JSON object"],
        },
    ];
    for case in cases {
        let fixture = Fixture::new();
        if let Some(contents) = case.visits {
            std::fs::write(fixture.visits_file(), contents).unwrap();
        }
        let data_dir = match case.data_dir {
            Some(dir) if dir.starts_with('/') => dir.into(),
            Some(dir) => fixture.root.path().join(dir),
            None => fixture.data_dir(),
        };
        let config = match case.config {
            Some("absent.json") => fixture.root.path().join("absent.json"),
            Some(contents) => {
                std::fs::write(fixture.config(), contents).unwrap();
                fixture.config()
            }
            None => fixture.config(),
        };
        let port = support::free_port();
        let output = serve_command(&data_dir, &config, port, &[]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{}: started", case.name);
        for expected in case.expect {
            assert!(stderr.contains(expected), "{}: {expected:?} not in {stderr}", case.name);
        }
        let after = std::fs::read(fixture.visits_file()).ok();
        assert_eq!(
            after.as_deref(),
            case.visits.map(str::as_bytes),
            "{}: visits.json changed",
            case.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_and_commits_what_is_in_flight() {
    let fixture = Fixture::new();
    let server = Server::start(&fixture).await;
    let port = server.port;
    let load: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let client = client();
                let mut answered = Vec::new();
                while let Ok((200, page)) = get(&client, port, "/").await {
                    answered.push(visit_number(&page));
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let status = tokio::task::spawn_blocking(move || server.stop()).await.unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
    let mut answered = Vec::new();
    for task in load {
        answered.extend(task.await.unwrap());
    }
    assert!(!answered.is_empty(), "no visit was answered before the stop");
    let on_disk = fixture.count_on_disk();
    assert!(*answered.iter().max().unwrap() <= on_disk);
    assert!(answered.len() as u64 <= on_disk);
}

/// The operator's follower (`observe::follow`) on the real server: the
/// count at once, then each new one, with no ask; and the stream's end once
/// the server stops, which a follower does not hold up. Each is news (what
/// tells a visits round at rest to look again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_gets_each_new_count_and_the_server_still_stops() {
    use std::sync::{Arc, Mutex};

    use visitcounter::controller::observe::{
        follow::{Follow, News, follow},
        pod_http,
    };

    let fixture = Fixture::new();
    let server = Server::start(&fixture).await;
    let state = Arc::new(Mutex::new(Follow::Opening));
    let http = pod_http::client(std::time::Duration::from_secs(2));
    let uri = pod_http::uri("127.0.0.1", server.port.into(), "/visits");
    let news = News::default();
    tokio::spawn(follow(http, uri, Arc::clone(&state), news.clone()));
    wait_for_follow(&state, Follow::Counting(0)).await;
    let first = wait_for_news(&news, 1).await;
    let client = client();
    for _ in 0..3 {
        get(&client, server.port, "/").await.unwrap();
    }
    wait_for_follow(&state, Follow::Counting(3)).await;
    let counted = wait_for_news(&news, first + 1).await;
    let stopped = tokio::task::spawn_blocking(move || server.stop());
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), stopped)
        .await
        .expect("the server stops within 20 s with a follower")
        .unwrap();
    assert!(status.success(), "exit after SIGTERM with a follower: {status}");
    wait_for_follow(&state, Follow::Ended).await;
    wait_for_news(&news, counted + 1).await;
}

/// Waits until the streams' news reaches `at_least` (a stream counts what
/// it sent just after writing it); what it reached.
async fn wait_for_news(news: &visitcounter::controller::observe::follow::News, at_least: u64) -> u64 {
    wait_until(std::time::Duration::from_secs(5), || match news.heard() {
        heard if heard >= at_least => Ok(heard),
        heard => Err(format!("news stayed at {heard} below {at_least}")),
    })
    .await
}

async fn wait_for_follow(
    state: &std::sync::Mutex<visitcounter::controller::observe::follow::Follow>,
    wanted: visitcounter::controller::observe::follow::Follow,
) {
    wait_until(std::time::Duration::from_secs(10), || {
        match state.lock().unwrap().clone() {
            now if now == wanted => Ok(()),
            now => Err(format!("follow is {now:?}, not {wanted:?}")),
        }
    })
    .await
}

/// Looks every 10 ms until `look` finds what it waits for, at most
/// `within`; past it, fails with what `look` last saw instead.
async fn wait_until<T>(within: std::time::Duration, mut look: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        match look() {
            Ok(found) => return found,
            Err(seen) => assert!(std::time::Instant::now() < deadline, "{seen}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
