//! The Kubernetes plumbing both products share.
//!
//! [`crd`] holds the KubeFed object shapes fedns reads (`Domain`, `ServiceDNSRecord`,
//! `IngressDNSRecord`, `KubeFedCluster`) and writes (`DNSEndpoint`, record status); [`lease`] the
//! Lease-based leader election that decides which replica writes; [`record_status`] computes, purely,
//! the status and DNSEndpoints written back for DNS records, and [`status_writer`] is the one task
//! that writes them (only while leading). Nothing here writes to a member cluster.

pub mod crd;
pub mod lease;
pub mod record_status;
pub mod status_writer;
