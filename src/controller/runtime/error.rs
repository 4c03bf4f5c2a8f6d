//! Why a reconcile failed: one variant per failure site, each with the label
//! that metrics, the `Degraded` condition's reason and the Event use.

use crate::{admission::Rejected, children::BuildError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stored spec breaks a rule of the CRD this operator was built with
    /// (possible when the installed CRD is older, or validation was bypassed).
    #[error("the spec is invalid; fix it and the operator carries on:\n{0}")]
    InvalidSpec(#[source] Rejected),

    #[error("cannot build the children: {0}")]
    Build(#[source] BuildError),

    /// The API server refused a child on a dry run, so nothing was changed.
    #[error("the API server refuses {kind} {name} as the spec asks for it, so no child was changed: {message}")]
    ChildRejected {
        kind: &'static str,
        name: String,
        message: String,
        #[source]
        source: Box<kube::Error>,
    },

    /// A child of the same name belongs to something else.
    #[error("{kind} {name} already exists and is controlled by {owner}; rename the app or remove that {kind}")]
    NotOwned {
        kind: &'static str,
        name: String,
        owner: String,
    },

    /// Children of the app's names exist that nothing controls, and the app
    /// does not say to take them over.
    #[error(
        "{objects} already exist and are not this app's (nothing controls them); to take them over, keeping the pods' \
         volume claims and the Services' node ports, annotate the app {annotation}=true (the StatefulSet is then deleted \
         with its pods and claims left, and created again as the app's), or rename the app"
    )]
    NotAdopted { objects: String, annotation: &'static str },

    /// A read past the caches failed: a child the caches do not hold (they
    /// see only what carries the app's labels), or a pod in the way.
    #[error("cannot read {kind} {name}: {source}")]
    Read {
        kind: &'static str,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("cannot apply {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    /// A write that rests on what the watch cache held was refused because
    /// the object changed since (its resourceVersion): the cache is behind,
    /// and the reconcile decides again once it caught up. Not a failure.
    #[error("{kind} {name} changed since the watch cache read it; deciding again on the newer one")]
    CacheBehind { kind: &'static str, name: String },

    /// `spec.traffic` on a cluster that serves no HTTPRoute.
    #[error(
        "spec.traffic needs the Gateway API, and this cluster serves no HTTPRoute (gateway.networking.k8s.io/v1): install the Gateway API CRDs (standard channel) or remove spec.traffic. Nothing else was changed"
    )]
    GatewayApiMissing,

    #[error("cannot re-create StatefulSet {name} (its pods and volume claims are kept): {source}")]
    Recreate {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    /// A claim's StorageClass cannot grow volumes, so `storage.size` cannot be
    /// raised; nothing was changed.
    #[error(
        "storage.size cannot grow to {size}: {}; the StatefulSet keeps its old claim template and no claim was changed. Set storage.size back, or have an administrator set allowVolumeExpansion: true on the class",
        claims.join("; ")
    )]
    VolumeExpansionNotAllowed { size: String, claims: Vec<String> },

    #[error("cannot grow the volume claims of {name} to {size}: {source}")]
    ExpandVolumes {
        name: String,
        size: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("cannot delete the stuck pod {pod}: {source}")]
    ReplaceStuckPod {
        pod: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("cannot delete pod {pod} for the Recreate: {source}")]
    DeletePod {
        pod: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("cannot delete {kind} {name}, which the spec no longer asks for: {source}")]
    DeleteLeftover {
        kind: &'static str,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("cannot delete StatefulSet {name}, which served before the blue/green switch: {source}")]
    DeleteStatefulSet {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("cannot write the status: {0}")]
    Status(#[source] Box<kube::Error>),

    #[error("cannot serialize {0}: {1}")]
    Serialize(&'static str, #[source] serde_json::Error),
}

impl Error {
    /// Short, stable label for metrics and the `Degraded` condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) | Error::Build(_) => "InvalidSpec",
            Error::ChildRejected { .. } => "ChildRejected",
            Error::NotOwned { .. } => "ChildNotOwned",
            Error::NotAdopted { .. } => "ChildNotAdopted",
            Error::Read { .. } => "ReadFailed",
            Error::Apply { .. } => "ApplyFailed",
            Error::CacheBehind { .. } => "CacheBehind",
            Error::GatewayApiMissing => "GatewayAPIMissing",
            Error::Recreate { .. } => "RecreateFailed",
            Error::VolumeExpansionNotAllowed { .. } => "VolumeExpansionNotAllowed",
            Error::ExpandVolumes { .. } => "ExpandVolumesFailed",
            Error::ReplaceStuckPod { .. } => "ReplaceStuckPodFailed",
            Error::DeletePod { .. } => "DeletePodFailed",
            Error::DeleteStatefulSet { .. } => "DeleteStatefulSetFailed",
            Error::DeleteLeftover { .. } => "DeleteLeftoverFailed",
            Error::Status(_) => "StatusUpdateFailed",
            Error::Serialize(..) => "InternalError",
        }
    }

    /// Whether the reconcile only read a cache that is behind: it is retried
    /// soon, and not reported as a failure.
    pub fn cache_behind(&self) -> bool {
        matches!(self, Error::CacheBehind { .. })
    }

    /// Whether the app is stuck until someone changes something: its spec, or
    /// the object in the way. Still retried, but kstatus reads it as failed.
    pub fn stalls(&self) -> bool {
        matches!(
            self,
            Error::InvalidSpec(_)
                | Error::Build(_)
                | Error::ChildRejected { .. }
                | Error::NotOwned { .. }
                | Error::NotAdopted { .. }
                | Error::VolumeExpansionNotAllowed { .. }
                | Error::GatewayApiMissing
        )
    }

    /// Whether retrying without a change to the app cannot help.
    pub fn needs_spec_change(&self) -> bool {
        matches!(self, Error::InvalidSpec(_) | Error::Build(_))
    }
}

/// Whether the API server refused a request for what it said (400, 409
/// conflict of fields, 422) rather than failing to handle it.
pub fn is_refusal(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if matches!(status.code, 400 | 403 | 409 | 422))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_read_past_the_caches_says_what_it_read_and_is_retried() {
        let status = kube::core::Status::failure("etcdserver: request timed out", "InternalError").with_code(500);
        let error = Error::Read {
            kind: "StatefulSet",
            name: "app-python".into(),
            source: Box::new(kube::Error::Api(Box::new(status))),
        };
        assert_eq!(error.reason(), "ReadFailed");
        assert!(
            error.to_string().starts_with("cannot read StatefulSet app-python: "),
            "{error}"
        );
        assert!(!error.stalls() && !error.needs_spec_change());
    }
}
