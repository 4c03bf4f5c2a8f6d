//! visitcounter: a Kubernetes operator that runs visit-counter web apps as StatefulSets.
//!
//! The pipeline for one `VisitCounterApp` is
//! `admission (validate + default) -> build (pure) -> plan (pure) -> apply (I/O) -> status`.
//! Everything up to and including `build` needs no cluster, which is what
//! `visitcounter render` uses to print the children offline.

pub mod admission;
pub mod build;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod operator;
pub mod render;
pub mod resource;
pub mod serve;
