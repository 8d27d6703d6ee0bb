//! A blocking UDP DNS client shared by the benchmarks: hand-built queries (no EDNS, RD clear),
//! responses parsed with `hickory-proto` and matched to their query by id.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hickory_proto::op::Message;

/// Wire-format query for `name`.
fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut packet = Vec::with_capacity(name.len() + 18);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&1u16.to_be_bytes());
    packet
}

/// One UDP socket connected to one server.
#[derive(Debug)]
pub struct UdpClient {
    socket: UdpSocket,
    server: SocketAddr,
    next_id: u16,
    buffer: Vec<u8>,
}

impl UdpClient {
    pub fn new(server: SocketAddr) -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").context("binding the probe socket")?;
        socket.connect(server)?;
        Ok(Self {
            socket,
            server,
            next_id: 1,
            buffer: vec![0; 65_535],
        })
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// One query, waiting at most `timeout` for the matching response.
    pub fn query(&mut self, name: &str, qtype: u16, timeout: Duration) -> Result<Message> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        self.socket.send(&build_query(id, name, qtype))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "no answer from {} for {name} within {timeout:?}",
                    self.server
                );
            }
            self.socket.set_read_timeout(Some(left))?;
            let len = match self.socket.recv(&mut self.buffer) {
                Ok(len) => len,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e).context(format!("receiving from {}", self.server)),
            };
            let message = Message::from_vec(&self.buffer[..len])
                .with_context(|| format!("unparsable answer from {}", self.server))?;
            if message.metadata.id == id {
                return Ok(message);
            }
        }
    }
}
