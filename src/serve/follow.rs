//! `GET /visits` with `Upgrade: visitcounter-visits`: the pod's count, then
//! each new one as it reaches the disk, on one connection held open.
//!
//! The operator follows each ready pod this way, so a pod whose count stands
//! costs it nothing: no ask, no connection made, no CPU. Each line is what a
//! plain `GET /visits` answers, `{"visits":N}`, with a newline. Many commits
//! in a row may give one line with the last count: a follower wants the
//! count now, not every count there was.

use axum::http::{HeaderMap, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::watch,
};

/// The protocol named in the `Upgrade` header of an ask to follow.
pub const PROTOCOL: &str = "visitcounter-visits";

/// Whether the request asks to follow the count.
pub fn asked(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(PROTOCOL.as_bytes()))
}

/// One line of the stream.
pub fn line(count: u64) -> String {
    format!("{{\"visits\":{count}}}\n")
}

/// Writes the count once the connection is upgraded, then each new one,
/// until the follower closes the connection or the server stops (the
/// committer ends, and `counts` with it).
pub async fn stream(upgrade: OnUpgrade, mut counts: watch::Receiver<u64>) {
    let Ok(upgraded) = upgrade.await else { return };
    let (mut from_follower, mut to_follower) = tokio::io::split(TokioIo::new(upgraded));
    let mut byte = [0u8; 1];
    loop {
        let count = *counts.borrow_and_update();
        if to_follower.write_all(line(count).as_bytes()).await.is_err() {
            return;
        }
        tokio::select! {
            changed = counts.changed() => if changed.is_err() { return },
            // A follower sends nothing: a read ends only when it closed.
            _ = from_follower.read(&mut byte) => return,
        }
    }
}
