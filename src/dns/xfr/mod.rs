//! Zone transfers: fedns as the hidden primary of its zones. AXFR (RFC 5936) and IXFR (RFC 1995)
//! over TCP from a copy of each zone taken at each serial (so a transfer is consistent even while
//! the engine publishes), a bounded journal of per-serial deltas for IXFR, the `transfer.allow`
//! ACL, and TSIG (RFC 8945) on requests and answers. NOTIFY is in [`notify`].
//!
//! None of this is on the answer path: the engine commits a copy when it gives a zone a new serial
//! (at most once a second per zone), and the listeners call in here only for AXFR/IXFR and for
//! TSIG-signed queries.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::dns::store::{self, RecordStore, Snapshot, Zone};
use crate::dns::tsig::{self, Key, ResponseSigner};
use crate::dns::wire::{self, rcode, rtype};
use crate::metrics::Metrics;

pub mod config;
pub mod notify;

pub use config::TransferConfig;

/// Largest transfer message; room for the TSIG is kept below it.
const MAX_MESSAGE: usize = 65_535;
/// Journal bytes kept per zone at most, whatever its depth in changes.
const JOURNAL_BYTES: usize = 64 << 20;

/// A name, its old entry and its new one (empty: absent).
type NameChange = (Box<[u8]>, Box<[u8]>, Box<[u8]>);

/// A zone's content at one serial: the store snapshot published with that serial (immutable,
/// and sharing every shard that did not change since with the snapshots after it, so keeping
/// it costs only what changed).
#[derive(Debug)]
pub struct ZoneCopy {
    pub zone: Arc<Zone>,
    pub serial: u32,
    snapshot: Arc<Snapshot>,
}

impl ZoneCopy {
    /// Whether `key` is a name of this zone (not of a zone below it) in `snapshot`.
    fn holds(&self, snapshot: &Snapshot, key: &[u8]) -> bool {
        snapshot
            .zones()
            .find(key)
            .is_some_and(|z| z.key() == self.zone.key())
    }

    /// Every non-empty name of the zone and its entry, sorted by key (for AXFR).
    fn names(&self) -> Vec<(&[u8], &[u8])> {
        let mut names = Vec::new();
        self.snapshot.for_each(|key, entry| {
            if !entry.is_empty() && self.holds(&self.snapshot, key) {
                names.push((key, entry));
            }
        });
        names.sort_unstable_by(|a, b| a.0.cmp(b.0));
        names
    }
}

/// What changed from one serial to the next: names whose entry changed, old and new.
#[derive(Debug)]
struct Delta {
    from: u32,
    to: u32,
    /// (name key, old entry or empty, new entry or empty)
    names: Vec<NameChange>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct ZoneState {
    copy: Option<Arc<ZoneCopy>>,
    journal: VecDeque<Arc<Delta>>,
    journal_bytes: usize,
}

/// What one secondary last did, for `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// Last transfer: zone, kind (axfr, ixfr), serial, Unix time.
    pub last_transfer: Option<(String, String, u32, u64)>,
    /// Last NOTIFY: zone, serial, result, Unix time.
    pub last_notify: Option<(String, u32, String, u64)>,
    pub last_error: Option<String>,
}

impl std::fmt::Display for PeerStatus {
    /// One line, the same in `/status` and `fedns explain`: last transfer, last NOTIFY, last
    /// error (times are Unix seconds).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some((zone, kind, serial, at)) = &self.last_transfer {
            parts.push(format!(
                "last transfer {kind} {zone} serial {serial} at {at}"
            ));
        }
        if let Some((zone, serial, result, at)) = &self.last_notify {
            parts.push(format!(
                "last NOTIFY {zone} serial {serial} {result} at {at}"
            ));
        }
        if let Some(e) = &self.last_error {
            parts.push(format!("error: {e}"));
        }
        if parts.is_empty() {
            parts.push("no transfer or NOTIFY yet".into());
        }
        f.write_str(&parts.join("; "))
    }
}

