//! NOTIFY (RFC 1996) to the configured secondaries after each published change: at most one per
//! zone and secondary per `--notify-interval` (changes in between are coalesced into the next),
//! retried with backoff until acknowledged, signed with the entry's TSIG key when it names one,
//! sent from `transfer.notifySource`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::Transfers;
use crate::dns::tsig;
use crate::dns::wire::{self, rtype};
use crate::shutdown::Shutdown;

/// First retry after this long without an answer; doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// The NOTIFY opcode.
const OPCODE_NOTIFY: u16 = 4;

/// Where one (secondary, zone) pair stands.
#[derive(Debug)]
struct Pending {
    zone: Arc<super::ZoneCopy>,
    /// The serial acknowledged last.
    acked: Option<u32>,
    /// The NOTIFY in flight: its id, serial, request MAC, when it was sent.
    in_flight: Option<(u16, u32, Option<Vec<u8>>)>,
    /// When to send next; `None`: nothing to send.
    due: Option<Instant>,
    last_sent: Option<Instant>,
    retry: Duration,
}

/// Builds a NOTIFY for `copy` (question: the apex SOA; answer: the SOA with the new serial).
pub fn message(id: u16, copy: &super::ZoneCopy) -> Vec<u8> {
    let mut out = vec![0u8; wire::HEADER_LEN];
    out[0..2].copy_from_slice(&id.to_be_bytes());
    out[2..4].copy_from_slice(&((OPCODE_NOTIFY << 11) | 0x0400).to_be_bytes());
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..8].copy_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(copy.zone.key());
    out.extend_from_slice(&rtype::SOA.to_be_bytes());
    out.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
    out.extend_from_slice(&[0xC0, wire::QNAME_OFFSET as u8]);
    out.extend_from_slice(&rtype::SOA.to_be_bytes());
    out.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
    let soa = &copy.zone.soa;
    out.extend_from_slice(&soa.ttl.to_be_bytes());
    let mut rdata = Vec::new();
    crate::dns::store::push_name(&mut rdata, &soa.mname);
    crate::dns::store::push_name(&mut rdata, &soa.rname);
    for v in [copy.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(&rdata);
    out
}

async fn bind(source: Option<SocketAddr>, v6: bool) -> std::io::Result<UdpSocket> {
    let addr = match source {
        Some(s) if s.is_ipv6() == v6 => s,
        _ if v6 => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        _ => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    };
    UdpSocket::bind(addr).await
}

