//! The record store: every served name, keyed by its lowercase wire form, holding pre-rendered
//! resource-record sets, plus the table of served zones (apex, SOA, serial). One writer (the
//! [`crate::federation::engine`]) updates it; any number of answer workers read it concurrently.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use hickory_proto::rr::Name;
use rustc_hash::FxBuildHasher;

use crate::dns::wire::{self, rtype};

/// Appends a name in uncompressed wire form, keeping its case.
pub fn push_name(out: &mut Vec<u8>, name: &Name) {
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
}

/// Appends one complete resource record with `owner` written out (no compression): the layout of
/// an [`ADDITIONAL`] pseudo-set's records.
pub fn push_full_rr(out: &mut Vec<u8>, owner: &Name, rr_type: u16, ttl: u32, rdata: &[u8]) {
    push_name(out, owner);
    out.extend_from_slice(&rr_type.to_be_bytes());
    out.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// Appends `name` in wire form with its part at and below `apex` replaced by a compression
/// pointer placeholder (`C0 00`); names outside the zone stay whole.
fn push_name_before_apex(out: &mut Vec<u8>, name: &Name, apex: &Name) {
    if !apex.zone_of(name) {
        push_name(out, name);
        return;
    }
    let keep = name.num_labels() - apex.num_labels();
    for label in name.iter().take(keep as usize) {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.extend_from_slice(&[0xC0, 0x00]);
}

/// SOA timers of a zone (RFC 1035 3.3.13), and the TTL of the SOA record itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoaFields {
    pub mname: Name,
    pub rname: Name,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    /// Negative-caching TTL (RFC 2308).
    pub minimum: u32,
    pub ttl: u32,
}

/// Marker type of the pseudo-set that carries an entry's additional-section data: complete
/// resource records (owner names uncompressed) sent with NS answers and referrals at that name.
/// Type 0 is reserved (RFC 6895), so no query asks for it.
pub const ADDITIONAL: u16 = 0;

/// Where a zone leaves plain name lookup, precomputed at load time so the answer path stays a
/// few map reads: names (lowercase wire keys) that are zone cuts or DNAME owners, whether any
/// wildcard owner exists, and whether the zone cannot be served at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneShape {
    pub breaks: HashMap<Box<[u8]>, Break, FxBuildHasher>,
    pub wildcards: bool,
    /// Why the zone cannot be served: every name in it is answered SERVFAIL.
    pub broken: Option<String>,
}

/// What a name in [`ZoneShape::breaks`] does to the names below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// A delegation (NS below the apex): the name and everything below it are referrals.
    Cut,
    /// A DNAME (RFC 6672): names below it are redirected.
    Dname,
}

/// One served zone.
#[derive(Debug)]
pub struct Zone {
    pub apex: Name,
    key: Box<[u8]>,
    pub soa: SoaFields,
    /// mname and rname in wire form: the fixed part of the SOA rdata.
    soa_names: Box<[u8]>,
    /// mname and rname with their in-zone suffix replaced by a pointer placeholder to the apex
    /// (patched at answer time): SOA RDATA names compressed as NSD and Knot do.
    soa_names_compressed: Box<[u8]>,
    serial: AtomicU32,
    /// The serial written in the zone file, for zones loaded from one.
    pub file_serial: Option<u32>,
    pub shape: ZoneShape,
}

impl Zone {
    pub fn new(apex: Name, soa: SoaFields, serial: u32) -> Self {
        let mut soa_names = Vec::new();
        push_name(&mut soa_names, &soa.mname);
        push_name(&mut soa_names, &soa.rname);
        let mut compressed = Vec::new();
        for name in [&soa.mname, &soa.rname] {
            push_name_before_apex(&mut compressed, name, &apex);
        }
        Self {
            key: crate::federation::naming::wire_key(&apex),
            apex,
            soa,
            soa_names: soa_names.into_boxed_slice(),
            soa_names_compressed: compressed.into_boxed_slice(),
            serial: AtomicU32::new(serial),
            file_serial: None,
            shape: ZoneShape::default(),
        }
    }

    /// Marks the zone as loaded from a file with `serial` in its SOA.
    pub fn with_file_serial(mut self, serial: u32) -> Self {
        self.file_serial = Some(serial);
        self
    }

