//! A blocking UDP DNS client for polling one name: hand-built A queries, answers parsed with
//! `hickory-proto` and reduced to their [`Shape`].

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hickory_proto::op::Message;
use hickory_proto::rr::RData;

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

/// A wire-format A query for `name` (no EDNS, RD clear).
fn build_query(id: u16, name: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(name.len() + 18);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    packet
}

#[derive(Debug)]
pub struct Probe {
    socket: UdpSocket,
    next_id: u16,
    buffer: Vec<u8>,
}

impl Probe {
    pub fn new(server: SocketAddr) -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").context("binding the probe socket")?;
        socket.connect(server)?;
        Ok(Self {
            socket,
            next_id: 1,
            buffer: vec![0; 65_535],
        })
    }

    /// One A query, waiting at most `timeout` for its response.
    pub fn shape(&mut self, name: &str, timeout: Duration) -> Shape {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        if self.socket.send(&build_query(id, name)).is_err() {
            return Shape::Lost;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.socket.set_read_timeout(Some(left)).is_err() {
                return Shape::Lost;
            }
            let Ok(len) = self.socket.recv(&mut self.buffer) else {
                continue;
            };
            let Ok(message) = Message::from_vec(&self.buffer[..len]) else {
                continue;
            };
            if message.metadata.id != id {
                continue;
            }
            let rcode = u16::from(message.metadata.response_code);
            return match message.answers.first().map(|r| &r.data) {
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
            };
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