/// The transfer side of the server: zone copies, journals, the ACL and keys.
#[derive(Debug)]
pub struct Transfers {
    pub config: TransferConfig,
    zones: Mutex<BTreeMap<Box<[u8]>, ZoneState>>,
    /// Bumped at each commit: the notifier waits on it.
    committed: tokio::sync::watch::Sender<u64>,
    metrics: Metrics,
    peers: Mutex<BTreeMap<IpAddr, PeerStatus>>,
}

impl Transfers {
    pub fn new(config: TransferConfig, metrics: Metrics) -> Self {
        Self {
            config,
            zones: Mutex::default(),
            committed: tokio::sync::watch::Sender::new(0),
            metrics,
            peers: Mutex::default(),
        }
    }

    /// Waits for commits (see [`notify`]).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// The current copy of every zone.
    pub fn copies(&self) -> Vec<Arc<ZoneCopy>> {
        let zones = self.zones.lock().unwrap_or_else(|e| e.into_inner());
        zones.values().filter_map(|z| z.copy.clone()).collect()
    }

    /// What each secondary last did.
    pub fn peers(&self) -> BTreeMap<IpAddr, PeerStatus> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every secondary: the `transfer.notify` targets (also those that did nothing yet) and
    /// every address that transferred or was refused, with what it last did.
    pub fn secondaries(&self) -> Vec<(IpAddr, PeerStatus)> {
        let mut all = self.peers();
        for target in &self.config.notify {
            all.entry(target.address.ip()).or_default();
        }
        all.into_iter().collect()
    }

    pub(crate) fn note_peer(&self, peer: IpAddr, f: impl FnOnce(&mut PeerStatus)) {
        f(self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(peer)
            .or_default());
    }

    /// Called by the engine after a flush (and after the store published it): takes the
    /// published snapshot as the copy of each zone whose serial changed (and of any zone not
    /// copied yet), journals the difference, and drops zones no longer served. Costs what
    /// changed, not the size of the zones.
    pub fn commit(&self, store: &RecordStore, renumbered: &[Arc<Zone>]) {
        let table = store.zones();
        let mut zones = self.zones.lock().unwrap_or_else(|e| e.into_inner());
        zones.retain(|key, _| table.iter().any(|z| *z.key() == **key));
        let due: Vec<Arc<Zone>> = table
            .iter()
            .filter(|z| {
                let copy = zones.get(z.key()).and_then(|s| s.copy.as_ref());
                renumbered.iter().any(|r| Arc::ptr_eq(r, z))
                    || copy.is_none_or(|c| !Arc::ptr_eq(&c.zone, z) || c.serial != z.serial())
            })
            .cloned()
            .collect();
        if due.is_empty() {
            return;
        }
        let snapshot = arc_swap::Guard::into_inner(store.snapshot());
        for zone in due {
            let copy = Arc::new(ZoneCopy {
                serial: zone.serial(),
                zone: zone.clone(),
                snapshot: snapshot.clone(),
            });
            let state = zones.entry(zone.key().into()).or_default();
            if let Some(old) = &state.copy
                && old.serial != copy.serial
            {
                let delta = diff(old, &copy);
                state.journal_bytes += delta.bytes;
                state.journal.push_back(Arc::new(delta));
                while state.journal.len() > self.config.journal
                    || (state.journal_bytes > JOURNAL_BYTES && !state.journal.is_empty())
                {
                    if let Some(d) = state.journal.pop_front() {
                        state.journal_bytes -= d.bytes;
                    }
                }
            }
            state.copy = Some(copy);
        }
        drop(zones);
        self.committed.send_modify(|n| *n += 1);
    }

    fn copy_and_journal(&self, zone_key: &[u8]) -> Option<(Arc<ZoneCopy>, Vec<Arc<Delta>>)> {
        let zones = self.zones.lock().unwrap_or_else(|e| e.into_inner());
        let state = zones.get(zone_key)?;
        Some((state.copy.clone()?, state.journal.iter().cloned().collect()))
    }

