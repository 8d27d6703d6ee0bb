//! The record store: every served name, keyed by its lowercase wire form, holding pre-rendered
//! resource-record sets, plus the table of served zones (apex, SOA, serial). One writer (the
//! [`crate::federation::engine`]) stages changes and publishes them once per flush as an immutable
//! [`Snapshot`]; any number of answer workers read the latest snapshot concurrently.
//!
//! Why a snapshot and not a concurrent map: a read of a concurrent map takes a shard lock, a write
//! to a cache line every reader shares, so answer workers on many cores slow each other down. A
//! snapshot is read-only once published: a lookup writes nothing shared (taking the snapshot writes
//! only the reading thread's own `arc-swap` slot), and a flush is seen whole or not at all. The
//! snapshot is cut into [`SHARDS`] shards, each one allocation of packed entries, so a flush copies
//! only the shards it touches and a name costs a few bytes of index instead of two heap blocks.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
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

/// The served zones, longest apex first, found by hashed suffix.
#[derive(Debug, Default)]
pub struct ZoneTable {
    zones: Vec<Arc<Zone>>,
    by_key: HashMap<Box<[u8]>, usize, FxBuildHasher>,
    /// Bit `n` set when some apex key is `n` bytes long: only suffixes of such a length are
    /// hashed and looked up.
    lengths: [u64; 4],
}

