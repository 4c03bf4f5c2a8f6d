//! visitcounter: a Kubernetes operator that runs visit-counter web apps as StatefulSets.

pub mod crd;
pub mod resource;
