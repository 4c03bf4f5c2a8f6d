//! visitcounter: a Kubernetes operator that runs visit-counter web apps as StatefulSets.

pub mod admission;
pub mod build;
pub mod crd;
pub mod resource;
