//! What every part of the controller stands on, and which decides nothing
//! about an app: the settings, the watch caches of the children, the
//! watches that fill them, the metrics and the error type.

pub mod backoff;
pub mod cache;
pub mod compact;
pub mod diff;
pub mod error;
pub mod metrics;
pub mod open_files;
pub mod settings;
pub mod slim_pod;
pub mod store;
pub mod watch;

/// The field manager of every write, and the Events' reporting controller.
pub const FIELD_MANAGER: &str = "visitcounter-operator";