    /// Whether `peer`, having verified `key` (or none), may transfer.
    fn allowed(&self, peer: IpAddr, key: Option<&Key>) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.config.allow.iter().any(|rule| {
            rule.network.contains(peer)
                && match rule.key {
                    None => true,
                    Some(i) => key.is_some_and(|k| std::ptr::eq(k, &self.config.keys[i])),
                }
        })
    }

    fn count(&self, kind: &str, result: &str) {
        self.metrics
            .xfr_requests
            .with_label_values(&[kind, result])
            .inc();
    }

    /// Answers an AXFR or IXFR request received over TCP: the messages to send, in order.
    /// `None` when `packet` is not one (the normal answer path answers it).
    pub fn answer_transfer(&self, packet: &[u8], peer: IpAddr) -> Option<Vec<Vec<u8>>> {
        let query = wire::parse_query(packet).ok()?;
        let kind = match query.qtype {
            rtype::AXFR => "axfr",
            rtype::IXFR => "ixfr",
            _ => return None,
        };
        let request = Request::of(packet, &query);
        let signed = match self.check_signature(packet, &request) {
            Ok(signed) => signed,
            Err(response) => {
                self.count(kind, "notauth");
                return Some(vec![response]);
            }
        };
        let key = signed.as_ref().map(|s| s.0);
        let mut key_buf = [0u8; wire::MAX_NAME_WIRE];
        let qkey = wire::lowercase_into(query.qname, &mut key_buf);
        let copy = self.copy_and_journal(qkey);
        let refused = |why: &str| {
            self.count(kind, "refused");
            self.note_peer(peer, |p| p.last_error = Some(why.into()));
            let mut out = request.header_and_question(rcode::REFUSED);
            if let Some((key, mac)) = &signed {
                ResponseSigner::new(key, mac, tsig::now()).sign(&mut out, 0, &[]);
            }
            Some(vec![out])
        };
        if query.qclass != wire::CLASS_IN {
            return refused("transfer of a class other than IN");
        }
        let Some((copy, journal)) = copy else {
            return refused("transfer of a zone not served");
        };
        if !self.allowed(peer, key) {
            return refused("not allowed by transfer.allow");
        }
        let mut writer = Writer::new(&request, signed.as_ref());
        let (kind_done, serial) = match (query.qtype, request.ixfr_serial) {
            (rtype::IXFR, None) => {
                self.count(kind, "formerr");
                let mut out = request.header_and_question(rcode::FORMERR);
                if let Some((key, mac)) = &signed {
                    ResponseSigner::new(key, mac, tsig::now()).sign(&mut out, 0, &[]);
                }
                return Some(vec![out]);
            }
            (rtype::IXFR, Some(client)) => {
                if !tsig_serial_gt(copy.serial, client) {
                    // The client is current (or ahead): the current SOA alone (RFC 1995 4).
                    writer.soa(&copy, copy.serial);
                    ("ixfr", copy.serial)
                } else if let Some(chain) = chain_from(&journal, client, copy.serial) {
                    writer.soa(&copy, copy.serial);
                    for delta in chain {
                        writer.delta(&copy, delta);
                    }
                    writer.soa(&copy, copy.serial);
                    ("ixfr", copy.serial)
                } else {
                    // Too old or a gap: the whole zone, AXFR-style (RFC 1995 4).
                    writer.full(&copy);
                    ("axfr", copy.serial)
                }
            }
            _ => {
                writer.full(&copy);
                ("axfr", copy.serial)
            }
        };
        self.count(kind, "ok");
        let zone = copy.zone.apex.to_ascii();
        self.note_peer(peer, |p| {
            p.last_transfer = Some((zone, kind_done.into(), serial, tsig::now()));
            p.last_error = None;
        });
        Some(writer.finish())
    }

    /// The response to a TSIG-signed ordinary query (`out`, built by the answer path): signed,
    /// or replaced by NOTAUTH with the TSIG error. Also answers IXFR over UDP: the current SOA
    /// when the client is current, else TC (RFC 1995 section 2).
    pub fn finish_signed(&self, packet: &[u8], out: &mut Vec<u8>, udp: bool) {
        let Ok(query) = wire::parse_query(packet) else {
            return;
        };
        let request = Request::of(packet, &query);
        if query.qtype == rtype::IXFR && udp {
            let mut key_buf = [0u8; wire::MAX_NAME_WIRE];
            let qkey = wire::lowercase_into(query.qname, &mut key_buf);
            if let Some((copy, _)) = self.copy_and_journal(qkey) {
                let current = request
                    .ixfr_serial
                    .is_some_and(|c| !tsig_serial_gt(copy.serial, c));
                *out = request.header_and_question(rcode::NOERROR);
                if current {
                    let mut w = Writer::new(&request, None);
                    w.soa(&copy, copy.serial);
                    if let Some(m) = w.finish().pop() {
                        *out = m;
                    }
                } else {
                    out[2] |= 0x02;
                }
                out[2] |= 0x04;
            }
        }
        if !query.signed {
            return;
        }
        match self.check_signature(packet, &request) {
            Ok(Some((key, mac))) => {
                self.count("soa", "ok");
                ResponseSigner::new(key, &mac, tsig::now()).sign(out, 0, &[]);
            }
            Ok(None) => {}
            Err(response) => {
                self.count("soa", "notauth");
                *out = response;
            }
        }
    }

    /// Verifies the request's TSIG: the key and MAC to sign the answer with, `None` if unsigned,
    /// or the NOTAUTH (or FORMERR) response to send instead.
    fn check_signature<'k>(
        &'k self,
        packet: &[u8],
        request: &Request,
    ) -> Result<Option<(&'k Key, Vec<u8>)>, Vec<u8>> {
        let record = match tsig::find(packet) {
            Ok(None) => return Ok(None),
            Ok(Some(r)) => r,
            Err(tsig::Malformed) => return Err(request.header_and_question(rcode::FORMERR)),
        };
        let now = tsig::now();
        match tsig::verify(packet, &record, &self.config.keys, now) {
            Ok(key) => Ok(Some((key, record.mac.to_vec()))),
            Err((tsig::Failure::Malformed, _)) => Err(request.header_and_question(rcode::FORMERR)),
            Err((failure, key)) => {
                let mut out = request.header_and_question(0);
                tsig::error_response(&mut out, &record, failure, key, now);
                Err(out)
            }
        }
    }
}

