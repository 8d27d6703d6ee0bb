//! The embedded propagation controller (KubeFed v2 compatible): federated objects in the host
//! cluster are placed, rendered per member cluster and applied there.
//!
//! Data flows one way: Federated objects → [`placement`] → render (template + retained member
//! fields + overrides, [`render`]) → a per-cluster plan (create / update / delete, [`render`]'s
//! update decision) → per-cluster appliers ([`controller`]) → status. The replica scheduler
//! ([`planner`]) rewrites placement and `/spec/replicas` overrides of its targets. Pure modules hold
//! the logic and most tests; [`controller`] is the thin I/O shell, and it writes only while this
//! replica holds the lease.

pub mod members;
pub mod planner;
pub mod scheduler;
pub mod types;
