//! The update strategies: how a changed pod template reaches the pods.
//! Each strategy is a file of its own here, after Argo Rollouts' `rollout/`
//! package. Today that is the StatefulSet's own rolling update, with the
//! partition and the canary the operator holds it at ([`rolling`]);
//! `OnDelete` is the StatefulSet's too, and needs nothing from the
//! operator. The strategies that the operator drives itself land here.

pub mod rolling;