    pub fn with_shape(mut self, shape: ZoneShape) -> Self {
        self.shape = shape;
        self
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    pub fn serial(&self) -> u32 {
        self.serial.load(Ordering::Relaxed)
    }

    /// Called by the writer after each batch of changes to the zone's content.
    pub fn bump_serial(&self) {
        self.serial.fetch_add(1, Ordering::Relaxed);
    }

    /// Called by the writer when the zone's content changed (see the serial rule in
    /// `federation::engine::zones`).
    pub fn set_serial(&self, serial: u32) {
        self.serial.store(serial, Ordering::Relaxed);
    }

    /// Appends the SOA record (owner placeholder) with `ttl`. With `apex_at`, the offset of the
    /// apex name in `out`, the in-zone parts of mname and rname are compressed against it.
    pub fn push_soa(&self, out: &mut Vec<u8>, ttl: u32, apex_at: Option<u16>) {
        let names = match apex_at {
            Some(at) if at <= 0x3FFF => &self.soa_names_compressed[..],
            _ => &self.soa_names[..],
        };
        let rdlen = names.len() + 20;
        out.extend_from_slice(&[0xC0, 0x00]);
        out.extend_from_slice(&rtype::SOA.to_be_bytes());
        out.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(rdlen as u16).to_be_bytes());
        let names_at = out.len();
        out.extend_from_slice(names);
        if let Some(at) = apex_at.filter(|at| *at <= 0x3FFF) {
            // Patch the apex placeholders (0xC0 0x00) to point at the apex.
            let ptr = (0xC000 | at).to_be_bytes();
            let mut i = names_at;
            while i < out.len() {
                let len = out[i];
                if len == 0 {
                    i += 1;
                } else if len >= 0xC0 {
                    out[i..i + 2].copy_from_slice(&ptr);
                    i += 2;
                } else {
                    i += 1 + len as usize;
                }
            }
        }
        for v in [
            self.serial(),
            self.soa.refresh,
            self.soa.retry,
            self.soa.expire,
            self.soa.minimum,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    /// TTL of the SOA in negative answers: min(SOA TTL, MINIMUM) (RFC 2308 section 3).
    pub fn negative_ttl(&self) -> u32 {
        self.soa.ttl.min(self.soa.minimum)
    }
}

/// The served zones, longest apex first.
#[derive(Debug, Default)]
pub struct ZoneTable {
    zones: Vec<Arc<Zone>>,
}

impl ZoneTable {
    pub fn new(mut zones: Vec<Arc<Zone>>) -> Self {
        zones.sort_by(|a, b| b.key.len().cmp(&a.key.len()).then(a.key.cmp(&b.key)));
        Self { zones }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Zone>> {
        self.zones.iter()
    }

    /// The zone that holds `key` (lowercase wire name): the longest apex that is a suffix at a
    /// label boundary.
    pub fn find(&self, key: &[u8]) -> Option<&Arc<Zone>> {
        let mut at = 0;
        while at < key.len() {
            let suffix = &key[at..];
            if let Some(zone) = self.zones.iter().find(|z| *z.key == *suffix) {
                return Some(zone);
            }
            at += 1 + key[at] as usize;
        }
        None
    }

    pub fn by_apex(&self, apex: &Name) -> Option<&Arc<Zone>> {
        let key = crate::federation::naming::wire_key(apex);
        self.zones.iter().find(|z| z.key == key)
    }
}

/// Pre-rendered data of one name: a sequence of sets, each `rtype u16 | count u16 | len u16 |
/// records`, records in [`wire::push_rr`] layout. An empty entry is an empty non-terminal. A SOA set
/// with no records marks a zone apex: its SOA is rendered from the zone at answer time (live serial).
#[derive(Debug, Default)]
pub struct EntryBuilder {
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl EntryBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a set from rdata values; empty sets are skipped.
    pub fn rrset<'a>(
        &mut self,
        rr_type: u16,
        ttl: u32,
        rdatas: impl IntoIterator<Item = &'a [u8]>,
    ) -> &mut Self {
        self.scratch.clear();
        let mut count = 0u16;
        for rdata in rdatas {
            if rr_type == ADDITIONAL {
                // Already complete records.
                self.scratch.extend_from_slice(rdata);
            } else {
                wire::push_rr(&mut self.scratch, rr_type, ttl, rdata);
            }
            count += 1;
        }
        if count > 0 {
            self.push_set(rr_type, count);
        }
        self
    }

    fn push_set(&mut self, rr_type: u16, count: u16) {
        self.buf.extend_from_slice(&rr_type.to_be_bytes());
        self.buf.extend_from_slice(&count.to_be_bytes());
        self.buf
            .extend_from_slice(&(self.scratch.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(&self.scratch);
    }

    pub fn addresses(&mut self, v4: &[Ipv4Addr], v6: &[Ipv6Addr], ttl: u32) -> &mut Self {
        let v4: Vec<[u8; 4]> = v4.iter().map(|a| a.octets()).collect();
        let v6: Vec<[u8; 16]> = v6.iter().map(|a| a.octets()).collect();
        self.rrset(rtype::A, ttl, v4.iter().map(|a| &a[..]));
        self.rrset(rtype::AAAA, ttl, v6.iter().map(|a| &a[..]))
    }

    pub fn cname(&mut self, target: &Name, ttl: u32) -> &mut Self {
        let mut rdata = Vec::with_capacity(target.len() + 2);
        push_name(&mut rdata, target);
        self.rrset(rtype::CNAME, ttl, [&rdata[..]])
    }

    /// Marks the entry as a zone apex (SOA rendered live).
    pub fn apex_soa(&mut self) -> &mut Self {
        self.scratch.clear();
        self.push_set(rtype::SOA, 0);
        self
    }

    /// Ends the ordinary sets with a table of per-client variants (see [`crate::dns::variants`]).
    pub fn variants(&mut self, table: &[u8]) -> &mut Self {
        self.scratch.clear();
        self.scratch.extend_from_slice(table);
        self.push_set(crate::dns::variants::MARKER, 0);
        self
    }

    pub fn finish(&mut self) -> Box<[u8]> {
        let out = std::mem::take(&mut self.buf).into_boxed_slice();
        self.scratch.clear();
        out
    }
}

/// One set inside an entry.
#[derive(Debug, Clone, Copy)]
pub struct SetView<'a> {
    pub rtype: u16,
    pub count: u16,
    pub records: &'a [u8],
}

/// Iterates the sets of an entry, up to its per-client variants if it has any.
pub fn sets(entry: &[u8]) -> impl Iterator<Item = SetView<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + 6 > entry.len() {
            return None;
        }
        let rtype = u16::from_be_bytes([entry[at], entry[at + 1]]);
        if rtype == crate::dns::variants::MARKER {
            return None;
        }
        let count = u16::from_be_bytes([entry[at + 2], entry[at + 3]]);
        let len = u16::from_be_bytes([entry[at + 4], entry[at + 5]]) as usize;
        let records = entry.get(at + 6..at + 6 + len)?;
        at += 6 + len;
        Some(SetView {
            rtype,
            count,
            records,
        })
    })
}

