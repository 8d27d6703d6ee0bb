//! The DNS protocol side: the wire format ([`wire`]), the record store of pre-rendered answers
//! ([`store`]), the answer path ([`responder`]), the
//! per-client variants of a name ([`variants`]), the UDP/TCP listeners ([`server`]) and static zone
//! files ([`zonefile`]); zone transfers, NOTIFY and TSIG ([`xfr`], [`tsig`]).
//!
//! This layer knows nothing of Kubernetes or of how records are computed: it serves what the
//! [`crate::federation::engine`] publishes into the store. The answer path takes no lock beyond one
//! map read, allocates nothing and logs nothing per query.

pub mod masterfile;
pub mod rdata_text;
pub mod responder;
pub mod rrl;
pub mod server;
pub mod store;
pub mod tsig;
pub mod variants;
pub mod wire;
pub mod xfr;
pub mod zonefile;
