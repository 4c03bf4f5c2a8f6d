//! The pods whose counts the visits poller follows instead of asking.
//!
//! Once a pod has answered `GET /visits`, the poller asks it once more to
//! follow (`Upgrade: visitcounter-visits`, see `serve::follow`): the pod
//! sends its count on that connection and then each new one. Each round
//! takes the last count a pod sent, so a pod whose count stands costs no ask,
//! no connection made and no CPU. A pod whose server does not follow (its
//! image is not `visitcounter serve`) answers with a plain count and is asked
//! each round as before; a stream that ends is opened again after the pod's
//! next answer.
//!
//! While a blue/green app carries counts from its previous pods, its pods
//! are asked every round even when followed: the previous StatefulSet goes
//! only once counts asked after the switch show its visits carried over.
//!
//! [`step`] decides; [`follow`] is the task that reads a stream.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http_body_util::Full;
use hyper::{StatusCode, body::Bytes, header, upgrade::Upgraded};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    task::AbortHandle,
};

use super::{pod_http::PodClient, visits::parse_answer};
use crate::serve::follow::PROTOCOL;

/// How long a pod may take to answer an ask to follow.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest line a stream may send (`{"visits":N}` and a newline).
const MOST_LINE: u64 = 64;

/// What is known of a followed pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Follow {
    /// The ask to follow is out; no count came on it yet.
    Opening,
    /// The count the pod sent last.
    Counting(i64),
    /// The pod answered the ask to follow with a plain count or an error:
    /// it is not followed.
    Plain,
    /// The stream could not be opened, or it ended.
    Ended,
}

/// What the streams have sent, counted: each count and each end adds one.
/// A round that finds the same number as the last knows no stream sent
/// anything since (see `rest`). A stream writes its state first and counts
/// after, so a round that reads this number before the states cannot miss
/// a count: one written after the read is counted after it too.
#[derive(Clone, Debug, Default)]
pub struct News(Arc<AtomicU64>);