/// RFC 1982 comparison.
fn tsig_serial_gt(a: u32, b: u32) -> bool {
    crate::federation::engine::serial_gt(a, b)
}

/// The journal's deltas from `client` up to `current`, if they chain without a gap.
fn chain_from(journal: &[Arc<Delta>], client: u32, current: u32) -> Option<Vec<&Delta>> {
    let start = journal.iter().position(|d| d.from == client)?;
    let chain: Vec<&Delta> = journal[start..].iter().map(|d| &**d).collect();
    let linked = chain.windows(2).all(|w| w[0].to == w[1].from);
    (linked && chain.last().is_some_and(|d| d.to == current)).then_some(chain)
}

/// The names of the zone whose entry differs between two copies, sorted by key: found from the
/// snapshots' unshared shards only.
/// When the zone table changed in between (a zone added or removed, so names may have moved
/// between zones), the two zones are compared whole.
fn diff(old: &ZoneCopy, new: &ZoneCopy) -> Delta {
    let mut names: Vec<NameChange> = Vec::new();
    if old.snapshot.same_zones(&new.snapshot) {
        old.snapshot
            .for_each_change(&new.snapshot, |key, mut before, mut after| {
                // A name of another zone counts as absent.
                if !before.is_empty() && !old.holds(&old.snapshot, key) {
                    before = &[];
                }
                if !after.is_empty() && !new.holds(&new.snapshot, key) {
                    after = &[];
                }
                if before != after {
                    names.push((key.into(), before.into(), after.into()));
                }
            });
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    } else {
        let (before, after) = (old.names(), new.names());
        store::merge_changes(
            before.iter().map(|&(k, e)| (k, k, e)),
            after.iter().map(|&(k, e)| (k, k, e)),
            &mut |key, before, after| names.push((key.into(), before.into(), after.into())),
        );
    }
    let bytes = names
        .iter()
        .map(|(k, a, b)| k.len() + a.len() + b.len() + 48)
        .sum();
    Delta {
        from: old.serial,
        to: new.serial,
        names,
        bytes,
    }
}

