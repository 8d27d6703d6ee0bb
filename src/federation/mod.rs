//! The federation model and the record computation: what a name answers and why.
//!
//! [`model`] holds the normalized objects (Domains, records, per-cluster member objects),
//! [`naming`] the federation names and label validation, [`records`] the pure computation of
//! health-aware record sets with CNAME fallback and TTL rules, [`engine`] the single writer that
//! applies source events and publishes into the [`crate::dns::store`], [`explain`] the text of
//! `fedns explain`, [`locality`] the client locations and the
//! per-client strategies of global names, [`geoip`] the GeoIP database read into the location
//! table at startup, [`hostnames`] the background resolution of load-balancer hostnames, and
//! [`worker`] the engine's own thread (its input channel, published view and queries).
//!
//! Nothing here but [`geoip`] (reading its file, once), [`hostnames`] and [`worker`] does I/O or
//! starts threads: no socket, no
//! `kube::Client`, no spawned task in `model`, `naming`, `records`, `engine` or `explain`.

pub mod engine;
pub mod explain;
pub mod geoip;
pub mod hostnames;
pub mod locality;
pub mod model;
pub mod naming;
pub mod records;
pub mod worker;