/// All served names and zones.
#[derive(Debug)]
pub struct RecordStore {
    names: DashMap<Box<[u8]>, Box<[u8]>, FxBuildHasher>,
    zones: ArcSwap<ZoneTable>,
    synced: AtomicBool,
}

impl Default for RecordStore {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordStore {
    pub fn new() -> Self {
        Self {
            names: DashMap::with_hasher(FxBuildHasher),
            zones: ArcSwap::from_pointee(ZoneTable::default()),
            synced: AtomicBool::new(false),
        }
    }

    /// Calls `f` with every name and entry; for zone transfers and digests, never the answer
    /// path (it read-locks each shard of the map in turn).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) {
        for item in self.names.iter() {
            f(item.key(), item.value());
        }
    }

    /// Calls `f` with the entry of `key`, if any, without copying it.
    #[inline]
    pub fn with_entry<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.names.get(key).map(|e| f(e.value()))
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.names.contains_key(key)
    }

    pub fn insert(&self, key: Box<[u8]>, entry: Box<[u8]>) {
        self.names.insert(key, entry);
    }

    pub fn remove(&self, key: &[u8]) {
        self.names.remove(key);
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The zone table as of now; cheap, lock-free.
    #[inline]
    pub fn zones(&self) -> arc_swap::Guard<Arc<ZoneTable>> {
        self.zones.load()
    }

    pub fn set_zones(&self, table: ZoneTable) {
        self.zones.store(Arc::new(table));
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::naming::parse_dotted;

    fn zone(apex: &str) -> Arc<Zone> {
        let apex = parse_dotted("zone", apex).unwrap();
        let soa = SoaFields {
            mname: parse_dotted("ns", "ns1.example.com").unwrap(),
            rname: parse_dotted("rname", "hostmaster.example.com").unwrap(),
            refresh: 3600,
            retry: 600,
            expire: 86400,
            minimum: 30,
            ttl: 3600,
        };
        Arc::new(Zone::new(apex, soa, 1))
    }

    #[test]
    fn longest_zone_wins() {
        let table = ZoneTable::new(vec![zone("example.com"), zone("us.example.com")]);
        let key =
            crate::federation::naming::wire_key(&parse_dotted("n", "a.us.example.com").unwrap());
        assert_eq!(table.find(&key).unwrap().apex.to_ascii(), "us.example.com.");
        let key =
            crate::federation::naming::wire_key(&parse_dotted("n", "a.eu.example.com").unwrap());
        assert_eq!(table.find(&key).unwrap().apex.to_ascii(), "example.com.");
    }

    #[test]
    fn zone_match_is_at_label_boundaries() {
        let table = ZoneTable::new(vec![zone("example.com")]);
        let key =
            crate::federation::naming::wire_key(&parse_dotted("n", "notexample.com").unwrap());
        assert!(table.find(&key).is_none());
    }

    #[test]
    fn entries_round_trip_through_set_views() {
        let mut b = EntryBuilder::new();
        b.addresses(
            &["10.0.0.1".parse().unwrap()],
            &["2001:db8::1".parse().unwrap()],
            60,
        );
        let entry = b.finish();
        let kinds: Vec<_> = sets(&entry).map(|s| (s.rtype, s.count)).collect();
        assert_eq!(kinds, [(rtype::A, 1), (rtype::AAAA, 1)]);
    }

    #[test]
    fn soa_serial_bumps_show_in_rendered_soa() {
        let z = zone("example.com");
        z.bump_serial();
        let mut out = Vec::new();
        z.push_soa(&mut out, 30, None);
        let serial_at = out.len() - 20;
        assert_eq!(&out[serial_at..serial_at + 4], &2u32.to_be_bytes());
    }
}
