//! visitcounter: a Kubernetes operator that runs visit-counter web apps as StatefulSets.

pub mod build;
pub mod crd;
pub mod resource;