impl News {
    /// How much the streams have sent so far.
    pub fn heard(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn tell(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// What a round does for one pod it would ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Takes the count the pod's stream sent last; asks nothing.
    Use(i64),
    /// Asks the pod.
    Ask,
    /// Asks the pod and, once it answered, asks to follow it.
    AskThenFollow,
}

/// The step for a pod in `state` (`None`: not followed); `afresh` when its
/// app's counts must be asked this round.
pub fn step(state: Option<&Follow>, afresh: bool) -> Step {
    match state {
        Some(Follow::Counting(count)) if !afresh => Step::Use(*count),
        Some(Follow::Counting(_) | Follow::Opening | Follow::Plain) => Step::Ask,
        None | Some(Follow::Ended) => Step::AskThenFollow,
    }
}

/// The most pods followed when the poller is given no bound.
const MOST_FOLLOWED: usize = 512;

/// A pod as a round looks it up: by its uid (a pod re-created under the
/// same name is another pod), at its address. Borrowed, so a round over
/// every pod allocates nothing to look them up.
#[derive(Clone, Copy, Debug)]
pub struct PodRef<'a> {
    pub uid: &'a str,
    pub ip: &'a str,
    pub port: i32,
}

/// A pod followed, its state shared with its task.
struct Followed {
    ip: String,
    port: i32,
    state: Arc<Mutex<Follow>>,
    task: AbortHandle,
    /// Looked at this round.
    seen: bool,
}

impl Drop for Followed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The pods followed. A pod not looked at in a round (gone, not ready, at a
/// new address) is no longer followed: its stream is closed. Each stream
/// holds a connection, so there is a bound: past it, a pod is asked each
/// round instead.
pub struct Followers {
    /// By pod uid.
    pods: Mutex<HashMap<String, Followed>>,
    most: usize,
    /// What their streams have sent.
    news: News,
}

impl Default for Followers {
    fn default() -> Self {
        Self::at_most(MOST_FOLLOWED)
    }
}

impl Followers {
    pub fn at_most(most: usize) -> Self {
        Self {
            pods: Mutex::default(),
            most,
            news: News::default(),
        }
    }

    /// What the streams have sent, for a stream's task to count into.
    pub fn news(&self) -> News {
        self.news.clone()
    }

    /// How much the streams have sent so far (`News::heard`).
    pub fn heard(&self) -> u64 {
        self.news.heard()
    }

    /// The step for the pod this round. At another address the pod is not
    /// followed: the stream it had is closed at the round's end.
    pub fn step(&self, pod: PodRef<'_>, afresh: bool) -> Step {
        let mut pods = self.pods.lock().expect("followed pods");
        let followed = pods.get_mut(pod.uid).filter(|f| f.ip == pod.ip && f.port == pod.port);
        let state = followed.map(|f| {
            f.seen = true;
            f.state.lock().expect("follow state").clone()
        });
        step(state.as_ref(), afresh)
    }

    /// The count the pod's stream sent last, while it is followed at this
    /// address and counting; the pod is looked at this round (see `quiet`:
    /// an app left out of a round still has its pods followed).
    pub fn count(&self, pod: PodRef<'_>) -> Option<i64> {
        let mut pods = self.pods.lock().expect("followed pods");
        let followed = pods.get_mut(pod.uid).filter(|f| f.ip == pod.ip && f.port == pod.port)?;
        followed.seen = true;
        match *followed.state.lock().expect("follow state") {
            Follow::Counting(count) => Some(count),
            Follow::Opening | Follow::Plain | Follow::Ended => None,
        }
    }

    /// Follows the pod with the task `start` spawns, in place of any stream
    /// it had; not while as many streams as the bound are open or opening.
    pub fn follow(&self, pod: PodRef<'_>, start: impl FnOnce(Arc<Mutex<Follow>>) -> AbortHandle) {
        let mut pods = self.pods.lock().expect("followed pods");
        // Counted only near the bound: below it, there are fewer streams.
        if pods.len() >= self.most {
            let streams = pods
                .iter()
                .filter(|(uid, f)| *uid != pod.uid && holds_a_connection(&f.state))
                .count();
            if streams >= self.most {
                return;
            }
        }
        let state = Arc::new(Mutex::new(Follow::Opening));
        let followed = Followed {
            ip: pod.ip.to_owned(),
            port: pod.port,
            task: start(Arc::clone(&state)),
            state,
            seen: true,
        };
        pods.insert(pod.uid.to_owned(), followed);
    }

    /// Stops following the pods not looked at this round; the number whose
    /// counts come by their streams.
    pub fn end_round(&self) -> usize {
        let mut pods = self.pods.lock().expect("followed pods");
        pods.retain(|_, f| std::mem::take(&mut f.seen));
        pods.values()
            .filter(|f| matches!(*f.state.lock().expect("follow state"), Follow::Counting(_)))
            .count()
    }
}

fn holds_a_connection(state: &Mutex<Follow>) -> bool {
    matches!(
        *state.lock().expect("follow state"),
        Follow::Opening | Follow::Counting(_)
    )
}

/// Follows the pod at `uri` (its `/visits`) until the stream ends; `state`
/// says what came, and `news` counts it.
pub async fn follow(http: PodClient, uri: String, state: Arc<Mutex<Follow>>, news: News) {
    let end = match open(&http, &uri).await {
        Ok(Some(upgraded)) => read_counts(upgraded, &state, &news).await,
        Ok(None) => Follow::Plain,
        Err(error) => {
            tracing::debug!(%uri, %error, "cannot follow the pod's visits");
            Follow::Ended
        }
    };
    *state.lock().expect("follow state") = end;
    news.tell();
}

/// Asks to follow: the upgraded connection, or `None` when the pod answered
/// anything else (a plain count: its server does not follow; an error: a
/// proxy on the way that takes no upgrade), so it is asked each round.
async fn open(http: &PodClient, uri: &str) -> Result<Option<Upgraded>, String> {
    let request = hyper::Request::get(uri)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, PROTOCOL)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let opened = async {
        let response = http.request(request).await.map_err(|e| e.to_string())?;
        match response.status() {
            StatusCode::SWITCHING_PROTOCOLS => hyper::upgrade::on(response).await.map(Some).map_err(|e| e.to_string()),
            _ => Ok(None),
        }
    };
    tokio::time::timeout(OPEN_TIMEOUT, opened)
        .await
        .unwrap_or_else(|_| Err(format!("did not answer within {OPEN_TIMEOUT:?}")))
}

/// Reads counts, a line each, into `state` (each told to `news`) until the
/// stream ends or sends something that is not a count.
async fn read_counts(upgraded: Upgraded, state: &Mutex<Follow>, news: &News) -> Follow {
    let mut reader = BufReader::with_capacity(MOST_LINE as usize, TokioIo::new(upgraded));
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader).take(MOST_LINE).read_until(b'\n', &mut line).await;
        if !matches!(read, Ok(n) if n > 0) || line.last() != Some(&b'\n') {
            return Follow::Ended;
        }
        match parse_answer(&line) {
            Ok(count) => {
                *state.lock().expect("follow state") = Follow::Counting(count);
                news.tell();
            }
            Err(_) => return Follow::Ended,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followed_count_is_taken_unless_the_app_must_be_asked_afresh() {
        assert_eq!(step(Some(&Follow::Counting(7)), false), Step::Use(7));
        assert_eq!(step(Some(&Follow::Counting(7)), true), Step::Ask);
    }

    #[test]
    fn a_pod_is_followed_once_it_answered_and_again_once_its_stream_ended() {
        assert_eq!(step(None, false), Step::AskThenFollow);
        assert_eq!(step(Some(&Follow::Ended), false), Step::AskThenFollow);
        assert_eq!(
            step(Some(&Follow::Opening), false),
            Step::Ask,
            "one ask to follow at a time"
        );
        assert_eq!(
            step(Some(&Follow::Plain), false),
            Step::Ask,
            "its server does not follow"
        );
    }

    #[tokio::test]
    async fn a_server_that_answers_a_plain_count_is_not_followed() {
        let (address, _) = crate::controller::observe::pod_http::tests::counting_server().await;
        let state = Arc::new(Mutex::new(Follow::Opening));
        let http = crate::controller::observe::pod_http::client(Duration::from_secs(2));
        let news = News::default();
        follow(
            http,
            format!("http://{address}/visits"),
            Arc::clone(&state),
            news.clone(),
        )
        .await;
        assert_eq!(*state.lock().unwrap(), Follow::Plain);
        assert_eq!(news.heard(), 1, "its end is news");
    }

    fn pod<'a>(uid: &'a str, ip: &'a str) -> PodRef<'a> {
        PodRef { uid, ip, port: 8080 }
    }

    /// Follows `pod` with a task that never ends and whose state is
    /// `state`; the task's handle.
    fn follow_with(followers: &Followers, pod: PodRef<'_>, state: Follow) -> Option<AbortHandle> {
        let mut task = None;
        followers.follow(pod, |shared| {
            *shared.lock().unwrap() = state;
            let handle = tokio::spawn(std::future::pending::<()>()).abort_handle();
            task = Some(handle.clone());
            handle
        });
        task
    }

    #[test]
    fn pods_not_looked_at_in_a_round_are_no_longer_followed() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _entered = runtime.enter();
        let followers = Followers::default();
        let (web_0, web_1) = (pod("a", "10.0.0.1"), pod("b", "10.0.0.2"));
        follow_with(&followers, web_0, Follow::Counting(4)).unwrap();
        let task_1 = follow_with(&followers, web_1, Follow::Counting(2)).unwrap();
        assert_eq!(followers.end_round(), 2, "both followed the round they began");
        assert_eq!(followers.step(web_0, false), Step::Use(4));
        assert_eq!(followers.end_round(), 1, "web-1 was not looked at");
        runtime.block_on(tokio::task::yield_now());
        assert!(task_1.is_finished(), "web-1's stream is closed");
        assert_eq!(followers.step(web_1, false), Step::AskThenFollow);
        let moved = pod("a", "10.0.0.9");
        assert_eq!(followers.step(moved, false), Step::AskThenFollow, "at a new address");
        let again = pod("c", "10.0.0.1");
        assert_eq!(
            followers.step(again, false),
            Step::AskThenFollow,
            "re-created, same address"
        );
    }

