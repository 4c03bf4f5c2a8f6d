//! visitcounter: a Kubernetes operator that runs visit-counter web apps as StatefulSets.
//!
//! The pipeline for one `VisitCounterApp` is
//! `admission (validate + default) -> children (build, pure) -> plan (pure) -> apply (I/O) -> observe -> status`:
//! [`admission`] checks the spec as the API server does, [`children`] builds
//! the objects the operator keeps, and [`controller`] plans, writes, looks at
//! the pods and writes the status. Everything up to and including
//! `children` needs no cluster, which is what `visitcounter render` uses to
//! print the children offline.

pub mod admission;
pub mod adopt;
pub mod children;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod operator;
pub mod render;
pub mod resource;
pub mod serve;
