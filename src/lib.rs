//! fedns: cross-cluster DNS service discovery and propagation for federated Kubernetes.
//!
//! Two products share one binary and the Kubernetes plumbing:
//!
//! - **The authoritative DNS server.** Member objects → [`source`] (the directory tree or the
//!   Kubernetes watchers) → the normalized model and the single-writer engine of [`federation`]
//!   (names, health-aware record computation, CNAME fallback) → the pre-rendered record store of
//!   [`dns`] → the answer path and its UDP/TCP listeners.
//! - **The propagation controller.** Federated objects → [`propagation`] (placement, render, the
//!   per-cluster plan, the appliers, status) → member clusters; the replica scheduler rewrites
//!   placement.
//!
//! [`k8s`] holds what both use (the KubeFed object types and their CRDs, the Lease, what fedns writes
//! back to the host cluster); [`cli`] the management subcommands; [`app`], [`config`], [`admin`],
//! [`metrics`] and [`shutdown`] are the process shell that wires it all together.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod dns;
pub mod federation;
pub mod k8s;
pub mod metrics;
pub mod propagation;
pub mod shutdown;
pub mod source;
