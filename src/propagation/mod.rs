//! The embedded propagation controller (KubeFed v2 compatible): federated objects in the host
//! cluster are placed, rendered per member cluster and applied there.
//!
//! Data flows one way: Federated objects → [`placement`] → render (template + retained member
//! fields + overrides, [`render`]) → a per-cluster plan (create / update / delete, [`render`]'s
//! update decision) → per-cluster appliers ([`controller`]) → [`status`]. The replica scheduler
//! ([`scheduler`], around the pure [`planner`]) rewrites placement and `/spec/replicas` overrides
//! of its targets. Pure modules hold the logic and most tests; [`controller`] and [`scheduler`]
//! are the thin I/O shells, and they write only while this replica holds the lease.

pub mod controller;
pub mod members;
pub mod placement;
pub mod planner;
pub mod queue;
pub mod render;
pub mod scheduler;
pub mod status;
pub mod types;