/// Sends NOTIFYs until `stop`. Does nothing without `transfer.notify` entries.
pub async fn run(transfers: Arc<Transfers>, stop: Shutdown) {
    let targets = transfers.config.notify.clone();
    if targets.is_empty() {
        return;
    }
    let source = transfers.config.notify_source;
    let (v4, v6) = (
        bind(source, false).await.ok(),
        bind(source, true).await.ok(),
    );
    if v4.is_none() && v6.is_none() {
        tracing::error!(source = ?source, "cannot bind a socket to send NOTIFY from");
        return;
    }
    let interval = transfers.config.notify_interval;
    let mut commits = transfers.subscribe();
    // (target index, zone key) → state.
    let mut pending: HashMap<(usize, Box<[u8]>), Pending> = HashMap::new();
    let mut next_id: u16 = (tsig::now() as u16).wrapping_mul(40503);
    let mut buf = vec![0u8; 4096];
    let mut buf6 = vec![0u8; 4096];
    let mut changed = true;
    loop {
        if changed {
            changed = false;
            let now = Instant::now();
            for copy in transfers.copies() {
                for (i, _) in targets.iter().enumerate() {
                    let p = pending
                        .entry((i, copy.zone.key().into()))
                        .or_insert_with(|| Pending {
                            zone: copy.clone(),
                            acked: None,
                            in_flight: None,
                            due: None,
                            last_sent: None,
                            retry: FIRST_RETRY,
                        });
                    let newer = p.acked != Some(copy.serial)
                        && p.in_flight.as_ref().is_none_or(|f| f.1 != copy.serial);
                    p.zone = copy.clone();
                    if newer {
                        // Coalesced: at most one NOTIFY per interval.
                        let earliest = p.last_sent.map_or(now, |t| t + interval);
                        p.due = Some(earliest.max(now));
                        p.retry = FIRST_RETRY;
                    }
                }
            }
        }
        // Send what is due.
        let now = Instant::now();
        for ((i, _), p) in pending.iter_mut() {
            if p.due.is_none_or(|d| d > now) {
                continue;
            }
            let target = &targets[*i];
            let socket = if target.address.is_ipv6() { &v6 } else { &v4 };
            let Some(socket) = socket else {
                continue;
            };
            if let Some((_, serial, _)) = &p.in_flight
                && *serial == p.zone.serial
            {
                transfers
                    .metrics
                    .notify_sent
                    .with_label_values(&["timeout"])
                    .inc();
            }
            next_id = next_id.wrapping_add(1);
            let mut msg = message(next_id, &p.zone);
            let mac = target
                .key
                .map(|k| tsig::sign_request(&mut msg, &transfers.config.keys[k], tsig::now()));
            match socket.send_to(&msg, target.address).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, secondary = %target.address, "NOTIFY send failed");
                    transfers
                        .metrics
                        .notify_sent
                        .with_label_values(&["error"])
                        .inc();
                }
            }
            p.in_flight = Some((next_id, p.zone.serial, mac));
            p.last_sent = Some(now);
            p.due = Some(now + p.retry);
            p.retry = (p.retry * 2).min(MAX_RETRY);
        }
        let wake = pending.values().filter_map(|p| p.due).min();
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.wait() => return,
            r = commits.changed() => {
                if r.is_err() {
                    return;
                }
                changed = true;
            }
            () = sleep => {}
            r = recv(&v4, &mut buf) => {
                if let Ok((n, from)) = r {
                    acknowledge(&transfers, &targets, &mut pending, &buf[..n], from);
                }
            }
            r = recv(&v6, &mut buf6) => {
                if let Ok((n, from)) = r {
                    acknowledge(&transfers, &targets, &mut pending, &buf6[..n], from);
                }
            }
        }
    }
}

async fn recv(socket: &Option<UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Matches a reply to the NOTIFY in flight it answers.
fn acknowledge(
    transfers: &Transfers,
    targets: &[super::config::NotifyTarget],
    pending: &mut HashMap<(usize, Box<[u8]>), Pending>,
    reply: &[u8],
    from: SocketAddr,
) {
    if reply.len() < wire::HEADER_LEN || reply[2] & 0x80 == 0 {
        return;
    }
    let id = u16::from_be_bytes([reply[0], reply[1]]);
    let opcode = (u16::from_be_bytes([reply[2], reply[3]]) >> 11) & 0xF;
    let rc = reply[3] & 0x0F;
    for ((i, _), p) in pending.iter_mut() {
        let target = &targets[*i];
        if target.address != from {
            continue;
        }
        let Some((sent_id, serial, mac)) = &p.in_flight else {
            continue;
        };
        if *sent_id != id || opcode != OPCODE_NOTIFY {
            continue;
        }
        let key = target.key.map(|k| &transfers.config.keys[k]);
        let verified = match (key, mac) {
            (Some(key), Some(mac)) => tsig::verify_response(reply, key, mac),
            _ => true,
        };
        let zone = p.zone.zone.apex.to_ascii();
        let serial = *serial;
        if rc == 0 && verified {
            transfers
                .metrics
                .notify_sent
                .with_label_values(&["acked"])
                .inc();
            p.acked = Some(serial);
            p.in_flight = None;
            p.retry = FIRST_RETRY;
            // A newer serial committed meanwhile is still due.
            if p.zone.serial == serial {
                p.due = None;
            }
            transfers.note_peer(from.ip(), |s| {
                s.last_notify = Some((zone, serial, "acked".into(), tsig::now()));
            });
        } else {
            let why = if verified {
                format!("NOTIFY answered with rcode {rc}")
            } else {
                "NOTIFY answer failed TSIG verification".into()
            };
            transfers
                .metrics
                .notify_sent
                .with_label_values(&["error"])
                .inc();
            transfers.note_peer(from.ip(), |s| {
                s.last_notify = Some((zone, serial, "error".into(), tsig::now()));
                s.last_error = Some(why);
            });
        }
        return;
    }
}
