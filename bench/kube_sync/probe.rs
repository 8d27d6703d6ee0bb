//! A blocking UDP DNS client for polling one name: hand-built A queries, answers parsed with
//! `hickory-proto` and reduced to their [`Shape`].

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Result;
use hickory_proto::rr::RData;

use crate::udp_client::UdpClient;

/// What an A query for a name answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// NOERROR with A records first (sorted).
    Addresses(Vec<Ipv4Addr>),
    /// NOERROR starting with a CNAME to this target.
    Cname(String),
    /// Any other rcode (2 SERVFAIL, 3 NXDOMAIN, …), or NOERROR without an answer (0).
    Rcode(u16),
    /// No answer within the timeout.
    Lost,
}

impl Shape {
    pub fn is_addresses(&self) -> bool {
        matches!(self, Shape::Addresses(_))
    }

    pub fn is_cname(&self) -> bool {
        matches!(self, Shape::Cname(_))
    }
}

#[derive(Debug)]
pub struct Probe {
    client: UdpClient,
}

impl Probe {
    pub fn new(server: SocketAddr) -> Result<Self> {
        Ok(Self {
            client: UdpClient::new(server)?,
        })
    }

    /// One A query, waiting at most `timeout` for its response.
    pub fn shape(&mut self, name: &str, timeout: Duration) -> Shape {
        let Ok(message) = self.client.query(name, 1, timeout) else {
            return Shape::Lost;
        };
        let rcode = u16::from(message.metadata.response_code);
        match message.answers.first().map(|r| &r.data) {
            _ if rcode != 0 => Shape::Rcode(rcode),
            Some(RData::CNAME(target)) => Shape::Cname(target.0.to_ascii()),
            Some(RData::A(_)) => {
                let mut addresses: Vec<Ipv4Addr> = message
                    .answers
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(a.0),
                        _ => None,
                    })
                    .collect();
                addresses.sort_unstable();
                Shape::Addresses(addresses)
            }
            _ => Shape::Rcode(0),
        }
    }

    /// Polls `name` every `every` until `want` holds or `limit` passes; the time it took.
    pub fn until(
        &mut self,
        name: &str,
        limit: Duration,
        every: Duration,
        want: impl Fn(&Shape) -> bool,
    ) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if want(&self.shape(name, Duration::from_millis(200))) {
                return Some(started.elapsed());
            }
            std::thread::sleep(every);
        }
        None
    }
}
