//! What the operator reads from the cluster beyond its own children: the
//! pods (their readiness and revision, the one that blocks a rollout, the
//! ones that crash and restart, the visits each has counted) and why the
//! StatefulSet controller cannot create pods. Each decision here is a pure
//! function; the few reads are beside them.

pub mod crash_loops;
pub mod follow;
pub mod pod_creation;
pub mod pod_http;
pub mod pods;
pub mod quiet;
pub mod rest;
pub mod retained;
pub mod stuck_pods;
pub mod unanswered;
pub mod visits;
