//! The measured operator's requests, from the API server's audit log.

use std::{
    collections::HashMap,
    io::{BufRead, Seek},
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

/// When each app (`namespace/name`) was first seen converged.
pub type ConvergedAt = HashMap<String, Timestamp>;

/// The operator's writes to each app and its children (found by name: a
/// child's name is its app's, or starts with it and `-` or `.`), each app
/// counted only up to when it was first seen converged: the requests it
/// took to converge, apart from what the operator writes after that (the
/// StatefulSet controller's progress mirrored in the status).
#[derive(Default)]
pub struct PerApp {
    pub mean: f64,
    pub max: usize,
    /// Writes whose object names no app (shown, so that a name the audit
    /// log leaves out cannot hide a write).
    pub unattributed: usize,
}

/// Whether `verb` on `uri` changes anything: not a read, not a dry run.
fn is_write(verb: &str, uri: &str) -> bool {
    !matches!(verb, "get" | "list" | "watch") && !uri.contains("dryRun=")
}

impl AuditLog {
    /// Every audit event since `offset`, every stage.
    pub fn events(&self) -> impl Iterator<Item = Value> {
        let mut file = std::fs::File::open(&self.path).unwrap();
        file.seek(std::io::SeekFrom::Start(self.offset)).unwrap();
        std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
    }

    /// The measured operator's audit events, every stage.
    fn operator_events(&self) -> impl Iterator<Item = Value> {
        self.events()
            .filter(|event| event["userAgent"].as_str().is_some_and(|a| self.peer.is_agent(a)))
    }

    pub fn writes_per_app_until(&self, converged_at: &ConvergedAt) -> PerApp {
        let mut writes: HashMap<&str, usize> = converged_at.keys().map(|k| (k.as_str(), 0)).collect();
        let mut unattributed = 0;
        for event in self.operator_events().filter(|e| e["stage"] == "ResponseComplete") {
            let verb = event["verb"].as_str().unwrap_or_default();
            let uri = event["requestURI"].as_str().unwrap_or_default();
            if !is_write(verb, uri) {
                continue;
            }
            let object = &event["objectRef"];
            let namespace = object["namespace"].as_str().unwrap_or_default();
            let mut name = object["name"].as_str().unwrap_or_default();
            name = name.split('.').next().unwrap_or_default();
            let app = loop {
                let key = format!("{namespace}/{name}");
                if let Some((key, until)) = converged_at.get_key_value(&key) {
                    break Some((key, until));
                }
                match name.rsplit_once('-') {
                    Some((shorter, _)) => name = shorter,
                    None => break None,
                }
            };
            let Some((key, until)) = app else {
                unattributed += 1;
                continue;
            };
            let at: Timestamp = event["stageTimestamp"].as_str().unwrap_or_default().parse().unwrap();
            if at <= *until {
                *writes.get_mut(key.as_str()).unwrap() += 1;
            }
        }
        PerApp {
            mean: writes.values().sum::<usize>() as f64 / writes.len().max(1) as f64,
            max: writes.values().copied().max().unwrap_or(0),
            unattributed,
        }
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