/// The parts of a transfer request the answer needs.
struct Request {
    id: u16,
    flags: u16,
    /// The question as received.
    question: Vec<u8>,
    /// IXFR: the serial in the authority section's SOA.
    ixfr_serial: Option<u32>,
}

impl Request {
    fn of(packet: &[u8], query: &wire::Query<'_>) -> Self {
        let question_end = wire::QNAME_OFFSET + query.question_len();
        let question = packet[wire::QNAME_OFFSET..question_end].to_vec();
        let ns = u16::from_be_bytes([packet[8], packet[9]]);
        let an = u16::from_be_bytes([packet[6], packet[7]]);
        let ixfr_serial = (query.qtype == rtype::IXFR && an == 0 && ns >= 1)
            .then(|| authority_soa_serial(packet, question_end))
            .flatten();
        Self {
            id: query.id,
            flags: query.flags,
            question,
            ixfr_serial,
        }
    }

    /// A response with the question and no records.
    fn header_and_question(&self, rc: u8) -> Vec<u8> {
        let mut out = vec![0u8; wire::HEADER_LEN];
        out.extend_from_slice(&self.question);
        wire::write_header(
            &mut out,
            self.id,
            self.flags,
            false,
            false,
            rc,
            [1, 0, 0, 0],
        );
        out
    }
}

/// The serial of the SOA record starting at `at` (the first authority record of an IXFR query).
fn authority_soa_serial(packet: &[u8], at: usize) -> Option<u32> {
    let name_end = wire::skip_name(packet, at)?;
    if wire::read_u16(packet, name_end)? != rtype::SOA {
        return None;
    }
    let rdata = name_end + 10;
    let rname_end = wire::skip_name(packet, wire::skip_name(packet, rdata)?)?;
    let serial = packet.get(rname_end..rname_end + 4)?;
    Some(u32::from_be_bytes([
        serial[0], serial[1], serial[2], serial[3],
    ]))
}

/// Builds the messages of one transfer: records packed up to the size limit, owner names
/// compressed within each message, every message signed when the request was.
struct Writer<'a, 'k> {
    request: &'a Request,
    signer: Option<ResponseSigner<'k>>,
    limit: usize,
    messages: Vec<Vec<u8>>,
    out: Vec<u8>,
    count: u16,
    /// Lowercase wire suffix → offset in `out`.
    names: std::collections::HashMap<Vec<u8>, u16>,
}

