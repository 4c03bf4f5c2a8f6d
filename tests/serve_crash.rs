//! Crash safety: load the server, `kill -9` it at a random moment, restart,
//! many times. After every crash `visits.json` parses, holds at least every
//! visit that was answered, and never goes down.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use support::{Fixture, Server, client, get, visit_number};

const ROUNDS: usize = 12;
const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_never_loses_an_answered_visit() {
    let fixture = Fixture::new();
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut previous = 0;
    let mut total_answered = 0;
    for round in 0..ROUNDS {
        let server = Server::start(&fixture).await;
        let port = server.port;
        let highest_answered = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        let load: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let highest = Arc::clone(&highest_answered);
                let answered = Arc::clone(&answered);
                tokio::spawn(async move {
                    let client = client();
                    while let Ok((200, page)) = get(&client, port, "/").await {
                        highest.fetch_max(visit_number(&page), Ordering::SeqCst);
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.u64(20..250))).await;
        server.crash();
        for task in load {
            task.await.unwrap();
        }
        let on_disk = fixture.count_on_disk();
        let highest = highest_answered.load(Ordering::SeqCst);
        let answered = answered.load(Ordering::SeqCst);
        total_answered += answered;
        assert!(
            on_disk >= highest,
            "seed {seed} round {round}: {on_disk} on disk, but visit {highest} was answered"
        );
        assert!(
            on_disk >= previous + answered,
            "seed {seed} round {round}: count went from {previous} to {on_disk} with {answered} answered"
        );
        previous = on_disk;
    }
    assert!(total_answered > 0, "no visit was answered in {ROUNDS} rounds");
    // The survivor starts from what is on disk.
    let server = Server::start(&fixture).await;
    let (_, body) = get(&client(), server.port, "/visits").await.unwrap();
    assert_eq!(body, format!("{{\"visits\":{previous}}}"));
}
