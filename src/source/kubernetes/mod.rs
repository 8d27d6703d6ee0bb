//! The Kubernetes source: [`host`] watches the control-plane objects (Domains, records,
//! KubeFedClusters and their Secrets) and starts, per member, the watchers and health probe of
//! [`member`]; [`watch`] is the watch loop both use (relists, backoff, distrust of empty relists).
//! Only the KubeFedCluster conditions are written here (by the leader); member clusters are read-only.

pub mod host;
pub mod member;
pub mod watch;
