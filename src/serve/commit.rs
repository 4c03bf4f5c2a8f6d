//! Group commit: one task owns the count. Visits queue on a channel; each turn
//! the committer takes every visit waiting, writes the new count once (one
//! write, one fsync), and only then answers each visit with its own number.
//! Under load one fsync serves many visits; alone, a visit waits for one fsync.

use std::{sync::Arc, time::Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::{
    metrics::Metrics,
    store::{Carried, Store},
};

/// How visits reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CommitMode {
    /// Every visit waiting shares one write and one fsync.
    Group,
    /// One write and one fsync per visit: the baseline benchmarks compare with.
    PerVisit,
}

/// Most visits one write may carry, so a flood still gets answers in bounded
/// batches.
const MAX_BATCH: usize = 8192;

/// The visit could not be made durable; it was not counted.
#[derive(Debug, thiserror::Error)]
#[error("the count could not be written: {0}")]
pub struct CommitFailed(String);

type Reply = oneshot::Sender<Result<u64, CommitFailed>>;

/// What the committer is asked to count.
enum Ask {
    Visit(Reply),
    /// Another pod's count carried in (`Carried::carry`).
    Carry {
        key: String,
        seen: u64,
        reply: Reply,
    },
}

/// The handle request handlers use. Cloning is cheap.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::UnboundedSender<Ask>,
    /// The count on disk; its receivers are told of each new one.
    durable: Arc<watch::Sender<u64>>,
}

impl Committer {
    /// Starts the committer task over `store`, whose durable count is `count`.
    /// The task ends once every `Committer` clone is dropped and the queue is
    /// drained; await the handle to know every accepted visit was answered.
    pub fn start(
        store: Store,
        count: u64,
        mode: CommitMode,
        metrics: Arc<Metrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, receiver) = mpsc::unbounded_channel();
        let durable = Arc::new(watch::Sender::new(count));
        metrics.count.set(count as i64);
        let carried = store.carried();
        let task = tokio::spawn(run(store, carried, receiver, Arc::clone(&durable), mode, metrics));
        (Self { queue, durable }, task)
    }

    /// Counts one visit; answers with the visit's number once it is on disk.
    pub async fn visit(&self) -> Result<u64, CommitFailed> {
        self.ask(Ask::Visit).await
    }

    /// Carries in another pod's count, `seen`, under `key` (see
    /// `Carried::carry`); answers with the count once it is on disk.
    pub async fn carry(&self, key: String, seen: u64) -> Result<u64, CommitFailed> {
        self.ask(|reply| Ask::Carry { key, seen, reply }).await
    }

    async fn ask(&self, ask: impl FnOnce(Reply) -> Ask) -> Result<u64, CommitFailed> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(ask(reply))
            .map_err(|_| CommitFailed("the server is stopping".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(CommitFailed("the committer stopped".into())))
    }

    /// The count that is on disk now.
    pub fn durable(&self) -> u64 {
        *self.durable.borrow()
    }

    /// The count on disk, marked changed each time a new one is. Its
    /// `changed()` fails once the committer has ended.
    pub fn follow(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }
}

async fn run(
    store: Store,
    mut carried: Option<Carried>,
    mut receiver: mpsc::UnboundedReceiver<Ask>,
    durable: Arc<watch::Sender<u64>>,
    mode: CommitMode,
    metrics: Arc<Metrics>,
) {
    let limit = match mode {
        CommitMode::Group => MAX_BATCH,
        CommitMode::PerVisit => 1,
    };
    let mut batch: Vec<Ask> = Vec::with_capacity(64);
    let mut count = *durable.borrow();
    while receiver.recv_many(&mut batch, limit).await > 0 {
        // Each ask in turn: a visit's number, or the count after a carry.
        let (mut next, mut next_carried, mut visits) = (count, carried.clone(), 0u64);
        let mut replies = Vec::with_capacity(batch.len());
        for ask in batch.drain(..) {
            match ask {
                Ask::Visit(reply) => {
                    next += 1;
                    visits += 1;
                    replies.push((next, reply));
                }
                Ask::Carry { key, seen, reply } => {
                    let (after, record) = Carried::carry(next_carried.as_ref(), next, &key, seen);
                    (next, next_carried) = (after, Some(record));
                    replies.push((next, reply));
                }
            }
        }
        let started = Instant::now();
        let writer = store.clone();
        let record = next_carried.clone();
        let written = tokio::task::spawn_blocking(move || writer.write(next, record.as_ref()))
            .await
            .map_err(|e| CommitFailed(e.to_string()))
            .and_then(|r| r.map_err(|e| CommitFailed(e.to_string())));
        metrics.observe_commit(started.elapsed(), replies.len());
        match written {
            Ok(()) => {
                // A carry that adds nothing leaves the count as it was.
                durable.send_if_modified(|durable| std::mem::replace(durable, next) != next);
                metrics.count.set(next as i64);
                metrics.visits.inc_by(visits);
                for (number, reply) in replies {
                    let _ = reply.send(Ok(number));
                }
                (count, carried) = (next, next_carried);
            }
            Err(failed) => {
                tracing::error!(path = %store.path().display(), error = %failed, "visit count not written");
                for (_, reply) in replies {
                    let _ = reply.send(Err(CommitFailed(failed.0.clone())));
                }
            }
        }
    }
}