impl<'a, 'k> Writer<'a, 'k> {
    fn new(request: &'a Request, signed: Option<&(&'k Key, Vec<u8>)>) -> Self {
        let limit = MAX_MESSAGE - signed.map_or(0, |(k, _)| tsig::overhead(k));
        let mut w = Self {
            request,
            signer: signed.map(|(k, mac)| ResponseSigner::new(k, mac, tsig::now())),
            limit,
            messages: Vec::new(),
            out: Vec::new(),
            count: 0,
            names: Default::default(),
        };
        w.start(true);
        w
    }

    fn start(&mut self, with_question: bool) {
        self.out.clear();
        self.out.resize(wire::HEADER_LEN, 0);
        self.names.clear();
        self.count = 0;
        if with_question {
            self.out.extend_from_slice(&self.request.question);
        }
    }

    /// Closes the message in progress.
    fn seal(&mut self) {
        let qd = u16::from(self.messages.is_empty());
        let mut out = std::mem::take(&mut self.out);
        wire::write_header(
            &mut out,
            self.request.id,
            self.request.flags,
            true,
            false,
            rcode::NOERROR,
            [qd, self.count, 0, 0],
        );
        if let Some(signer) = &mut self.signer {
            signer.sign(&mut out, 0, &[]);
        }
        self.messages.push(out);
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        self.seal();
        self.messages
    }

    /// Writes `key` (lowercase wire name), compressed against names already in this message.
    fn name(&mut self, key: &[u8]) {
        let mut at = 0;
        while at < key.len() && key[at] != 0 {
            if let Some(&offset) = self.names.get(&key[at..]) {
                self.out.extend_from_slice(&(0xC000 | offset).to_be_bytes());
                return;
            }
            let here = self.out.len();
            if here <= 0x3FFF {
                self.names.insert(key[at..].to_vec(), here as u16);
            }
            let len = key[at] as usize;
            self.out.extend_from_slice(&key[at..at + 1 + len]);
            at += 1 + len;
        }
        self.out.push(0);
    }

    /// Appends one record (owner `key`, then `body`: type..rdata), starting a new message first
    /// when it would not fit.
    fn record(&mut self, key: &[u8], body: &[u8]) {
        if self.out.len() + key.len() + body.len() > self.limit && self.count > 0 {
            self.seal();
            self.start(false);
        }
        self.name(key);
        self.out.extend_from_slice(body);
        self.count += 1;
    }

    fn soa(&mut self, copy: &ZoneCopy, serial: u32) {
        let soa = &copy.zone.soa;
        let mut body = Vec::with_capacity(64);
        body.extend_from_slice(&rtype::SOA.to_be_bytes());
        body.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
        body.extend_from_slice(&soa.ttl.to_be_bytes());
        let mut rdata = Vec::with_capacity(48);
        store::push_name(&mut rdata, &soa.mname);
        store::push_name(&mut rdata, &soa.rname);
        for v in [serial, soa.refresh, soa.retry, soa.expire, soa.minimum] {
            rdata.extend_from_slice(&v.to_be_bytes());
        }
        body.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        body.extend_from_slice(&rdata);
        self.record(copy.zone.key(), &body);
    }

    /// Every record of `entry` (the apex SOA marker skipped: the SOA is written by the caller;
    /// the additional-data pseudo-set skipped: its records are copies of other names' records).
    fn entry(&mut self, key: &[u8], entry: &[u8], keep: impl Fn(&store::SetView<'_>) -> bool) {
        for set in store::sets(entry) {
            if set.is_apex_marker() || set.rtype == store::ADDITIONAL || !keep(&set) {
                continue;
            }
            for record in set.records() {
                self.record(key, record);
            }
        }
    }

    /// AXFR: SOA, every record, SOA.
    fn full(&mut self, copy: &ZoneCopy) {
        self.soa(copy, copy.serial);
        for (key, entry) in copy.names() {
            self.entry(key, entry, |_| true);
        }
        self.soa(copy, copy.serial);
    }

    /// One IXFR difference sequence: old SOA, the sets removed, new SOA, the sets added. Only
    /// sets that changed are sent.
    fn delta(&mut self, copy: &ZoneCopy, delta: &Delta) {
        self.soa(copy, delta.from);
        for (key, old, new) in &delta.names {
            self.entry(key, old, |set| !has_set(new, set));
        }
        self.soa(copy, delta.to);
        for (key, old, new) in &delta.names {
            self.entry(key, new, |set| !has_set(old, set));
        }
    }
}

/// Whether `entry` holds exactly `set`.
fn has_set(entry: &[u8], set: &store::SetView<'_>) -> bool {
    store::sets(entry).any(|s| s.rtype == set.rtype && s.records == set.records)
}

#[cfg(test)]
mod tests;