    #[test]
    fn a_followed_pod_s_count_is_its_stream_s_last_and_it_is_kept() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _entered = runtime.enter();
        let followers = Followers::default();
        let web_0 = pod("a", "10.0.0.1");
        assert_eq!(followers.count(web_0), None, "not followed");
        let mut shared = None;
        followers.follow(web_0, |state| {
            *state.lock().unwrap() = Follow::Counting(4);
            shared = Some(state);
            tokio::spawn(std::future::pending::<()>()).abort_handle()
        });
        let shared = shared.unwrap();
        followers.end_round();
        assert_eq!(followers.count(web_0), Some(4));
        assert_eq!(followers.count(pod("a", "10.0.0.9")), None, "at another address");
        assert_eq!(
            followers.end_round(),
            1,
            "kept: a pod whose count was read is looked at"
        );
        *shared.lock().unwrap() = Follow::Counting(5);
        assert_eq!(followers.count(web_0), Some(5));
        *shared.lock().unwrap() = Follow::Ended;
        assert_eq!(followers.count(web_0), None, "the stream ended");
    }

    #[test]
    fn past_the_bound_a_pod_is_asked_each_round_instead() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _entered = runtime.enter();
        let followers = Followers::at_most(1);
        let (web_0, web_1) = (pod("a", "10.0.0.1"), pod("b", "10.0.0.2"));
        assert!(follow_with(&followers, web_0, Follow::Counting(4)).is_some());
        assert!(
            follow_with(&followers, web_1, Follow::Counting(2)).is_none(),
            "past the bound"
        );
        assert_eq!(followers.step(web_1, false), Step::AskThenFollow);
        assert!(
            follow_with(&followers, web_0, Follow::Counting(5)).is_some(),
            "a pod's own stream is replaced"
        );
        assert_eq!(followers.step(web_0, false), Step::Use(5));
        let plain = Followers::at_most(1);
        assert!(follow_with(&plain, web_0, Follow::Plain).is_some());
        assert!(
            follow_with(&plain, web_1, Follow::Counting(2)).is_some(),
            "a pod not followed holds no connection, so it does not count"
        );
    }
}
