//! The controller. For one `VisitCounterApp` a reconcile runs
//! `validate -> build -> plan -> apply -> observe -> status`:
//!
//! - validate (pure, [`reconcile::desired`]): the CRD's own rules, for
//!   objects stored before them;
//! - build (pure, `crate::children`): the desired children, in the order
//!   they are written ([`reconcile::desired::desired`] states it);
//! - plan (pure, [`reconcile::plan`]): each child against its cached live
//!   object;
//! - apply (I/O, [`reconcile::write`]): server-side apply of each child that
//!   changed, in that order, undoing this reconcile's creations when a later
//!   write is refused;
//! - observe ([`observe`]): the pods that block a rollout, pods the
//!   StatefulSet controller cannot create, old ConfigMaps no revision needs;
//! - status (pure computation in [`status`], one write when it changed,
//!   [`reconcile::report`]).
//!
//! The rooms, each depending only on those before it: [`runtime`] (settings,
//! caches, watches, metrics, errors), [`status`], [`observe`], [`rollout`]
//! (the update strategies), [`reconcile`], [`wake`] (which changes wake a
//! reconcile), and [`run`], which wires them together. Children are read from watch caches, never fetched, so a
//! converged app costs no request on a resync.

pub mod observe;
pub mod reconcile;
pub mod rollout;
mod run;
pub mod runtime;
pub mod status;
pub mod text;
pub mod wake;

pub use observe::visits;
pub use run::run;
pub use runtime::{FIELD_MANAGER, error::Error, metrics::Metrics, settings::ControllerSettings};
