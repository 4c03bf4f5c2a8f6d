//! The measured operator's requests, from the API server's audit log.

use std::{
    collections::HashMap,
    io::{BufRead, Read, Seek},
    path::PathBuf,
};

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use visitcounter::controller::visits::VISITS_FIELD_MANAGER;

use crate::peer::Peer;

/// The audit log from where it ended when this was made.
pub struct AuditLog {
    pub path: PathBuf,
    pub offset: u64,
    /// Where the stretch read ends (`so_far`); else it runs to the end.
    pub end: Option<u64>,
    /// Whose requests are counted.
    pub peer: Peer,
}

/// The operator's requests in a stretch of the audit log.
#[derive(Default)]
pub struct Requests {
    pub reads: usize,
    pub writes: usize,
    pub dry_runs: usize,
    /// Of `writes`: the visits poller's (its own field manager).
    pub visits_writes: usize,
    /// Every request by verb and resource (`patch statefulsets`,
    /// `patch visitcounterapps/status`, `create events`, ...).
    pub by_kind: std::collections::BTreeMap<String, usize>,
}

impl Requests {
    /// `by_kind` per app, most first: where the requests go.
    pub fn breakdown(&self, apps: usize) -> String {
        let mut kinds: Vec<_> = self.by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        kinds
            .iter()
            .map(|(kind, n)| format!("{kind} {:.2}", **n as f64 / apps as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A time for each app (`namespace/name`): when it was first seen
/// converged, or when its status was written (`status_written_at`).
pub type ConvergedAt = HashMap<String, Timestamp>;

/// The operator's writes to each app and its children (found by name: a
/// child's name is its app's, or starts with it and `-` or `.`), each app
/// counted only up to when it converged (its first status write, or when
/// the bench first saw it converged): the requests it took to converge,
/// apart from what the operator writes after that (the StatefulSet
/// controller's progress mirrored in the status).
#[derive(Default)]
pub struct PerApp {
    pub mean: f64,
    pub max: usize,
    /// Writes whose object names no app (shown, so that a name the audit
    /// log leaves out cannot hide a write).
    pub unattributed: usize,
}

/// The app of `apps` an audit event's `object` belongs to: the one its name
/// up to a first `.` names, or that name cut at its last `-`, again and
/// again (a child's name is its app's, or starts with it and `-` or `.`).
fn app_of<'a>(apps: &'a ConvergedAt, object: &Value) -> Option<(&'a String, &'a Timestamp)> {
    let namespace = object["namespace"].as_str().unwrap_or_default();
    let mut name = object["name"].as_str().unwrap_or_default();
    name = name.split('.').next().unwrap_or_default();
    loop {
        if let Some(found) = apps.get_key_value(&format!("{namespace}/{name}")) {
            return Some(found);
        }
        name = name.rsplit_once('-')?.0;
    }
}

/// When an audit event's request completed.
fn completed(event: &Value) -> Timestamp {
    event["stageTimestamp"].as_str().unwrap_or_default().parse().unwrap()
}

/// Whether `verb` on `uri` changes anything: not a read, not a dry run.
fn is_write(verb: &str, uri: &str) -> bool {
    !matches!(verb, "get" | "list" | "watch") && !uri.contains("dryRun=")
}

impl AuditLog {
    /// This stretch of the log as it stands now, to read later, when the
    /// parse does not fall into a timed wait: what is logged after this is
    /// left out.
    pub fn so_far(&self) -> AuditLog {
        AuditLog {
            path: self.path.clone(),
            offset: self.offset,
            end: Some(std::fs::metadata(&self.path).map_or(self.offset, |m| m.len())),
            peer: self.peer,
        }
    }

    /// Every audit event from `offset` to `end`, every stage.
    pub fn events(&self) -> impl Iterator<Item = Value> {
        let mut file = std::fs::File::open(&self.path).unwrap();
        file.seek(std::io::SeekFrom::Start(self.offset)).unwrap();
        let length = self.end.map_or(u64::MAX, |end| end.saturating_sub(self.offset));
        std::io::BufReader::new(file.take(length))
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
    }

    /// The measured operator's audit events, every stage.
    fn operator_events(&self) -> impl Iterator<Item = Value> {
        self.events()
            .filter(|event| event["userAgent"].as_str().is_some_and(|a| self.peer.is_agent(a)))
    }

    /// The writes to each app of `ends` (and to its children) up to the
    /// time `ends` gives it.
    pub fn writes_per_app_until(&self, ends: &ConvergedAt) -> PerApp {
        let mut writes: HashMap<&str, usize> = ends.keys().map(|k| (k.as_str(), 0)).collect();
        let mut unattributed = 0;
        for event in self.operator_writes() {
            let Some((key, end)) = app_of(ends, &event["objectRef"]) else {
                unattributed += 1;
                continue;
            };
            if completed(&event) <= *end {
                *writes.get_mut(key.as_str()).unwrap() += 1;
            }
        }
        PerApp {
            mean: writes.values().sum::<usize>() as f64 / writes.len().max(1) as f64,
            max: writes.values().copied().max().unwrap_or(0),
            unattributed,
        }
    }

    /// When the status of each app of `seen` (apps the bench's watch saw
    /// with their status written for their spec, `Goal::StatusWritten`)
    /// was written. For this operator, whose every status write names the
    /// generation it was made for, that is its first successful status
    /// write to the app, as long as the app was there before the operator
    /// started and the bench left its spec alone. That time is exact, where
    /// the watch sees the status later, after more writes once the API
    /// server is loaded (at 10,000 apps, the next status write, as the
    /// StatefulSet controller reports the first pod). The kopf peer also
    /// writes its progress to the status when a handler fails, so for it
    /// the watch's time stands.
    pub fn status_written_at(&self, seen: &ConvergedAt) -> ConvergedAt {
        if self.peer == Peer::Kopf {
            return seen.clone();
        }
        // The API server logs a request's completion after it answered, so
        // the last lines may follow the watch's news by a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let written = self.first_status_writes(seen);
            let missing = seen.keys().find(|key| !written.contains_key(*key));
            match missing {
                None => return written,
                Some(key) => assert!(
                    std::time::Instant::now() < deadline,
                    "{key} was seen with its status written, and the audit log holds no status write to it"
                ),
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// When the operator's first successful status write to each app of
    /// `apps` completed.
    fn first_status_writes(&self, apps: &ConvergedAt) -> ConvergedAt {
        let mut first = ConvergedAt::new();
        for event in self.operator_writes() {
            let object = &event["objectRef"];
            let succeeded = event["responseStatus"]["code"]
                .as_u64()
                .is_some_and(|code| (200..300).contains(&code));
            if object["subresource"] != "status" || !succeeded {
                continue;
            }
            if let Some((key, _)) = app_of(apps, object) {
                first.entry(key.clone()).or_insert_with(|| completed(&event));
            }
        }
        first
    }

    /// The measured operator's completed writes.
    fn operator_writes(&self) -> impl Iterator<Item = Value> {
        self.operator_events().filter(|event| {
            event["stage"] == "ResponseComplete"
                && is_write(
                    event["verb"].as_str().unwrap_or_default(),
                    event["requestURI"].as_str().unwrap_or_default(),
                )
        })
    }

    pub fn operator_requests(&self) -> Requests {
        let mut counted = Requests::default();
        for event in self.operator_events() {
            let verb = event["verb"].as_str().unwrap_or_default();
            // A watch is counted when it starts; every other request once done.
            let counted_stage = if verb == "watch" {
                "ResponseStarted"
            } else {
                "ResponseComplete"
            };
            if event["stage"] != counted_stage {
                continue;
            }
            let uri = event["requestURI"].as_str().unwrap_or_default();
            let object = &event["objectRef"];
            let mut kind = format!("{verb} {}", object["resource"].as_str().unwrap_or("?"));
            if let Some(sub) = object["subresource"].as_str() {
                kind = format!("{kind}/{sub}");
            }
            if uri.contains("dryRun=") {
                kind.push_str(" (dry run)");
            }
            *counted.by_kind.entry(kind).or_default() += 1;
            if is_write(verb, uri) {
                counted.writes += 1;
                if uri.contains(VISITS_FIELD_MANAGER) {
                    counted.visits_writes += 1;
                }
            } else if uri.contains("dryRun=") {
                counted.dry_runs += 1;
            } else {
                counted.reads += 1;
            }
        }
        counted
    }
}
