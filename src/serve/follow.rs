//! `GET /visits` with `Upgrade: visitcounter-visits`: the pod's count, then
//! each new one as it reaches the disk, on one connection held open.
//!
//! The operator follows each ready pod this way, so a pod whose count stands
//! costs it nothing: no ask, no connection made, no CPU. Each line is what a
//! plain `GET /visits` answers, `{"visits":N}`, with a newline. Lines come
//! at most one a `GAP`, each with the count on disk then: a follower wants
//! the count now, not every count there was, and under load one line per
//! commit would cost the operator more than asking each pod every round.

use std::time::Duration;

use axum::http::{HeaderMap, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::watch,
};

/// The protocol named in the `Upgrade` header of an ask to follow.
pub const PROTOCOL: &str = "visitcounter-visits";
/// The least time between two lines.
const GAP: Duration = Duration::from_secs(1);
/// How long a line may wait for the follower to take it in.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the request asks to follow the count: `Upgrade` names the
/// protocol and `Connection` says to upgrade.
pub fn asked(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(PROTOCOL.as_bytes()));
    let connection = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("upgrade"));
    upgrade && connection
}

/// One line of the stream.
pub fn line(count: u64) -> String {
    format!("{{\"visits\":{count}}}\n")
}

/// Writes the count once the connection is upgraded, then each new one,
/// until the follower closes the connection, does not take a line in, or the
/// server stops (the committer ends, and `counts` with it).
pub async fn stream(upgrade: OnUpgrade, mut counts: watch::Receiver<u64>) {
    let Ok(upgraded) = upgrade.await else { return };
    let (mut from_follower, mut to_follower) = tokio::io::split(TokioIo::new(upgraded));
    let mut byte = [0u8; 1];
    loop {
        let count = *counts.borrow_and_update();
        let written = tokio::time::timeout(WRITE_TIMEOUT, to_follower.write_all(line(count).as_bytes())).await;
        if !matches!(written, Ok(Ok(()))) {
            return;
        }
        // A follower sends nothing: a read ends only when it closed.
        tokio::select! {
            changed = async {
                tokio::time::sleep(GAP).await;
                counts.changed().await
            } => if changed.is_err() { return },
            _ = from_follower.read(&mut byte) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn an_ask_to_follow_names_the_protocol_and_says_to_upgrade() {
        let headers = |pairs: &[(header::HeaderName, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(name, HeaderValue::from_static(value));
            }
            map
        };
        assert!(asked(&headers(&[
            (header::CONNECTION, "keep-alive, Upgrade"),
            (header::UPGRADE, "VisitCounter-Visits"),
        ])));
        assert!(
            !asked(&headers(&[(header::UPGRADE, PROTOCOL)])),
            "no Connection: upgrade"
        );
        assert!(!asked(&headers(&[
            (header::CONNECTION, "upgrade"),
            (header::UPGRADE, "websocket")
        ])));
        assert!(!asked(&headers(&[])));
    }
}