impl ZoneTable {
    pub fn new(mut zones: Vec<Arc<Zone>>) -> Self {
        zones.sort_by(|a, b| b.key.len().cmp(&a.key.len()).then(a.key.cmp(&b.key)));
        let mut lengths = [0u64; 4];
        let mut by_key = HashMap::with_capacity_and_hasher(zones.len(), FxBuildHasher);
        for (i, zone) in zones.iter().enumerate() {
            let len = zone.key.len().min(255);
            lengths[len / 64] |= 1 << (len % 64);
            by_key.insert(zone.key.clone(), i);
        }
        Self {
            zones,
            by_key,
            lengths,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Zone>> {
        self.zones.iter()
    }

    /// The zone that holds `key` (lowercase wire name): the longest apex that is a suffix at a
    /// label boundary. One hash lookup per suffix whose length some apex has.
    #[inline]
    pub fn find(&self, key: &[u8]) -> Option<&Arc<Zone>> {
        let mut at = 0;
        while at < key.len() {
            let suffix = &key[at..];
            let len = suffix.len().min(255);
            if self.lengths[len / 64] & (1 << (len % 64)) != 0
                && let Some(&i) = self.by_key.get(suffix)
            {
                return self.zones.get(i);
            }
            at += 1 + key[at] as usize;
        }
        None
    }

    pub fn by_apex(&self, apex: &Name) -> Option<&Arc<Zone>> {
        let key = crate::federation::naming::wire_key(apex);
        self.by_key.get(&key).and_then(|&i| self.zones.get(i))
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

impl<'a> SetView<'a> {
    /// The empty SOA set that marks a zone apex (its SOA is rendered from the zone, see
    /// [`EntryBuilder::apex_soa`]).
    #[inline]
    pub fn is_apex_marker(&self) -> bool {
        self.rtype == rtype::SOA && self.count == 0
    }

    /// Each record of the set without its owner pointer: `type | class | ttl | rdlen | rdata`.
    pub fn records(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let records = self.records;
        let mut at = 0;
        std::iter::from_fn(move || {
            if at + 12 > records.len() {
                return None;
            }
            let rdlen = u16::from_be_bytes([records[at + 10], records[at + 11]]) as usize;
            let end = (at + 12 + rdlen).min(records.len());
            let record = &records[at + 2..end];
            at = end;
            Some(record)
        })
    }
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

/// Changes staged since the last commit, appended to one buffer: `key length u8 | key | present
/// u8 | entry length u32 LE | entry` (a removal is `present` 0 with an empty entry), and an index
/// from each key to its latest change. One growing buffer instead of a key and an entry allocated
/// per change: a first load stages every name, and the allocator gets one large block back
/// at the commit instead of hundreds of thousands of small ones interleaved with what stays.
#[derive(Debug, Default)]
struct Changes {
    buf: Vec<u8>,
    latest: hashbrown::HashTable<usize>,
}

impl Changes {
    /// The change recorded at `at`: key, and the new entry (`None`: removed).
    fn at(&self, at: usize) -> (&[u8], Option<&[u8]>) {
        let buf = &self.buf;
        let key = key_at(buf, at);
        let present = buf[at + 1 + key.len()] == 1;
        let len_at = at + 2 + key.len();
        let mut len = [0u8; 4];
        len.copy_from_slice(&buf[len_at..len_at + 4]);
        let entry = &buf[len_at + 4..len_at + 4 + u32::from_le_bytes(len) as usize];
        (key, present.then_some(entry))
    }

    fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        let at = *self
            .latest
            .find(key_hash(key), |&at| self.at(at).0 == key)?;
        Some(self.at(at).1)
    }

    fn stage(&mut self, key: &[u8], entry: Option<&[u8]>) {
        let at = self.buf.len();
        let body = entry.unwrap_or_default();
        self.buf.push(key.len() as u8);
        self.buf.extend_from_slice(key);
        self.buf.push(u8::from(entry.is_some()));
        self.buf
            .extend_from_slice(&(body.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(body);
        let hash = key_hash(key);
        let Self { buf, latest } = self;
        let at_of = |&at: &usize| key_hash(key_at(buf, at));
        match latest.find_mut(hash, |&old| key_at(buf, old) == key) {
            Some(old) => *old = at,
            None => {
                latest.insert_unique(hash, at, at_of);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Room for about `additional` more changes the size of those staged so far.
    fn reserve(&mut self, additional: usize) {
        let per_change = self.buf.len() / self.latest.len().max(1);
        self.buf.reserve(additional * per_change);
        let Self { buf, latest } = self;
        latest.reserve(additional, |&at| key_hash(key_at(buf, at)));
    }

    /// Every key's latest change: key hash, key, new entry.
    fn iter(&self) -> impl Iterator<Item = Change<'_>> {
        self.latest.iter().map(|&at| {
            let (key, entry) = self.at(at);
            (key_hash(key), key, entry)
        })
    }
}

/// One staged change: key hash, key, new entry (`None`: removed).
type Change<'a> = (u64, &'a [u8], Option<&'a [u8]>);

/// The key of the change recorded at `at` in a [`Changes`] buffer.
fn key_at(buf: &[u8], at: usize) -> &[u8] {
    &buf[at + 1..at + 1 + buf[at] as usize]
}

/// One change on its way into a shard: low hash, key, new entry (`None`: removed).
type ShardChange<'a> = (u32, &'a [u8], Option<&'a [u8]>);

/// Number of shards of a [`Snapshot`] (a power of two). At 260,000 names a shard holds ~64.
pub const SHARDS: usize = 4096;

/// Hash of a store key: the shard is picked by the high bits, the low 32 bits order the entries
/// inside it. Keys come from trusted objects; the wire only looks names up.
#[inline]
fn key_hash(key: &[u8]) -> u64 {
    FxBuildHasher.hash_one(key)
}

#[inline]
fn shard_of(hash: u64) -> usize {
    (hash >> (64 - SHARDS.trailing_zeros())) as usize
}

/// A shard: entries packed in one buffer (`key length u8 | key | entry length u32 LE | entry`),
/// and an index of `(low hash, offset)` sorted by hash, then key.
#[derive(Debug, Default)]
struct Shard {
    index: Box<[(u32, u32)]>,
    data: Box<[u8]>,
}

impl Shard {
    /// Key and entry of the record at `at`.
    #[inline]
    fn record(&self, at: u32) -> (&[u8], &[u8]) {
        let at = at as usize;
        let key_len = self.data[at] as usize;
        let key = &self.data[at + 1..at + 1 + key_len];
        let len_at = at + 1 + key_len;
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.data[len_at..len_at + 4]);
        let entry_at = len_at + 4;
        let entry = &self.data[entry_at..entry_at + u32::from_le_bytes(len) as usize];
        (key, entry)
    }

    #[inline]
    fn get(&self, hash: u32, key: &[u8]) -> Option<&[u8]> {
        let mut i = self.index.partition_point(|&(h, _)| h < hash);
        while let Some(&(h, at)) = self.index.get(i) {
            if h != hash {
                break;
            }
            let (k, entry) = self.record(at);
            if k == key {
                return Some(entry);
            }
            i += 1;
        }
        None
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &[u8], &[u8])> {
        self.index.iter().map(|&(h, at)| {
            let (k, e) = self.record(at);
            (h, k, e)
        })
    }

    /// This shard with `changes` (sorted by low hash, then key; `None` removes) applied.
    fn with_changes(&self, changes: &[ShardChange<'_>]) -> Shard {
        let mut kept: Vec<(u32, &[u8], &[u8])> =
            Vec::with_capacity(self.index.len() + changes.len());
        let mut old = self.iter().peekable();
        for (hash, key, entry) in changes {
            while let Some(&(h, k, e)) = old.peek() {
                if (h, k) >= (*hash, *key) {
                    break;
                }
                kept.push((h, k, e));
                old.next();
            }
            if old.peek().is_some_and(|&(h, k, _)| (h, k) == (*hash, *key)) {
                old.next();
            }
            if let Some(entry) = entry {
                kept.push((*hash, key, entry));
            }
        }
        kept.extend(old);
        let size: usize = kept.iter().map(|(_, k, e)| 5 + k.len() + e.len()).sum();
        let mut index = Vec::with_capacity(kept.len());
        let mut data = Vec::with_capacity(size);
        for (hash, key, entry) in kept {
            index.push((hash, data.len() as u32));
            data.push(key.len() as u8);
            data.extend_from_slice(key);
            data.extend_from_slice(&(entry.len() as u32).to_le_bytes());
            data.extend_from_slice(entry);
        }
        Shard {
            index: index.into_boxed_slice(),
            data: data.into_boxed_slice(),
        }
    }
}

/// Every served name and zone as of one flush; never changes once published.
#[derive(Debug)]
pub struct Snapshot {
    zones: Arc<ZoneTable>,
    shards: Box<[Arc<Shard>]>,
    len: usize,
}

impl Default for Snapshot {
    fn default() -> Self {
        let empty = Arc::new(Shard::default());
        Self {
            zones: Arc::default(),
            shards: vec![empty; SHARDS].into_boxed_slice(),
            len: 0,
        }
    }
}

impl Snapshot {
    #[inline]
    pub fn zones(&self) -> &ZoneTable {
        &self.zones
    }

    /// The entry of `key` (lowercase wire name), if the name exists.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let hash = key_hash(key);
        self.shards[shard_of(hash)].get(hash as u32, key)
    }

    #[inline]
    pub fn contains(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `f` with every name and entry (for zone transfers and digests).
    pub fn for_each<'a>(&'a self, mut f: impl FnMut(&'a [u8], &'a [u8])) {
        for shard in self.shards.iter() {
            for (_, key, entry) in shard.iter() {
                f(key, entry);
            }
        }
    }

    /// Whether the two snapshots have the same zone table (not only equal: the same one).
    pub fn same_zones(&self, other: &Snapshot) -> bool {
        Arc::ptr_eq(&self.zones, &other.zones)
    }

    /// Calls `f` with every name whose entry differs from this snapshot to `newer`: the key, the
    /// entry here and the entry there (empty where the name is absent). Only shards the two do
    /// not share are compared, so a snapshot a few changes away costs a few shards.
    pub fn for_each_change<'a>(
        &'a self,
        newer: &'a Snapshot,
        mut f: impl FnMut(&'a [u8], &'a [u8], &'a [u8]),
    ) {
        for (old, new) in self.shards.iter().zip(newer.shards.iter()) {
            if Arc::ptr_eq(old, new) {
                continue;
            }
            merge_changes(
                old.iter().map(|(h, k, e)| ((h, k), k, e)),
                new.iter().map(|(h, k, e)| ((h, k), k, e)),
                &mut f,
            );
        }
    }

    /// A new snapshot with `changes` applied; untouched shards are shared with this one.
    fn with_changes(&self, zones: Option<Arc<ZoneTable>>, changes: &Changes) -> Snapshot {
        let mut changes: Vec<Change<'_>> = changes.iter().collect();
        changes.sort_unstable_by(|a, b| {
            (shard_of(a.0), a.0 as u32, &a.1).cmp(&(shard_of(b.0), b.0 as u32, &b.1))
        });
        let mut shards = self.shards.clone();
        let mut len = self.len;
        let mut rest = &changes[..];
        let mut group: Vec<ShardChange<'_>> = Vec::new();
        while let Some(first) = rest.first() {
            let shard = shard_of(first.0);
            let n = rest.partition_point(|c| shard_of(c.0) == shard);
            group.clear();
            group.extend(rest[..n].iter().map(|&(h, k, e)| (h as u32, k, e)));
            let before = shards[shard].index.len();
            let next = shards[shard].with_changes(&group);
            len = len - before + next.index.len();
            shards[shard] = Arc::new(next);
            rest = &rest[n..];
        }
        Snapshot {
            zones: zones.unwrap_or_else(|| self.zones.clone()),
            shards,
            len,
        }
    }
}

/// Merges two lists of `(order, key, entry)` sorted by `order` (one key per order) and calls
/// `f` with each key whose entry differs: key, old entry, new entry (empty where absent).
pub fn merge_changes<'a, O: Ord>(
    old: impl Iterator<Item = (O, &'a [u8], &'a [u8])>,
    new: impl Iterator<Item = (O, &'a [u8], &'a [u8])>,
    f: &mut impl FnMut(&'a [u8], &'a [u8], &'a [u8]),
) {
    let (mut a, mut b) = (old.peekable(), new.peekable());
    loop {
        let (key, before, after) = match (a.peek(), b.peek()) {
            (Some((oa, ..)), Some((ob, ..))) if oa == ob => {
                let ((_, k, ea), (_, _, eb)) = (a.next().unwrap(), b.next().unwrap());
                (k, ea, eb)
            }
            (Some((oa, ..)), Some((ob, ..))) if oa < ob => {
                let (_, k, e) = a.next().unwrap();
                (k, e, &[][..])
            }
            (Some(_), None) => {
                let (_, k, e) = a.next().unwrap();
                (k, e, &[][..])
            }
            (_, Some(_)) => {
                let (_, k, e) = b.next().unwrap();
                (k, &[][..], e)
            }
            (None, None) => break,
        };
        if before != after {
            f(key, before, after);
        }
    }
}

/// What the writer has changed since the last [`RecordStore::commit`].
#[derive(Debug, Default)]
struct Staged {
    zones: Option<Arc<ZoneTable>>,
    changes: Changes,
}

/// All served names and zones: the published [`Snapshot`] that answers read, and the changes
/// the single writer has staged for the next one.
#[derive(Debug)]
pub struct RecordStore {
    published: ArcSwap<Snapshot>,
    /// Touched by the writer (and the admin side) only, never by the answer path.
    staged: Mutex<Staged>,
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
            published: ArcSwap::from_pointee(Snapshot::default()),
            staged: Mutex::default(),
            synced: AtomicBool::new(false),
        }
    }

    /// The latest published snapshot: the answer path's only access to the store.
    #[inline]
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.published.load()
    }

    fn staged(&self) -> MutexGuard<'_, Staged> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls `f` with every published name and entry; for zone transfers and digests.
    pub fn for_each(&self, f: impl FnMut(&[u8], &[u8])) {
        self.snapshot().for_each(f);
    }

    /// Calls `f` with the entry of `key` as the writer sees it (its staged change, else the
    /// published entry), without copying it.
    pub fn with_entry<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let staged = self.staged();
        match staged.changes.get(key) {
            Some(change) => change.map(f),
            None => self.snapshot().get(key).map(f),
        }
    }

    /// Stages `entry` for `key`; answers see it from the next [`RecordStore::commit`].
    pub fn insert(&self, key: impl AsRef<[u8]>, entry: impl AsRef<[u8]>) {
        self.staged()
            .changes
            .stage(key.as_ref(), Some(entry.as_ref()));
    }

    /// Makes room for about `additional` more staged changes (a hint; nothing is staged).
    pub fn reserve(&self, additional: usize) {
        self.staged().changes.reserve(additional);
    }

    /// Stages the removal of `key`.
    pub fn remove(&self, key: &[u8]) {
        self.staged().changes.stage(key, None);
    }

    /// Names published.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The zone table as the writer sees it (staged, else published).
    pub fn zones(&self) -> Arc<ZoneTable> {
        let staged = self.staged();
        match &staged.zones {
            Some(table) => table.clone(),
            None => self.snapshot().zones.clone(),
        }
    }

    /// Stages a new zone table, published with the names of the same flush.
    pub fn set_zones(&self, table: ZoneTable) {
        self.staged().zones = Some(Arc::new(table));
    }

    /// Publishes everything staged as one new snapshot: answers see a flush whole or not at all.
    pub fn commit(&self) {
        let mut staged = self.staged();
        if staged.zones.is_none() && staged.changes.is_empty() {
            return;
        }
        let zones = staged.zones.take();
        let changes = std::mem::take(&mut staged.changes);
        let next = self.snapshot().with_changes(zones, &changes);
        self.published.store(Arc::new(next));
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Publishes what is staged, then marks the store synced (answers stop being SERVFAIL).
    pub fn mark_synced(&self) {
        self.commit();
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

    fn key(i: usize) -> Box<[u8]> {
        crate::federation::naming::wire_key(
            &parse_dotted("n", &format!("s{i}.example.com")).unwrap(),
        )
    }

    #[test]
    fn staged_changes_are_answered_only_after_the_commit() {
        let store = RecordStore::new();
        store.insert(key(1), b"one");
        assert!(
            store.snapshot().get(&key(1)).is_none(),
            "staged, not published"
        );
        assert_eq!(
            store.with_entry(&key(1), |e| e.to_vec()).unwrap(),
            b"one",
            "the writer sees it"
        );
        store.commit();
        assert_eq!(store.snapshot().get(&key(1)).unwrap(), b"one");
        store.remove(&key(1));
        assert!(store.snapshot().get(&key(1)).is_some(), "removal staged");
        assert!(
            store.with_entry(&key(1), |_| ()).is_none(),
            "the writer sees the removal"
        );
        store.commit();
        assert!(store.snapshot().get(&key(1)).is_none());
        assert_eq!(store.len(), 0);
    }

    /// Changes to one key within a flush: the last one is what the writer sees and what is
    /// published, whichever order inserts and removals came in.
    #[test]
    fn the_last_staged_change_of_a_key_wins() {
        let store = RecordStore::new();
        for i in 0..3_000 {
            store.insert(key(i), b"first");
        }
        store.commit();
        for i in 0..3_000 {
            if i == 1_000 {
                // Growing the index keeps every change staged so far.
                store.reserve(50_000);
            }
            store.insert(key(i), format!("second {i}").as_bytes());
            if i.is_multiple_of(3) {
                store.remove(&key(i));
            }
            if i.is_multiple_of(5) {
                store.insert(key(i), b"");
            }
        }
        store.insert(key(5_000), b"new");
        store.remove(&key(5_000));
        let expected = |i: usize| match (i.is_multiple_of(5), i.is_multiple_of(3)) {
            (true, _) => Some(Vec::new()),
            (false, true) => None,
            (false, false) => Some(format!("second {i}").into_bytes()),
        };
        for i in 0..3_000 {
            assert_eq!(
                store.with_entry(&key(i), |e| e.to_vec()),
                expected(i),
                "{i}"
            );
        }
        store.commit();
        for i in 0..3_000 {
            assert_eq!(
                store.snapshot().get(&key(i)).map(<[u8]>::to_vec),
                expected(i),
                "{i}"
            );
        }
        assert!(store.snapshot().get(&key(5_000)).is_none());
        assert_eq!(
            store.len(),
            3_000 - (0..3_000).filter(|i| expected(*i).is_none()).count()
        );
    }

    #[test]
    fn a_snapshot_taken_before_a_commit_keeps_its_content() {
        let store = RecordStore::new();
        store.insert(key(1), b"old");
        store.commit();
        let before = store.snapshot();
        store.insert(key(1), b"new");
        store.insert(key(2), b"");
        store.commit();
        assert_eq!(before.get(&key(1)).unwrap(), b"old");
        assert!(before.get(&key(2)).is_none());
        assert_eq!(store.snapshot().get(&key(1)).unwrap(), b"new");
        assert_eq!(
            store.snapshot().get(&key(2)).unwrap(),
            b"",
            "empty non-terminal"
        );
    }

    #[test]
    fn a_commit_copies_only_the_shards_it_touches() {
        let store = RecordStore::new();
        for i in 0..10_000 {
            store.insert(key(i), format!("v{i}").as_bytes());
        }
        store.commit();
        let before = store.snapshot();
        store.insert(key(7), b"changed");
        store.commit();
        let after = store.snapshot();
        let shared = (0..SHARDS)
            .filter(|&i| Arc::ptr_eq(&before.shards[i], &after.shards[i]))
            .count();
        assert_eq!(shared, SHARDS - 1);
        assert_eq!(after.len(), 10_000);
    }

    #[test]
    fn zones_staged_with_names_are_published_together() {
        let store = RecordStore::new();
        store.set_zones(ZoneTable::new(vec![zone("example.com")]));
        store.insert(key(1), b"");
        assert!(store.snapshot().zones().iter().next().is_none());
        assert_eq!(
            store.zones().iter().count(),
            1,
            "the writer sees its staged table"
        );
        store.commit();
        assert_eq!(store.snapshot().zones().iter().count(), 1);
        assert!(store.snapshot().contains(&key(1)));
    }

    proptest::proptest! {
        /// Any sequence of inserts, removals and commits leaves the published snapshot equal to
        /// a plain map that applied the same changes.
        #[test]
        fn snapshots_match_a_plain_map(
            batches in proptest::collection::vec(
                proptest::collection::vec((0usize..300, proptest::option::of(0u8..4)), 0..80),
                1..12,
            )
        ) {
            let store = RecordStore::new();
            let mut model = std::collections::BTreeMap::new();
            let mut previous = (store.snapshot(), model.clone());
            for batch in batches {
                for (i, value) in batch {
                    match value {
                        Some(v) => {
                            let entry: Box<[u8]> = vec![v; v as usize].into();
                            store.insert(key(i), entry.clone());
                            model.insert(key(i), entry);
                        }
                        None => {
                            store.remove(&key(i));
                            model.remove(&key(i));
                        }
                    }
                }
                store.commit();
                let snap = store.snapshot();
                proptest::prop_assert_eq!(snap.len(), model.len());
                for i in 0..300 {
                    proptest::prop_assert_eq!(snap.get(&key(i)), model.get(&key(i)).map(|e| &e[..]));
                }
                let mut walked = std::collections::BTreeMap::new();
                snap.for_each(|k, e| {
                    walked.insert(Box::<[u8]>::from(k), Box::<[u8]>::from(e));
                });
                proptest::prop_assert_eq!(&walked, &model);
                // The changes from the previous snapshot are exactly the model's (an empty
                // entry and an absent name look the same).
                let mut changed = std::collections::BTreeMap::new();
                previous.0.for_each_change(&snap, |k, old, new| {
                    if old != new {
                        changed.insert(Box::<[u8]>::from(k), (old.to_vec(), new.to_vec()));
                    }
                });
                let mut expected = std::collections::BTreeMap::new();
                for k in previous.1.keys().chain(model.keys()) {
                    let old = previous.1.get(k).map_or(vec![], |e| e.to_vec());
                    let new = model.get(k).map_or(vec![], |e| e.to_vec());
                    if old != new {
                        expected.insert(k.clone(), (old, new));
                    }
                }
                proptest::prop_assert_eq!(&changed, &expected);
                previous = (snap, model.clone());
            }
        }
    }

    #[test]
    fn zone_lookup_by_apex_and_by_name_agree() {
        let table = ZoneTable::new(vec![
            zone("example.com"),
            zone("a.b.example.com"),
            zone("org"),
        ]);
        for (name, apex) in [
            ("x.a.b.example.com", Some("a.b.example.com.")),
            ("b.example.com", Some("example.com.")),
            ("example.org", Some("org.")),
            ("example.net", None),
        ] {
            let key = crate::federation::naming::wire_key(&parse_dotted("n", name).unwrap());
            assert_eq!(
                table.find(&key).map(|z| z.apex.to_ascii()).as_deref(),
                apex,
                "{name}"
            );
        }
        let apex = parse_dotted("n", "a.b.example.com").unwrap();
        assert_eq!(table.by_apex(&apex).unwrap().apex, apex);
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
