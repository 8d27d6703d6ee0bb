//! The embedded propagation controller (KubeFed v2 compatible): federated objects in the host
//! cluster are placed, rendered per member cluster and applied there.
//!
//! Data flows one way: federated objects → [`placement`] → render (template + retained member
//! fields + overrides, [`render`]) → a per-cluster action ([`plan`]: create / update / delete /
//! leave, and what blocks finalizer removal) → per-cluster appliers ([`controller`]) →
//! [`status`]. The replica scheduler ([`scheduler`], around the pure [`planner`]) rewrites
//! placement and `/spec/replicas` overrides of its targets. [`members`] is how the Kubernetes
//! source hands over the member clusters (client, labels, readiness).
//!
//! Pure modules ([`placement`], [`render`], [`plan`], [`status`], [`planner`], [`types`]) hold
//! the logic and most tests; nothing in them touches a socket or a `kube::Client`.
//! [`controller`] and [`scheduler`] are the thin I/O shells, and they write only while this
//! replica holds the lease.

pub mod controller;
pub mod members;
pub mod placement;
pub mod plan;
pub mod planner;
pub mod queue;
pub mod render;
pub mod scheduler;
pub mod status;
pub mod types;
