//! The controller's settings, from the operator's flags.

use std::time::Duration;

use crate::children::BuildSettings;

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// Namespace to watch; all when `None`.
    pub namespace: Option<String>,
    /// Apps reconciled at once.
    pub concurrency: u16,
    /// Every app is reconciled again this long after its last reconcile.
    pub resync: Duration,
    pub build: BuildSettings,
    /// This replica's name in Events (its pod name).
    pub instance: Option<String>,
    /// How often each app's pods are asked for their visits; never when `None`.
    pub visits_interval: Option<Duration>,
    /// How long a pod may stay not ready, during a rollout, before the rollout
    /// counts as stuck (see `observe::stuck_pods`).
    pub stuck_after: Duration,
    /// Reconcile requests within this window after the last one for an app
    /// are merged into one.
    pub debounce: Duration,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            namespace: None,
            concurrency: 4,
            resync: Duration::from_secs(300),
            build: BuildSettings::default(),
            instance: None,
            visits_interval: Some(Duration::from_secs(30)),
            stuck_after: Duration::from_secs(300),
            debounce: Duration::ZERO,
        }
    }
}
