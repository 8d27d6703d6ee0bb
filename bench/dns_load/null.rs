//! The null responder: fedns's own UDP workers (same `SO_REUSEPORT` sockets, `recvmmsg`/`sendmmsg`
//! batching) answering every query with one pre-built reply, no parsing and no lookup. Its cost
//! per query is the kernel's and the transport's; fedns's cost over it is the answer path's.
//!
//! And the background burner of `--background`: a fixed duty cycle of CPU on the server's core.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fedns::dns::server::{Answerer, UdpWorkers};

use crate::federation::DOMAIN;

/// Answers everything with `reply`, its ID set to the query's.
struct Null {
    reply: Vec<u8>,
}

impl Answerer for Null {
    #[inline]
    fn answer(&mut self, packet: &[u8], _client: Option<IpAddr>, out: &mut Vec<u8>) -> bool {
        if packet.len() < 12 {
            return false;
        }
        out.clear();
        out.extend_from_slice(&self.reply);
        out[..2].copy_from_slice(&packet[..2]);
        true
    }
}

/// A NOERROR, authoritative reply to `<DOMAIN> SOA` holding its SOA (what the start-up probe waits
/// for), the size of a typical answer.
fn reply() -> Vec<u8> {
    let mut name = Vec::new();
    for label in DOMAIN.trim_end_matches('.').split('.') {
        name.push(label.len() as u8);
        name.extend_from_slice(label.as_bytes());
    }
    name.push(0);
    let mut out = vec![0, 0, 0x84, 0x00, 0, 1, 0, 1, 0, 0, 0, 0];
    out.extend_from_slice(&name);
    out.extend_from_slice(&[0, 6, 0, 1]);
    // Answer: owner = pointer to the question name, SOA IN, TTL 180.
    out.extend_from_slice(&[0xC0, 12, 0, 6, 0, 1, 0, 0, 0, 180]);
    let mut rdata = vec![0xC0, 12, 0xC0, 12];
    for v in [1u32, 3600, 600, 86400, 30] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(&rdata);
    out
}

/// Serves the null responder on `addr` with `workers` workers until the process is stopped.
pub fn serve(addr: SocketAddr, workers: usize) -> Result<()> {
    let reply = reply();
    let running = UdpWorkers::start_with(addr, workers, |_| Null {
        reply: reply.clone(),
    })
    .with_context(|| format!("binding {addr}"))?;
    println!("null responder on {}", running.local_addr);
    loop {
        std::thread::park();
    }
}

/// Burns `percent` of one core: busy for that share of every 10 ms, asleep for the rest.
pub fn burn(percent: u8) -> Result<()> {
    let period = Duration::from_millis(10);
    let busy = period * u32::from(percent.min(100)) / 100;
    loop {
        let started = Instant::now();
        while started.elapsed() < busy {
            std::hint::spin_loop();
        }
        if let Some(rest) = period.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}
