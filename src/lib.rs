//! fedns: cross-cluster DNS service discovery for federated Kubernetes.
//!
//! Data flows one way: sources ([`source`]) → normalized model ([`model`]) → the single-writer
//! [`engine`] (record computation in [`records`], names in [`naming`]) → the [`store`] of pre-rendered
//! answers → the answer path ([`responder`], driven by the sockets in [`server`]).

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod corefile;
pub mod crd;
pub mod engine;
pub mod explain;
pub mod hostnames;
pub mod lease;
pub mod metrics;
pub mod model;
pub mod naming;
pub mod propagation;
pub mod records;
pub mod responder;
pub mod server;
pub mod shutdown;
pub mod source;
pub mod status;
pub mod store;
pub mod wire;
pub mod zonefile;
